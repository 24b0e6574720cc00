/**
 * `npm run soak`: thousands of WebSocket clients on 127.0.0.1 against the
 * plugin in a child process (bench/soak-server.ts), well-behaved members mixed
 * with slow readers, clients that never read, TCP resets, half-open peers,
 * join/leave churn, garbage, oversized frames and send floods. Asserts that
 * well-behaved members get every message of their rooms in order exactly once,
 * that abusers are closed with the right codes, and that the server returns to
 * its baseline afterwards; prints a summary and exits 1 on any failure.
 *
 * Options (flag or env): --connections (SOAK_CONNECTIONS, 2000), --duration
 * seconds of load (SOAK_DURATION, 30), --rooms (SOAK_ROOMS, connections/10),
 * --rate stored messages per second (SOAK_RATE, 400).
 */
import { spawn, execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import WebSocket from 'ws'
import type { Command, ServerReport, SoakServerOptions } from './soak-server.js'

const { values: flags } = parseArgs({ options: { connections: { type: 'string' }, duration: { type: 'string' }, rooms: { type: 'string' }, rate: { type: 'string' } } })
const CONNECTIONS = Number(flags.connections ?? process.env.SOAK_CONNECTIONS ?? 2000)
const DURATION_MS = 1000 * Number(flags.duration ?? process.env.SOAK_DURATION ?? 30)
const ROOMS = Number(flags.rooms ?? process.env.SOAK_ROOMS ?? Math.max(5, Math.round(CONNECTIONS / 10)))
const RATE = Number(flags.rate ?? process.env.SOAK_RATE ?? 400)
/** Short, so half-open peers are gone within the load phase (two intervals at most). */
const HEARTBEAT_MS = 2000
const MAX_PAYLOAD = 16384
/**
 * The firehose room holds only never-readers and gets this much: more than maxBufferedBytes (1 MiB) plus what
 * the kernel buffers on loopback. No reader of ours is in it: on a busy machine it could not keep up either.
 */
const FIREHOSE = { count: 4000, text: 'f'.repeat(2000) }
/** Heap after GC may exceed its baseline by this much (compiled code, allocator slack) plus PER_CONNECTION per client served. */
const HEAP_SLACK = 4 << 20
const PER_CONNECTION = 512

type Role = 'stable' | 'slow' | 'churn' | 'flood' | 'garbage' | 'oversized' | 'neverRead' | 'halfOpen' | 'reset'
/** The close each role must end with before teardown; undefined: it must still be open. */
const EXPECTED: Record<Role, number | undefined> = { stable: undefined, slow: undefined, churn: undefined, flood: undefined, garbage: 1008, oversized: 1009, neverRead: 4008, halfOpen: 1006, reset: 1006 }

const failures: string[] = []
const fail = (message: string): void => { if (failures.push(message) > 50) failures.length = 50 }
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))
const pick = <T>(list: readonly T[]): T => list[Math.floor(Math.random() * list.length)] as T
const roomNames = Array.from({ length: ROOMS }, (_, i) => `room-${i}`)
const latencies: number[] = []
let delivered = 0
let teardown = false

// ------------------------------------------------------------ the server process

