/**
 * Graceful drain on `fastify.close()`: connections are closed with 1001 in
 * batches of `drain.batchSize` every `drain.intervalMs`, oldest first, within
 * a bounded time; the others are served meanwhile, and new upgrades are
 * refused with 503. Real sockets on 127.0.0.1; times are measured by the
 * clients, and asserted as order and loose bounds.
 */
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import Fastify, { type FastifyServerOptions } from 'fastify'
import WebSocket from 'ws'
import chatRooms, { type ChatRoomsOptions } from '../lib/index.js'
import { DEFAULT_DRAIN, MAX_DRAIN_MS, drainSchedule } from '../lib/drain.js'
import { RawClient, type Closed } from './helpers/client.js'
import { startServer } from './helpers/server.js'

/** When the last batch goes, after the first. */
function lastBatchAt (count: number, options = DEFAULT_DRAIN): number {
  const { batches, intervalMs } = drainSchedule(count, options)
  return Math.max(0, batches - 1) * intervalMs
}

test('the schedule: 10,000 connections drain in under 4 s at the defaults, and any count within MAX_DRAIN_MS', () => {
  assert.deepEqual(drainSchedule(10_000, DEFAULT_DRAIN), { batches: 40, intervalMs: 100 })
  assert.equal(lastBatchAt(10_000), 3900)
  assert.deepEqual(drainSchedule(0, DEFAULT_DRAIN), { batches: 0, intervalMs: 100 })
  assert.deepEqual(drainSchedule(250, DEFAULT_DRAIN), { batches: 1, intervalMs: 100 })
  assert.deepEqual(drainSchedule(251, DEFAULT_DRAIN), { batches: 2, intervalMs: 100 })
  // Up to 101 batches keep the configured interval; past that it shrinks so that the last one still goes at MAX_DRAIN_MS.
  assert.deepEqual(drainSchedule(101 * 250, DEFAULT_DRAIN), { batches: 101, intervalMs: 100 })
  assert.ok(drainSchedule(101 * 250 + 1, DEFAULT_DRAIN).intervalMs < 100)
  for (const count of [25_251, 100_000, 1_000_000]) {
    const { batches, intervalMs } = drainSchedule(count, DEFAULT_DRAIN)
    assert.equal(batches, Math.ceil(count / 250), `${count}: batches keep their size`)
    assert.ok(Math.abs((batches - 1) * intervalMs - MAX_DRAIN_MS) < 1e-6, `${count}: the last batch goes at MAX_DRAIN_MS`)
  }
  assert.equal(lastBatchAt(3, { batchSize: 1, intervalMs: MAX_DRAIN_MS }), MAX_DRAIN_MS, 'the largest interval allowed is shortened too')
})

interface Timed extends Closed { at: number }

/** `count` clients connected one after the other (so the server holds them in this order), all in `room`. */
async function connectInOrder (t: TestContext, url: string, count: number, room: string): Promise<RawClient[]> {
  const clients: RawClient[] = []
  for (let i = 0; i < count; i++) {
    const client = await RawClient.connect(t, url)
    await client.request('joined', { type: 'join', room })
    clients.push(client)
  }
  return clients
}

/** The status and body of a refused upgrade to `url`. */
async function refusedUpgrade (url: string): Promise<{ status: number, body: string }> {
  const socket = new WebSocket(url)
  return await new Promise((resolve, reject) => {
    socket.once('open', () => { socket.terminate(); reject(new Error('the upgrade was accepted')) })
    socket.once('error', reject)
    socket.once('unexpected-response', (_request, response) => {
      let body = ''
      response.setEncoding('utf8')
      response.on('data', (chunk: string) => { body += chunk })
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body }))
    })
  })
}

