/**
 * The bench runner: for each run and workload, starts a fresh server (ours or
 * the baseline, alternating which goes first), pinned to core 0, and the
 * generator pinned to core 1; collects one JSON line per workload, prints
 * them, then a table of medians and ratios ours / baseline. `redis-2node` runs
 * two nodes of ours sharing a Redis (both on core 0) and is compared with ours
 * on `fanout-100` instead, there being no two-node baseline.
 * Usage: node dist/bench/run.js [--quick] [--runs N] [--only workload,...]
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { createInterface } from 'node:readline'
import { Redis } from 'ioredis'
import type { Step, Workload } from './generator.js'

/** Each server's script, and how many nodes of it one run starts. */
const SERVERS = {
  ours: { file: 'server.js', nodes: 1 },
  baseline: { file: 'baseline.js', nodes: 1 },
  'redis-2node': { file: 'server.js', nodes: 2 },
} as const
type ServerName = keyof typeof SERVERS
const WORKLOADS: Workload[] = ['fanout-100', 'fanout-1000', 'rooms', 'idle', 'redis-2node']
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
/** SCAN rounds allowed for the cleanup: far more than a run's few hundred keys need. */
const MAX_SCANS = 10_000
/** No generator run may take longer than this; a hung one is killed and its run reported as failed. */
const GENERATOR_TIMEOUT_MS = 180_000
const SERVER_CORE = 0
const GENERATOR_CORE = 1

const argv = process.argv.slice(2)
const quick = argv.includes('--quick')
const runs = Number(argv[argv.indexOf('--runs') + 1] ?? 0) || (quick ? 1 : 3)
const only = argv.includes('--only') ? (argv[argv.indexOf('--only') + 1] ?? '').split(',') : WORKLOADS
const here = (file: string): string => fileURLToPath(new URL(file, import.meta.url))

/**
 * Started through a shell only to raise the file limit; `exec` leaves node itself as the child, so its pid is
 * the server's. A raised priority (where allowed; `nice` warns and goes on otherwise) keeps other work on a
 * shared machine from adding its own latency to the figures.
 */
function pinned (core: number, nodeArgs: string[]): ChildProcess {
  const command = `ulimit -n "$(ulimit -Hn)" && exec nice -n -10 taskset -c ${core} "${process.execPath}" ${nodeArgs.map((a) => `'${a}'`).join(' ')}`
  return spawn('bash', ['-c', command], { stdio: ['ignore', 'pipe', 'inherit'] })
}

/** The server's first line (its port); a server that dies first (say Redis is unreachable) fails the run. */
async function firstLine (child: ChildProcess): Promise<string> {
  const lines = createInterface({ input: child.stdout! })
  const exited = once(child, 'exit').then(() => { throw new Error('server exited before listening') })
  const [line] = await Promise.race([once(lines, 'line'), exited]) as [string]
  lines.close()
  return line
}

/** Deletes every key of one run's prefix, so that runs leave nothing in a shared Redis. */
async function deleteKeys (prefix: string): Promise<void> {
  const redis = new Redis(REDIS_URL)
  try {
    let cursor = '0'
    for (let i = 0; i < MAX_SCANS && (i === 0 || cursor !== '0'); i++) {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000)
      if (keys.length > 0) await redis.del(...keys)
      cursor = next
    }
  } finally {
    redis.disconnect()
  }
}

async function runOne (server: ServerName, workload: Workload, run: number): Promise<Array<Record<string, unknown>>> {
  const { file, nodes } = SERVERS[server]
  // Unique per runner and run: runs never share rooms, and the cleanup deletes only this run's keys.
  const prefix = server === 'redis-2node' ? [`bench-${process.pid}-${run}:`] : []
  const servers = Array.from({ length: nodes }, () => pinned(SERVER_CORE, ['--expose-gc', here(file), ...prefix]))
  try {
    const ports = await Promise.all(servers.map(async (s) => (JSON.parse(await firstLine(s)) as { port: number }).port))
    const generator = pinned(GENERATOR_CORE, [here('generator.js'), JSON.stringify({ workload, ports, serverPids: servers.map((s) => s.pid), quick })])
    const timer = setTimeout(() => generator.kill('SIGKILL'), GENERATOR_TIMEOUT_MS)
    const results: Array<Record<string, unknown>> = []
    for await (const line of createInterface({ input: generator.stdout! })) {
      const result = { server, run, ...JSON.parse(line) as Record<string, unknown> }
      process.stdout.write(`${JSON.stringify(result)}\n`)
      results.push(result)
    }
    clearTimeout(timer)
    return results
  } finally {
    for (const s of servers) {
      s.kill('SIGTERM')
      if (s.exitCode === null) await once(s, 'exit')
    }
    if (prefix[0] !== undefined) await deleteKeys(prefix[0])
  }
}

