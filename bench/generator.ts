/**
 * The load generator: one process, pinned by the runner to its own core. It
 * runs one workload against one server, or against the nodes of one chat
 * (clients spread round-robin over `ports`), and prints JSON lines of results.
 * Which broker the server uses is the runner's business, not the generator's.
 * Usage: node generator.js '{"workload":"fanout-100","ports":[1234],"serverPids":[56],"quick":false}'
 */
import { randomBytes } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { clientFrame, newTally, nowUs } from './client.js'
import { connectAll, publishPaced, quiet, type Publisher, type Seat } from './load.js'
import { cpuUs, rssBytes } from './processes.js'

export type Workload = 'fanout-100' | 'fanout-1000' | 'rooms' | 'idle' | 'appends'

interface Args {
  workload: Workload
  ports: number[]
  /** Every node's CPU counts: a delivery across nodes costs on both. */
  serverPids: number[]
  quick: boolean
}

/** One offered rate, held for a while: what arrived, how late, and at what CPU cost. */
export interface Step {
  offered: number
  /** Deliveries per second that arrived, over the sending window. */
  delivered: number
  arrived: number
  p50: number
  p99: number
  max: number
  serverUsPerDelivery: number
  /** The servers' largest RSS (summed over nodes, read every RSS_SAMPLE_MS) while the step ran: what this load costs in memory. */
  peakRss: number
  generatorCpu: number
  pass: boolean
  /** False when the generator's own core was saturated: the step says nothing about the server. */
  valid: boolean
  why?: string
}

const args = JSON.parse(process.argv[2] ?? '{}') as Args
const tally = newTally()

/** A step passes when at least this share of the deliveries arrive… */
const MIN_ARRIVED = 0.99
/** …and 99% of them within this many ms. */
const MAX_P99_MS = 100
/** Above this share of its core, the generator may be what limits the step. */
const GENERATOR_SATURATED = 0.9
/** Each ramp step offers this many times the previous one; then bisections narrow the answer (to 2^⅛ with three). */
const RAMP_FACTOR = 2
const MAX_STEPS = 14
const BISECTIONS = 3
const STEP_MS = args.quick ? 1000 : 2000
/** How often a step reads the servers' RSS: often enough to catch a peak of queued frames, rarely enough to cost nothing. */
const RSS_SAMPLE_MS = 50
/** After the sending stops, how long stragglers may take to arrive (they count, with their latency). */
const DRAIN_MS = 2000
/**
 * Every this-many-th connection times its frames; the rest read in batches (see client.ts). Connections join
 * in order, so the timed ones are spread evenly over a room's members and over the servers' fan-out order.
 */
const TIMED_EVERY = 10
/** The fixed moderate load at which latency and CPU per delivery are compared. */
const FIXED_RATE = 50_000
/** Long enough, at the fixed load, to fill a room's default history of 1000 messages. */
const WARM_UP_MS = 3000
/** Where ramps start: low enough that every server passes a first step even on a busy machine. */
const RAMP_START = 12_500
/**
 * `appends`: 200 connections, each its own member and publisher, two to a room. Many concurrent writers are what
 * a durable broker must cope with (and may batch); rooms of two keep the fan-out per append small, so the figure
 * is the store's, not the deliveries'.
 */
const APPEND_ROOMS = 100
const APPEND_ROOM_SIZE = 2
/**
 * Sends each connection keeps in flight. A connection's messages are handled one at a time, so a second one
 * waiting behind the one in hand keeps every connection busy without waiting for the generator's round trip;
 * more would only wait in the server's inbox and add to the ack latency.
 */
const APPEND_WINDOW = 2
const APPEND_WARM_UP_MS = args.quick ? 1000 : 2000
const APPEND_MEASURE_MS = args.quick ? 2000 : 5000
/** After the sending stops, how long the last acks and messages may take to arrive. */
const APPEND_DRAIN_MS = 10_000

