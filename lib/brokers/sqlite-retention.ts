/**
 * What the SQLite broker deletes: entries of a room's stream (messages and
 * updates, rows of one table) beyond the newest `keep` of their room or older
 * than `age` (keeping their cids for CID_RETENTION_MS, so a retry is still
 * recognised), and rooms idle past `idleRoomTtl`, with their
 * messages and users' state. One small batch per transaction, yielding to
 * the event loop between batches, so appends are never held up for long.
 */
import { setImmediate as nextTurn } from 'node:timers/promises'
import type Database from 'better-sqlite3'
import { CID_RETENTION_MS } from '../broker.js'

/** Rows deleted per retention transaction: small enough that a batch never holds the file for long. */
const TRIM_BATCH = 500

export interface SqliteRetentionOptions {
  /** The newest entries kept per room (`retention.messages`, resolved). */
  keep: number | undefined
  age: number | undefined
  idleRoomTtl: number | undefined
  /** Whether the room has members now: then it is not idle, whatever its last change. */
  hasMembers(room: string): boolean
  /** The room was forgotten: what memory holds of it must go too. */
  forgotten(room: string): void
}

export class SqliteRetention {
  private readonly s: ReturnType<typeof prepare>
  private sweeping = false

  constructor (db: Database.Database, private readonly options: SqliteRetentionOptions) {
    this.s = prepare(db)
  }

  /**
   * Deletes a batch of a room's entries with seq ≤ `upTo`, keeping their
   * cids; true when more are left. Runs inside the caller's transaction.
   */
  trimRoom (roomId: number, upTo: number): boolean {
    const s = this.s
    const oldest = (s.oldest.get(roomId) as { seq: number | null }).seq
    if (oldest === null || oldest > upTo) return false
    const last = Math.min(upTo, oldest + TRIM_BATCH - 1)
    s.keepCids.run(roomId, last)
    s.deleteUpTo.run(roomId, last)
    return last < upTo
  }

  /** Runs batches until nothing is left to delete, while `go()` holds; a sweep already under way is not doubled. */
  async sweep (go: () => boolean): Promise<void> {
    if (this.sweeping) return
    this.sweeping = true
    try {
      while (go() && this.step(Date.now())) await nextTurn()
    } finally {
      this.sweeping = false
    }
  }

  /** One batch of the sweep's work; true when more is left. */
  private step (now: number): boolean {
    const { s, options: { keep, age, idleRoomTtl } } = this
    return s.db.transaction((): boolean => {
      if (s.dropTrimmedCids.run(now - CID_RETENTION_MS, TRIM_BATCH).changes === TRIM_BATCH) return true
      if (age !== undefined) {
        s.keepCidsOld.run(now - age, TRIM_BATCH)
        if (s.deleteOld.run(now - age, TRIM_BATCH).changes === TRIM_BATCH) return true
      }
      if (keep !== undefined) {
        const behind = s.roomBehind.get(keep) as { id: number, seq: number } | undefined
        if (behind) return this.trimRoom(behind.id, behind.seq - keep) || true
      }
      if (idleRoomTtl !== undefined) {
        const idle = (s.idleRooms.all(now - idleRoomTtl, TRIM_BATCH) as Array<{ id: number, name: string }>)
          .filter(({ name }) => !this.options.hasMembers(name))
        for (const { id, name } of idle) {
          s.markDropped.run(id)
          s.deleteRoom.run(id)
          this.options.forgotten(name)
        }
      }
      const dropped = s.droppedRoom.get() as { id: number } | undefined
      if (!dropped) return false
      const deleted = s.deleteDropped.run({ room: dropped.id, limit: TRIM_BATCH }).changes + s.deleteDroppedUsers.run({ room: dropped.id, limit: TRIM_BATCH }).changes
      if (deleted < TRIM_BATCH) s.forgetDropped.run({ room: dropped.id })
      return true
    })()
  }
}

function prepare (db: Database.Database) {
  return {
    db,
    oldest: db.prepare('SELECT min(seq) AS seq FROM messages WHERE room_id = ?'),
    keepCids: db.prepare('INSERT OR IGNORE INTO trimmed_cids (room_id, cid, seq, ts) SELECT room_id, cid, seq, ts FROM messages WHERE room_id = ? AND seq <= ? AND cid IS NOT NULL'),
    deleteUpTo: db.prepare('DELETE FROM messages WHERE room_id = ? AND seq <= ?'),
    dropTrimmedCids: db.prepare('DELETE FROM trimmed_cids WHERE (room_id, cid) IN (SELECT room_id, cid FROM trimmed_cids WHERE ts < ? LIMIT ?)'),
    keepCidsOld: db.prepare(`INSERT OR IGNORE INTO trimmed_cids (room_id, cid, seq, ts)
      SELECT room_id, cid, seq, ts FROM (SELECT * FROM messages WHERE ts < ? ORDER BY ts LIMIT ?) WHERE cid IS NOT NULL`),
    deleteOld: db.prepare('DELETE FROM messages WHERE (room_id, seq) IN (SELECT room_id, seq FROM messages WHERE ts < ? ORDER BY ts LIMIT ?)'),
    roomBehind: db.prepare('SELECT id, seq FROM rooms r WHERE (SELECT min(seq) FROM messages WHERE room_id = r.id) <= r.seq - ? LIMIT 1'),
    idleRooms: db.prepare('SELECT id, name FROM rooms WHERE last_active < ? LIMIT ?'),
    markDropped: db.prepare('INSERT INTO dropped_rooms (id) VALUES (?)'),
    deleteRoom: db.prepare('DELETE FROM rooms WHERE id = ?'),
    droppedRoom: db.prepare('SELECT id FROM dropped_rooms LIMIT 1'),
    deleteDropped: db.prepare('DELETE FROM messages WHERE room_id = @room AND seq IN (SELECT seq FROM messages WHERE room_id = @room ORDER BY seq LIMIT @limit)'),
    deleteDroppedUsers: db.prepare('DELETE FROM user_states WHERE room_id = @room AND user IN (SELECT user FROM user_states WHERE room_id = @room LIMIT @limit)'),
    // Only once both are gone: a room's id is never reused (AUTOINCREMENT), so nothing else can refill them.
    forgetDropped: db.prepare(`DELETE FROM dropped_rooms WHERE id = @room
      AND NOT EXISTS (SELECT 1 FROM messages WHERE room_id = @room) AND NOT EXISTS (SELECT 1 FROM user_states WHERE room_id = @room)`),
  }
}
