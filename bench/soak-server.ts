/**
 * The server side of `npm run soak`, in its own process so that its memory is
 * measured apart from the thousands of clients. Started by bench/soak.ts with
 * `node --expose-gc`; options come as JSON in argv[2]; it answers requests
 * over the IPC channel and exits when that channel closes.
 */
import { createHook } from 'node:async_hooks'
import Fastify from 'fastify'
import chatRooms, { MemoryBroker, type ChatRoomsOptions } from '../lib/index.js'

export interface SoakServerOptions {
  chat: ChatRoomsOptions
  /** Short, so that rooms nobody uses are forgotten within the soak and memory can return to its baseline. */
  idleRoomTtl: number
}

/** What `stats` answers: the hub's own counts and the process's, after a full GC. */
export interface ServerReport {
  hub: { connections: number, rooms: number, messagesIn: number, messagesOut: number, dropped: number, slowConsumerCloses: number }
  /** Rooms with members anywhere (hub.rooms()), with their latest seq. */
  rooms: Record<string, number>
  heapUsed: number
  rss: number
  maxRss: number
  /** Live timers, unref'd ones included (getActiveResourcesInfo leaves those out). */
  timers: number
  /** Handles that keep the loop alive, by type. */
  handles: Record<string, number>
}

export type Command = { cmd: 'stats' } | { cmd: 'broadcast', room: string, text: string, count: number }

const options = JSON.parse(process.argv[2] ?? '{}') as SoakServerOptions
const gc = (globalThis as { gc?: () => void }).gc
if (!gc || !process.send) throw new Error('soak-server: run by bench/soak.ts with --expose-gc and an IPC channel')

const timers = new Set<number>()
createHook({
  init (id, type) { if (type === 'Timeout') timers.add(id) },
  destroy (id) { timers.delete(id) },
}).enable()

const app = Fastify({ logger: false })
await app.register(chatRooms, { ...options.chat, home: false, broker: new MemoryBroker({ idleRoomTtl: options.idleRoomTtl }) })
await app.listen({ host: '127.0.0.1', port: 0 })

async function report (): Promise<ServerReport> {
  // Two collections with a turn between them, so objects freed by finalizers are gone too.
  gc?.()
  await new Promise((resolve) => setImmediate(resolve))
  gc?.()
  const handles: Record<string, number> = {}
  for (const type of process.getActiveResourcesInfo()) handles[type] = (handles[type] ?? 0) + 1
  const rooms = Object.fromEntries((await app.hub.rooms()).map((info) => [info.room, info.seq]))
  const memory = process.memoryUsage()
  return { hub: app.hub.stats(), rooms, heapUsed: memory.heapUsed, rss: memory.rss, maxRss: process.resourceUsage().maxRSS * 1024, timers: timers.size, handles }
}

process.on('message', (request: Command & { id: number }) => {
  const answer = async (): Promise<unknown> => {
    if (request.cmd === 'stats') return report()
    for (let i = 0; i < request.count; i++) await app.hub.broadcast(request.room, request.text)
    return null
  }
  answer().then(
    (result) => process.send?.({ id: request.id, result }),
    (error: unknown) => process.send?.({ id: request.id, error: String(error) }),
  )
})
// The driver closing the channel (or dying) ends the server: a soak never leaves a process behind.
process.on('disconnect', () => { app.close().then(() => process.exit(0), () => process.exit(1)) })
const address = app.server.address()
process.send({ listening: typeof address === 'object' && address !== null ? address.port : 0 })