function serverCpuUs (): number {
  let us = 0
  for (const pid of args.serverPids) us += cpuUs(pid)
  return us
}

/** The servers collect garbage on SIGUSR2 (they run with --expose-gc). */
async function collectGarbage (): Promise<void> {
  for (const pid of args.serverPids) process.kill(pid, 'SIGUSR2')
  await sleep(500)
}

/** The servers' resident memory now, summed over nodes. */
function currentRss (): number {
  let bytes = 0
  for (const pid of args.serverPids) bytes += rssBytes(pid)
  return bytes
}

/** What the servers retain: their RSS after a full collection. */
async function serverRss (): Promise<number> {
  await collectGarbage()
  return currentRss()
}

/** Reads the servers' RSS every RSS_SAMPLE_MS until the returned function is called, which gives the largest. */
function watchRss (): () => number {
  let peak = currentRss()
  const timer = setInterval(() => { peak = Math.max(peak, currentRss()) }, RSS_SAMPLE_MS)
  return () => {
    clearInterval(timer)
    return Math.max(peak, currentRss())
  }
}

function closedCount (): number {
  let count = 0
  for (const n of tally.closes.values()) count += n
  return count
}

/** One client per room name, the i-th on node i mod ports: so a room's members, and its first publishers, alternate between the nodes. */
function seatsOf (rooms: string[]): Seat[] {
  return rooms.map((room, i) => ({ port: args.ports[i % args.ports.length]!, room }))
}

async function step (publishers: Publisher[], roomSize: number, offered: number, durationMs: number): Promise<Step> {
  const perSecond = offered / roomSize
  const messages0 = tally.messages
  const gaps0 = tally.gaps + tally.orderViolations
  const closed0 = closedCount()
  const errors0 = tally.errors
  tally.latency.reset()
  const cpu0 = process.cpuUsage()
  const server0 = serverCpuUs()
  const peakRss = watchRss()
  const t0 = performance.now()
  const sent = await publishPaced(publishers, perSecond, durationMs)
  const expected = sent * roomSize
  const drainUntil = performance.now() + DRAIN_MS
  while (tally.messages - messages0 < expected && performance.now() < drainUntil) await sleep(10)
  const wallUs = (performance.now() - t0) * 1000
  const cpu = process.cpuUsage(cpu0)
  const arrivedCount = tally.messages - messages0
  const arrived = expected === 0 ? 1 : arrivedCount / expected
  const p99 = tally.latency.quantile(0.99)
  const generatorCpu = (cpu.user + cpu.system) / wallUs
  const why = [
    arrived < MIN_ARRIVED && `${(arrived * 100).toFixed(1)}% arrived`,
    p99 > MAX_P99_MS && `p99 ${p99} ms`,
    closedCount() > closed0 && `${closedCount() - closed0} connections closed (${JSON.stringify([...tally.closes])})`,
    tally.gaps + tally.orderViolations > gaps0 && 'seq gaps or disorder',
    tally.errors > errors0 && `${tally.errors - errors0} error frames`,
  ].filter(Boolean).join('; ')
  return {
    offered: Math.round(offered),
    delivered: Math.round(arrivedCount / (durationMs / 1000)),
    arrived,
    p50: tally.latency.quantile(0.5),
    p99,
    max: tally.latency.max / 1000,
    serverUsPerDelivery: arrivedCount === 0 ? 0 : (serverCpuUs() - server0) / arrivedCount,
    peakRss: peakRss(),
    generatorCpu,
    pass: why === '',
    valid: generatorCpu < GENERATOR_SATURATED,
    ...(why === '' ? {} : { why }),
  }
}

