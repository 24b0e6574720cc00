/**
 * The read pump over real sockets: a burst the rate allows is answered in
 * full and in order on every broker (the socket is paused, never refused;
 * consecutive sends overlap while stored, which the durable brokers commit together),
 * `rate_limited` means the rate, and a closing connection keeps its close code.
 */
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import WebSocket from 'ws'
import { mkdtempSync } from 'node:fs'
import { rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { RedisBroker } from '../lib/redis.js'
import { SqliteBroker } from '../lib/sqlite.js'
import { PostgresBroker } from '../lib/postgres.js'
import type { Broker } from '../lib/broker.js'
import { RawClient, sleep } from './helpers/client.js'
import { startServer } from './helpers/server.js'
import { REDIS_URL, deleteKeys, skipUnlessRedis, uniquePrefix } from './helpers/redis.js'
import { POSTGRES_URL, dropSchema, skipUnlessPostgres, uniqueSchema } from './helpers/postgres.js'

const redisSkip = await skipUnlessRedis()
const postgresSkip = await skipUnlessPostgres()

/** A rate that allows every burst of these tests at once: only the pump's own behaviour is under test. */
const GENEROUS_RATE = { perSecond: 1000, burst: 1000 }

const brokers: Array<{ name: string, skip: string | false, make: (t: TestContext) => Broker | undefined }> = [
  { name: 'the memory broker', skip: false, make: () => undefined },
  {
    name: 'Redis',
    skip: redisSkip,
    make: (t) => {
      const prefix = uniquePrefix()
      t.after(() => deleteKeys(prefix))
      return new RedisBroker({ url: REDIS_URL, prefix })
    },
  },
  {
    // Acks wait for a disk flush here: the sends that overlap share it.
    name: "SQLite (synchronous: 'full')",
    skip: false,
    make: (t) => {
      const dir = mkdtempSync(join(tmpdir(), 'chat-read-pump-'))
      const broker = new SqliteBroker({ file: join(dir, 'chat.db'), synchronous: 'full' })
      // Closed first (the server closing it again does nothing), so the file is let go before it is removed.
      t.after(async () => {
        await broker.close()
        await rm(dir, { recursive: true, force: true })
      })
      return broker
    },
  },
  {
    name: 'PostgreSQL',
    skip: postgresSkip,
    make: (t) => {
      const schema = uniqueSchema()
      const broker = new PostgresBroker({ connectionString: POSTGRES_URL, schema })
      t.after(async () => {
        await broker.close()
        await dropSchema(schema)
      })
      return broker
    },
  },
]

/** Sends every message in one burst: one write, so the server reads many frames in one chunk. */
function pipeline (client: RawClient, messages: object[]): void {
  const socket = client.socket as unknown as { _socket: { cork(): void, uncork(): void } }
  socket._socket.cork()
  for (const message of messages) client.send(message)
  socket._socket.uncork()
}

for (const { name, skip, make } of brokers) {
  test(`500 pipelined sends within the rate get 500 acks in order, with ${name}`, { skip }, async (t) => {
    const broker = make(t)
    const { wsUrl } = await startServer(t, { home: false, rateLimit: GENEROUS_RATE, ...(broker ? { broker } : {}) })
    const alice = await RawClient.connect(t, wsUrl)
    await alice.request('joined', { type: 'join', room: 'burst' })
    const count = 500
    pipeline(alice, Array.from({ length: count }, (_, i) => ({ type: 'send', room: 'burst', text: `m${i}`, ref: `s${i}` })))
    const acks = []
    for (let i = 0; i < count; i++) acks.push(await alice.next('ack', () => true, 15_000))
    assert.deepEqual(acks.map((ack) => ack.ref), Array.from({ length: count }, (_, i) => `s${i}`), 'acks in the order sent')
    assert.deepEqual(acks.map((ack) => ack.seq), Array.from({ length: count }, (_, i) => i + 1), 'stored in the order sent')
    assert.equal(alice.pending('error').length, 0, 'nothing refused')
    const messages = []
    for (let i = 0; i < count; i++) messages.push(await alice.next('message'))
    assert.deepEqual(messages.map((message) => message.text), Array.from({ length: count }, (_, i) => `m${i}`))
  })

  test(`150 joins of one room in one burst get 150 joined, one membership and one presence, with ${name}`, { skip }, async (t) => {
    const broker = make(t)
    const { wsUrl, app } = await startServer(t, { home: false, rateLimit: GENEROUS_RATE, ...(broker ? { broker } : {}) })
    const watcher = await RawClient.connect(t, wsUrl)
    await watcher.request('joined', { type: 'join', room: 'lobby' })
    const joiner = await RawClient.connect(t, `${wsUrl}?name=joiner`)
    const count = 150
    pipeline(joiner, Array.from({ length: count }, (_, i) => ({ type: 'join', room: 'lobby', ref: `j${i}` })))
    const replies = []
    for (let i = 0; i < count; i++) replies.push(await joiner.next('joined', () => true, 15_000))
    assert.deepEqual(replies.map((joined) => joined.ref), Array.from({ length: count }, (_, i) => `j${i}`))
    for (const joined of replies) assert.equal(joined.members.filter((member) => member.name === 'joiner').length, 1)
    assert.equal((await app.hub.members('lobby')).length, 2, 'one membership')
    await watcher.next('presence', (presence) => presence.member.name === 'joiner')
    await sleep(100)
    assert.equal(watcher.pending('presence').length, 0, 'one presence')
    assert.equal(joiner.pending('error').length, 0, 'nothing refused')
  })
}

test('past the rate, rate_limited carries the ref of the message it refuses, and the others are answered in order', async (t) => {
  const { wsUrl } = await startServer(t, { home: false, rateLimit: { perSecond: 1, burst: 5 } })
  const client = await RawClient.connect(t, wsUrl)
  pipeline(client, Array.from({ length: 8 }, (_, i) => ({ type: 'ping', ref: `p${i}` })))
  const refused = []
  for (let i = 0; i < 3; i++) refused.push(await client.next('error'))
  assert.deepEqual(refused.map((error) => [error.code, error.ref]), [['rate_limited', 'p5'], ['rate_limited', 'p6'], ['rate_limited', 'p7']])
  const pongs = []
  for (let i = 0; i < 5; i++) pongs.push(await client.next('pong'))
  assert.deepEqual(pongs.map((pong) => pong.ref), ['p0', 'p1', 'p2', 'p3', 'p4'])
})

test('a paused reader closed as a slow consumer sees 4008 when it reads again within the grace, with a short heartbeat', async (t) => {
  const heartbeatInterval = 500
  const { wsUrl, app } = await startServer(t, { home: false, heartbeatInterval, maxBufferedBytes: 65536 })
  const slow = await RawClient.connect(t, wsUrl)
  await slow.request('joined', { type: 'join', room: 'r' })
  const raw = (slow.socket as unknown as { _socket: import('node:net').Socket })._socket
  raw.pause()
  const text = 'x'.repeat(2000)
  for (let i = 0; i < 4000 && app.hub.stats().slowConsumerCloses === 0; i++) {
    await app.hub.broadcast('r', text)
    if (i % 50 === 0) await sleep(1)
  }
  assert.equal(app.hub.stats().slowConsumerCloses, 1)
  // Several heartbeat ticks pass inside the close grace: none may cut the close short.
  await sleep(heartbeatInterval * 4)
  raw.resume()
  assert.equal((await slow.closed).code, 4008)
})

test('a connection paused behind a slow handler is not taken for a silent peer by the heartbeat', async (t) => {
  const heartbeatInterval = 200
  let release: () => void = () => {}
  const { wsUrl } = await startServer(t, {
    home: false,
    heartbeatInterval,
    rateLimit: GENEROUS_RATE,
    onJoin: async (room) => {
      if (room === 'slow') await new Promise<void>((resolve) => { release = resolve })
      return true
    },
  })
  const client = await RawClient.connect(t, wsUrl)
  pipeline(client, [{ type: 'join', room: 'slow', ref: 'j' }, ...Array.from({ length: 20 }, (_, i) => ({ type: 'ping', ref: `p${i}` }))])
  await sleep(heartbeatInterval * 4)
  assert.equal(client.socket.readyState, WebSocket.OPEN)
  release()
  await client.next('joined')
  for (let i = 0; i < 20; i++) assert.equal((await client.next('pong')).ref, `p${i}`)
})
