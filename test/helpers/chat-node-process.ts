/**
 * One chat server node in a process of its own, for multi-process tests: the
 * plugin with a RedisBroker. Environment: REDIS_URL, or CHAT_REDIS (JSON of
 * the broker's `{ shards }` or `{ cluster }`); CHAT_PREFIX, CHAT_LEASE_MS.
 * Prints `{"port":N}` once listening; SIGTERM closes it.
 */
import Fastify from 'fastify'
import chatRooms from '../../lib/index.js'
import { RedisBroker, type RedisBrokerOptions } from '../../lib/redis.js'

const broker = new RedisBroker({
  ...(process.env.CHAT_REDIS === undefined ? { url: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379' } : JSON.parse(process.env.CHAT_REDIS) as RedisBrokerOptions),
  prefix: process.env.CHAT_PREFIX ?? 'chat:',
  leaseMs: Number(process.env.CHAT_LEASE_MS ?? 15_000),
})
const app = Fastify({ logger: { level: 'warn' } })
await app.register(chatRooms, { broker, home: false })
await app.listen({ host: '127.0.0.1', port: 0 })
const address = app.server.address()
if (address === null || typeof address === 'string') throw new Error('no port')
process.stdout.write(`${JSON.stringify({ port: address.port })}\n`)
process.once('SIGTERM', () => void app.close().then(() => process.exit(0)))
