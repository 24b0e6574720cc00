/**
 * The client library against a real server on 127.0.0.1: requests and their
 * rejections, resume across server restarts and network loss, queued sends
 * stored exactly once, gap reporting, dead-connection detection, close codes.
 */
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import type { AddressInfo } from 'node:net'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import Fastify, { type FastifyInstance } from 'fastify'
import { WebSocket, WebSocketServer } from 'ws'
import chatRooms, { MemoryBroker, type ChatRoomsOptions } from '../lib/index.js'
import { ChatClient, ChatClientError, type ChatClientEvents, type ChatClientOptions, type WebSocketConstructor, type WebSocketLike } from '../lib/client/index.js'
import { CloseCodes } from '../lib/errors.js'
import { byQuery } from './helpers/users.js'
import { startRelay, type Relay } from './helpers/relay.js'

const WAIT_MS = 5000

const cleanups = new WeakMap<TestContext, Array<() => unknown>>()

/** Cleans up in reverse order, so clients close before the servers and relays they would reconnect to. */
function onCleanup (t: TestContext, cleanup: () => unknown): void {
  let list = cleanups.get(t)
  if (!list) {
    const created: Array<() => unknown> = list = []
    cleanups.set(t, created)
    t.after(async () => { for (const step of created.reverse()) await step() })
  }
  list.push(cleanup)
}

interface Server {
  app: FastifyInstance
  port: number
  url: string
}

/** A server on `port` (0: any free one); `beforeListen` runs once the hub exists but no client can connect. */
async function serve (t: TestContext, options: ChatRoomsOptions & { port?: number } = {}, beforeListen?: (app: FastifyInstance) => Promise<unknown>): Promise<Server> {
  const { port = 0, ...chatOptions } = options
  const app = Fastify({ logger: false })
  await app.register(chatRooms, { home: false, ...chatOptions })
  await app.ready()
  await beforeListen?.(app)
  await app.listen({ host: '127.0.0.1', port })
  onCleanup(t, () => app.close())
  const bound = (app.server.address() as AddressInfo).port
  return { app, port: bound, url: `ws://127.0.0.1:${bound}/ws` }
}

/** A client with test-sized timings; closed after the test. */
function connect (t: TestContext, url: string, options: ChatClientOptions = {}): ChatClient {
  const client = new ChatClient(url, { WebSocket, reconnect: { minDelay: 50, maxDelay: 200 }, requestTimeout: 2000, ...options })
  onCleanup(t, () => client.close())
  return client
}

/** Everything a client emits, by event name, in order. */
function record (client: ChatClient): { [K in keyof ChatClientEvents]: Array<ChatClientEvents[K]> } {
  const events = { welcome: [], status: [], joined: [], message: [], update: [], presence: [], typing: [], read: [], left: [], gap: [], error: [] }
  for (const type of Object.keys(events) as Array<keyof ChatClientEvents>) {
    client.on(type, (event) => { (events[type] as unknown[]).push(event) })
  }
  return events
}

