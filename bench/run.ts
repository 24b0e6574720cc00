/**
 * The bench runner: for each run and workload, starts a fresh server (ours or
 * the baseline, alternating which goes first), pinned to core 0, and the
 * generator pinned to core 1; collects one JSON line per workload, prints
 * them, then a table of medians and ratios ours / baseline.
 * Usage: node dist/bench/run.js [--quick] [--runs N] [--only workload,...]
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { createInterface } from 'node:readline'
import type { Step, Workload } from './generator.js'

const SERVERS = { ours: 'server.js', baseline: 'baseline.js' } as const
type ServerName = keyof typeof SERVERS
const WORKLOADS: Workload[] = ['fanout-100', 'fanout-1000', 'rooms', 'idle']
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

async function firstLine (child: ChildProcess): Promise<string> {
  const lines = createInterface({ input: child.stdout! })
  const [line] = await once(lines, 'line') as [string]
  lines.close()
  return line
}

async function runOne (server: ServerName, workload: Workload, run: number): Promise<Array<Record<string, unknown>>> {
  const serverProcess = pinned(SERVER_CORE, ['--expose-gc', here(SERVERS[server])])
  try {
    const { port } = JSON.parse(await firstLine(serverProcess)) as { port: number }
    const generator = pinned(GENERATOR_CORE, [here('generator.js'), JSON.stringify({ workload, port, serverPid: serverProcess.pid, quick })])
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
    serverProcess.kill('SIGTERM')
    if (serverProcess.exitCode === null) await once(serverProcess, 'exit')
  }
}

function median (values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

/** Metric rows of the table: where each figure comes from, and the target for ours / baseline. */
const METRICS: Array<{ workload: string, name: string, pick: (r: Record<string, unknown>) => number | undefined, target?: (ratio: number, ours: number, base: number) => string }> = [
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
]

function format (value: number): string {
  return value >= 1000 ? Math.round(value).toLocaleString('en-US') : value.toPrecision(3)
}

const all: Array<Record<string, unknown>> = []
const started = Date.now()
for (let run = 1; run <= runs; run++) {
  for (const workload of WORKLOADS.filter((w) => only.includes(w))) {
    const order: ServerName[] = run % 2 ? ['ours', 'baseline'] : ['baseline', 'ours']
    for (const server of order) all.push(...await runOne(server, workload, run))
  }
}

const rows = [['workload', 'metric', 'ours', 'baseline', 'ours/baseline', 'target']]
for (const metric of METRICS) {
  const of = (server: ServerName): number[] => all
    .filter((r) => r.server === server && r.workload === metric.workload)
    .map(metric.pick).filter((v): v is number => typeof v === 'number')
  const [ours, base] = [of('ours'), of('baseline')]
  if (ours.length === 0 || base.length === 0) continue
  const [o, b] = [median(ours), median(base)]
  rows.push([metric.workload, metric.name, format(o), format(b), `${(o / b).toFixed(2)}×`, metric.target?.(o / b, o, b) ?? ''])
}
const bound = all.filter((r) => r.generatorBound === true).map((r) => `${r.server} ${r.workload} run ${r.run}`)
const widths = rows[0]!.map((_, i) => Math.max(...rows.map((row) => row[i]!.length)))
process.stdout.write(`\n${rows.map((row) => row.map((cell, i) => cell.padEnd(widths[i]!)).join('  ')).join('\n')}\n`)
process.stdout.write(`\nmedians of ${runs} run(s), ${Math.round((Date.now() - started) / 1000)} s` +
  (bound.length ? `; generator-bound (its core saturated; the figure is a floor): ${bound.join(', ')}` : '') + '\n')
