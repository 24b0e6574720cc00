/**
 * The example server's config file: `{ host, port, logLevel,
 * connectionTimeout?, redis? | sqlite? | postgres?, accounts?, admins?,
 * sessionSecret?, chat }`, where `chat` holds the plugin's options, at most one
 * broker key names where rooms live (`redis`: one URL, shards or a Redis
 * Cluster, with an optional key prefix), `accounts` turns on sign-up and sign-in
 * (kept in the SQLite or PostgreSQL database) and `admins` names the accounts
 * that may moderate. Validated at start so a bad field stops the server with a
 * message naming it.
 */
import { readFile } from 'node:fs/promises'
import Type, { type Static } from 'typebox'
import { Compile } from 'typebox/compile'
import { OptionsSchema, OptionsError, optionRuleProblems } from '../lib/options.js'
import type { RedisBrokerOptions } from '../lib/redis.js'
import { normalizeName } from '../lib/protocol.js'
import { schemaErrors } from '../lib/schema-errors.js'

const RedisUrl = Type.String({ pattern: '^rediss?://', description: "a Redis URL like 'redis://127.0.0.1:6379'" })
const RedisUrls = Type.Array(RedisUrl, { minItems: 1, description: "a list of at least one Redis URL like ['redis://10.0.0.1:6379', 'redis://10.0.0.2:6379']" })

/**
 * `redis`: one URL, a list of URLs (shards), or an object naming exactly one
 * of `url`, `shards` and `cluster` (a rule checks that) with the broker's
 * `prefix` and `registryShard`. The object's fields are `RedisBrokerOptions`'
 * own names, so it maps onto them as it is.
 */
const RedisSchema = Type.Union([
  RedisUrl,
  RedisUrls,
  Type.Object({
    url: Type.Optional(RedisUrl),
    shards: Type.Optional(RedisUrls),
    cluster: Type.Optional(RedisUrls),
    prefix: Type.Optional(Type.String({ minLength: 1, description: "a non-empty prefix of every key and channel, like 'myapp:'" })),
    registryShard: Type.Optional(RedisUrl),
  }, { additionalProperties: false }),
], { description: "a Redis URL like 'redis://127.0.0.1:6379', a list of them (shards) or { url | shards | cluster, prefix?, registryShard? }" })

export const ConfigSchema = Type.Object({
  host: Type.String({ minLength: 1 }),
  port: Type.Integer({ minimum: 0, maximum: 65535 }),
  logLevel: Type.Union(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((level) => Type.Literal(level))),
  /** ms; see DEFAULT_CONNECTION_TIMEOUT. */
  connectionTimeout: Type.Optional(Type.Integer({ minimum: 0 })),
  redis: Type.Optional(RedisSchema),
  sqlite: Type.Optional(Type.String({ minLength: 1, description: "a database file like 'data/chat.db', relative to the working directory" })),
  postgres: Type.Optional(Type.String({ pattern: '^postgres(ql)?://', description: "a PostgreSQL URL like 'postgres://127.0.0.1:5432/chat'" })),
  accounts: Type.Optional(Type.Boolean({ description: 'true (people register and sign in; needs sqlite or postgres) or false (everyone is a guest)' })),
  admins: Type.Optional(Type.Array(Type.String(), { description: "a list of account names like ['alice'], who may moderate (needs accounts: true)" })),
  sessionSecret: Type.Optional(Type.String({ minLength: 32, description: 'a secret of at least 32 characters that signs session cookies' })),
  chat: OptionsSchema,
}, { additionalProperties: false, description: 'an object { host, port, logLevel, connectionTimeout?, redis? | sqlite? | postgres?, accounts?, admins?, sessionSecret?, chat }' })

/**
 * How long a connection may stay silent before the server closes it, unless
 * the config says otherwise: Fastify's `connectionTimeout`, the socket's idle
 * timeout. Without it a connection that never sends a request is kept
 * forever, and enough of them use up the process's file descriptors. Ten
 * seconds is far more than any client needs to send its request. ws clears the
 * timeout once a socket is upgraded, so an open WebSocket, however quiet, is
 * left to the heartbeat.
 */
export const DEFAULT_CONNECTION_TIMEOUT = 10_000

/** The config keys that each name a broker; a config names at most one. */
export const BROKER_KEYS = ['redis', 'sqlite', 'postgres'] as const

