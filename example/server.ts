/**
 * The example server: the plugin on port 9999 from example/config.json.
 * `CHAT_CONFIG` names another config file; `HOST` and `PORT` override it.
 * With `sqlite` (a file) its rooms outlive restarts; with `redis` or
 * `postgres` (a URL), several such servers share their rooms.
 */
import { mkdir } from 'node:fs/promises'
import { dirname } from 'node:path'
import Fastify from 'fastify'
import type { Broker } from '../lib/broker.js'
import chatRooms from '../lib/index.js'
import { type Config, DEFAULT_CONFIG_FILE, DEFAULT_CONNECTION_TIMEOUT, loadConfig } from './config.js'

/**
 * The broker the config names, or none (the memory broker). Each is loaded
 * only when named, so the example needs no ioredis, better-sqlite3 or pg it does not use.
 */
async function makeBroker (config: Config): Promise<Broker | undefined> {
  if (config.redis !== undefined) return new (await import('../lib/redis.js')).RedisBroker({ url: config.redis })
  if (config.sqlite !== undefined) {
    await mkdir(dirname(config.sqlite), { recursive: true })
    return new (await import('../lib/sqlite.js')).SqliteBroker({ file: config.sqlite })
  }
  if (config.postgres !== undefined) return new (await import('../lib/postgres.js')).PostgresBroker({ connectionString: config.postgres })
  return undefined
}

async function main (): Promise<void> {
  const config = await loadConfig(process.env.CHAT_CONFIG ?? DEFAULT_CONFIG_FILE)
  const app = Fastify({ logger: { level: config.logLevel }, connectionTimeout: config.connectionTimeout ?? DEFAULT_CONNECTION_TIMEOUT })
  const broker = await makeBroker(config)
  await app.register(chatRooms, { ...config.chat, broker })
  await app.listen({ host: config.host, port: config.port })

  let closing = false
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => {
      if (closing) return
      closing = true
      app.log.info({ signal }, 'closing')
      app.close().then(() => process.exit(0), (error: unknown) => {
        app.log.error({ err: error }, 'close failed')
        process.exit(1)
      })
    })
  }
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : error)
  process.exit(1)
})