const serverOptions: SoakServerOptions = { chat: { heartbeatInterval: HEARTBEAT_MS, maxPayload: MAX_PAYLOAD }, idleRoomTtl: 1000 }
const server = spawn('sh', ['-c', 'ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$0" --expose-gc "$1" "$2"',
  process.execPath, fileURLToPath(new URL('./soak-server.js', import.meta.url)), JSON.stringify(serverOptions)],
{ stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
process.on('exit', () => server.kill())
let serverExited = false
server.on('exit', (code) => { serverExited = true; if (!teardown) fail(`the server exited during the soak (code ${code})`) })
const replies = new Map<number, (reply: { result?: unknown, error?: string }) => void>()
let asked = 0
function ask<T> (command: Command): Promise<T> {
  const id = ++asked
  server.send({ ...command, id })
  return new Promise((resolve, reject) => replies.set(id, (reply) => reply.error === undefined ? resolve(reply.result as T) : reject(new Error(reply.error))))
}
const port = await new Promise<number>((resolve, reject) => {
  server.on('message', (message: { id?: number, listening?: number, result?: unknown, error?: string }) => {
    if (message.listening !== undefined) resolve(message.listening)
    if (message.id !== undefined) replies.get(message.id)?.(message)
  })
  server.once('exit', () => reject(new Error('the soak server did not start')))
})

// ------------------------------------------------------------ clients

class Client {
  readonly ws: WebSocket
  readonly opened: Promise<void>
  /** room → next expected seq while a member: every message must be exactly that one. */
  readonly next = new Map<string, number>()
  readonly errors = new Map<string, number>()
  closeCode: number | undefined
  private readonly waiting = new Map<string, { resolve: (frame: Frame) => void, reject: (error: Error) => void }>()
  private refs = 0

  constructor (readonly role: Role, name: string) {
    this.ws = new WebSocket(`ws://127.0.0.1:${port}/ws?name=${name}`, { autoPong: role !== 'halfOpen', perMessageDeflate: false })
    this.ws.on('error', () => {})
    this.ws.on('close', (code) => { this.closeCode = code; for (const w of this.waiting.values()) w.reject(new Error(`closed ${code}`)) })
    this.ws.on('message', (data) => this.receive(JSON.parse(String(data)) as Frame))
    this.opened = new Promise((resolve, reject) => { this.ws.once('open', () => resolve()); this.ws.once('close', (code) => reject(new Error(`close ${code} before open`))) })
  }

  private receive (frame: Frame): void {
    if (frame.type === 'joined' && !this.next.has(frame.room)) this.next.set(frame.room, frame.seq + 1)
    if (frame.type === 'left') this.next.delete(frame.room)
    if (frame.type === 'error') this.errors.set(frame.code, (this.errors.get(frame.code) ?? 0) + 1)
    if (frame.type === 'message') {
      const expected = this.next.get(frame.room)
      if (expected !== frame.seq) fail(`${this.role} client got ${frame.room}#${frame.seq}, expected ${expected ?? 'nothing (not a member)'}`)
      this.next.set(frame.room, frame.seq + 1)
      delivered++
      if (this.role === 'stable' && frame.text.startsWith('t')) latencies.push(Date.now() - Number(frame.text.slice(1, frame.text.indexOf(':'))))
    }
    const waiter = frame.ref === undefined ? undefined : this.waiting.get(frame.ref)
    if (waiter && frame.ref !== undefined) {
      this.waiting.delete(frame.ref)
      if (frame.type === 'error') waiter.reject(new Error(`${frame.code}: ${frame.message}`))
      else waiter.resolve(frame)
    }
  }

  send (message: object): void {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message))
  }

  /** Sends with a fresh ref; resolves with the direct reply, rejects on its error or a close. */
  request (message: object): Promise<Frame> {
    const ref = `r${++this.refs}`
    return new Promise((resolve, reject) => {
      this.waiting.set(ref, { resolve, reject })
      this.send({ ...message, ref })
    })
  }

  open (): boolean { return this.ws.readyState === WebSocket.OPEN }
}

type Frame = { type: string, ref?: string, room: string, seq: number, text: string, code: string, message: string }

const abusers = Math.max(3, Math.round(CONNECTIONS * 0.01))
const counts: Array<[Role, number]> = [['neverRead', abusers], ['halfOpen', abusers], ['garbage', abusers], ['oversized', abusers], ['flood', abusers], ['reset', 3 * abusers],
  ['churn', Math.round(CONNECTIONS * 0.1)], ['slow', Math.round(CONNECTIONS * 0.05)]]
counts.unshift(['stable', CONNECTIONS - counts.reduce((sum, [, n]) => sum + n, 0)])

/** Connects in batches so the listen backlog is never the bottleneck. */
async function connectAll (roles: Role[]): Promise<Client[]> {
  const clients: Client[] = []
  for (let i = 0; i < roles.length; i += 200) {
    const batch = roles.slice(i, i + 200).map((role, j) => new Client(role, `${role}-${i + j}`))
    await Promise.all(batch.map((c) => c.opened))
    clients.push(...batch)
  }
  return clients
}

async function joinSome (client: Client, rooms: string[]): Promise<void> {
  for (const room of rooms) await client.request({ type: 'join', room })
}

const distinct = (n: number): string[] => [...new Set(Array.from({ length: n * 3 }, () => pick(roomNames)))].slice(0, n)
const text = (): string => `t${Date.now()}:${'x'.repeat(Math.floor(Math.random() * 200))}`

