/**
 * The bench runner: for each run and workload, starts a fresh server for each
 * of the workload's servers (ours, the baseline, or ours on another broker;
 * alternating which goes first), pinned to core 0, and the generator pinned to
 * core 1; collects one JSON line per workload and server, prints them, then a
 * table of medians, each figure with its reference and their ratio. Workloads
 * whose reference is ours on another workload (`redis-2node`,
 * `sqlite-fanout-100`) measure that too when it is not selected.
 * Usage: node dist/bench/run.js [--quick] [--runs N] [--only workload,...]
 */
import type { ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { createInterface } from 'node:readline'
import { loadavg } from 'node:os'
import type { Step, Workload } from './generator.js'
import { GENERATOR_CORE, POSTGRES_URL, SERVER_CORE, brokerStore, here, pinned, portOf, postgresQuery, type BrokerKind } from './processes.js'

type ServerName = 'ours' | 'ours-metrics' | 'baseline' | 'baseline-presence' | 'redis-2node' | 'sqlite' | 'postgres'
/** Each server's script, how many nodes of it one run starts, the broker they share (memory when none), and more arguments. */
const SERVERS: Record<ServerName, { file: string, nodes: number, broker?: BrokerKind, args?: string[] }> = {
  ours: { file: 'server.js', nodes: 1 },
  'ours-metrics': { file: 'server.js', nodes: 1, args: ['--metrics'] },
  baseline: { file: 'baseline.js', nodes: 1 },
  'baseline-presence': { file: 'baseline.js', nodes: 1, args: ['--presence'] },
  'redis-2node': { file: 'server.js', nodes: 2, broker: 'redis' },
  sqlite: { file: 'server.js', nodes: 1, broker: 'sqlite' },
  postgres: { file: 'server.js', nodes: 1, broker: 'postgres' },
}

/**
 * What `--only` selects: the generator's workload and the servers it runs against (in this order on odd runs,
 * reversed on even ones). `reference`: a workload whose run on ours this one is compared with, measured too
 * when not selected itself.
 */
const WORKLOADS: Record<string, { generator: Workload, servers: ServerName[], reference?: Workload }> = {
  'fanout-100': { generator: 'fanout-100', servers: ['ours', 'baseline'] },
  'fanout-1000': { generator: 'fanout-1000', servers: ['ours', 'baseline'] },
  rooms: { generator: 'rooms', servers: ['ours', 'baseline'] },
  // The baseline with presence shows what the protocol's presence costs a connect, apart from the rest of ours.
  idle: { generator: 'idle', servers: ['ours', 'baseline', 'baseline-presence'] },
  'redis-2node': { generator: 'fanout-100', servers: ['redis-2node'], reference: 'fanout-100' },
  'sqlite-fanout-100': { generator: 'fanout-100', servers: ['sqlite'], reference: 'fanout-100' },
  // Ours is run beside ours-metrics, alternating which goes first: the comparison is the metrics' cost, smaller than drift.
  'fanout-100-metrics': { generator: 'fanout-100', servers: ['ours-metrics', 'ours'] },
  appends: { generator: 'appends', servers: ['ours', 'sqlite', 'postgres'] },
}
/** No generator run may take longer than this; a hung one is killed and its run reported as failed. */
const GENERATOR_TIMEOUT_MS = 180_000

const argv = process.argv.slice(2)
const quick = argv.includes('--quick')
const runs = Number(argv[argv.indexOf('--runs') + 1] ?? 0) || (quick ? 1 : 3)
/** The reconnect storm (storm.ts) restarts its own servers, so it runs apart from the generator's workloads: once per broker. */
const STORM = 'storm'
type StormServer = `storm-${'sqlite' | 'redis'}`
const STORM_SERVERS: StormServer[] = ['storm-sqlite', 'storm-redis']
/** The sharded workload (shards.ts) starts its own Redis servers and chats, one per shard count: once per run. */
const SHARDS = 'shards'
const SHARD_COUNTS = [1, 2, 3]
/** What labels a result: the server a generator ran against, or the orchestrator that ran its own. */
type Runner = ServerName | StormServer | typeof SHARDS
const known = [...Object.keys(WORKLOADS), STORM, SHARDS]
const only = argv.includes('--only') ? (argv[argv.indexOf('--only') + 1] ?? '').split(',') : known
const unknown = only.filter((name) => !known.includes(name))
if (unknown.length > 0) throw new Error(`unknown workload(s) ${unknown.join(', ')}: expected some of ${known.join(', ')}`)

async function runOne (server: ServerName, workload: Workload, run: number): Promise<Array<Record<string, unknown>>> {
  const { file, nodes, args = [] } = SERVERS[server]
  const broker = brokerStore(SERVERS[server].broker, `bench_${process.pid}_${run}`)
  const servers = Array.from({ length: nodes }, () => pinned(SERVER_CORE, ['--expose-gc', here(file), ...broker.spec, ...args]))
  try {
    const ports = await Promise.all(servers.map(portOf))
    return await resultsOf(pinned(GENERATOR_CORE, [here('generator.js'), JSON.stringify({ workload, ports, serverPids: servers.map((s) => s.pid), quick })]), server, run)
  } finally {
    for (const s of servers) {
      s.kill('SIGTERM')
      if (s.exitCode === null) await once(s, 'exit')
    }
    await broker.cleanUp()
  }
}

/** One storm (storm.ts) on its broker: it starts, stops and restarts its own servers. */
async function runStorm (server: StormServer, run: number): Promise<Array<Record<string, unknown>>> {
  return await resultsOf(pinned(GENERATOR_CORE, [here('storm.js'), JSON.stringify({ broker: server.slice('storm-'.length), quick })]), server, run)
}

/** The chats on 1, 2 and 3 Redis shards (shards.ts), each result labelled with its shard count as workload `shards-S`. */
async function runShards (run: number): Promise<Array<Record<string, unknown>>> {
  return await resultsOf(pinned(GENERATOR_CORE, [here('shards.js'), JSON.stringify({ counts: SHARD_COUNTS, quick })]), SHARDS, run)
}

/** The JSON lines a generator prints, each labelled with the server and run and echoed; a hung one is killed. */
async function resultsOf (generator: ChildProcess, server: Runner, run: number): Promise<Array<Record<string, unknown>>> {
  const timer = setTimeout(() => generator.kill('SIGKILL'), GENERATOR_TIMEOUT_MS)
  const results: Array<Record<string, unknown>> = []
  for await (const line of createInterface({ input: generator.stdout! })) {
    const result = { server, run, ...JSON.parse(line) as Record<string, unknown> }
    process.stdout.write(`${JSON.stringify(result)}\n`)
    results.push(result)
  }
  clearTimeout(timer)
  return results
}

/**
 * Whether PostgreSQL answers at POSTGRES_URL. If not, under CI=true the bench fails (nothing may skip there);
 * elsewhere it skips the postgres server, with a message saying why.
 */
async function postgresAnswers (): Promise<boolean> {
  try {
    await postgresQuery('SELECT 1')
    return true
  } catch (error) {
    const reason = `PostgreSQL is missing: nothing answered at ${POSTGRES_URL} (${(error as Error).message}); start PostgreSQL or set POSTGRES_URL`
    if (process.env.CI === 'true') throw new Error(`${reason}. Under CI the postgres workloads must run, not skip.`, { cause: error })
    process.stderr.write(`skipping the postgres server: ${reason}\n`)
    return false
  }
}

function median (values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

type Pick = (r: Record<string, unknown>) => number | undefined
const best = (key: keyof Step): Pick => (r) => (r.best as Step | undefined)?.[key] as number | undefined
const fixed = (key: keyof Step): Pick => (r) => (r.fixed as Step | undefined)?.[key] as number | undefined
const field = (key: string): Pick => (r) => r[key] as number | undefined
const atLeast = (ratio: number) => (x: number): string => `≥ ${ratio}×: ${x >= ratio ? 'met' : 'NOT met'}`
const absolute = (floor: number, unit: string) => (_: number, figure: number): string =>
  `≥ ${floor.toLocaleString('en-US')}${unit}: ${figure >= floor ? 'met' : 'NOT met'}`

/**
 * Rows of the table: a figure of one server on one workload (as the generator names it), its reference (another
 * server's figure, by default the baseline's on the same workload), and the target, given the ratio figure /
 * reference and both figures.
 */
interface Metric {
  server?: Runner
  workload: string
  name: string
  pick: Pick
  /** `'none'`: a figure with an absolute target only (no server without our broker can be restarted and resumed). */
  reference?: { server: Runner, workload?: string } | 'none'
  target?: (ratio: number, figure: number, reference: number) => string
}
const OURS_ON_ONE_NODE = { server: 'ours' } as const

/** A durable server's `appends` rows, against ours with the memory broker; `floor`: its target in appends/s. */
function appendsRows (server: ServerName, floor: number): Metric[] {
  const row = (name: string, pick: Pick): Metric => ({ server, workload: 'appends', name, pick, reference: OURS_ON_ONE_NODE })
  return [
    { ...row('appends/s', field('appendsPerSec')), target: absolute(floor, '/s') },
    row('p99 ack ms', field('p99')),
    row('µs CPU/append', field('serverUsPerAppend')),
    row('server core busy', field('serverCpu')),
  ]
}
/** An `idle` row of ours against the baseline that sends the same presence: what ours costs beyond the protocol's writes. */
function idleBesidePresence (name: string, key: string): Metric {
  return { workload: 'idle', name, pick: field(key), reference: { server: 'baseline-presence' }, target: () => 'beside ws sending the same presence' }
}
const METRICS: Metric[] = [
  { workload: 'fanout-100', name: 'deliveries/s', pick: best('offered'), target: atLeast(3) },
  { workload: 'fanout-100', name: 'µs CPU/delivery', pick: best('serverUsPerDelivery') },
  { workload: 'fanout-100', name: 'peak RSS at best', pick: best('peakRss') },
  { workload: 'fanout-1000', name: 'deliveries/s', pick: best('offered'), target: atLeast(2) },
  { workload: 'fanout-1000', name: 'µs CPU/delivery', pick: best('serverUsPerDelivery') },
  { workload: 'fanout-1000', name: 'peak RSS at best', pick: best('peakRss') },
  { workload: 'rooms', name: 'deliveries/s', pick: best('offered'), target: atLeast(1.5) },
  { workload: 'rooms', name: 'µs CPU/delivery', pick: best('serverUsPerDelivery') },
  { workload: 'rooms', name: 'peak RSS at best', pick: best('peakRss') },
  { workload: 'fixed-50k', name: 'p50 ms', pick: fixed('p50') },
  { workload: 'fixed-50k', name: 'p99 ms', pick: fixed('p99'), target: (x) => `≤ 1.2×: ${x <= 1.2 ? 'met' : 'NOT met'}` },
  { workload: 'fixed-50k', name: 'max ms', pick: fixed('max') },
  { workload: 'fixed-50k', name: 'µs CPU/delivery', pick: fixed('serverUsPerDelivery') },
  { workload: 'fixed-50k', name: 'peak RSS', pick: fixed('peakRss'), target: (x) => `≤ 1.5×: ${x <= 1.5 ? 'met' : 'NOT met'}` },
  { workload: 'idle', name: 'RSS bytes/conn', pick: field('rssPerConnection'), target: (_, ours, base) => `≤ +2 KB: ${ours - base <= 2048 ? 'met' : 'NOT met'} (${Math.round(ours - base)} B)` },
  { workload: 'idle', name: 'connections/s', pick: field('connectionsPerSec'), target: atLeast(1) },
  { workload: 'idle', name: 'µs CPU/connection', pick: field('serverUsPerConnection') },
  { workload: 'idle', name: 'connect p99 ms', pick: field('connectP99'), target: (x) => `≤ 1×: ${x <= 1 ? 'met' : 'NOT met'}` },
  idleBesidePresence('connections/s', 'connectionsPerSec'),
  idleBesidePresence('µs CPU/connection', 'serverUsPerConnection'),
  idleBesidePresence('connect p99 ms', 'connectP99'),
  { server: 'redis-2node', workload: 'fanout-100', name: 'deliveries/s', pick: best('offered'), reference: OURS_ON_ONE_NODE, target: () => 'cost of crossing Redis' },
  { server: 'redis-2node', workload: 'fanout-100', name: 'µs CPU/delivery', pick: best('serverUsPerDelivery'), reference: OURS_ON_ONE_NODE, target: () => 'both nodes, Redis not counted' },
  { server: 'redis-2node', workload: 'fixed-50k', name: 'p50 ms', pick: fixed('p50'), reference: OURS_ON_ONE_NODE },
  { server: 'redis-2node', workload: 'fixed-50k', name: 'p99 ms', pick: fixed('p99'), reference: OURS_ON_ONE_NODE },
  { server: 'redis-2node', workload: 'fixed-50k', name: 'µs CPU/delivery', pick: fixed('serverUsPerDelivery'), reference: OURS_ON_ONE_NODE },
  { server: 'sqlite', workload: 'fanout-100', name: 'deliveries/s', pick: best('offered'), reference: OURS_ON_ONE_NODE, target: atLeast(0.8) },
  { server: 'sqlite', workload: 'fanout-100', name: 'µs CPU/delivery', pick: best('serverUsPerDelivery'), reference: OURS_ON_ONE_NODE },
  { server: 'sqlite', workload: 'fixed-50k', name: 'p99 ms', pick: fixed('p99'), reference: OURS_ON_ONE_NODE },
  { server: 'ours-metrics', workload: 'fanout-100', name: 'deliveries/s', pick: best('offered'), reference: OURS_ON_ONE_NODE, target: () => 'cost of metrics' },
  { server: 'ours-metrics', workload: 'fanout-100', name: 'µs CPU/delivery', pick: best('serverUsPerDelivery'), reference: OURS_ON_ONE_NODE },
  { server: 'ours-metrics', workload: 'fixed-50k', name: 'p99 ms', pick: fixed('p99'), reference: OURS_ON_ONE_NODE },
  { server: 'ours-metrics', workload: 'fixed-50k', name: 'µs CPU/delivery', pick: fixed('serverUsPerDelivery'), reference: OURS_ON_ONE_NODE, target: (x) => `≤ 1.05×: ${x <= 1.05 ? 'met' : 'NOT met'}` },
  ...appendsRows('sqlite', 20_000),
  ...appendsRows('postgres', 5_000),
  ...STORM_SERVERS.flatMap((server): Metric[] => {
    const row = (name: string, pick: Pick, target?: Metric['target']): Metric => ({ server, workload: 'storm', name, pick, reference: 'none', target })
    return [
      row('ms until all resumed', field('resumeMs'), (_, ms) => `≤ 10,000 ms: ${ms <= 10_000 ? 'met' : 'NOT met'}`),
      row('ms from the stop', field('resumeAfterStopMs')),
      row('ms draining', field('stopMs')),
      row('share recovered', field('recoveredShare'), (_, share) => `100%: ${share === 1 ? 'met' : 'NOT met'}`),
      row('clients cut off', field('cutOff')),
      row('peak server CPU', field('peakServerCpu')),
      row('peak server RSS', field('peakServerRss')),
    ]
  }),
  ...SHARD_COUNTS.slice(1).flatMap((count): Metric[] => {
    const row = (name: string, pick: Pick, target: Metric['target']): Metric =>
      ({ server: SHARDS, workload: `shards-${count}`, name, pick, reference: { server: SHARDS, workload: 'shards-1' }, target })
    // Each shard carries about what the one shard of shards-1 does, so the busiest one's share of a message is about 1/S.
    const share = 1.25 / count
    return [
      row('busiest shard µs CPU/msg', field('busiestUsPerMessage'), (x) => `≈ 1/${count}, ≤ ${share.toFixed(2)}×: ${x <= share ? 'met' : 'NOT met'}`),
      row('Redis µs CPU/msg', field('totalUsPerMessage'), () => 'all shards: what sharding adds'),
    ]
  }),
]

/** Rows as columns padded to their widest cell. */
function table (rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((row) => row[i]!.length)))
  return rows.map((row) => row.map((cell, i) => cell.padEnd(widths[i]!)).join('  ')).join('\n')
}

