/** Every error code and close code of PROTOCOL.md, over real sockets. */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import WebSocket from 'ws'
import { ChatError, MemoryBroker, type MessageDraft } from '../lib/index.js'
import { RATE_LIMIT_HOLD_MS } from '../lib/connection.js'
import { RawClient, sleep } from './helpers/client.js'
import { startServer } from './helpers/server.js'

async function errorFor (client: RawClient, message: object | string): Promise<{ code: string, message: string, ref?: string }> {
  client.socket.send(typeof message === 'string' ? message : JSON.stringify(message))
  return client.next('error')
}

test('bad_json: a frame that is not a JSON object', async (t) => {
  const { wsUrl } = await startServer(t, { home: false })
  const client = await RawClient.connect(t, wsUrl)
  for (const frame of ['not json', '[1,2]', 'null', '"text"', '42', '['.repeat(5000) + ']'.repeat(5000)]) {
    const error = await errorFor(client, frame)
    assert.equal(error.code, 'bad_json', frame.slice(0, 20))
  }
  assert.equal((await client.request('pong', { type: 'ping' })).type, 'pong', 'the connection keeps working')
})

test('invalid: a message that breaks its schema names the field, and echoes a valid ref', async (t) => {
  const { wsUrl } = await startServer(t, { home: false, maxTextLength: 10 })
  const client = await RawClient.connect(t, wsUrl)
  const cases: Array<[object, RegExp]> = [
    [{ type: 'join' }, /^room: missing, must be a string of 1 to 65536 characters$/],
    [{ type: 'join', room: 'r', extra: 1 }, /^extra: unknown field \(allowed: type, ref, room, since, epoch\)$/],
    [{ type: 'join', room: 'has space' }, /^room: must match/],
    [{ type: 'join', room: 'r', since: -1 }, /^since: must be an integer >= 0$/],
    [{ type: 'send', room: 'r', text: '' }, /text/],
    [{ type: 'send', room: 'r', text: 'x'.repeat(11) }, /text: must be at most 10 characters/],
    [{ type: 'history', room: 'r', limit: 101 }, /^limit: must be an integer from 1 to 100$/],
    [{ type: 'ping', ref: 'x'.repeat(65) }, /^ref: must be a string of at most 64 characters$/],
    [{ type: 5 }, /type/],
    [JSON.parse('{"type":"join","room":"r","__proto__":{"polluted":true}}') as object, /^__proto__: unknown field/],
  ]
  for (const [message, pattern] of cases) {
    const error = await errorFor(client, JSON.stringify(message))
    assert.equal(error.code, 'invalid', JSON.stringify(message))
    assert.match(error.message, pattern)
  }
  const withRef = await errorFor(client, { type: 'join', ref: 'q1' })
  assert.equal(withRef.ref, 'q1')
  assert.equal(({} as Record<string, unknown>).polluted, undefined)
})

test('unknown_type: a type that is not in the protocol', async (t) => {
  const { wsUrl } = await startServer(t, { home: false })
  const client = await RawClient.connect(t, wsUrl)
  for (const type of ['dance', '__proto__', 'constructor', 'toString']) {
    const error = await errorFor(client, { type, ref: 'x' })
    assert.equal(error.code, 'unknown_type', type)
    assert.equal(error.ref, 'x')
  }
})

test('not_joined: send, typing, history and leave for a room the connection is not in', async (t) => {
  const { wsUrl } = await startServer(t, { home: false })
  const client = await RawClient.connect(t, wsUrl)
  for (const message of [
    { type: 'send', room: 'r', text: 'hi' },
    { type: 'typing', room: 'r' },
    { type: 'history', room: 'r' },
    { type: 'leave', room: 'r' },
    { type: 'send', room: '__proto__', text: 'hi' },
    { type: 'send', room: 'constructor', text: 'hi' },
  ]) {
    assert.equal((await errorFor(client, message)).code, 'not_joined', JSON.stringify(message))
  }
})

test('too_many_rooms and room_full', async (t) => {
  const { wsUrl } = await startServer(t, { home: false, maxRoomsPerConnection: 2, maxMembersPerRoom: 1 })
  const alice = await RawClient.connect(t, wsUrl)
  await alice.request('joined', { type: 'join', room: 'a' })
  await alice.request('joined', { type: 'join', room: 'b' })
  assert.equal((await errorFor(alice, { type: 'join', room: 'c' })).code, 'too_many_rooms')
  const bob = await RawClient.connect(t, wsUrl)
  assert.equal((await errorFor(bob, { type: 'join', room: 'a' })).code, 'room_full')
  await alice.request('left', { type: 'leave', room: 'a' })
  assert.equal((await bob.request('joined', { type: 'join', room: 'a' })).room, 'a', 'a freed place can be taken')
})