/** What one client does during the load phase; resolves when it has stopped. */
async function behave (client: Client, stopped: () => boolean, wellBehavedSenders: number): Promise<void> {
  const at = (ms: number): Promise<void> => sleep(Math.random() * ms)
  const loop = async (every: number, step: () => Promise<unknown> | void): Promise<void> => {
    await at(every)
    while (!stopped() && client.open()) {
      await Promise.resolve(step()).catch((error: Error) => { if (client.open()) fail(`${client.role}: ${error.message}`) })
      await sleep(every * (0.5 + Math.random()))
    }
  }
  switch (client.role) {
    case 'stable':
    case 'slow': {
      const rooms = [...client.next.keys()]
      const pause = client.role === 'slow' ? setInterval(() => { client.ws.pause(); setTimeout(() => client.ws.resume(), 300) }, 1000) : undefined
      // Each sender's interval makes the whole soak store about RATE messages a second.
      await loop((1000 * wellBehavedSenders) / RATE, () => client.request({ type: 'send', room: pick(rooms), text: text() }))
      clearInterval(pause)
      return
    }
    case 'churn':
      return loop(400, async () => {
        const rooms = [...client.next.keys()]
        if (rooms.length > 0 && Math.random() < 0.3) await client.request({ type: 'send', room: pick(rooms), text: 'churn' })
        else if (rooms.length < 2 || Math.random() < 0.5) await client.request({ type: 'join', room: pick(roomNames) })
        else await client.request({ type: 'leave', room: pick(rooms) })
      })
    case 'flood': {
      await at(DURATION_MS / 2)
      const room = pick([...client.next.keys()])
      for (let i = 0; i < 60; i++) client.send({ type: 'send', room, text: 'flood' })
      return
    }
    case 'garbage': {
      await at(DURATION_MS / 2)
      const junk = ['garbage', '{', '[]', '{"type":"nope"}', '{"type":"send","room":"room-0"}', '{"type":"join","room":"no spaces"}', '{"type":"leave","room":"room-0"}']
      for (let i = 0; i < 60; i++) client.ws.send(pick(junk))
      return
    }
    case 'oversized':
      await at(DURATION_MS / 2)
      client.send({ type: 'ping', ref: 'x'.repeat(MAX_PAYLOAD) })
      return
    case 'reset':
      await at(DURATION_MS * 0.8)
      ;(client.ws as unknown as { _socket: import('node:net').Socket })._socket.resetAndDestroy()
      return
    case 'neverRead':
    case 'halfOpen':
      // Never-readers are paused before the load starts; half-open ones just stop answering pings.
  }
}

function percentile (values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0
}

/** Waits until `done` holds, up to `ms`. */
async function until (ms: number, done: () => boolean | Promise<boolean>): Promise<boolean> {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    if (await done()) return true
    await sleep(100)
  }
  return done()
}

/** Waits for the server to hold nothing for any client, then for idle rooms to be forgotten, and measures. */
async function settled (what: string): Promise<ServerReport> {
  const empty = await until(10_000, async () => {
    const report = await ask<ServerReport>({ cmd: 'stats' })
    return report.hub.connections === 0 && report.hub.rooms === 0 && Object.keys(report.rooms).length === 0
  })
  if (!empty) fail(`${what}: the server still holds connections or rooms: ${JSON.stringify((await ask<ServerReport>({ cmd: 'stats' })).hub)}`)
  await sleep(serverOptions.idleRoomTtl + 1500)
  return ask<ServerReport>({ cmd: 'stats' })
}

// ------------------------------------------------------------ the run

const fileLimit = Number(execFileSync('sh', ['-c', 'ulimit -n']).toString())
if (fileLimit < CONNECTIONS + 100) throw new Error(`the file limit (${fileLimit}) is below ${CONNECTIONS + 100}: raise it with ulimit -n`)
const started = Date.now()

// A warm-up round, so that the baseline already includes compiled code and lazily built structures.
const warm = await connectAll(Array.from({ length: 50 }, (): Role => 'stable'))
await Promise.all(warm.map(async (c) => { await joinSome(c, distinct(2)); await c.request({ type: 'send', room: [...c.next.keys()][0], text: text() }) }))
warm.forEach((c) => c.ws.close(1000))
latencies.length = 0
delivered = 0
const baseline = await settled('after the warm-up')

const connecting = Date.now()
const clients = await connectAll(counts.flatMap(([role, n]) => Array.from({ length: n }, () => role)))
await Promise.all(clients.map((c) => {
  if (c.role === 'neverRead') return c.request({ type: 'join', room: 'firehose' })
  if (c.role === 'garbage' || c.role === 'oversized') return undefined
  return joinSome(c, distinct(c.role === 'churn' ? 1 : 2))
}))
const setupMs = Date.now() - connecting

let stop = false
const senders = clients.filter((c) => c.role === 'stable' || c.role === 'slow').length
const running = clients.map((c) => behave(c, () => stop, senders))
// Paused only now: a peer paused for two heartbeats would be terminated for silence before it is too slow.
const neverReaders = clients.filter((c) => c.role === 'neverRead')
neverReaders.forEach((c) => c.ws.pause())
await ask({ cmd: 'broadcast', room: 'firehose', ...FIREHOSE })
// A never-reader wakes up to read what is left and its close; until then the 4008 close frame waits behind its buffer.
await sleep(500)
neverReaders.forEach((c) => c.ws.resume())
await sleep(Math.max(0, DURATION_MS - (Date.now() - connecting - setupMs)))
stop = true
await Promise.all(running)

