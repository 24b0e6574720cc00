/**
 * The reconnect storm: clients of the client library, in rooms of 10, hold
 * recent history; then the server is restarted on a durable broker (`sqlite`)
 * or one of two nodes on Redis is stopped (`redis`: each connection asks a
 * director in this process, which redirects it to the next live node, as a
 * load balancer spreads connections), as a deployment does (SIGINT: the
 * plugin's graceful close). Every client cut off reconnects
 * with the library's backoff and resumes with `since`. Prints one JSON line:
 * how long until every one of them resumed, the share resumed with
 * `recovered: true`, gaps, and the servers' peak CPU and RSS. The time counts
 * from when the chat could take the clients back (the restarted server
 * listening; the stop, on Redis, where the other node stays up); the drain
 * and the restart are reported apart.
 * Usage: node storm.js '{"broker":"sqlite","quick":false}' (pinned by the runner to the generator's core)
 */
import type { ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Duplex } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'
import { WebSocket } from 'ws'
import { ChatClient, type WebSocketConstructor } from '../lib/client/index.js'
import { SERVER_CORE, brokerStore, cpuUs, here, pinned, portOf, rssBytes } from './processes.js'

interface Args {
  broker: 'sqlite' | 'redis'
  quick: boolean
}

const args = JSON.parse(process.argv[2] ?? '{}') as Args
/** The figure: 10,000 people come back at once. */
const CLIENTS = args.quick ? 2000 : 10_000
const ROOM_SIZE = 10
/** Messages each room holds before the storm: what a resume must not lose or repeat. */
const HISTORY_PER_ROOM = 20
/** Clients connecting or rooms being filled at once while setting up: the set-up is not what is measured. */
const SETUP_CONCURRENCY = 250
/** The storm's bound: past it the run reports who had not resumed. */
const STORM_TIMEOUT_MS = 60_000
/** How often the servers' CPU and RSS are read during the storm: CPU time comes in 10 ms ticks, so a window this long reads within 4 %. */
const SAMPLE_MS = 250
const TARGET_RESUME_MS = 10_000

/** A node of the chat: its process, and the port it keeps across a restart. */
interface Node { process: ChildProcess, port: number, live: boolean }

const store = brokerStore(args.broker, `bench_storm_${process.pid}`)

async function startNode (port = 0): Promise<Node> {
  const child = pinned(SERVER_CORE, ['--expose-gc', here('server.js'), ...store.spec], port === 0 ? {} : { BENCH_PORT: String(port) })
  return { process: child, port: await portOf(child), live: true }
}

/** Stops a node as a deployment does: the plugin closes its connections with 1001, then the process exits. */
async function stopNode (node: Node): Promise<void> {
  node.live = false
  node.process.kill('SIGINT')
  if (node.process.exitCode === null) await once(node.process, 'exit')
}

/**
 * Sends each upgrade to the next live node with a 307, as a load balancer spreads connections. A proxy would
 * hold two more sockets per client, and a process may hold only so many (`ulimit -Hn`, 20,000 here).
 */
async function director (nodes: Node[]): Promise<{ port: number, close: () => void }> {
  let next = 0
  const server = http.createServer((_request, response) => response.writeHead(426).end())
  server.on('upgrade', (request: http.IncomingMessage, socket: Duplex) => {
    const live = nodes.filter((node) => node.live)
    const node = live[next++ % Math.max(1, live.length)]
    socket.on('error', () => {})
    if (node === undefined) return socket.destroy()
    socket.end(`HTTP/1.1 307 Temporary Redirect\r\nLocation: ws://127.0.0.1:${node.port}${request.url ?? '/ws'}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`)
  })
  await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port: 0, backlog: 4096 }, resolve))
  return { port: (server.address() as AddressInfo).port, close: () => { server.closeAllConnections(); server.close() } }
}

/** `ws`, following the director's redirects: the client library constructs it with the URL alone. */
class RedirectedWebSocket extends WebSocket {
  constructor (url: string) {
    super(url, { followRedirects: true })
  }
}

/** CPU seconds and RSS bytes of a process (0 once it is gone). */
function usage (pid: number): { cpu: number, rss: number } {
  try {
    return { cpu: cpuUs(pid) / 1e6, rss: rssBytes(pid) }
  } catch {
    return { cpu: 0, rss: 0 }
  }
}

/** Reads the nodes' CPU (share of one core, summed over nodes) and RSS (summed) every SAMPLE_MS; `stop` gives the peaks. */
function sampler (nodes: () => Node[]): () => { peakCpu: number, peakRss: number } {
  let peakCpu = 0
  let peakRss = 0
  let last = new Map<number, { cpu: number, at: number }>()
  const timer = setInterval(() => {
    const now = performance.now()
    const seen = new Map<number, { cpu: number, at: number }>()
    let cpu = 0
    let rss = 0
    for (const node of nodes()) {
      const pid = node.process.pid as number
      const read = usage(pid)
      const before = last.get(pid)
      if (before) cpu += (read.cpu - before.cpu) / ((now - before.at) / 1000)
      seen.set(pid, { cpu: read.cpu, at: now })
      rss += read.rss
    }
    last = seen
    peakCpu = Math.max(peakCpu, cpu)
    peakRss = Math.max(peakRss, rss)
  }, SAMPLE_MS)
  return () => {
    clearInterval(timer)
    return { peakCpu, peakRss }
  }
}

