/**
 * PostgreSQL for the tests: the shared server (127.0.0.1:5432, database
 * `test`; `POSTGRES_URL` to override), a schema per test, and its cleanup;
 * nodes of one chat on a schema.
 */
import { randomBytes } from 'node:crypto'
import type { TestContext } from 'node:test'
import pg from 'pg'
import { PostgresBroker, type PostgresBrokerOptions } from '../../lib/postgres.js'
import { SCHEMA_VERSION } from '../../lib/brokers/postgres-schema.js'
import { RecordingNode } from './recording-node.js'

export const POSTGRES_URL = process.env.POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test'

/**
 * Whether the PostgreSQL tests must be skipped: false when PostgreSQL
 * answers, else the reason to print. Under `CI=true` a missing PostgreSQL
 * throws instead: CI never skips them.
 */
export async function skipUnlessPostgres (url = POSTGRES_URL): Promise<string | false> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 1000 })
  client.on('error', () => {})
  try {
    await client.connect()
    await client.query('SELECT 1')
    return false
  } catch (error) {
    const reason = `PostgreSQL is missing: nothing answered at ${url} (${(error as Error).message}); start PostgreSQL or set POSTGRES_URL`
    if (process.env.CI === 'true') throw new Error(`${reason}. Under CI the PostgreSQL tests must run, not skip.`, { cause: error })
    console.log(`skipping the PostgreSQL tests: ${reason}`)
    return reason
  } finally {
    await client.end().catch(() => {})
  }
}

/** A schema name no other test uses. */
export function uniqueSchema (): string {
  return `test_${randomBytes(12).toString('hex')}`
}

/** Runs `call` on a connection of its own (an administrator's), then closes it. */
export async function asAdmin<T> (call: (client: pg.Client) => Promise<T>, url = POSTGRES_URL): Promise<T> {
  const client = new pg.Client({ connectionString: url })
  client.on('error', () => {})
  await client.connect()
  try {
    return await call(client)
  } finally {
    await client.end().catch(() => {})
  }
}

/** Every migration's version, in order: what a schema lists once a broker of this release opened it. */
export const EVERY_SCHEMA_VERSION = Array.from({ length: SCHEMA_VERSION }, (_, i) => i + 1)

/** The versions of the migrations applied to `schema`, in order. */
export async function appliedVersions (schema: string): Promise<number[]> {
  const { rows } = await asAdmin((client) => client.query<{ version: number }>(`SELECT version FROM "${schema}".schema_migrations ORDER BY version`))
  return rows.map((row) => row.version)
}

/** Drops `schema` and everything in it. */
export async function dropSchema (schema: string, url = POSTGRES_URL): Promise<void> {
  await asAdmin((client) => client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`), url)
}

/** Opens `count` nodes sharing one schema (one chat); all are closed and the schema dropped after the test. */
export async function cluster (t: TestContext, count: number, options: PostgresBrokerOptions = {}, historySize = 1000): Promise<Array<{ broker: PostgresBroker, node: RecordingNode }>> {
  const schema = options.schema ?? uniqueSchema()
  const nodes = Array.from({ length: count }, () => ({
    broker: new PostgresBroker({ connectionString: POSTGRES_URL, leaseMs: 3000, ...options, schema }),
    node: new RecordingNode(historySize),
  }))
  t.after(async () => {
    await Promise.all(nodes.map(({ broker }) => broker.close()))
    await dropSchema(schema)
  })
  await Promise.all(nodes.map(({ broker, node }) => broker.open(node)))
  return nodes
}