test('close() drains in batches of batchSize, intervalMs apart, oldest first; the rest are served meanwhile and new upgrades get 503', async (t) => {
  const drain = { batchSize: 4, intervalMs: 300 }
  const { app, wsUrl } = await startServer(t, { home: false, drain })
  const clients = await connectInOrder(t, wsUrl, 16, 'r')
  const closes = clients.map((client) => client.closed.then((closed): Timed => ({ ...closed, at: Date.now() })))

  const started = Date.now()
  const closing = app.close()
  await clients[0]?.closed
  // The first batch is gone; the last is still served: a send is stored and delivered to another member of its batch.
  const [last, beforeLast] = [clients[15] as RawClient, clients[14] as RawClient]
  const ack = await last.request('ack', { type: 'send', room: 'r', text: 'still here' })
  assert.equal((await beforeLast.next('message', (message) => message.seq === ack.seq)).text, 'still here')
  assert.deepEqual(await refusedUpgrade(wsUrl), { status: 503, body: '{"error":"Service Unavailable","message":"Service Unavailable","statusCode":503}' }, "Fastify's own 503 while closing")
  await closing
  const closed = await Promise.all(closes)
  const finished = Date.now()

  for (const [i, close] of closed.entries()) assert.deepEqual([close.code, close.reason], [1001, 'server shutting down'], `client ${i}`)
  const batches = [0, 1, 2, 3].map((batch) => closed.slice(batch * 4, batch * 4 + 4).map((close) => close.at))
  for (let batch = 1; batch < batches.length; batch++) {
    assert.ok(Math.min(...batches[batch] as number[]) > Math.max(...batches[batch - 1] as number[]), `batch ${batch} closed after batch ${batch - 1}: ${JSON.stringify(batches)}`)
  }
  const span = Math.max(...closed.map((close) => close.at)) - Math.min(...closed.map((close) => close.at))
  // The last batch goes 900 ms after the first; the first may reach its clients a little late, never the last early.
  assert.ok(span >= 700, `closes spread over ${span} ms`)
  assert.ok(finished - started < 900 + 2000, `close() took ${finished - started} ms`)
})

test('with return503OnClosing off, admission refuses upgrades during the drain with its own 503', async (t) => {
  const app = Fastify({ logger: false, return503OnClosing: false } satisfies FastifyServerOptions)
  await app.register(chatRooms, { home: false, drain: { batchSize: 1, intervalMs: 500 } })
  await app.listen({ host: '127.0.0.1', port: 0 })
  t.after(() => app.close())
  const wsUrl = `ws://127.0.0.1:${(app.server.address() as { port: number }).port}/ws`
  const [first, second] = await connectInOrder(t, wsUrl, 2, 'r')
  const closing = app.close()
  await first?.closed
  const refused = await refusedUpgrade(wsUrl)
  assert.equal(refused.status, 503)
  assert.equal((JSON.parse(refused.body) as { message: string }).message, 'the server is shutting down')
  assert.equal(second?.socket.readyState, WebSocket.OPEN, 'the refusal came during the drain')
  await closing
  assert.equal((await second?.closed)?.code, 1001)
})

test('an upgrade admitted before the drain began, that opens during it, is closed with 1001 at once', async (t) => {
  let letIn: () => void = () => {}
  const gate = new Promise<void>((resolve) => { letIn = resolve })
  let asked: () => void = () => {}
  const lateAsked = new Promise<void>((resolve) => { asked = resolve })
  const options: ChatRoomsOptions = {
    home: false,
    drain: { batchSize: 1, intervalMs: 1000 },
    // `late` is admitted only once the drain has begun: its check for shutdown came before it.
    authenticate: async (request) => {
      const { user } = request.query as { user: string }
      if (user === 'late') {
        asked()
        await gate
      }
      return { id: user, name: user }
    },
  }
  const { app, wsUrl } = await startServer(t, options)
  await connectInOrder(t, `${wsUrl}?user=early`, 2, 'r')
  const late = RawClient.connect(t, `${wsUrl}?user=late`)
  await lateAsked
  const closing = app.close()
  await new Promise((resolve) => setTimeout(resolve, 50))
  letIn()
  const client = await late
  assert.deepEqual(await client.closed, { code: 1001, reason: 'server shutting down' })
  await closing
})