/** Runs `work` over `items`, at most `limit` at once. */
async function inBatches<T> (items: T[], limit: number, work: (item: T) => Promise<unknown>): Promise<void> {
  for (let i = 0; i < items.length; i += limit) await Promise.all(items.slice(i, i + limit).map(work))
}

async function until (condition: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs
  while (!condition()) {
    if (performance.now() > deadline) return false
    await sleep(20)
  }
  return true
}

/** One person: a client, its room, and what it saw of the room's stream. */
interface Person {
  client: ChatClient
  room: string
  latest: number
  gaps: number
  /** When the client, cut off by the storm, had its room back, and whether nothing was lost. */
  resumed?: { at: number, recovered: boolean }
  cutOff: boolean
}

const nodes: Node[] = args.broker === 'sqlite' ? [await startNode()] : [await startNode(), await startNode()]
const front = args.broker === 'redis' ? await director(nodes) : undefined
const url = `ws://127.0.0.1:${front?.port ?? nodes[0]!.port}/ws`
let stormStarted = Infinity
const people: Person[] = []
try {
  for (let i = 0; i < CLIENTS; i++) {
    const person: Person = { client: new ChatClient(url, { WebSocket: (front ? RedirectedWebSocket : WebSocket) as unknown as WebSocketConstructor, name: `p${i}` }), room: `storm-${Math.floor(i / ROOM_SIZE)}`, latest: 0, gaps: 0, cutOff: false }
    person.client.on('message', (message) => { person.latest = Math.max(person.latest, message.seq) })
    person.client.on('gap', () => { person.gaps++ })
    person.client.on('status', ({ status }) => { if (status === 'reconnecting' && performance.now() >= stormStarted) person.cutOff = true })
    person.client.on('joined', (joined) => {
      if (person.cutOff && person.resumed === undefined) person.resumed = { at: performance.now(), recovered: joined.recovered === true }
    })
    people.push(person)
  }
  await inBatches(people, SETUP_CONCURRENCY, (person) => person.client.join(person.room))
  const rooms = new Map<string, Person[]>()
  for (const person of people) rooms.set(person.room, [...rooms.get(person.room) ?? [], person])
  await inBatches([...rooms.values()], SETUP_CONCURRENCY, async (members) => {
    for (let i = 0; i < HISTORY_PER_ROOM; i++) await members[i % members.length]!.client.send(members[0]!.room, `before the storm ${i}`)
  })
  if (!await until(() => people.every((person) => person.latest === HISTORY_PER_ROOM), STORM_TIMEOUT_MS)) throw new Error('the history did not reach every client')

  const stopped = nodes[0]!
  const peaks = sampler(() => nodes)
  stormStarted = performance.now()
  await stopNode(stopped)
  const stoppedAt = performance.now()
  let listening = stoppedAt
  if (args.broker === 'sqlite') {
    nodes[0] = await startNode(stopped.port)
    listening = performance.now()
  } else {
    // What the cut-off members missed: one message per room from a member still connected, if any.
    await Promise.all([...rooms.values()].map(async (members) => await members.find((person) => !person.cutOff && person.client.status === 'open')?.client.send(members[0]!.room, 'during the storm')))
  }
  const cutOff = (): Person[] => people.filter((person) => person.cutOff)
  const everyoneBack = await until(() => cutOff().every((person) => person.resumed !== undefined), STORM_TIMEOUT_MS)
  const roomLatest = new Map([...rooms].map(([room, members]) => [room, Math.max(...members.map((person) => person.latest))]))
  await until(() => people.every((person) => person.latest === roomLatest.get(person.room)), 5000)
  const { peakCpu, peakRss } = peaks()
  const resumed = cutOff().filter((person) => person.resumed !== undefined)
  // From when the chat could take them back: the restarted server listening, or (Redis) the stop, the other node being up.
  const backFrom = args.broker === 'sqlite' ? listening : stormStarted
  const times = resumed.map((person) => (person.resumed as { at: number }).at - backFrom).sort((a, b) => a - b)
  const resumeMs = everyoneBack ? (times.at(-1) ?? 0) : Infinity
  process.stdout.write(`${JSON.stringify({
    workload: 'storm',
    broker: args.broker,
    clients: CLIENTS,
    cutOff: cutOff().length,
    resumed: resumed.length,
    resumeMs: Math.round(resumeMs),
    p50ResumeMs: Math.round(times[times.length >> 1] ?? 0),
    resumeAfterStopMs: Math.round(resumeMs + backFrom - stormStarted),
    stopMs: Math.round(stoppedAt - stormStarted),
    restartMs: Math.round(listening - stoppedAt),
    recoveredShare: resumed.filter((person) => person.resumed?.recovered).length / Math.max(1, cutOff().length),
    gaps: people.reduce((sum, person) => sum + person.gaps, 0),
    behind: people.filter((person) => person.latest !== roomLatest.get(person.room)).length,
    peakServerCpu: Number(peakCpu.toFixed(2)),
    peakServerRss: peakRss,
    pass: everyoneBack && resumeMs <= TARGET_RESUME_MS && resumed.every((person) => person.resumed?.recovered) && people.every((person) => person.gaps === 0 && person.latest === roomLatest.get(person.room)),
  })}\n`)
} finally {
  for (const person of people) person.client.close()
  front?.close()
  for (const node of nodes) {
    node.process.kill('SIGTERM')
    if (node.process.exitCode === null) await once(node.process, 'exit')
  }
  await store.cleanUp()
}
