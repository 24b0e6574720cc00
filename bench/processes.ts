/**
 * What the bench's orchestrators share: starting a process pinned to a core,
 * reading a server's first line (its port), what a process has used of CPU and
 * memory, and the broker store one run uses and how to delete it afterwards.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, readFileSync } from 'node:fs'
import { rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'

export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
export const POSTGRES_URL = process.env.POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test'
/** SCAN rounds allowed for the cleanup: far more than a run's few hundred keys need. */
const MAX_SCANS = 10_000
/** The niceness the bench's processes run at where allowed: other work on a shared machine waits behind them. */
export const PRIORITY = -10
export const SERVER_CORE = 0
export const GENERATOR_CORE = 1

/** A file of the compiled bench, by name. */
export const here = (file: string): string => fileURLToPath(new URL(file, import.meta.url))

/**
 * Started through a shell only to raise the file limit; `exec` leaves node itself as the child, so its pid is
 * the server's. A raised priority (where allowed; `nice` warns and goes on otherwise) keeps other work on a
 * shared machine from adding its own latency to the figures.
 */
export function pinned (core: number, nodeArgs: string[], env: Record<string, string> = {}): ChildProcess {
  const command = `ulimit -n "$(ulimit -Hn)" && exec nice -n ${PRIORITY} taskset -c ${core} "${process.execPath}" ${nodeArgs.map((a) => `'${a}'`).join(' ')}`
  return spawn('bash', ['-c', command], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env } })
}

/** The server's first line (its port); a server that dies first (say Redis is unreachable) fails the run. */
export async function firstLine (child: ChildProcess): Promise<string> {
  const lines = createInterface({ input: child.stdout! })
  const exited = once(child, 'exit').then(() => { throw new Error('server exited before listening') })
  const [line] = await Promise.race([once(lines, 'line'), exited]) as [string]
  lines.close()
  return line
}

/** A server's port, from its first line. */
export async function portOf (child: ChildProcess): Promise<number> {
  return (JSON.parse(await firstLine(child)) as { port: number }).port
}

const CLOCK_TICK_US = 1e6 / Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }))

/** CPU time (user and system) a process has used, in µs, from /proc. */
export function cpuUs (pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(fields[11]) + Number(fields[12])) * CLOCK_TICK_US
}

/** A process's resident memory now, in bytes, from /proc. */
export function rssBytes (pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]) * 1024
}

/** Deletes every key of one run's prefix, so that runs leave nothing in a shared Redis. */
async function deleteKeys (prefix: string): Promise<void> {
  const redis = new (await import('ioredis')).Redis(REDIS_URL)
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

/** Runs one statement on a connection of its own; the driver is loaded only by runs that use PostgreSQL. */
export async function postgresQuery (sql: string): Promise<void> {
  const pg = (await import('pg')).default
  const client = new pg.Client({ connectionString: POSTGRES_URL, connectionTimeoutMillis: 2000 })
  client.on('error', () => {})
  try {
    await client.connect()
    await client.query(sql)
  } finally {
    await client.end().catch(() => {})
  }
}

export type BrokerKind = 'redis' | 'sqlite' | 'postgres'

/**
 * The broker spec (see server.ts) for a store named `name`, unique to one run so that runs never share rooms,
 * and how to delete what the run stored: Redis keys, the SQLite file's directory, the PostgreSQL schema.
 */
export function brokerStore (kind: BrokerKind | undefined, name: string): { spec: string[], cleanUp: () => Promise<void> } {
  switch (kind) {
    case 'redis':
      return { spec: [`redis:${name}:`], cleanUp: () => deleteKeys(`${name}:`) }
    case 'sqlite': {
      const dir = mkdtempSync(join(tmpdir(), 'bench-sqlite-'))
      return { spec: [`sqlite:${join(dir, 'chat.db')}`], cleanUp: () => rm(dir, { recursive: true, force: true }) }
    }
    case 'postgres':
      return { spec: [`postgres:${name}`], cleanUp: () => postgresQuery(`DROP SCHEMA IF EXISTS "${name}" CASCADE`) }
    case undefined:
      return { spec: [], cleanUp: async () => {} }
  }
}