/** Raises the offered rate until a step fails, then bisects; the best passing step is the answer. */
async function ramp (publishers: Publisher[], roomSize: number, start: number): Promise<{ best: Step | undefined, steps: Step[], generatorBound: boolean }> {
  const steps: Step[] = []
  let best: Step | undefined
  let failed: Step | undefined
  for (let i = 0, rate = start; i < MAX_STEPS && !failed; i++, rate *= RAMP_FACTOR) {
    const result = await step(publishers, roomSize, rate, STEP_MS)
    steps.push(result)
    if (!result.valid) return { best, steps, generatorBound: true }
    if (result.pass) best = result
    else failed = result
  }
  for (let i = 0; i < BISECTIONS && best && failed && closedCount() === 0; i++) {
    await quiet(tally)
    const result = await step(publishers, roomSize, Math.sqrt(best.offered * failed.offered), STEP_MS)
    steps.push(result)
    if (!result.valid) return { best, steps, generatorBound: true }
    if (result.pass) best = result
    else failed = result
  }
  return { best, steps, generatorBound: false }
}

/** `rooms` rooms of `size` clients each; the first `publishersPerRoom` of each room publish. */
async function setUp (rooms: number, size: number, publishersPerRoom: number): Promise<Publisher[]> {
  const names = Array.from({ length: rooms * size }, (_, i) => `room-${i % rooms}`)
  const clients = await connectAll(seatsOf(names), tally, TIMED_EVERY)
  await quiet(tally)
  // The joins' garbage is the set-up's, not the workload's: without this, the major collection it causes lands
  // in whichever step comes next.
  await collectGarbage()
  return clients.slice(0, rooms * publishersPerRoom).map((client, i) => ({ client, room: names[i]!, queued: [] }))
}

/**
 * Sustained acknowledged appends, closed loop: every connection keeps `APPEND_WINDOW` sends in flight, each with
 * a unique `cid` and its send time as `ref`, and sends the next as each ack comes back. Acks are counted over a
 * window after a warm-up; then the sending stops and every ack, and every member's copy, must arrive.
 */
async function appends (): Promise<object> {
  const names = Array.from({ length: APPEND_ROOMS * APPEND_ROOM_SIZE }, (_, i) => `room-${i % APPEND_ROOMS}`)
  // Every client times its acks as they arrive: the ack latency is one of the figures.
  const clients = await connectAll(seatsOf(names), tally, 1)
  await quiet(tally)
  await collectGarbage()
  const messages0 = tally.messages
  const errors0 = tally.errors
  let sending = true
  let sent = 0
  clients.forEach((client, i) => {
    // 32 hex digits, as the library's client makes them; unique per message: a random prefix per connection, then a count.
    const cidPrefix = randomBytes(8).toString('hex')
    let count = 0
    const send = (): void => {
      const now = nowUs()
      const cid = cidPrefix + (count++).toString(16).padStart(16, '0')
      client.write(clientFrame(Buffer.from(`{"type":"send","room":"${names[i]!}","text":"t${now}","cid":"${cid}","ref":"${now}"}`)))
      sent++
    }
    client.onAck = () => { if (sending) send() }
    for (let k = 0; k < APPEND_WINDOW; k++) send()
  })
  await sleep(APPEND_WARM_UP_MS)
  const acks0 = tally.acks
  tally.ackLatency.reset()
  tally.latency.reset()
  const cpu0 = process.cpuUsage()
  const server0 = serverCpuUs()
  const t0 = performance.now()
  await sleep(APPEND_MEASURE_MS)
  const acked = tally.acks - acks0
  const seconds = (performance.now() - t0) / 1000
  const serverUs = serverCpuUs() - server0
  const cpu = process.cpuUsage(cpu0)
  const [p50, p99, max] = [tally.ackLatency.quantile(0.5), tally.ackLatency.quantile(0.99), tally.ackLatency.max / 1000]
  const deliveryP99 = tally.latency.quantile(0.99)
  sending = false
  const expectedMessages = (): number => sent * APPEND_ROOM_SIZE
  const drainUntil = performance.now() + APPEND_DRAIN_MS
  while ((tally.acks < sent || tally.messages - messages0 < expectedMessages()) && performance.now() < drainUntil) await sleep(10)
  const generatorCpu = (cpu.user + cpu.system) / (seconds * 1e6)
  const closed = closedCount()
  const why = [
    tally.acks < sent && `${sent - tally.acks} of ${sent} sends unacknowledged`,
    tally.messages - messages0 !== expectedMessages() && `${tally.messages - messages0} of ${expectedMessages()} messages arrived`,
    tally.errors > errors0 && `${tally.errors - errors0} error frames`,
    closed > 0 && `${closed} connections closed (${JSON.stringify([...tally.closes])})`,
    tally.gaps + tally.orderViolations > 0 && 'seq gaps or disorder',
    tally.ackDisorder > 0 && `${tally.ackDisorder} acks out of order`,
  ].filter(Boolean).join('; ')
  return {
    appendsPerSec: Math.round(acked / seconds),
    p50,
    p99,
    max,
    deliveryP99,
    serverUsPerAppend: acked === 0 ? 0 : serverUs / acked,
    // Near 1, the server's core limited the figure; well below, something it waited for did (the database, or the load).
    serverCpu: serverUs / (seconds * 1e6),
    generatorCpu,
    generatorBound: generatorCpu >= GENERATOR_SATURATED,
    sent,
    acks: tally.acks,
    pass: why === '',
    ...(why === '' ? {} : { why }),
  }
}