/**
 * The sharded workload per shard count: the messages each shard carried and its µs CPU per message, the busiest
 * shard's µs CPU per message of the chat beside 1/S, and the scale model that follows from them.
 */
function shardsSummary (): string {
  const rows = [['S', 'messages per shard', 'µs CPU/msg per shard', 'µs in scripts/msg', 'reads/msg', 'busiest shard µs CPU/chat msg', '× S=1', '1/S']]
  let one: number | undefined
  const ceilings: string[] = []
  for (const count of SHARD_COUNTS) {
    const results = all.filter((r) => r.server === SHARDS && r.workload === `shards-${count}`)
    if (results.length === 0) continue
    const perShard = (key: string): string => (results[0]![key] as number[]).map((_, i) => format(median(results.map((r) => (r[key] as number[])[i]!)))).join(' ')
    const busiest = median(results.map((r) => r.busiestUsPerMessage as number))
    if (count === 1) one = busiest
    ceilings.push(`S=${count}: ${format(1e6 / busiest)}`)
    rows.push([String(count), perShard('shardMessages'), perShard('shardUsPerMessage'), perShard('shardCommandUsPerMessage'), perShard('shardReadsPerMessage'),
      format(busiest), one ? (busiest / one).toFixed(2) : '', (1 / count).toFixed(2)])
  }
  if (one === undefined) return 'shards: no result from one shard (see the errors above)'
  const capacity = 1e6 / one
  return `${table(rows)}\n\n` +
    'scale model, from the CPU per message at about one read per message (a floor: a busy shard reads several commands per wake-up and costs less):\n' +
    `  one shard at 100 % of one core: 1e6 / ${format(one)} µs = ${format(capacity)} messages/s; ` +
    `N shards, the rooms spread evenly: N × ${format(capacity)} (${[2, 3, 5, 10].map((n) => `${n}: ${format(n * capacity)}`).join(', ')})\n` +
    `  measured, the busiest shard at 100 % (1e6 / its µs CPU per chat message): ${ceilings.join(', ')} messages/s`
}

