/**
 * Where the example's accounts and sessions are kept: the database the chat
 * uses (SQLite file or PostgreSQL), each behind this one interface.
 */

/** Who a person is: a stable id (never reused) and the name they registered with. */
export interface Account { id: string, name: string }

export interface NewAccount extends Account {
  /** The name as compared for uniqueness (see `nameKey` in accounts.ts). */
  key: string
  passwordHash: string
}

export interface AccountStore {
  /** Makes the tables if missing. */
  open: () => Promise<void>
  /** Stores the account; false when its `key` is taken. */
  create: (account: NewAccount) => Promise<boolean>
  /** The account whose name compares as `key`, with its password hash. */
  find: (key: string) => Promise<(Account & { passwordHash: string }) | undefined>
  /** Records a session (by the hash of its token) until `expiresAt` (ms since the epoch); drops expired ones. */
  startSession: (tokenHash: string, accountId: string, expiresAt: number) => Promise<void>
  /** The account of an unexpired session. */
  session: (tokenHash: string, now: number) => Promise<Account | undefined>
  endSession: (tokenHash: string) => Promise<void>
  /** The stored cookie-signing secret; the first call stores `candidate` (one wins when nodes race). */
  secret: (candidate: string) => Promise<string>
  close: () => Promise<void>
}
