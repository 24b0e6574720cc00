/**
 * The SQLite broker's file: opening it for this process alone, in WAL mode,
 * and its schema, migrated by `PRAGMA user_version` when the broker opens.
 *
 * Tables:
 *   rooms          one row per room stream: its epoch and latest seq. A room
 *                  forgotten (idleRoomTtl) loses its row; a later use makes a
 *                  new row, with a new id and epoch, so old rows never mix in.
 *   messages       the room's stream, keyed (room_id, seq): messages, in their
 *                  current state (edited, deleted, reactions as JSON), and the
 *                  updates that changed them (`target` NOT NULL: the changed
 *                  message's seq; `from_*` is who changed it, `text` an edit's
 *                  text), sharing one seq, one cid index and one retention.
 *                  cid unique per room; from_user is NULL in rows stored
 *                  before members had a user.
 *   trimmed_cids   cids of messages removed by retention, kept CID_RETENTION_MS
 *                  so that a retry of one is still recognised.
 *   user_states    per room and user: the read marker, the ban and the mute
 *                  (banned/muted, with their until, NULL: until lifted). A row
 *                  with nothing to keep is deleted.
 *   dropped_rooms  ids of forgotten rooms whose messages and user states are
 *                  still being deleted, in batches.
 */
import { closeSync, fdatasync, openSync } from 'node:fs'
import { promisify } from 'node:util'
import Database from 'better-sqlite3'

/**
 * Each entry moves the schema one version up; never edit one that shipped, add
 * another. Exported so that a test can build a file of an earlier version.
 */
export const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE rooms (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    epoch TEXT NOT NULL,
    seq INTEGER NOT NULL,
    last_active INTEGER NOT NULL
  );
  CREATE INDEX rooms_last_active ON rooms (last_active);
  CREATE TABLE messages (
    room_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    id TEXT NOT NULL,
    from_id TEXT NOT NULL,
    from_name TEXT NOT NULL,
    text TEXT NOT NULL,
    ts INTEGER NOT NULL,
    cid TEXT,
    PRIMARY KEY (room_id, seq)
  ) WITHOUT ROWID;
  CREATE UNIQUE INDEX messages_cid ON messages (room_id, cid) WHERE cid IS NOT NULL;
  CREATE INDEX messages_ts ON messages (ts);
  CREATE TABLE trimmed_cids (
    room_id INTEGER NOT NULL,
    cid TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    PRIMARY KEY (room_id, cid)
  ) WITHOUT ROWID;
  CREATE INDEX trimmed_cids_ts ON trimmed_cids (ts);
  CREATE TABLE dropped_rooms (id INTEGER PRIMARY KEY);
  `,
  // Protocol 2: members have a user; read markers, bans and mutes. Old rows
  // keep a NULL from_user (read as their from_id), so no row is rewritten.
  `
  ALTER TABLE messages ADD COLUMN from_user TEXT;
  CREATE TABLE user_states (
    room_id INTEGER NOT NULL,
    user TEXT NOT NULL,
    read INTEGER NOT NULL,
    banned INTEGER NOT NULL,
    ban_until INTEGER,
    muted INTEGER NOT NULL,
    mute_until INTEGER,
    PRIMARY KEY (room_id, user)
  ) WITHOUT ROWID;
  CREATE INDEX user_states_restricted ON user_states (room_id) WHERE banned = 1 OR muted = 1;
  `,
  // Messages that change: updates are rows of the stream too, and a message
  // row holds its current state. Old rows are messages as they were (no
  // target, not edited, not deleted, no reactions), so no row is rewritten.
  // A page reads messages only: the partial index finds "the newest N before
  // X" without stepping over the updates between them.
  `
  ALTER TABLE messages ADD COLUMN target INTEGER;
  ALTER TABLE messages ADD COLUMN action TEXT;
  ALTER TABLE messages ADD COLUMN reaction TEXT;
  ALTER TABLE messages ADD COLUMN edited INTEGER;
  ALTER TABLE messages ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE messages ADD COLUMN reactions TEXT;
  CREATE INDEX messages_only ON messages (room_id, seq) WHERE target IS NULL;
  `,
]

/**
 * How long opening waits for another connection to let go of the file: long
 * enough for a previous process that is still exiting, short enough that a
 * second server on the same file is told at once.
 */
const OPEN_BUSY_TIMEOUT_MS = 1000

/**
 * Opens `file` for this process alone and brings its schema up to date.
 * Another process holding it is refused with an error naming the file.
 */
export function openDatabase (file: string): DurableFile {
  let db: Database.Database | undefined
  try {
    db = new Database(file, { timeout: OPEN_BUSY_TIMEOUT_MS })
    // Exclusive before the first access: the lock is taken by the write below
    // and held until close, so a second process cannot open the file at all.
    db.pragma('locking_mode = EXCLUSIVE')
    db.pragma('journal_mode = WAL')
    // A commit writes the log without flushing it to disk, which would block the
    // event loop for the whole flush; `DurableFile.flush` does that off the loop,
    // and nothing is acknowledged before it. (NORMAL keeps the file consistent
    // on a power loss; the flush makes the commits before it survive one too.)
    db.pragma('synchronous = NORMAL')
    db.exec('BEGIN EXCLUSIVE; COMMIT')
    migrate(db, file)
    return new DurableFile(db, openSync(`${file}-wal`, 'r'))
  } catch (error) {
    db?.close()
    const code = (error as { code?: unknown }).code
    if (code === 'SQLITE_BUSY' || code === 'SQLITE_LOCKED') {
      throw new Error(`SqliteBroker: ${file} is in use by another process; one process per file (use the PostgreSQL broker for several nodes)`, { cause: error })
    }
    if (error instanceof Error && error.message.startsWith('SqliteBroker:')) throw error
    throw new Error(`SqliteBroker: cannot open ${file}: ${(error as Error).message}`, { cause: error })
  }
}

const flushToDisk = promisify(fdatasync)

/** The open database and its write-ahead log, which `flush` puts on disk without blocking the event loop. */
export class DurableFile {
  constructor (readonly db: Database.Database, private readonly wal: number) {}

  /**
   * Flushes the log (on the thread pool), so every transaction committed
   * before the call survives a crash of the machine, not only of the process.
   */
  async flush (): Promise<void> {
    await flushToDisk(this.wal)
  }

  close (): void {
    this.db.close()
    closeSync(this.wal)
  }
}

function migrate (db: Database.Database, file: string): void {
  const version = db.pragma('user_version', { simple: true }) as number
  if (version > MIGRATIONS.length) {
    throw new Error(`SqliteBroker: ${file} has schema version ${version}, newer than this version of fastify-chat-rooms knows (${MIGRATIONS.length})`)
  }
  db.transaction(() => {
    for (const migration of MIGRATIONS.slice(version)) db.exec(migration)
    db.pragma(`user_version = ${MIGRATIONS.length}`)
  })()
}