// Quiet: every reader drains, then each must be exactly at its rooms' latest seq.
await until(10_000, async () => { const before = delivered; await sleep(500); return delivered === before })
const rooms = (await ask<ServerReport>({ cmd: 'stats' })).rooms
const beforeTeardown = await ask<ServerReport>({ cmd: 'stats' })
for (const client of clients) {
  const expected = EXPECTED[client.role]
  if (client.closeCode !== expected) fail(`a ${client.role} client ${expected === undefined ? 'was closed' : 'ended'} with ${client.closeCode ?? 'no close'}, expected ${expected ?? 'to stay open'}`)
  if (expected !== undefined) continue
  for (const [room, next] of client.next) {
    if (next !== (rooms[room] ?? 0) + 1) fail(`a ${client.role} client in ${room} is at seq ${next - 1}, the room at ${rooms[room]}`)
  }
}
for (const client of clients.filter((c) => c.role === 'flood')) {
  if (!client.errors.get('rate_limited')) fail('a send flood got no rate_limited')
}

teardown = true
const closedByCode = new Map<Role, Map<number, number>>()
for (const client of clients) {
  const byCode = closedByCode.get(client.role) ?? new Map<number, number>()
  if (client.closeCode !== undefined) byCode.set(client.closeCode, (byCode.get(client.closeCode) ?? 0) + 1)
  closedByCode.set(client.role, byCode)
  if (client.open()) client.ws.close(1000)
}
await until(10_000, () => clients.every((c) => c.ws.readyState === WebSocket.CLOSED))
const after = await settled('after every client left')
if (serverExited) fail('the server did not survive the soak')
const served = CONNECTIONS + warm.length
if (after.heapUsed > baseline.heapUsed + HEAP_SLACK + PER_CONNECTION * served) fail(`heap after GC grew from ${mb(baseline.heapUsed)} to ${mb(after.heapUsed)}`)
if (after.timers !== baseline.timers) fail(`live timers: ${baseline.timers} before, ${after.timers} after`)
if (JSON.stringify(after.handles) !== JSON.stringify(baseline.handles)) fail(`handles: ${JSON.stringify(baseline.handles)} before, ${JSON.stringify(after.handles)} after`)

function mb (bytes: number): string { return `${(bytes / 1048576).toFixed(1)} MB` }
const rows = counts.map(([role, n]) => {
  const closes = [...(closedByCode.get(role) ?? new Map<number, number>())].map(([code, k]) => `${code}×${k}`).join(' ') || '-'
  return `  ${role.padEnd(10)} ${String(n).padStart(6)}   ${String(EXPECTED[role] ?? 'open').padEnd(8)} ${closes}`
})
console.log([
  `\nfastify-chat-rooms soak: ${CONNECTIONS} connections, ${ROOMS} rooms, ${DURATION_MS / 1000} s of load at ${RATE} msg/s, heartbeat ${HEARTBEAT_MS} ms`,
  '  role        count   expected closes by code (before teardown)',
  ...rows,
  `  messages stored ${Object.values(rooms).reduce((a, b) => a + b, 0)} (+${FIREHOSE.count} firehose), delivered to members ${delivered}, server frames out ${beforeTeardown.hub.messagesOut}, dropped ${beforeTeardown.hub.dropped}`,
  `  latency send→receive (stable members, ${latencies.length} samples): p50 ${percentile(latencies, 50)} ms, p99 ${percentile(latencies, 99)} ms, max ${percentile(latencies, 100)} ms`,
  `  server: peak RSS ${mb(after.maxRss)}; heap after GC ${mb(baseline.heapUsed)} before, ${mb(after.heapUsed)} after; timers ${baseline.timers} → ${after.timers}; handles ${JSON.stringify(after.handles)}`,
  `  after teardown: connections ${after.hub.connections}, rooms ${after.hub.rooms}, rooms with members ${Object.keys(after.rooms).length}; connecting and joining ${(setupMs / 1000).toFixed(1)} s, total ${((Date.now() - started) / 1000).toFixed(1)} s`,
  failures.length === 0 ? 'PASS' : `FAIL (${failures.length}):\n${failures.map((f) => `  - ${f}`).join('\n')}`,
].join('\n'))
server.disconnect()
await until(5000, () => serverExited)
process.exit(failures.length === 0 ? 0 : 1)
