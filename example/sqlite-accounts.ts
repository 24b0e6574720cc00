/**
 * Accounts in the SQLite broker's own file, through its open handle (no second
 * connection can open the file): tables `accounts`, `account_sessions` and
 * `account_settings` beside the broker's.
 */
import type Database from 'better-sqlite3'
import type { Account, AccountStore, NewAccount } from './account-store.js'

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS accounts (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    name_key TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL
  );
  CREATE TABLE IF NOT EXISTS account_sessions (
    token_hash TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    expires_at INTEGER NOT NULL
  );
  CREATE INDEX IF NOT EXISTS account_sessions_expires_at ON account_sessions (expires_at);
  CREATE TABLE IF NOT EXISTS account_settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
`

interface AccountRow { id: string, name: string, password_hash: string }

export class SqliteAccountStore implements AccountStore {
  /** `database` gives the broker's handle, which exists only once the broker is open. */
  constructor (private readonly database: () => Database.Database) {}

  async open (): Promise<void> {
    this.database().exec(SCHEMA)
  }

  async create ({ id, name, key, passwordHash }: NewAccount): Promise<boolean> {
    const { changes } = this.database()
      .prepare('INSERT INTO accounts (id, name, name_key, password_hash, created_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (name_key) DO NOTHING')
      .run(id, name, key, passwordHash, Date.now())
    return changes === 1
  }

  async find (key: string): Promise<(Account & { passwordHash: string }) | undefined> {
    const row = this.database().prepare('SELECT id, name, password_hash FROM accounts WHERE name_key = ?').get(key) as AccountRow | undefined
    return row && { id: row.id, name: row.name, passwordHash: row.password_hash }
  }

  async startSession (tokenHash: string, accountId: string, expiresAt: number): Promise<void> {
    const db = this.database()
    db.transaction(() => {
      db.prepare('DELETE FROM account_sessions WHERE expires_at <= ?').run(Date.now())
      db.prepare('INSERT INTO account_sessions (token_hash, account_id, expires_at) VALUES (?, ?, ?)').run(tokenHash, accountId, expiresAt)
    })()
  }

  async session (tokenHash: string, now: number): Promise<Account | undefined> {
    return this.database().prepare(`
      SELECT accounts.id, accounts.name FROM account_sessions JOIN accounts ON accounts.id = account_sessions.account_id
      WHERE account_sessions.token_hash = ? AND account_sessions.expires_at > ?`).get(tokenHash, now) as Account | undefined
  }

  async endSession (tokenHash: string): Promise<void> {
    this.database().prepare('DELETE FROM account_sessions WHERE token_hash = ?').run(tokenHash)
  }

  async secret (candidate: string): Promise<string> {
    const db = this.database()
    db.prepare("INSERT INTO account_settings (key, value) VALUES ('session_secret', ?) ON CONFLICT (key) DO NOTHING").run(candidate)
    return (db.prepare("SELECT value FROM account_settings WHERE key = 'session_secret'").get() as { value: string }).value
  }

  /** The file is the broker's: it closes it. */
  async close (): Promise<void> {}
}