test('rate_limited: more than the burst at once is refused, and the rate refills', async (t) => {
  const { wsUrl } = await startServer(t, { home: false, rateLimit: { perSecond: 10, burst: 3 } })
  const client = await RawClient.connect(t, wsUrl)
  for (let i = 0; i < 5; i++) client.send({ type: 'ping', ref: `p${i}` })
  const refused = await client.next('error', (e) => e.code === 'rate_limited')
  await sleep(50)
  assert.equal(client.pending('pong').length, 3, 'the burst passes')
  await sleep((refused.retryAfter ?? 0) - 50)
  assert.equal((await client.request('pong', { type: 'ping' })).type, 'pong')
})

test('rate_limited is flow control: it says when to retry (retryAfter), refuses what follows until then, and does not count toward the error budget', async (t) => {
  const { wsUrl } = await startServer(t, { home: false, rateLimit: { perSecond: 10, burst: 2 }, errorLimit: { count: 3, windowMs: 60000 } })
  const client = await RawClient.connect(t, wsUrl)
  for (let i = 0; i < 12; i++) client.send({ type: 'ping', ref: `p${i}` })
  const refused = []
  for (let i = 2; i < 12; i++) refused.push(await client.next('error', (e) => e.ref === `p${i}`))
  assert.deepEqual(refused.map((error) => error.code), Array(10).fill('rate_limited'))
  const heldUntil = refused.map(({ retryAfter }) => Date.now() + (retryAfter ?? 0))
  for (const { retryAfter } of refused) {
    assert.ok(retryAfter !== undefined && retryAfter >= 1 && retryAfter <= RATE_LIMIT_HOLD_MS, `retryAfter ${retryAfter} is within the hold (${RATE_LIMIT_HOLD_MS} ms)`)
  }
  assert.ok(Math.max(...heldUntil) - Math.min(...heldUntil) < 200, 'every refusal names the same time: the first refusal holds the rest')
  // The bucket refills meanwhile (a token every 100 ms), yet a message before retryAfter is still refused: nothing overtakes the refused ones.
  await sleep(300)
  assert.equal((await client.next('error', () => true, 0).catch(() => undefined)), undefined)
  client.send({ type: 'ping', ref: 'early' })
  assert.equal((await client.next('error', (e) => e.ref === 'early')).code, 'rate_limited')
  await sleep(Math.max(...heldUntil) - Date.now())
  assert.equal((await client.request('pong', { type: 'ping' })).type, 'pong', 'after retryAfter the next message is accepted; ten refusals did not close the connection')
})

test('forbidden: onJoin and onMessage may refuse; onMessage may rewrite the text', async (t) => {
  const { wsUrl } = await startServer(t, {
    home: false,
    onJoin: (room) => room !== 'secret',
    onMessage: ({ text }) => (text.includes('spam') ? false : text.replace('darn', '****')),
  })
  const client = await RawClient.connect(t, wsUrl)
  assert.equal((await errorFor(client, { type: 'join', room: 'secret' })).code, 'forbidden')
  await client.request('joined', { type: 'join', room: 'open' })
  assert.equal((await errorFor(client, { type: 'send', room: 'open', text: 'buy spam' })).code, 'forbidden')
  await client.request('ack', { type: 'send', room: 'open', text: 'oh darn' })
  assert.equal((await client.next('message')).text, 'oh ****')
})

/** A memory broker whose store can be made to fail, as Redis does when it is down. */
class FailingBroker extends MemoryBroker {
  failing = false
  override async append (room: string, draft: MessageDraft) {
    if (this.failing) throw new ChatError('unavailable', 'the broker did not confirm in time')
    return super.append(room, draft)
  }
}

test('unavailable: a send the broker does not confirm is answered with unavailable and can be retried with its cid', async (t) => {
  const broker = new FailingBroker()
  const { wsUrl } = await startServer(t, { home: false, broker })
  const client = await RawClient.connect(t, wsUrl)
  await client.request('joined', { type: 'join', room: 'r' })
  broker.failing = true
  const error = await errorFor(client, { type: 'send', room: 'r', text: 'hello', cid: 'k1', ref: 's1' })
  assert.deepEqual([error.code, error.ref], ['unavailable', 's1'])
  broker.failing = false
  const ack = await client.request('ack', { type: 'send', room: 'r', text: 'hello', cid: 'k1' })
  assert.equal(ack.seq, 1)
})

test('1000: hub.disconnect closes a connection normally', async (t) => {
  const { wsUrl, app } = await startServer(t, { home: false })
  const socket = new WebSocket(wsUrl)
  t.after(() => socket.terminate())
  const welcome = await new Promise<{ id: string }>((resolve) => socket.once('message', (data) => resolve(JSON.parse(String(data)) as { id: string })))
  const closed = new Promise<number>((resolve) => socket.once('close', (code) => resolve(code)))
  assert.equal(app.hub.disconnect('no-such-id'), false)
  assert.equal(app.hub.disconnect(welcome.id), true)
  assert.equal(await closed, 1000)
})