export type Config = Static<typeof ConfigSchema>
export type RedisConfig = Static<typeof RedisSchema>

const validator = Compile(ConfigSchema)

export const DEFAULT_CONFIG_FILE = new URL('../../example/config.json', import.meta.url)

/** Reads and validates the config; `HOST` and `PORT` in `env` override the file. */
export async function loadConfig (file: string | URL, env: NodeJS.ProcessEnv = process.env): Promise<Config> {
  let value: unknown
  try {
    value = JSON.parse(await readFile(file, 'utf8'))
  } catch (error) {
    throw new OptionsError(`config ${String(file)}: cannot be read as JSON (${(error as Error).message})`)
  }
  if (typeof value === 'object' && value !== null && !Array.isArray(value)) {
    const fields = value as Record<string, unknown>
    if (env.HOST !== undefined) fields.host = env.HOST
    if (env.PORT !== undefined) fields.port = Number(env.PORT)
  }
  const problems = validator.Check(value) ? [...brokerProblems(value), ...redisProblems(value.redis), ...accountsProblems(value), ...adminsProblems(value), ...optionRuleProblems(value.chat, 'chat.')] : schemaErrors(validator, value, 'config')
  if (problems.length > 0) throw new OptionsError(`config ${String(file)}: ${problems.join('; ')}`)
  return value as Config
}

function brokerProblems (config: Config): string[] {
  const named = BROKER_KEYS.filter((key) => config[key] !== undefined)
  if (named.length <= 1) return []
  return [`${named.join(' and ')}: a config names at most one broker (where rooms live); keep one of them`]
}

/** The `RedisBroker` options that a config's `redis`, in any of its forms, stands for. */
export function redisBrokerOptions (redis: RedisConfig): RedisBrokerOptions {
  if (typeof redis === 'string') return { url: redis }
  if (Array.isArray(redis)) return { shards: redis }
  return { ...redis }
}

/** What the schema cannot say of `redis`: one place for the rooms, no shard twice, a registry shard among the shards. */
function redisProblems (redis: RedisConfig | undefined): string[] {
  if (redis === undefined || typeof redis === 'string') return []
  if (Array.isArray(redis)) return duplicateProblems(redis, 'redis')
  const places = (['url', 'shards', 'cluster'] as const).filter((key) => redis[key] !== undefined)
  if (places.length !== 1) return [`redis: set exactly one of url, shards and cluster${places.length > 1 ? ` (it sets ${places.join(' and ')})` : ''}`]
  const problems = duplicateProblems(redis.shards ?? [], 'redis.shards')
  if (redis.registryShard !== undefined) {
    if (redis.shards === undefined) problems.push('redis.registryShard: only with redis.shards (it names the shard that holds the node registry); remove it')
    else if (!redis.shards.includes(redis.registryShard)) problems.push(`redis.registryShard: must be one of redis.shards, not ${JSON.stringify(redis.registryShard)}`)
  }
  return problems
}

/** A URL listed twice would count one server as two shards: each item after its first is named. */
function duplicateProblems (urls: string[], field: string): string[] {
  return urls.flatMap((url, index) => {
    const first = urls.indexOf(url)
    return first === index ? [] : [`${field}.${index}: ${JSON.stringify(url)} is already ${field}.${first}; list each Redis once`]
  })
}

/** Accounts are kept in the database the chat uses: Redis and memory are not one that keeps them. */
function accountsProblems (config: Config): string[] {
  if (config.accounts !== true || config.sqlite !== undefined || config.postgres !== undefined) return []
  const where = config.redis !== undefined ? 'redis does not keep them' : 'no broker key is set'
  return [`accounts: needs sqlite or postgres to keep the accounts in (${where}); set one of them, or accounts: false`]
}

/**
 * Admins are accounts, named as people sign in: each name must be one an
 * account could have (PROTOCOL.md's name rules), and there must be accounts.
 */
function adminsProblems (config: Config): string[] {
  if (config.admins === undefined) return []
  if (config.accounts !== true) return ['admins: needs accounts: true (an admin is a signed-in account); set accounts: true, or remove admins']
  return config.admins.flatMap((name, index) => {
    try {
      normalizeName(name)
      return []
    } catch (error) {
      return [`admins.${index}: ${(error as Error).message.replace(/^name: /, '')}`]
    }
  })
}