function print (workload: string, result: object): void {
  process.stdout.write(`${JSON.stringify({ workload, ...result, orderViolations: tally.orderViolations, gaps: tally.gaps })}\n`)
}

switch (args.workload) {
  case 'fanout-100': {
    const publishers = await setUp(1, 100, 10)
    // Warm-up: the servers' JIT, and ours' history, which fills (1000 messages) with promotions and slower scavenges.
    await step(publishers, 100, FIXED_RATE, WARM_UP_MS)
    const fixed = await step(publishers, 100, FIXED_RATE, args.quick ? 2000 : 5000)
    print('fixed-50k', { fixed })
    print(args.workload, await ramp(publishers, 100, RAMP_START))
    break
  }
  case 'fanout-1000': {
    const publishers = await setUp(1, 1000, 10)
    print(args.workload, await ramp(publishers, 1000, RAMP_START))
    break
  }
  case 'rooms': {
    const publishers = await setUp(200, 10, 1)
    print(args.workload, await ramp(publishers, 10, RAMP_START))
    break
  }
  case 'appends':
    print(args.workload, await appends())
    break
  case 'idle': {
    const count = args.quick ? 5000 : 10_000
    const before = await serverRss()
    const t0 = performance.now()
    const cpu0 = process.cpuUsage()
    const server0 = serverCpuUs()
    const names = Array.from({ length: count }, (_, i) => `room-${i % (count / 10)}`)
    const clients = await connectAll(seatsOf(names), tally, TIMED_EVERY)
    const seconds = (performance.now() - t0) / 1000
    const cpu = process.cpuUsage(cpu0)
    // Presence after the last joins may still be on its way: the CPU is read before it, as the time is.
    const serverUsPerConnection = (serverCpuUs() - server0) / count
    const generatorCpu = (cpu.user + cpu.system) / (seconds * 1e6)
    await quiet(tally)
    const after = await serverRss()
    const [connectP50, connectP99] = [tally.connectLatency.quantile(0.5), tally.connectLatency.quantile(0.99)]
    print(args.workload, {
      connections: count,
      connectionsPerSec: Math.round(count / seconds),
      connectP50,
      connectP99,
      serverUsPerConnection,
      // Its share of the connect phase, and of the generator's core: near 1, that side limited connections/s.
      serverCpu: (serverUsPerConnection * count) / (seconds * 1e6),
      generatorCpu,
      generatorBound: generatorCpu >= GENERATOR_SATURATED,
      rssPerConnection: Math.round((after - before) / count),
      rssBefore: before,
      rssAfter: after,
    })
    for (const client of clients) client.destroy()
    break
  }
}
process.exit(0)
