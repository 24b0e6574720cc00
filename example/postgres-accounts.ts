/**
 * Accounts in PostgreSQL, in a schema of their own (`chat_accounts`) beside
 * the broker's tables, on a pool of their own. Several example servers on one
 * database share them.
 */
import type { FastifyBaseLogger } from 'fastify'
import pg from 'pg'
import type { Account, AccountStore, NewAccount } from './account-store.js'

const SCHEMA = `
  CREATE SCHEMA IF NOT EXISTS chat_accounts;
  CREATE TABLE IF NOT EXISTS chat_accounts.accounts (
    id text PRIMARY KEY,
    name text NOT NULL,
    name_key text NOT NULL UNIQUE,
    password_hash text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
  );
  CREATE TABLE IF NOT EXISTS chat_accounts.sessions (
    token_hash text PRIMARY KEY,
    account_id text NOT NULL REFERENCES chat_accounts.accounts (id),
    expires_at bigint NOT NULL
  );
  CREATE INDEX IF NOT EXISTS sessions_expires_at ON chat_accounts.sessions (expires_at);
  CREATE TABLE IF NOT EXISTS chat_accounts.settings (key text PRIMARY KEY, value text NOT NULL);
`

/** Two servers starting at once must not both create the schema: the second waits on this lock. */
const SCHEMA_LOCK = "hashtext('chat_accounts schema')"

export class PostgresAccountStore implements AccountStore {
  private readonly pool: pg.Pool

  constructor (connectionString: string, log: FastifyBaseLogger) {
    this.pool = new pg.Pool({ connectionString, max: 4 })
    // An idle connection that fails is replaced by the pool; without a listener it would crash the process.
    this.pool.on('error', (error) => log.warn({ err: error }, 'accounts: a PostgreSQL connection failed'))
  }

  async open (): Promise<void> {
    const client = await this.pool.connect()
    try {
      await client.query('BEGIN')
      await client.query(`SELECT pg_advisory_xact_lock(${SCHEMA_LOCK})`)
      await client.query(SCHEMA)
      await client.query('COMMIT')
    } catch (error) {
      await client.query('ROLLBACK').catch(() => {})
      throw error
    } finally {
      client.release()
    }
  }

  async create ({ id, name, key, passwordHash }: NewAccount): Promise<boolean> {
    const { rowCount } = await this.pool.query(
      'INSERT INTO chat_accounts.accounts (id, name, name_key, password_hash) VALUES ($1, $2, $3, $4) ON CONFLICT (name_key) DO NOTHING',
      [id, name, key, passwordHash])
    return rowCount === 1
  }

  async find (key: string): Promise<(Account & { passwordHash: string }) | undefined> {
    const { rows } = await this.pool.query<Account & { passwordHash: string }>(
      'SELECT id, name, password_hash AS "passwordHash" FROM chat_accounts.accounts WHERE name_key = $1', [key])
    return rows[0]
  }

  async startSession (tokenHash: string, accountId: string, expiresAt: number): Promise<void> {
    await this.pool.query('DELETE FROM chat_accounts.sessions WHERE expires_at <= $1', [Date.now()])
    await this.pool.query('INSERT INTO chat_accounts.sessions (token_hash, account_id, expires_at) VALUES ($1, $2, $3)', [tokenHash, accountId, expiresAt])
  }

  async session (tokenHash: string, now: number): Promise<Account | undefined> {
    const { rows } = await this.pool.query<Account>(`
      SELECT a.id, a.name FROM chat_accounts.sessions s JOIN chat_accounts.accounts a ON a.id = s.account_id
      WHERE s.token_hash = $1 AND s.expires_at > $2`, [tokenHash, now])
    return rows[0]
  }

  async endSession (tokenHash: string): Promise<void> {
    await this.pool.query('DELETE FROM chat_accounts.sessions WHERE token_hash = $1', [tokenHash])
  }

  async secret (candidate: string): Promise<string> {
    // Two statements, not one: a second statement sees a row that a racing node committed meanwhile.
    await this.pool.query("INSERT INTO chat_accounts.settings (key, value) VALUES ('session_secret', $1) ON CONFLICT (key) DO NOTHING", [candidate])
    const { rows } = await this.pool.query<{ value: string }>("SELECT value FROM chat_accounts.settings WHERE key = 'session_secret'")
    return rows[0]!.value
  }

  async close (): Promise<void> {
    await this.pool.end()
  }
}
