/**
 * `Connection` and the writer with a fake socket: the read pump's order and
 * backpressure, the refusals, the heartbeat, and the write side's batching,
 * framing, bound and failures, on a real hub and memory broker.
 */
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { EventEmitter } from 'node:events'
import { Connection, type ConnectionContext, type SocketLike } from '../lib/connection.js'
import { Hub } from '../lib/hub.js'
import { MemoryBroker } from '../lib/brokers/memory.js'
import { resolveOptions, type ChatRoomsOptions } from '../lib/options.js'
import { createDecoder, type ServerFrame } from '../lib/protocol.js'
import { CloseCodes } from '../lib/errors.js'
import { Writer } from '../lib/writer.js'
import type { Transport } from '../lib/upgrade.js'

const silent = { info () {}, warn () {}, error () {} }

/** Reads the server text frames (RFC 6455, unmasked) out of bytes written to the TCP socket. */
function parseFrames (bytes: Buffer): ServerFrame[] {
  const frames: ServerFrame[] = []
  let at = 0
  while (at < bytes.length) {
    assert.equal(bytes[at], 0x81, 'a final text frame')
    let length = bytes[at + 1] as number
    let header = 2
    if (length === 126) {
      length = bytes.readUInt16BE(at + 2)
      header = 4
    } else if (length === 127) {
      length = bytes.readUInt32BE(at + 6)
      header = 10
    }
    frames.push(JSON.parse(bytes.subarray(at + header, at + header + length).toString()) as ServerFrame)
    at += header + length
  }
  return frames
}

/** The TCP socket under the fake: records each write, and can be made to throw. */
class FakeTransport implements Transport {
  readonly writes: Buffer[] = []
  failWith: Error | undefined
  write (data: Buffer): boolean {
    if (this.failWith) throw this.failWith
    this.writes.push(data)
    return true
  }

  frames (): ServerFrame[] {
    return this.writes.flatMap(parseFrames)
  }
}

class FakeSocket extends EventEmitter implements SocketLike {
  readyState = 1
  bufferedAmount = 0
  extensions = ''
  pings = 0
  pauses = 0
  resumes = 0
  closedWith: number | undefined
  terminated = false
  readonly sent: Buffer[] = []
  send (data: Buffer): void { this.sent.push(data) }
  ping (): void { this.pings++ }
  close (code: number): void {
    this.closedWith = code
    this.readyState = 2
  }

  terminate (): void {
    this.terminated = true
    this.readyState = 3
    this.emit('close')
  }

  pause (): void { this.pauses++ }
  resume (): void { this.resumes++ }
  /** What a peer sends: one text frame. */
  receive (message: object | string): void {
    this.emit('message', Buffer.from(typeof message === 'string' ? message : JSON.stringify(message)), false)
  }
}

interface Setup {
  hub: Hub
  context: ConnectionContext
  open: (name?: string) => { socket: FakeSocket, transport: FakeTransport, connection: Connection }
}

async function setup (t: TestContext, options: ChatRoomsOptions = {}): Promise<Setup> {
  const resolved = resolveOptions(options)
  const hub = new Hub(new MemoryBroker(), resolved, silent)
  await hub.open()
  t.after(() => hub.close())
  const context: ConnectionContext = { hub, writer: new Writer(hub.count), options: resolved, decode: createDecoder(resolved), log: silent, closed: () => {} }
  let ids = 0
  return {
    hub,
    context,
    open: (name = 'alice') => {
      const socket = new FakeSocket()
      const transport = new FakeTransport()
      const connection = new Connection(socket, transport, { id: `c${++ids}`, user: `c${ids}`, name, authenticated: false }, context)
      return { socket, transport, connection }
    },
  }
}

/** Lets the current turn end, so batches are written. */
const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))
/** Lets every join and its presence be served and written. */
const settled = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 20))

test('what a connection gets in one turn is written once, as text frames framed once per broadcast', async (t) => {
  // A text long enough for a frame with a 64-bit length.
  const { open, hub } = await setup(t, { maxTextLength: 65_536, maxPayload: 1 << 20, maxBufferedBytes: 8 << 20 })
  const alice = open('alice')
  const bob = open('bob')
  await turn()
  assert.deepEqual(alice.transport.frames().map((frame) => frame.type), ['welcome'])
  for (const { socket } of [alice, bob]) socket.receive({ type: 'join', room: 'r', ref: 'j' })
  await settled()
  alice.transport.writes.length = 0
  bob.transport.writes.length = 0
  await hub.broadcast('r', 'one')
  await hub.broadcast('r', 'two')
  await hub.broadcast('r', 'x'.repeat(65_500))
  await turn()
  for (const { transport } of [alice, bob]) {
    assert.equal(transport.writes.length, 1, 'one write for the turn')
    assert.deepEqual(transport.frames().map((frame) => frame.type === 'message' && frame.text.length), [3, 3, 65_500])
  }
  assert.equal(alice.socket.sent.length, 0, 'nothing went through ws.send')
})

