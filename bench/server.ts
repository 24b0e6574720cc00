/**
 * Ours, as an application would run it: Fastify with the plugin and its
 * defaults (memory broker, history, validation, slow-consumer bound), except
 * the per-connection rate limit, raised because a few publishers play the part
 * of many people.
 */
import Fastify from 'fastify'
import chatRooms from '../lib/index.js'
import { serve } from './serve.js'

const app = Fastify({ logger: false })
await app.register(chatRooms, { home: false, rateLimit: { perSecond: 1e6, burst: 1e6 } })
await app.ready()
await serve(app.server, () => process.exit(0))
