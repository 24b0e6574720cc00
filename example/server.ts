/**
 * The example server: the plugin on port 9999 from example/config.json.
 * `CHAT_CONFIG` names another config file; `HOST` and `PORT` override it.
 * With `sqlite` (a file) its rooms outlive restarts; with `redis` (one
 * Redis, shards or a Cluster) or `postgres` (a URL), several such servers
 * share their rooms. With
 * `accounts`, people sign in (example/accounts.ts) and the chat knows them by
 * their session, and the config's `admins` may moderate through the HTTP API;
 * without, everyone is a guest who picks a name.
 */
import { mkdir } from 'node:fs/promises'
import { dirname } from 'node:path'
import Fastify, { type FastifyBaseLogger } from 'fastify'
import type { Broker } from '../lib/broker.js'
import type { SqliteBroker } from '../lib/sqlite.js'
import chatRooms from '../lib/index.js'
import type { AccountStore } from './account-store.js'
import { Accounts } from './accounts.js'
import { type Config, DEFAULT_CONFIG_FILE, DEFAULT_CONNECTION_TIMEOUT, loadConfig, redisBrokerOptions } from './config.js'

/**
 * The broker the config names, or none (the memory broker). Each is loaded
 * only when named, so the example needs no ioredis, better-sqlite3 or pg it does not use.
 */
async function makeBroker (config: Config): Promise<Broker | undefined> {
  if (config.redis !== undefined) return new (await import('../lib/redis.js')).RedisBroker(redisBrokerOptions(config.redis))
  if (config.sqlite !== undefined) {
    await mkdir(dirname(config.sqlite), { recursive: true })
    return new (await import('../lib/sqlite.js')).SqliteBroker({ file: config.sqlite })
  }
  if (config.postgres !== undefined) return new (await import('../lib/postgres.js')).PostgresBroker({ connectionString: config.postgres })
  return undefined
}

/** Where accounts are kept: the database the broker uses (the config allows accounts with no other). */
async function makeAccountStore (config: Config, broker: Broker | undefined, log: FastifyBaseLogger): Promise<AccountStore> {
  if (config.postgres !== undefined) return new (await import('./postgres-accounts.js')).PostgresAccountStore(config.postgres, log)
  const sqlite = broker as SqliteBroker
  return new (await import('./sqlite-accounts.js')).SqliteAccountStore(() => sqlite.database)
}

async function main (): Promise<void> {
  const config = await loadConfig(process.env.CHAT_CONFIG ?? DEFAULT_CONFIG_FILE)
  const app = Fastify({ logger: { level: config.logLevel }, connectionTimeout: config.connectionTimeout ?? DEFAULT_CONNECTION_TIMEOUT })
  const broker = await makeBroker(config)
  const accounts = config.accounts === true ? new Accounts(await makeAccountStore(config, broker, app.log), config.admins) : undefined
  // With accounts, the HTTP API's moderation routes are the admins'; without, they do not exist.
  const rest = config.chat.rest && accounts ? { ...config.chat.rest, authorize: accounts.authorize } : config.chat.rest
  await app.register(chatRooms, { ...config.chat, rest, broker, authenticate: accounts?.authenticate })
  // After the chat plugin: its broker is open, and with SQLite the accounts live in its file.
  if (accounts) await app.register(accounts.routes, { sessionSecret: config.sessionSecret })
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
