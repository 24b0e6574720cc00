/**
 * Ours, as an application would run it: Fastify with the plugin and its
 * defaults (memory broker, history, validation, slow-consumer bound), except
 * the per-connection rate limit, raised because a few publishers play the part
 * of many people. Given a broker spec (`node server.js SPEC`), it uses that
 * broker instead:
 * - `memory` (the default);
 * - `redis:PREFIX`: a RedisBroker at $REDIS_URL, or over the shards listed in
 *   $REDIS_SHARDS (comma-separated URLs) when set; nodes with the same prefix share rooms;
 * - `sqlite:FILE`: a SqliteBroker on FILE;
 * - `postgres:SCHEMA`: a PostgresBroker at $POSTGRES_URL, in SCHEMA.
 * With `--metrics` it also has the `metrics` option on (its series counted,
 * its broker calls timed), to measure what metrics cost.
 */
import Fastify from 'fastify'
import chatRooms, { type Broker } from '../lib/index.js'
import { serve } from './serve.js'

/** Each broker module is imported only when used, so that a server never loads the drivers of the others (as the package's entry split intends). */
async function brokerOf (spec: string): Promise<Broker | undefined> {
  const colon = spec.indexOf(':')
  const [kind, value] = colon < 0 ? [spec, ''] : [spec.slice(0, colon), spec.slice(colon + 1)]
  if (kind === 'memory' && value === '') return undefined
  if (value === '') throw new Error(`broker spec "${spec}" names no ${kind === 'sqlite' ? 'file' : kind === 'postgres' ? 'schema' : 'prefix'}`)
  switch (kind) {
    case 'redis': {
      const { RedisBroker } = await import('../lib/redis.js')
      const shards = process.env.REDIS_SHARDS?.split(',')
      return new RedisBroker(shards ? { shards, prefix: value } : { url: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', prefix: value })
    }
    case 'sqlite':
      return new (await import('../lib/sqlite.js')).SqliteBroker({ file: value })
    case 'postgres':
      return new (await import('../lib/postgres.js')).PostgresBroker({ connectionString: process.env.POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test', schema: value })
    default:
      throw new Error(`unknown broker spec "${spec}": expected memory, redis:PREFIX, sqlite:FILE or postgres:SCHEMA`)
  }
}

const args = process.argv.slice(2)
const broker = await brokerOf(args.find((arg) => arg !== '--metrics') ?? 'memory')
const app = Fastify({ logger: false })
await app.register(chatRooms, { home: false, rateLimit: { perSecond: 1e6, burst: 1e6 }, broker, metrics: args.includes('--metrics') })
await app.ready()
await serve(app.server, () => process.exit(0), () => app.close())
