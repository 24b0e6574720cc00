/**
 * The sharded workload: what each Redis shard costs per message as rooms
 * spread over 1, 2 and 3 shards. On 2 cores the shards share the cores, so
 * wall-clock throughput cannot show them adding capacity; their cost can.
 *
 * It starts three private redis-servers and one chat per shard count S: two
 * nodes of ours (server.ts on the first S servers through $REDIS_SHARDS,
 * with a key prefix of the chat's own, pinned to the server core), and
 * clients in many rooms, each room's members alternating between the nodes.
 * Then, in rounds, each chat in turn (the order reversed every other round,
 * so that other work on the machine falls on every S alike) sends for a
 * fixed time at S times a fixed rate, so that each shard carries about as
 * many messages whatever S. Each of its shards' `INFO` (stats reset with
 * `CONFIG RESETSTAT` before) gives, over that window: the messages the shard
 * carried (its PUBLISH calls: every message's append script publishes it
 * once, on its room's shard), its script calls and their time, its reads,
 * and the CPU its process used. Prints one JSON line per chat (workload
 * `shards-S`), its windows summed; the runner compares them with `shards-1`.
 * Usage: node shards.js '{"counts":[1,2,3],"quick":false}' (pinned by the runner to the generator's core)
 */
import { spawnSync, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import { Redis } from 'ioredis'
import { RedisServer } from '../test/helpers/redis-server.js'
import { newTally, type Client, type Tally } from './client.js'
import { connectAll, publishPaced, quiet, type Publisher, type Seat } from './load.js'
import { PRIORITY, SERVER_CORE, here, pinned, portOf } from './processes.js'

/** `counts`: the shard counts to measure (the runner compares each with 1). */
const args = JSON.parse(process.argv[2] ?? '{}') as { counts: number[], quick: boolean }
/** Rooms enough that the jump hash spreads them within about 10 % of even over three shards. */
const ROOMS = 300
/** Members per room, alternating between the nodes, so that every message crosses Redis to both. */
const ROOM_SIZE = 4
const NODES = 2
/**
 * Messages a second per shard: a chat on S shards sends S times this, so that each of its shards carries about
 * what the one shard of `shards-1` does. A shard's cost per message depends on its load: a busy Redis reads
 * several commands per wake-up, an idle one one. This load is light (each message comes in a read of its own,
 * reads per message near 1) and the same for every shard, so their costs compare; three shards' worth stays
 * far below what the two nodes, sharing one core, can carry, so their own batching does not change with S.
 */
const RATE_PER_SHARD = 1000
/** One window: S × RATE_PER_SHARD × this many messages. */
const WINDOW_MS = 1000
/** Windows per chat: several short ones, interleaved, rather than one long one per chat. */
const ROUNDS = args.quick ? 2 : 4
/** Before the rounds, each chat sends at its rate for this long: every shard loads the scripts and the nodes' JIT warms. */
const WARM_UP_MS = 1000
/** After a window's sending stops, how long its last deliveries may take. */
const DRAIN_MS = 10_000
/** The commands that run scripts: their time includes that of the commands they run (which commandstats counts again under their own names). */
const SCRIPT_COMMANDS = new Set(['eval', 'evalsha', 'eval_ro', 'evalsha_ro', 'fcall', 'fcall_ro'])

/**
 * What one shard did over a chat's windows, from its INFO. While messages flow, every call the nodes make is a
 * script: the appends, and on the registry's shard the nodes' lease renewals.
 */
interface ShardUse {
  /** Messages it carried: its PUBLISH calls, each message's append script publishing it once. */
  messages: number
  /** Script calls. */
  calls: number
  /** Time in those scripts, µs: commandstats' clock, the wall time of each call (a call preempted counts the wait). */
  commandUs: number
  /** CPU its process used, µs (user + system): with reading requests, writing replies and delivering events. */
  cpuUs: number
  /** Reads from its clients' sockets: fewer than its calls when a read brings several, which makes each cost less. */
  reads: number
}

/** A shard's process CPU so far, µs. */
async function cpuUsOf (redis: Redis): Promise<number> {
  const info = await redis.info('cpu')
  const field = (name: string): number => Number(new RegExp(`^${name}:([\\d.]+)`, 'm').exec(info)?.[1])
  return Math.round((field('used_cpu_user') + field('used_cpu_sys')) * 1e6)
}

/** Adds to `use` what one shard did since its stats were reset and its CPU read as `cpu0`. */
async function addUse (use: ShardUse, redis: Redis, cpu0: number): Promise<void> {
  use.cpuUs += await cpuUsOf(redis) - cpu0
  use.reads += Number(/^total_reads_processed:(\d+)/m.exec(await redis.info('stats'))?.[1])
  for (const [, command, calls, usec] of (await redis.info('commandstats')).matchAll(/^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/gm)) {
    if (command === 'publish') use.messages += Number(calls)
    if (!SCRIPT_COMMANDS.has(command!)) continue
    use.calls += Number(calls)
    use.commandUs += Number(usec)
  }
}

/** Waits until `count` messages arrived (or DRAIN_MS passed): true if they all did. */
async function arrived (tally: Tally, count: number): Promise<boolean> {
  const deadline = performance.now() + DRAIN_MS
  while (tally.messages < count && performance.now() < deadline) await sleep(10)
  return tally.messages === count
}

/** One chat on the first `shards` shards: its nodes, clients and publishers, and what it sent and its shards did. */
interface Chat {
  shards: Redis[]
  nodes: ChildProcess[]
  clients: Client[]
  publishers: Publisher[]
  tally: Tally
  sent: number
  /** Windows in which not every delivery arrived. */
  short: number
  seconds: number
  uses: ShardUse[]
}

/** Starts a chat's nodes on the first `count` shards; `seat` brings its clients. */
function newChat (probes: Redis[], urls: string[], count: number): Chat {
  const env = { REDIS_SHARDS: urls.slice(0, count).join(',') }
  return {
    shards: probes.slice(0, count),
    nodes: Array.from({ length: NODES }, () => pinned(SERVER_CORE, [here('server.js'), `redis:bench_shards_${count}:`], env)),
    clients: [],
    publishers: [],
    tally: newTally(),
    sent: 0,
    short: 0,
    seconds: 0,
    uses: Array.from({ length: count }, () => ({ messages: 0, calls: 0, commandUs: 0, cpuUs: 0, reads: 0 })),
  }
}

/** Connects the chat's clients, all joined, and warms it up. */
async function seat (chat: Chat): Promise<void> {
  const ports = await Promise.all(chat.nodes.map(portOf))
  // Member k of every room on node k mod NODES.
  const seats: Seat[] = Array.from({ length: ROOMS * ROOM_SIZE }, (_, i) => ({ port: ports[Math.floor(i / ROOMS) % NODES]!, room: `room-${i % ROOMS}` }))
  chat.clients = await connectAll(seats, chat.tally, 1)
  chat.publishers = chat.clients.slice(0, ROOMS).map((client, i) => ({ client, room: seats[i]!.room, queued: [] }))
  await quiet(chat.tally)
  const warmedUp = await publishPaced(chat.publishers, RATE_PER_SHARD * chat.shards.length, WARM_UP_MS)
  await arrived(chat.tally, warmedUp * ROOM_SIZE)
  chat.tally.latency.reset()
}

/** One window of a chat: its rate for WINDOW_MS, until every message arrived, and what its shards did meanwhile. */
async function window (chat: Chat): Promise<void> {
  await Promise.all(chat.shards.map((redis) => redis.config('RESETSTAT')))
  const cpu0 = await Promise.all(chat.shards.map(cpuUsOf))
  const messages0 = chat.tally.messages
  const t0 = performance.now()
  const sent = await publishPaced(chat.publishers, RATE_PER_SHARD * chat.shards.length, WINDOW_MS)
  if (!await arrived(chat.tally, messages0 + sent * ROOM_SIZE)) chat.short++
  chat.seconds += (performance.now() - t0) / 1000
  chat.sent += sent
  await Promise.all(chat.shards.map((redis, i) => addUse(chat.uses[i]!, redis, cpu0[i]!)))
}

function resultOf (chat: Chat): object {
  const { tally, uses, sent } = chat
  const carried = uses.reduce((sum, use) => sum + use.messages, 0)
  const closed = [...tally.closes.values()].reduce((sum, n) => sum + n, 0)
  const why = [
    chat.short > 0 && `${chat.short} windows of ${ROUNDS} did not deliver every message`,
    carried !== sent && `the shards carried ${carried} messages, ${sent} were sent`,
    tally.gaps + tally.orderViolations > 0 && 'seq gaps or disorder',
    tally.errors > 0 && `${tally.errors} error frames`,
    closed > 0 && `${closed} connections closed (${JSON.stringify([...tally.closes])})`,
  ].filter(Boolean).join('; ')
  const cpu = uses.map((use) => use.cpuUs)
  const commands = uses.map((use) => use.commandUs)
  const sum = (values: number[]): number => values.reduce((a, b) => a + b, 0)
  return {
    workload: `shards-${uses.length}`,
    shards: uses.length,
    rooms: ROOMS,
    roomSize: ROOM_SIZE,
    nodes: NODES,
    sent,
    seconds: chat.seconds,
    shardMessages: uses.map((use) => use.messages),
    shardCalls: uses.map((use) => use.calls),
    shardCpuUs: cpu,
    shardCommandUs: commands,
    // Each shard's cost per message it carried: what one shard's capacity follows from.
    shardUsPerMessage: uses.map((use) => use.cpuUs / use.messages),
    shardCommandUsPerMessage: uses.map((use) => use.commandUs / use.messages),
    shardReadsPerMessage: uses.map((use) => use.reads / use.messages),
    // Per message of the whole chat: the busiest shard's is what limits the chat; the sum, what its Redis work costs.
    busiestUsPerMessage: Math.max(...cpu) / sent,
    totalUsPerMessage: sum(cpu) / sent,
    busiestCommandUsPerMessage: Math.max(...commands) / sent,
    totalCommandUsPerMessage: sum(commands) / sent,
    p99: tally.latency.quantile(0.99),
    pass: why === '',
    ...(why === '' ? {} : { why }),
  }
}

async function stopChat (chat: Chat): Promise<void> {
  for (const client of chat.clients) client.destroy()
  await Promise.all(chat.nodes.map(async (node) => {
    node.kill('SIGTERM')
    if (node.exitCode === null) await once(node, 'exit')
  }))
}

const servers: RedisServer[] = []
const probes: Redis[] = []
const chats: Chat[] = []
try {
  while (servers.length < Math.max(...args.counts)) {
    const server = await RedisServer.start()
    const probe = new Redis(server.url)
    servers.push(server)
    probes.push(probe)
    // The nodes and the clients run at a raised priority where allowed: so do the shards, or they would wait behind them.
    spawnSync('renice', ['-n', String(PRIORITY), '-p', /^process_id:(\d+)/m.exec(await probe.info('server'))![1]!], { stdio: 'ignore' })
  }
  const urls = servers.map((server) => server.url)
  for (const count of args.counts) {
    const chat = newChat(probes, urls, count)
    chats.push(chat)
    await seat(chat)
  }
  for (let round = 0; round < ROUNDS; round++) {
    for (const chat of round % 2 ? [...chats].reverse() : chats) await window(chat)
  }
  for (const chat of chats) process.stdout.write(`${JSON.stringify(resultOf(chat))}\n`)
} finally {
  await Promise.all(chats.map(stopChat))
  for (const probe of probes) probe.disconnect()
  await Promise.all(servers.map((server) => server.kill()))
}
process.exit(0)