test('1001: fastify.close() closes every connection with 1001', async (t) => {
  const { wsUrl, app } = await startServer(t, { home: false })
  const clients = await Promise.all([RawClient.connect(t, wsUrl), RawClient.connect(t, wsUrl)])
  await app.close()
  for (const client of clients) assert.equal((await client.closed).code, 1001)
})

test('1002: a malformed WebSocket frame', async (t) => {
  const { wsUrl } = await startServer(t, { home: false })
  const client = await RawClient.connect(t, wsUrl)
  // A masked text frame with RSV1 set and no extension negotiated.
  const raw = (client.socket as unknown as { _socket: import('node:net').Socket })._socket
  raw.write(Buffer.from([0xc1, 0x80, 0, 0, 0, 0]))
  assert.equal((await client.closed).code, 1002)
})

test('1003: a binary frame', async (t) => {
  const { wsUrl } = await startServer(t, { home: false })
  const client = await RawClient.connect(t, wsUrl)
  client.socket.send(Buffer.from([1, 2, 3]), { binary: true })
  assert.equal((await client.closed).code, 1003)
})

test('1007: a text frame that is not valid UTF-8', async (t) => {
  const { wsUrl } = await startServer(t, { home: false })
  const client = await RawClient.connect(t, wsUrl)
  client.socket.send(Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), { binary: false })
  assert.equal((await client.closed).code, 1007)
})

test('1008: a connection that keeps sending bad messages is closed', async (t) => {
  const { wsUrl } = await startServer(t, { home: false, errorLimit: { count: 5, windowMs: 60000 } })
  const client = await RawClient.connect(t, wsUrl)
  for (let i = 0; i < 6; i++) client.socket.send('garbage')
  assert.equal((await client.closed).code, 1008)
  assert.equal(client.pending('error').length, 6, 'every bad message was answered before the close')
})

test('1009: a frame larger than maxPayload, both when we register ws and when the app did', async (t) => {
  const ours = await startServer(t, { home: false, maxPayload: 1024, maxTextLength: 80 })
  const theirs = await startServer(t, { home: false, maxPayload: 1024, maxTextLength: 80 }, async (app) => {
    await app.register((await import('@fastify/websocket')).default, { options: { maxPayload: 1 << 20 } })
  })
  for (const { wsUrl } of [ours, theirs]) {
    const client = await RawClient.connect(t, wsUrl)
    client.send({ type: 'ping', ref: 'x'.repeat(2000) })
    assert.equal((await client.closed).code, 1009)
  }
})

test('1011: an application hook that throws closes with 1011 and the server keeps serving', async (t) => {
  const { wsUrl } = await startServer(t, { home: false, onMessage: () => { throw new Error('bug in the app') } })
  const client = await RawClient.connect(t, wsUrl)
  await client.request('joined', { type: 'join', room: 'r' })
  client.send({ type: 'send', room: 'r', text: 'boom' })
  assert.equal((await client.closed).code, 1011)
  const other = await RawClient.connect(t, wsUrl)
  assert.equal((await other.request('joined', { type: 'join', room: 'r' })).room, 'r')
})

test('4008: a reader that stops reading is closed as a slow consumer and the others keep receiving', async (t) => {
  const { wsUrl, app } = await startServer(t, { home: false, maxBufferedBytes: 65536, maxTextLength: 2000 })
  const slow = await RawClient.connect(t, wsUrl)
  const fast = await RawClient.connect(t, wsUrl)
  await slow.request('joined', { type: 'join', room: 'r' })
  await fast.request('joined', { type: 'join', room: 'r' })
  const raw = (slow.socket as unknown as { _socket: import('node:net').Socket })._socket
  raw.pause()
  const text = 'x'.repeat(2000)
  let last = 0
  for (let i = 0; i < 4000 && app.hub.stats().slowConsumerCloses === 0; i++) {
    last = (await app.hub.broadcast('r', text)).seq
    if (i % 50 === 0) await sleep(1)
  }
  assert.equal(app.hub.stats().slowConsumerCloses, 1)
  assert.ok(app.hub.stats().dropped >= 1)
  await fast.next('message', (m) => m.seq === last, 10000)
  raw.resume()
  assert.equal((await slow.closed).code, 4008)
})

test('a peer that stops answering pings is terminated within the heartbeat', async (t) => {
  const { wsUrl, app } = await startServer(t, { home: false, heartbeatInterval: 200 })
  const silent = new WebSocket(wsUrl, { autoPong: false })
  t.after(() => silent.terminate())
  await new Promise((resolve) => silent.once('open', resolve))
  const lively = await RawClient.connect(t, wsUrl)
  const started = Date.now()
  const code = await new Promise<number>((resolve) => silent.once('close', (c) => resolve(c)))
  assert.equal(code, 1006, 'terminated without a close frame')
  assert.ok(Date.now() - started < 1000)
  await sleep(450)
  assert.equal(lively.socket.readyState, WebSocket.OPEN, 'a peer that answers pings stays')
  assert.equal(app.hub.stats().connections, 1)
})