async function until (condition: () => boolean, what: string, waitMs = WAIT_MS): Promise<void> {
  const deadline = Date.now() + waitMs
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

const opened = (client: ChatClient): Promise<void> => until(() => client.status === 'open', 'status open')
const texts = (messages: Array<{ text: string }>): string[] => messages.map((message) => message.text)

/** A relay in front of the server on `port`, closed after the test's clients. */
async function relay (t: TestContext, port: number): Promise<Relay> {
  const network = await startRelay(port)
  onCleanup(t, () => network.close())
  return network
}

test('requests resolve with their answers and room events reach the other members', async (t) => {
  const { url } = await serve(t)
  const alice = connect(t, url, { name: 'alice' })
  const bob = connect(t, url, { name: 'bob' })
  const bobSaw = record(bob)
  assert.equal(alice.status, 'connecting')

  const joined = await alice.join('lobby')
  assert.deepEqual(joined.members.map((member) => member.name), ['alice'])
  await bob.join('lobby')
  assert.equal(await alice.send('lobby', 'one'), 1)
  assert.equal(await alice.send('lobby', 'two'), 2)
  await until(() => bobSaw.message.length === 2, 'bob gets both messages')
  assert.deepEqual(texts(bobSaw.message), ['one', 'two'])

  assert.deepEqual(texts((await bob.history('lobby', { before: 2, limit: 1 })).messages), ['one'])
  assert.equal(await alice.nick('  carol '), 'carol')
  assert.equal(alice.name, 'carol')
  alice.typing('lobby')
  await until(() => bobSaw.typing.length === 1 && bobSaw.presence.length === 1, 'typing and rename reach bob')
  assert.equal(bobSaw.presence[0]?.action, 'rename')
  assert.equal(bobSaw.typing[0]?.member.name, 'carol')

  await alice.leave('lobby')
  assert.deepEqual(alice.rooms, [])
  await until(() => bobSaw.presence.length === 2, 'bob sees alice leave')
  assert.equal(bobSaw.presence[1]?.action, 'leave')
})

/** Options under which `?user=` is who a connection is: each client of one user is another tab of one person. */
const users: ChatRoomsOptions = { authenticate: byQuery }

test('two clients of one user share welcome.user; presence says first on the first join and last on the last leave; a guest is its own user', async (t) => {
  const { url } = await serve(t, users)
  const tab1 = connect(t, `${url}?user=alice`)
  const tab2 = connect(t, `${url}?user=alice`)
  const bob = connect(t, `${url}?user=bob`)
  const bobSaw = record(bob)
  await bob.join('lobby')
  await tab1.join('lobby')
  await tab2.join('lobby')
  assert.equal(tab1.user, 'alice')
  assert.equal(tab2.user, 'alice')
  assert.notEqual(tab1.id, tab2.id, 'two connections')
  tab1.close()
  tab2.close()
  await until(() => bobSaw.presence.length === 4, 'bob sees both tabs come and go')
  assert.deepEqual(bobSaw.presence.map(({ action, member, first, last }) => [action, member.user, first ?? last]),
    [['join', 'alice', true], ['join', 'alice', false], ['leave', 'alice', false], ['leave', 'alice', true]])

  const guests = await serve(t)
  const guest = connect(t, guests.url)
  await opened(guest)
  assert.equal(guest.user, guest.id)
})

test('read() moves the user\'s marker: its other tab hears it, it never moves back or past the latest seq, and joined.read returns it', async (t) => {
  const { url } = await serve(t, users)
  const tab1 = connect(t, `${url}?user=alice`)
  const tab2 = connect(t, `${url}?user=alice`)
  const bob = connect(t, `${url}?user=bob`)
  const saw1 = record(tab1)
  const saw2 = record(tab2)
  const bobSaw = record(bob)
  for (const client of [tab1, tab2, bob]) await client.join('lobby')
  for (const text of ['one', 'two', 'three']) await bob.send('lobby', text)

  assert.equal(await tab1.read('lobby', 2), 2)
  await until(() => saw2.read.length === 1, 'the other tab hears of the marker')
  assert.deepEqual(saw2.read.map(({ room, seq }) => [room, seq]), [['lobby', 2]])
  assert.equal(await tab2.read('lobby', 1), 2, 'a marker never moves back')
  assert.equal(await tab2.read('lobby', 99), 3, 'nor past the latest seq')
  await until(() => saw1.read.length === 1, 'the first tab hears of the move')
  assert.equal(saw1.read[0]?.seq, 3)

  const tab3 = connect(t, `${url}?user=alice`)
  assert.equal((await tab3.join('lobby')).read, 3, 'a new tab joins with the marker')
  assert.equal((await bob.join('lobby')).read, 0, 'another user has a marker of their own')
  await assert.rejects(tab1.read('elsewhere', 1), (error: unknown) => error instanceof ChatClientError && error.code === 'not_joined')
  assert.deepEqual(bobSaw.read, [], 'another user hears of no marker')
})

test('kicked or banned, the client gets left with the reason and does not rejoin the room on reconnect; its other rooms are kept', async (t) => {
  const server = await serve(t, users)
  const mallory = connect(t, `${server.url}?user=mallory`)
  const malloryTab2 = connect(t, `${server.url}?user=mallory`)
  const saw = record(mallory)
  const saw2 = record(malloryTab2)
  for (const room of ['lobby', 'random']) await mallory.join(room)
  await malloryTab2.join('lobby')

  await server.app.hub.kick('lobby', 'mallory')
  await until(() => saw.left.length === 1 && saw2.left.length === 1, 'both tabs are told')
  assert.deepEqual(saw.left, [{ room: 'lobby', reason: 'kicked' }])
  assert.deepEqual(mallory.rooms, ['random'])
  await mallory.join('lobby') // a kick does not keep anyone out

  await server.app.hub.ban('lobby', 'mallory')
  await until(() => saw.left.length === 2, 'the ban is told')
  assert.deepEqual(saw.left[1], { room: 'lobby', reason: 'banned' })
  await assert.rejects(mallory.send('lobby', 'still here?'), (error: unknown) => error instanceof ChatClientError && error.code === 'not_joined')

  // A new connection rejoins only what the client is still in: the banned room would be refused.
  server.app.hub.disconnect(mallory.id as string, CloseCodes.slowConsumer, 'slow consumer')
  await until(() => saw.welcome.length === 2 && mallory.status === 'open', 'the client is back')
  assert.deepEqual(mallory.rooms, ['random'])
  assert.deepEqual(saw.error, [], 'no refused rejoin')
  assert.deepEqual((await server.app.hub.members('lobby')).map((member) => member.user), [])
  await assert.rejects(mallory.join('lobby'), (error: unknown) => error instanceof ChatClientError && error.code === 'forbidden')
})

test('members() pages the roster past what joined carries, in id order; joined has memberCount', async (t) => {
  const { url } = await serve(t, { maxMembersInReply: 2 })
  const clients = ['a', 'b', 'c', 'd', 'e'].map((name) => connect(t, url, { name }))
  for (const client of clients) await client.join('lobby')
  const alice = clients[0] as ChatClient
  const joined = await alice.join('lobby')
  assert.equal(joined.members.length, 2)
  assert.equal(joined.memberCount, 5)
  const ids = joined.members.map((member) => member.id)
  for (let page = await alice.members('lobby', { after: ids.at(-1) }); ; page = await alice.members('lobby', { after: ids.at(-1) })) {
    ids.push(...page.members.map((member) => member.id))
    if (!page.more || ids.length > 5) break
  }
  assert.deepEqual(ids, clients.map((client) => client.id ?? '').sort())
  assert.deepEqual((await alice.members('lobby', { limit: 1 })).members.map((member) => member.id), ids.slice(0, 1))
})

test('a request answered by an error rejects with its code; an unanswerable error is an error event', async (t) => {
  const { url } = await serve(t)
  const client = connect(t, url)
  const saw = record(client)
  const rejectsWith = (promise: Promise<unknown>, code: string): Promise<void> =>
    assert.rejects(promise, (error: unknown) => error instanceof ChatClientError && error.code === code)

  await rejectsWith(client.send('nowhere', 'hi'), 'not_joined')
  await rejectsWith(client.join('not a room!'), 'invalid')
  assert.deepEqual(client.rooms, [], 'a refused join is not kept')
  await client.join('lobby')
  await rejectsWith(client.history('lobby', { limit: 1000 }), 'invalid')
  await rejectsWith(client.nick(' '), 'invalid')
  client.typing('nowhere')
  await until(() => saw.error.length === 1, 'the error event')
  assert.equal(saw.error[0]?.code, 'not_joined')
})

test('after a server restart with the same broker, every room resumes: missed messages once, offline sends stored once, no gap', async (t) => {
  const broker = new MemoryBroker()
  const first = await serve(t, { broker })
  const alice = connect(t, first.url, { name: 'alice' })
  const saw = record(alice)
  await Promise.all([alice.join('a'), alice.join('b')])
  await alice.send('a', 'before')

  await first.app.close()
  await until(() => alice.status === 'reconnecting', 'reconnecting')
  const offline = [alice.send('a', 'offline a'), alice.send('b', 'offline b')]
  await serve(t, { broker, port: first.port }, (app) => app.hub.broadcast('a', 'while away'))

  assert.deepEqual(await Promise.all(offline), [3, 1])
  await opened(alice)
  assert.deepEqual(texts(saw.message.filter((m) => m.room === 'a')), ['before', 'while away', 'offline a'])
  assert.deepEqual(texts(saw.message.filter((m) => m.room === 'b')), ['offline b'])
  assert.deepEqual(saw.gap, [])
  assert.deepEqual(texts((await alice.history('a')).messages), ['before', 'while away', 'offline a'])
  assert.deepEqual(saw.status.map((change) => change.status).filter((status, i, all) => status !== all[i - 1]), ['open', 'reconnecting', 'open'])
  assert.equal(saw.status.find((change) => change.status === 'reconnecting')?.code, 1001)
})

test('a fresh broker after a restart is a new epoch: gap is reported and the new stream is delivered from seq 1', async (t) => {
  const first = await serve(t, { broker: new MemoryBroker() })
  const alice = connect(t, first.url)
  const saw = record(alice)
  const { epoch: oldEpoch } = await alice.join('a')
  await alice.send('a', 'old 1')
  await alice.send('a', 'old 2')

  await first.app.close()
  await serve(t, { broker: new MemoryBroker(), port: first.port }, (app) => app.hub.broadcast('a', 'new 1'))
  await until(() => saw.gap.length === 1, 'the gap event')
  const [gap] = saw.gap
  assert.equal(gap?.room, 'a')
  assert.equal(gap?.since, 2)
  assert.equal(gap?.previousEpoch, oldEpoch)
  assert.notEqual(gap?.epoch, oldEpoch)
  await until(() => saw.message.length === 3, 'the new stream')
  assert.deepEqual(saw.message.map((m) => [m.seq, m.text]), [[1, 'old 1'], [2, 'old 2'], [1, 'new 1']])
  assert.equal(await alice.send('a', 'new 2'), 2)
})

test('a gap in the same epoch is reported when the history no longer reaches back to the last seq seen', async (t) => {
  const broker = new MemoryBroker()
  const first = await serve(t, { broker, historySize: 3 })
  const alice = connect(t, first.url)
  const saw = record(alice)
  const { epoch } = await alice.join('a')
  await alice.send('a', 'seen')

  await first.app.close()
  await serve(t, { broker, historySize: 3, port: first.port }, async (app) => {
    for (const text of ['m2', 'm3', 'm4', 'm5', 'm6']) await app.hub.broadcast('a', text)
  })
  await until(() => saw.message.length === 4, 'what the history still has')
  assert.deepEqual(saw.gap, [{ room: 'a', since: 1, previousEpoch: epoch, epoch }])
  assert.deepEqual(texts(saw.message), ['seen', 'm4', 'm5', 'm6'])
})

test('a send cut off by a network drop after the server stored it resolves once, from the rejoin', async (t) => {
  const { url, port } = await serve(t)
  const network = await relay(t, port)
  const alice = connect(t, network.url)
  const bob = connect(t, url)
  const aliceSaw = record(alice)
  const bobSaw = record(bob)
  await alice.join('a')
  await bob.join('a')

  network.mute('to-client')
  const sent = alice.send('a', 'cut off')
  await until(() => bobSaw.message.length === 1, 'the server stored it')
  network.cut()
  assert.equal(await sent, 1)
  await opened(alice)
  assert.deepEqual(texts(aliceSaw.message), ['cut off'])
  assert.equal(await alice.send('a', 'next'), 2, 'stored once')
})

test('a send whose stored copy fell out of the history is retried with the same cid and stored once', async (t) => {
  const { url, port } = await serve(t, { historySize: 0 })
  const network = await relay(t, port)
  const alice = connect(t, network.url)
  const bob = connect(t, url)
  const bobSaw = record(bob)
  await alice.join('a')
  await bob.join('a')

  network.mute('to-client')
  const sent = alice.send('a', 'retried')
  await until(() => bobSaw.message.length === 1, 'the server stored it')
  network.cut()
  assert.equal(await sent, 1, 'the retry is answered with the first seq')
  assert.equal(await alice.send('a', 'next'), 2)
  await until(() => bobSaw.message.length === 2, 'the next message')
  assert.deepEqual(texts(bobSaw.message), ['retried', 'next'])
})

test('a silent dead connection is found by protocol ping and replaced', async (t) => {
  const { port } = await serve(t)
  const network = await relay(t, port)
  const alice = connect(t, network.url, { pingInterval: 100 })
  const saw = record(alice)
  await alice.join('a')

  network.mute('both')
  await until(() => alice.status === 'reconnecting', 'the dead connection is noticed', 1000)
  assert.equal(saw.status.at(-1)?.reason, 'no answer to ping')
  await opened(alice)
  assert.equal(await alice.send('a', 'alive again'), 1)
})

test('close code 4008 reconnects at once; 1008 closes for good', async (t) => {
  const { url, app } = await serve(t)
  const alice = connect(t, url, { reconnect: { minDelay: 60_000, maxDelay: 60_000 } })
  const saw = record(alice)
  await alice.join('a')

  app.hub.disconnect(alice.id as string, 4008, 'slow consumer')
  await until(() => saw.status.some((change) => change.status === 'reconnecting'), 'reconnecting')
  assert.equal(saw.status.find((change) => change.status === 'reconnecting')?.retryIn, 0)
  await opened(alice)

  const pending = assert.rejects(alice.history('a'), (error: unknown) => error instanceof ChatClientError && error.code === 'closed')
  app.hub.disconnect(alice.id as string, 1008, 'policy')
  await until(() => alice.status === 'closed', 'closed')
  assert.equal(saw.status.at(-1)?.code, 1008)
  await pending
  await new Promise((resolve) => setTimeout(resolve, 200))
  assert.equal(app.hub.stats().connections, 0, 'no reconnect')
})

test('offline sends are bounded, and close() rejects what waits and stops reconnecting', async (t) => {
  const { port, app } = await serve(t)
  await app.close()
  const client = connect(t, `ws://127.0.0.1:${port}/ws`, { maxQueuedSends: 2 })
  const rejectsWith = (code: string) => (error: unknown) => error instanceof ChatClientError && error.code === code
  const queued = [client.join('a'), client.send('a', 'one'), client.send('a', 'two')].map((request) => assert.rejects(request, rejectsWith('closed')))
  await assert.rejects(client.send('a', 'three'), rejectsWith('queue_full'))
  await until(() => client.status === 'reconnecting', 'reconnecting')

  client.close()
  assert.equal(client.status, 'closed')
  await Promise.all(queued)
  await assert.rejects(client.send('a', 'after'), rejectsWith('closed'))
})

test('a request without an answer times out with its cid', async (t) => {
  const silent = new WebSocketServer({ host: '127.0.0.1', port: 0 })
  onCleanup(t, () => silent.close())
  silent.on('connection', (socket) => socket.send(JSON.stringify({ type: 'welcome', protocol: 2, id: 'x', user: 'x', name: 'x' })))
  await new Promise((resolve) => silent.once('listening', resolve))
  const client = connect(t, `ws://127.0.0.1:${(silent.address() as AddressInfo).port}`, { requestTimeout: 200 })
  await opened(client)
  await assert.rejects(client.send('a', 'hello', { cid: 'my-cid' }), (error: unknown) =>
    error instanceof ChatClientError && error.code === 'timeout' && error.cid === 'my-cid')
})

/** One token a second, three at once: a join takes one, so the third send of a burst after it is refused. */
const RATE_LIMIT = { perSecond: 1, burst: 3 }
/** A `ws` WebSocket that records every frame the client writes. */
function recordingWebSocket (written: string[]): WebSocketConstructor {
  return class extends WebSocket {
    constructor (url: string) {
      super(url)
      const send = this.send.bind(this)
      this.send = ((data: string) => { written.push(data); send(data) }) as WebSocket['send']
    }
  }
}

test('a send refused by the rate limit goes out again with its cid once retryAfter has passed, and is stored once, after the ones before it', async (t) => {
  const { url, app } = await serve(t, { rateLimit: RATE_LIMIT })
  const written: string[] = []
  const client = connect(t, url, { requestTimeout: 10_000, WebSocket: recordingWebSocket(written) })
  const events = record(client)
  await client.join('a')

  const seqs = await Promise.all(['one', 'two', 'three'].map((text) => client.send('a', text, { cid: `cid-${text}` })))
  assert.deepEqual(seqs, [1, 2, 3])
  assert.deepEqual(texts((await app.hub.history('a')).messages), ['one', 'two', 'three'])
  // Had the client retried before retryAfter, the server would have refused it again, and it would be written more often.
  assert.equal(written.filter((frame) => frame.includes('"cid-three"')).length, 2, 'written, refused, and written once more when the rate allowed')
  assert.deepEqual(events.error, [], 'flow control is not reported as an error')
  assert.equal(client.status, 'open')
})

test('queued sends refused by the rate limit after a reconnect go out again in order and are stored once', async (t) => {
  const broker = new MemoryBroker()
  const first = await serve(t, { broker, rateLimit: RATE_LIMIT })
  const client = connect(t, first.url, { requestTimeout: 10_000 })
  await client.join('a')
  await first.app.close()
  await until(() => client.status === 'reconnecting', 'reconnecting')
  const queued = Promise.all(['one', 'two', 'three'].map((text) => client.send('a', text, { cid: `cid-${text}` })))

  const second = await serve(t, { broker, rateLimit: RATE_LIMIT, port: first.port })
  // The rejoin takes a token and the queued sends go out together once it is answered: the third is refused, then retried.
  assert.deepEqual(await queued, [1, 2, 3])
  assert.deepEqual(texts((await second.app.hub.history('a')).messages), ['one', 'two', 'three'])
  assert.equal(client.status, 'open')
})

test('a paste of 100 sends at once under the default rate limit is stored whole, once, in order, on the one connection', async (t) => {
  const { url, app } = await serve(t)
  const client = connect(t, url, { requestTimeout: 10_000 })
  const events = record(client)
  await client.join('a')
  const paste = Array.from({ length: 100 }, (_, i) => `line ${i + 1}`)
  const seqs = await Promise.all(paste.map((text) => client.send('a', text)))
  assert.deepEqual(seqs, paste.map((_, i) => i + 1))
  const { messages } = await app.hub.history('a', { limit: 200 })
  assert.deepEqual(texts(messages), paste)
  assert.deepEqual(events.status.map(({ status }) => status), ['open'], 'the connection was never lost')
  assert.equal(client.status, 'open')
})

const closingClient = fileURLToPath(new URL('./helpers/closing-client-process.js', import.meta.url))
/** Where in the reconnect cycle a listener (or a timer) calls `close()`, and how many sockets the client has opened by then. */
const CLOSE_POINTS = {
  'status reconnecting': 1,
  'waiting for the retry': 1,
  connecting: 2,
  welcome: 2,
  joined: 2,
  gap: 2,
  message: 2,
  error: 2,
  'status open': 2,
}

for (const [point, sockets] of Object.entries(CLOSE_POINTS)) {
  test(`close() at "${point}" ends reconnection: the status stays closed, no socket is opened after it, the process exits by itself`, async (t) => {
    let refuseJoins = false
    // One message of history: the two sent while the client is away make its rejoin report a gap, then deliver one.
    const { app, url } = await serve(t, { historySize: 1, onJoin: () => !refuseJoins })
    let upgrades = 0
    app.server.on('upgrade', () => { upgrades++ })
    const child = spawn(process.execPath, [closingClient, url, point], { stdio: ['ignore', 'pipe', 'inherit'] })
    onCleanup(t, () => child.kill('SIGKILL'))
    const lines: Array<{ socket?: number, event?: string, status?: string, ready?: string, closing?: string }> = []
    createInterface({ input: child.stdout }).on('line', (line) => lines.push(JSON.parse(line) as typeof lines[number]))
    await until(() => lines.some((line) => line.ready !== undefined), 'the client in room a')
    const id = lines.find((line) => line.ready !== undefined)?.ready as string

    refuseJoins = point === 'error'
    app.hub.disconnect(id, CloseCodes.goingAway, 'restart')
    await until(() => app.hub.stats().connections === 0, 'the server to drop the connection')
    await app.hub.broadcast('a', 'missed 1')
    await app.hub.broadcast('a', 'missed 2')
    // A client with a timer or a socket left would keep its process alive (its ping alone every 25 s).
    await until(() => child.exitCode !== null, 'the client process to exit by itself')

    assert.equal(child.exitCode, 0)
    const closing = lines.findIndex((line) => line.closing === point)
    assert.ok(closing >= 0, `close() was called at ${point}`)
    const events = lines.flatMap((line) => line.event === undefined ? [] : [line.status ?? line.event])
    assert.equal(events.at(-1), 'closed', `nothing after closed: ${events.join(', ')}`)
    assert.equal(events.filter((event) => event === 'closed').length, 1, `closed once and for good: ${events.join(', ')}`)
    assert.equal(events.includes('error'), point === 'error', `a room is not reported lost because the client closed: ${events.join(', ')}`)
    const opened = lines.flatMap((line, index) => line.socket === undefined ? [] : [index])
    assert.equal(opened.length, sockets, 'sockets the client opened')
    assert.ok(opened.every((index) => index < closing), 'no socket opened after close()')
    // A socket closed while connecting may not have reached the server.
    assert.ok(upgrades >= 1 && upgrades <= sockets, `${upgrades} connections at the server`)
  })
}

/** `ws` behind the face a browser's WebSocket shows: its error event says nothing of a refused upgrade's status. */
class StatusHidingWebSocket implements WebSocketLike {
  onmessage: WebSocketLike['onmessage'] = null
  onclose: WebSocketLike['onclose'] = null
  onerror: WebSocketLike['onerror'] = null
  private readonly socket: WebSocket

  constructor (url: string) {
    this.socket = new WebSocket(url)
    this.socket.onmessage = (event) => this.onmessage?.(event)
    this.socket.onclose = (event) => this.onclose?.(event)
    this.socket.onerror = () => this.onerror?.({})
  }

  send (data: string): void { this.socket.send(data) }
  close (code?: number, reason?: string): void { this.socket.close(code, reason) }
}

test('a refused authentication ends the client as unauthorized instead of retrying, whether the socket names the 401 (ws) or hides it (a browser)', async (t) => {
  const asked: string[] = []
  const { url } = await serve(t, {
    authenticate: (request) => {
      const token = (request.query as { token?: string }).token ?? ''
      asked.push(`${request.ws ? 'upgrade' : 'http'} ${token}`)
      return token === 'good' ? { name: 'alice' } : undefined
    },
  })
  for (const [WebSocketImpl, expected] of [[WebSocket, ['upgrade bad']], [StatusHidingWebSocket, ['upgrade bad', 'http bad']]] as const) {
    asked.length = 0
    const refused = connect(t, `${url}?token=bad`, { WebSocket: WebSocketImpl as unknown as WebSocketConstructor })
    const events = record(refused)
    const joining = refused.join('lobby').then(() => 'joined', (error: ChatClientError) => error.code)
    await until(() => refused.status === 'unauthorized', 'status unauthorized')
    assert.equal(await joining, 'closed', 'what waited is rejected')
    // Past the longest retry delay (200 ms): a retry would have asked again.
    await new Promise((resolve) => setTimeout(resolve, 400))
    assert.deepEqual(asked, expected, 'asked once, and (hidden) once more over HTTP, never again')
    assert.deepEqual(events.status.map(({ status, code }) => [status, code]).at(-1), ['unauthorized', 401])
    assert.equal(events.status.some(({ status }) => status === 'open'), false)
  }
  // The same server lets in a good token: it is the refusal, not the server, that ended those clients.
  const allowed = connect(t, `${url}?token=good`, { WebSocket: StatusHidingWebSocket as unknown as WebSocketConstructor })
  await opened(allowed)
})

// ------------------------------------------------------------ messages that change

const stateOf = (client: ChatClient, room: string): unknown => client.store(room)?.messages.map(({ seq, text, edited, deleted, reactions }) => ({ seq, text, edited, deleted, reactions }))

test('edit, delete and react resolve with their entry\'s seq; both members get the updates and hold the same state in their stores', async (t) => {
  const { url } = await serve(t, users)
  const alice = connect(t, `${url}?user=alice`)
  const bob = connect(t, `${url}?user=bob`)
  const bobSaw = record(bob)
  await alice.join('a')
  await bob.join('a')
  const first = await alice.send('a', 'helo')
  const second = await alice.send('a', 'to be taken back')

  assert.equal(await alice.edit('a', first, 'hello'), 3)
  assert.equal(await bob.react('a', first, '👍'), 4)
  assert.equal(await bob.react('a', first, '👍'), 4, 'a reaction given twice changes nothing: acked with the latest seq')
  assert.equal(await alice.react('a', first, '👍'), 5)
  assert.equal(await bob.react('a', first, '👍', false), 6)
  assert.equal(await alice.delete('a', second), 7)

  await until(() => bobSaw.update.length === 5, 'the five updates')
  assert.deepEqual(bobSaw.update.map(({ seq, target, action, by }) => [seq, target, action, by.user]), [
    [3, 1, 'edit', 'alice'], [4, 1, 'react', 'bob'], [5, 1, 'react', 'alice'], [6, 1, 'unreact', 'bob'], [7, 2, 'delete', 'alice'],
  ])
  const edited = bobSaw.update[0]?.ts
  const expected = [
    { seq: 1, text: 'hello', edited, deleted: undefined, reactions: { '👍': ['alice'] } },
    { seq: 2, text: '', edited: undefined, deleted: true, reactions: undefined },
  ]
  assert.deepEqual(stateOf(bob, 'a'), expected)
  assert.deepEqual(stateOf(alice, 'a'), expected)

  const refused = async (change: Promise<number>): Promise<string> => await change.then(() => 'stored', (error: ChatClientError) => error.code)
  assert.equal(await refused(bob.edit('a', first, 'not yours')), 'forbidden')
  assert.equal(await refused(alice.edit('a', second, 'gone')), 'not_found')
  assert.equal(await refused(alice.react('a', 3, '👍')), 'not_found', 'an update is no message')

  // A newcomer's store starts from the messages in their current state.
  const carol = connect(t, `${url}?user=carol`)
  await carol.join('a')
  assert.deepEqual(stateOf(carol, 'a'), expected)
})

test('a change cut off by a network drop after the server stored it resolves once, from the rejoin\'s replay', async (t) => {
  const { url, port } = await serve(t, users)
  const network = await relay(t, port)
  const alice = connect(t, `${network.url}?user=alice`)
  const bob = connect(t, `${url}?user=bob`)
  const aliceSaw = record(alice)
  const bobSaw = record(bob)
  await alice.join('a')
  await bob.join('a')
  const seq = await alice.send('a', 'typo')

  network.mute('to-client')
  const edited = alice.edit('a', seq, 'fixed')
  await until(() => bobSaw.update.length === 1, 'the server stored the edit')
  network.cut()
  assert.equal(await edited, 2)
  await opened(alice)
  assert.deepEqual(aliceSaw.update.map((update) => [update.seq, update.text]), [[2, 'fixed']], 'replayed once by the resume')
  assert.equal(alice.store('a')?.get(seq)?.text, 'fixed')
  assert.equal(await alice.send('a', 'next'), 3, 'stored once')
})

test('the store merges history pages, keeps storedMessages and what pages brought, dropping the oldest, and starts again after a gap', async (t) => {
  const broker = new MemoryBroker()
  const first = await serve(t, { ...users, broker, historyOnJoin: 2 })
  for (const text of ['m1', 'm2', 'm3', 'm4']) await first.app.hub.broadcast('a', text)
  const alice = connect(t, `${first.url}?user=alice`, { storedMessages: 3 })
  await alice.join('a')
  assert.deepEqual(texts(alice.store('a')?.messages ?? []), ['m3', 'm4'])
  await first.app.hub.editMessage('a', 1, 'm1 edited')
  await until(() => alice.store('a')?.size === 2 && alice.store('a')?.get(1) === undefined, 'an edit of a message not held')
  await alice.history('a', { before: 3 })
  assert.deepEqual(texts(alice.store('a')?.messages ?? []), ['m1 edited', 'm2', 'm3', 'm4'], 'a page goes in before the live messages')
  await first.app.hub.broadcast('a', 'm6')
  await until(() => alice.store('a')?.get(6) !== undefined, 'm6')
  assert.deepEqual(texts(alice.store('a')?.messages ?? []), ['m1 edited', 'm2', 'm3', 'm4', 'm6'], 'room for what the page brought')
  await first.app.hub.broadcast('a', 'm7')
  await until(() => alice.store('a')?.get(7) !== undefined, 'm7')
  assert.deepEqual(texts(alice.store('a')?.messages ?? []), ['m2', 'm3', 'm4', 'm6', 'm7'])

  // A fresh broker is a new epoch: what the store held says nothing of the new stream.
  await first.app.close()
  await serve(t, { ...users, broker: new MemoryBroker(), port: first.port }, (app) => app.hub.broadcast('a', 'new 1'))
  await until(() => alice.store('a')?.messages.length === 1, 'the new stream alone')
  assert.deepEqual(texts(alice.store('a')?.messages ?? []), ['new 1'])
  await alice.leave('a')
  assert.equal(alice.store('a'), undefined)
})