function format (value: number): string {
  return value >= 1000 ? Math.round(value).toLocaleString('en-US') : value.toPrecision(3)
}

const all: Array<Record<string, unknown>> = []
const started = Date.now()
const selected = Object.keys(WORKLOADS).filter((w) => only.includes(w))
const storms = only.includes(STORM) ? STORM_SERVERS : []
const shards = only.includes(SHARDS)
const skipPostgres = selected.some((w) => WORKLOADS[w]!.servers.includes('postgres')) && !await postgresAnswers()
for (let run = 1; run <= runs; run++) {
  // References already measured in this run (by their own selection or for another workload), by workload.
  const measured = new Set<string>()
  for (const name of selected) {
    const { generator, servers, reference } = WORKLOADS[name]!
    const order = run % 2 ? servers : [...servers].reverse()
    for (const server of order) {
      if (server === 'postgres' && skipPostgres) continue
      all.push(...await runOne(server, generator, run))
    }
    if (servers.includes('ours')) measured.add(generator)
    if (reference === undefined || measured.has(reference) || selected.includes(reference)) continue
    all.push(...await runOne('ours', reference, run))
    measured.add(reference)
  }
  for (const server of storms) all.push(...await runStorm(server, run))
  if (shards) all.push(...await runShards(run))
}

