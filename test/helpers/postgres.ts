/**
 * PostgreSQL for the tests: the shared server (127.0.0.1:5432, database
 * `test`; `POSTGRES_URL` to override), a schema per test, and its cleanup.
 */
import { randomBytes } from 'node:crypto'
import pg from 'pg'

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

/** Drops `schema` and everything in it. */
export async function dropSchema (schema: string, url = POSTGRES_URL): Promise<void> {
  await asAdmin((client) => client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`), url)
}
