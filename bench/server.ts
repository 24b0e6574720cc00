/**
 * Ours, as an application would run it: Fastify with the plugin and its
 * defaults (memory broker, history, validation, slow-consumer bound), except
 * the per-connection rate limit, raised because a few publishers play the part
 * of many people. Given a key prefix (`node server.js PREFIX`), it is one node
 * of a Redis-brokered chat instead: nodes started with the same prefix share rooms.
 */
import Fastify from 'fastify'
import chatRooms from '../lib/index.js'
import { serve } from './serve.js'

const prefix = process.argv[2]
// Imported only when used, so that the memory-broker server never loads ioredis (as the package's own entry split intends).
const broker = prefix === undefined
  ? undefined
  : new (await import('../lib/redis.js')).RedisBroker({ url: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', prefix })
const app = Fastify({ logger: false })
await app.register(chatRooms, { home: false, rateLimit: { perSecond: 1e6, burst: 1e6 }, broker })
await app.ready()
await serve(app.server, () => process.exit(0))