function median (values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

/**
 * Metric rows of the table: where each figure comes from, and the target for ours / baseline. `versus` rows
 * compare redis-2node with ours on a single-node workload instead.
 */
const METRICS: Array<{ workload: string, name: string, pick: (r: Record<string, unknown>) => number | undefined, versus?: string, target?: (ratio: number, ours: number, base: number) => string }> = [
  { workload: 'fanout-100', name: 'deliveries/s', pick: (r) => (r.best as Step | undefined)?.offered, target: (x) => `≥ 3×: ${x >= 3 ? 'met' : 'NOT met'}` },
  { workload: 'fanout-100', name: 'µs CPU/delivery', pick: (r) => (r.best as Step | undefined)?.serverUsPerDelivery },
  { workload: 'fanout-1000', name: 'deliveries/s', pick: (r) => (r.best as Step | undefined)?.offered, target: (x) => `≥ 2×: ${x >= 2 ? 'met' : 'NOT met'}` },
  { workload: 'fanout-1000', name: 'µs CPU/delivery', pick: (r) => (r.best as Step | undefined)?.serverUsPerDelivery },
  { workload: 'rooms', name: 'deliveries/s', pick: (r) => (r.best as Step | undefined)?.offered, target: (x) => `≥ 1.5×: ${x >= 1.5 ? 'met' : 'NOT met'}` },
  { workload: 'rooms', name: 'µs CPU/delivery', pick: (r) => (r.best as Step | undefined)?.serverUsPerDelivery },
  { workload: 'fixed-50k', name: 'p50 ms', pick: (r) => (r.fixed as Step).p50 },
  { workload: 'fixed-50k', name: 'p99 ms', pick: (r) => (r.fixed as Step).p99, target: (x) => `≤ 1.2×: ${x <= 1.2 ? 'met' : 'NOT met'}` },
  { workload: 'fixed-50k', name: 'max ms', pick: (r) => (r.fixed as Step).max },
  { workload: 'fixed-50k', name: 'µs CPU/delivery', pick: (r) => (r.fixed as Step).serverUsPerDelivery },
  { workload: 'idle', name: 'RSS bytes/conn', pick: (r) => r.rssPerConnection as number, target: (_, ours, base) => `≤ +2 KB: ${ours - base <= 2048 ? 'met' : 'NOT met'} (${Math.round(ours - base)} B)` },
  { workload: 'idle', name: 'connections/s', pick: (r) => r.connectionsPerSec as number },
  { workload: 'redis-2node', name: 'deliveries/s', pick: (r) => (r.best as Step | undefined)?.offered, versus: 'fanout-100', target: () => 'cost of crossing Redis' },
  { workload: 'redis-2node', name: 'µs CPU/delivery', pick: (r) => (r.best as Step | undefined)?.serverUsPerDelivery, versus: 'fanout-100', target: () => 'both nodes, Redis not counted' },
  { workload: 'redis-2node-50k', name: 'p50 ms', pick: (r) => (r.fixed as Step).p50, versus: 'fixed-50k' },
  { workload: 'redis-2node-50k', name: 'p99 ms', pick: (r) => (r.fixed as Step).p99, versus: 'fixed-50k' },
  { workload: 'redis-2node-50k', name: 'µs CPU/delivery', pick: (r) => (r.fixed as Step).serverUsPerDelivery, versus: 'fixed-50k' },
]

function format (value: number): string {
  return value >= 1000 ? Math.round(value).toLocaleString('en-US') : value.toPrecision(3)
}

const all: Array<Record<string, unknown>> = []
const started = Date.now()
const selected = WORKLOADS.filter((w) => only.includes(w))
for (let run = 1; run <= runs; run++) {
  for (const workload of selected) {
    const order: ServerName[] = run % 2 ? ['ours', 'baseline'] : ['baseline', 'ours']
    if (workload !== 'redis-2node') {
      for (const server of order) all.push(...await runOne(server, workload, run))
      continue
    }
    all.push(...await runOne('redis-2node', workload, run))
    // Its reference, unless this run has measured it already.
    if (!selected.includes('fanout-100')) all.push(...await runOne('ours', 'fanout-100', run))
  }
}

const rows = [['workload', 'metric', 'ours', 'reference', 'ratio', 'target']]
for (const metric of METRICS) {
  const of = (server: ServerName, workload: string): number[] => all
    .filter((r) => r.server === server && r.workload === workload)
    .map(metric.pick).filter((v): v is number => typeof v === 'number')
  const ours = of(metric.versus ? 'redis-2node' : 'ours', metric.workload)
  const base = metric.versus ? of('ours', metric.versus) : of('baseline', metric.workload)
  if (ours.length === 0 || base.length === 0) continue
  const [o, b] = [median(ours), median(base)]
  rows.push([metric.versus ? `${metric.workload} / ours ${metric.versus}` : metric.workload, metric.name, format(o), format(b), `${(o / b).toFixed(2)}×`, metric.target?.(o / b, o, b) ?? ''])
}
const bound = all.filter((r) => r.generatorBound === true).map((r) => `${r.server} ${r.workload} run ${r.run}`)
const widths = rows[0]!.map((_, i) => Math.max(...rows.map((row) => row[i]!.length)))
process.stdout.write(`\n${rows.map((row) => row.map((cell, i) => cell.padEnd(widths[i]!)).join('  ')).join('\n')}\n`)
process.stdout.write(`\nmedians of ${runs} run(s), ${Math.round((Date.now() - started) / 1000)} s` +
  (bound.length ? `; generator-bound (its core saturated; the figure is a floor): ${bound.join(', ')}` : '') +
  (selected.includes('redis-2node') ? `; redis-2node: both nodes share core ${SERVER_CORE}, reference is ours on one node` : '') + '\n')