test('messages read while one is handled wait, in order, with the socket paused; reading resumes once they are handled', async (t) => {
  let release: () => void = () => {}
  const { open } = await setup(t, {
    onJoin: async () => {
      await new Promise<void>((resolve) => { release = resolve })
      return true
    },
  })
  const { socket, transport } = open()
  socket.receive({ type: 'join', room: 'r', ref: 'j' })
  socket.receive({ type: 'send', room: 'r', text: 'hi', ref: 's' })
  socket.receive({ type: 'ping', ref: 'p' })
  assert.equal(socket.pauses, 1, 'paused once, at the first message that had to wait')
  assert.equal(socket.resumes, 0)
  release()
  for (let waited = 0; socket.resumes === 0 && waited < 2000; waited += 5) await new Promise((resolve) => setTimeout(resolve, 5))
  await turn()
  const replies = transport.frames().filter((frame) => 'ref' in frame)
  assert.deepEqual(replies.map((frame) => `${frame.type}:${(frame as { ref?: string }).ref}`), ['joined:j', 'ack:s', 'pong:p'])
  assert.equal(socket.resumes, 1)
  socket.receive({ type: 'ping', ref: 'p2' })
  assert.equal(socket.pauses, 1, 'a message read while nothing is handled does not pause')
})

test('refusals carry the ref of the message they refuse: invalid, rate_limited', async (t) => {
  const { open } = await setup(t, { rateLimit: { perSecond: 1, burst: 1 } })
  const { socket, transport } = open()
  socket.receive({ type: 'ping', ref: 'ok' })
  socket.receive({ type: 'ping', ref: 'late' })
  socket.receive({ type: 'send', room: 'r', ref: 'bad' })
  await turn()
  const errors = transport.frames().filter((frame) => frame.type === 'error')
  assert.deepEqual(errors.map((error) => [error.code, error.ref]), [['rate_limited', 'late'], ['invalid', 'bad']])
})

test('binary and oversized frames close with 1003 and 1009', async (t) => {
  const { open } = await setup(t, { maxTextLength: 10, maxPayload: 600 })
  const binary = open()
  binary.socket.emit('message', Buffer.from('{}'), true)
  assert.equal(binary.socket.closedWith, CloseCodes.unsupportedData)
  const oversized = open()
  oversized.socket.receive('x'.repeat(601))
  assert.equal(oversized.socket.closedWith, CloseCodes.messageTooBig)
})

test('a reader past maxBufferedBytes is closed with 4008 and the heartbeat leaves it to its close', async (t) => {
  const { open, hub } = await setup(t, { maxTextLength: 100, maxPayload: 1200, maxBufferedBytes: 4096 })
  const { socket, connection } = open()
  socket.receive({ type: 'join', room: 'r' })
  await turn()
  socket.bufferedAmount = 4000
  await hub.broadcast('r', 'x'.repeat(100))
  assert.equal(socket.closedWith, CloseCodes.slowConsumer)
  assert.equal(hub.stats().slowConsumerCloses, 1)
  connection.heartbeat()
  connection.heartbeat()
  assert.equal(socket.terminated, false, 'the close keeps its grace')
  assert.equal(socket.pings, 0)
})

test('the heartbeat pings, and terminates a peer that did not answer by the next tick', async (t) => {
  const { open } = await setup(t)
  const answering = open()
  const silentPeer = open()
  for (const { connection } of [answering, silentPeer]) connection.heartbeat()
  answering.socket.emit('pong')
  for (const { connection } of [answering, silentPeer]) connection.heartbeat()
  assert.equal(answering.socket.terminated, false)
  assert.equal(answering.socket.pings, 2)
  assert.equal(silentPeer.socket.terminated, true)
})

test('a write that throws terminates its connection only; the others of the turn, and of later turns, are written', async (t) => {
  const { open, hub } = await setup(t)
  const broken = open('broken')
  const others = [open('a'), open('b')]
  for (const { socket } of [broken, ...others]) socket.receive({ type: 'join', room: 'r' })
  await turn()
  broken.transport.failWith = new Error('EPIPE')
  await hub.broadcast('r', 'first')
  await turn()
  assert.equal(broken.socket.terminated, true)
  await hub.broadcast('r', 'second')
  await turn()
  for (const { transport } of others) {
    const texts = transport.frames().flatMap((frame) => frame.type === 'message' ? [frame.text] : [])
    assert.deepEqual(texts, ['first', 'second'])
  }
})

test('with compression negotiated, or no transport, frames go through ws.send one by one', async (t) => {
  const { hub, context } = await setup(t)
  const socket = new FakeSocket()
  socket.extensions = 'permessage-deflate'
  const transport = new FakeTransport()
  new Connection(socket, transport, { id: 'z', user: 'z', name: 'zed', authenticated: false }, context)
  const plain = new FakeSocket()
  new Connection(plain, undefined, { id: 'p', user: 'p', name: 'pat', authenticated: false }, context)
  for (const fake of [socket, plain]) fake.receive({ type: 'join', room: 'r' })
  await settled()
  await hub.broadcast('r', 'hello')
  await turn()
  assert.equal(transport.writes.length, 0)
  for (const fake of [socket, plain]) {
    const frames = fake.sent.map((payload) => JSON.parse(payload.toString()) as ServerFrame)
    assert.equal(frames[0]?.type, 'welcome')
    assert.deepEqual(frames.flatMap((frame) => frame.type === 'message' ? [frame.text] : []), ['hello'])
  }
})
