/**
 * The example server: the plugin on port 9999 from example/config.json.
 * `CHAT_CONFIG` names another config file; `HOST` and `PORT` override it.
 * With `redis` (a URL), several such servers share their rooms through Redis.
 */
import Fastify from 'fastify'
import chatRooms from '../lib/index.js'
import { DEFAULT_CONFIG_FILE, loadConfig } from './config.js'

async function main (): Promise<void> {
  const config = await loadConfig(process.env.CHAT_CONFIG ?? DEFAULT_CONFIG_FILE)
  const app = Fastify({ logger: { level: config.logLevel } })
  // Loaded only when configured, so the memory-only example needs no ioredis.
  const broker = config.redis === undefined ? undefined : new (await import('../lib/redis.js')).RedisBroker({ url: config.redis })
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
