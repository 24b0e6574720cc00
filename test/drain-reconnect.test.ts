/**
 * The drain and the client library's jittered backoff together: when a server
 * with many clients closes, they come back to its successor spread out, not
 * all in one moment, and every one resumes with nothing lost. Real sockets on
 * 127.0.0.1, the library's default reconnect delays.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import type { AddressInfo } from 'node:net'
import Fastify, { type FastifyInstance } from 'fastify'
import { WebSocket } from 'ws'
import chatRooms, { MemoryBroker, type ChatRoomsOptions } from '../lib/index.js'
import { ChatClient, type Joined } from '../lib/client/index.js'
import { drainSchedule } from '../lib/drain.js'

const CLIENTS = 300
const ROOM_SIZE = 10
const DRAIN = { batchSize: 30, intervalMs: 200 }
/** The library's first retry after a 1001 comes 250 to 500 ms later (minDelay 500, equal jitter): a window of 250 ms. */
const FIRST_RETRY_WINDOW_MS = 250
const WAIT_MS = 30_000

async function serve (options: ChatRoomsOptions, port = 0): Promise<FastifyInstance> {
  const app = Fastify({ logger: false })
  await app.register(chatRooms, { home: false, ...options })
  await app.listen({ host: '127.0.0.1', port })
  return app
}

async function until (condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + WAIT_MS
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

/** The most values of `times` (sorted) that fall within any window of `windowMs`. */
function busiest (times: number[], windowMs: number): number {
  let most = 0
  for (let start = 0, end = 0; end < times.length; end++) {
    while ((times[end] as number) - (times[start] as number) > windowMs) start++
    most = Math.max(most, end - start + 1)
  }
  return most
}

test(`${CLIENTS} clients drained in batches reconnect to the next server spread out, and all resume with nothing lost`, { timeout: 60_000 }, async (t) => {
  const broker = new MemoryBroker()
  const first = await serve({ broker, drain: DRAIN })
  const port = (first.server.address() as AddressInfo).port
  const servers = [first]
  const clients: ChatClient[] = []
  t.after(async () => {
    for (const client of clients) client.close()
    for (const server of servers) await server.close()
  })

  let restartedAt = 0
  const welcomes: number[] = []
  const rejoins: Joined[] = []
  const gaps: unknown[] = []
  const seen = new Map<ChatClient, Array<{ seq: number, text: string }>>()
  for (let i = 0; i < CLIENTS; i++) {
    const client = new ChatClient(`ws://127.0.0.1:${port}/ws`, { WebSocket, name: `c${i}` })
    clients.push(client)
    seen.set(client, [])
    client.on('welcome', () => { if (restartedAt > 0) welcomes.push(Date.now() - restartedAt) })
    client.on('joined', (joined) => { if (restartedAt > 0) rejoins.push(joined) })
    client.on('gap', (gap) => gaps.push(gap))
    client.on('message', (message) => seen.get(client)?.push({ seq: message.seq, text: message.text }))
  }
  const roomOf = (i: number): string => `room-${Math.floor(i / ROOM_SIZE)}`
  await Promise.all(clients.map((client, i) => client.join(roomOf(i))))
  await Promise.all(clients.map((client, i) => client.send(roomOf(i), `before ${i}`)))
  await until(() => clients.every((client) => seen.get(client)?.length === ROOM_SIZE), 'every message before the restart')

  restartedAt = Date.now()
  const closing = first.close()
  // Sent while the drain runs: by the clients still connected at once, by the others once they resume.
  const during = clients.map((client, i) => client.send(roomOf(i), `during ${i}`))
  await closing
  const drained = Date.now() - restartedAt
  servers.push(await serve({ broker }, port))
  await Promise.all(during)
  await until(() => clients.every((client) => client.status === 'open' && seen.get(client)?.length === 2 * ROOM_SIZE), 'every client resumed with every message')

  assert.equal(welcomes.length, CLIENTS, 'each client reconnected once')
  assert.equal(rejoins.length, CLIENTS)
  assert.ok(rejoins.every((joined) => joined.recovered === true), 'every room resumed exactly')
  assert.deepEqual(gaps, [])
  for (const [i, client] of clients.entries()) {
    const messages = seen.get(client) ?? []
    const firstOfRoom = Math.floor(i / ROOM_SIZE) * ROOM_SIZE
    const sent = Array.from({ length: ROOM_SIZE }, (_, k) => firstOfRoom + k)
    assert.deepEqual(messages.map((message) => message.seq), Array.from({ length: 2 * ROOM_SIZE }, (_, k) => k + 1), `client ${i}: every seq once, in order`)
    assert.deepEqual(messages.map((message) => message.text).sort(), [...sent.map((k) => `before ${k}`), ...sent.map((k) => `during ${k}`)].sort(), `client ${i}`)
  }

  const times = welcomes.sort((a, b) => a - b)
  const at = (share: number): number => times[Math.floor(share * (times.length - 1))] as number
  const spread = at(0.9) - at(0.1)
  const { batches, intervalMs } = drainSchedule(CLIENTS, DRAIN)
  const drainSpan = (batches - 1) * intervalMs
  const most = busiest(times, FIRST_RETRY_WINDOW_MS / 2)
  t.diagnostic(`drain ${drainSpan} ms (close() took ${drained} ms); welcomes from ${at(0)} to ${at(1)} ms, 10th to 90th percentile ${spread} ms; at most ${most} in any ${FIRST_RETRY_WINDOW_MS / 2} ms`)
  // Closed all at once, the clients would come back within one first-retry window (250 ms).
  assert.ok(spread >= Math.max(drainSpan / 2, FIRST_RETRY_WINDOW_MS), `the middle 80% of reconnects spread over ${spread} ms`)
  assert.ok(most <= CLIENTS / 3, `${most} reconnects within ${FIRST_RETRY_WINDOW_MS / 2} ms`)
})