const rows = [['server', 'workload', 'metric', 'figure', 'reference', 'ref. figure', 'ratio', 'target']]
for (const metric of METRICS) {
  const server = metric.server ?? 'ours'
  if (metric.reference === 'none') {
    const figures = all.filter((r) => r.server === server && r.workload === metric.workload).map(metric.pick).filter((v): v is number => typeof v === 'number')
    if (figures.length === 0) continue
    const f = median(figures)
    rows.push([server, metric.workload, metric.name, format(f), '—', '', '', metric.target?.(Number.NaN, f, Number.NaN) ?? ''])
    continue
  }
  const reference = { server: metric.reference?.server ?? 'baseline', workload: metric.reference?.workload ?? metric.workload }
  const of = (server: string, workload: string): number[] => all
    .filter((r) => r.server === server && r.workload === workload)
    .map(metric.pick).filter((v): v is number => typeof v === 'number')
  const figures = of(server, metric.workload)
  const references = of(reference.server, reference.workload)
  const referenceName = reference.workload === metric.workload ? reference.server : `${reference.server} ${reference.workload}`
  const ran = (name: string, workload: string): boolean => all.some((r) => r.server === name && r.workload === workload)
  // A workload that ran but gave no figure (no ramp step passed) says so, rather than leaving its row out.
  if (figures.length === 0 || references.length === 0) {
    if (ran(server, metric.workload) && ran(reference.server, reference.workload)) {
      rows.push([server, metric.workload, metric.name, figures.length ? format(median(figures)) : 'none', referenceName,
        references.length ? format(median(references)) : 'none', '', 'no figure: no step passed (see the JSON lines)'])
    }
    continue
  }
  const [f, r] = [median(figures), median(references)]
  rows.push([server, metric.workload, metric.name, format(f), referenceName, format(r), `${(f / r).toFixed(2)}×`, metric.target?.(f / r, f, r) ?? ''])
}
const bound = all.filter((r) => r.generatorBound === true).map((r) => `${r.server} ${r.workload} run ${r.run}`)
const failed = all.filter((r) => r.pass === false).map((r) => `${r.server} ${r.workload} run ${r.run} (${r.why as string})`)
process.stdout.write(`\n${table(rows)}\n`)
if (shards) process.stdout.write(`\n${shardsSummary()}\n`)
// Other work on the machine shows up in every figure, most in the closed-loop ones: say how busy it was.
process.stdout.write(`\nmedians of ${runs} run(s), ${Math.round((Date.now() - started) / 1000)} s, load average over the last 5 minutes ${loadavg()[1]!.toFixed(2)}` +
  (bound.length ? `; generator-bound (its core saturated; the figure is a floor): ${bound.join(', ')}` : '') +
  (failed.length ? `; FAILED checks: ${failed.join(', ')}` : '') +
  (selected.includes('redis-2node') ? `; redis-2node: both nodes share core ${SERVER_CORE}, reference is ours on one node` : '') +
  (selected.includes('appends') && !skipPostgres ? `; postgres: the server is pinned to core ${SERVER_CORE}, PostgreSQL runs wherever the OS puts it and its CPU is not counted` : '') +
  (skipPostgres ? '; postgres skipped: PostgreSQL did not answer' : '') + '\n')
