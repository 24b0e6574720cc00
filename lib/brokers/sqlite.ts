/**
 * The durable one-process broker: rooms' seq, epoch, history and cids in a
 * SQLite file, events delivered in-process as by the memory broker. Appends of
 * one event-loop turn are committed together; each is delivered and
 * acknowledged only after that commit.
 */
import { randomUUID } from 'node:crypto'
import { setImmediate as nextTurn } from 'node:timers/promises'
import type Database from 'better-sqlite3'
import type { AppendResult, Broker, BrokerNode, MessageDraft, NodeInfo, PublishOptions, ReadRange, ReadResult, RoomInfo } from '../broker.js'
import { CID_RETENTION_MS, NO_STREAM_YET, messageIds, newMessage, retryOfTrimmed } from '../broker.js'
import { ChatError } from '../errors.js'
import type { Member, Message, Presence, TypingEvent } from '../protocol.js'
import { InProcessNode } from './in-process.js'
import { openDatabase } from './sqlite-schema.js'

export interface SqliteBrokerOptions {
  /** The database file, made if missing (its directory must exist). One process at a time may open it. */
  file: string
  /**
   * A room with no members and no message or join for this long (ms) is
   * forgotten: its history and seq are deleted, and a later join starts a new
   * epoch. Default: never, since rooms are meant to outlive restarts.
   */
  idleRoomTtl?: number
  /**
   * What history is kept. Default: all of it, whatever the hub's `historySize`
   * (which then bounds only what one resume or join hands out, not what is stored).
   * - `messages`: keep the newest this many per room; `'historySize'` keeps the
   *   hub's `historySize`, as the memory and Redis brokers do.
   * - `age`: delete messages older than this many ms.
   * Older messages are deleted in small batches, a transaction each, so no
   * lock is held long; reads never show messages beyond `messages`.
   */
  retention?: { messages?: number | 'historySize', age?: number }
}

/** Rows deleted per retention transaction: small enough that a batch never holds the file for long. */
const TRIM_BATCH = 500
/**
 * How often retention and idle rooms are looked at: often enough to bound the
 * file, rare enough to cost nothing; more often (down to a second) when
 * `retention.age` or `idleRoomTtl` is shorter, so they hold within one interval.
 */
const SWEEP_INTERVAL_MS = 60_000
const MIN_SWEEP_INTERVAL_MS = 1000


interface RoomRow { id: number, epoch: string, seq: number }
interface MessageRow { seq: number, id: string, from_id: string, from_name: string, text: string, ts: number, cid: string | null }

/** A call waiting for the next group commit. */
type Pending =
  | { kind: 'append', room: string, draft: MessageDraft, resolve: (result: AppendResult) => void, reject: (error: Error) => void }
  | { kind: 'event', room: string, event: Presence | TypingEvent, options: PublishOptions, resolve: () => void, reject: (error: Error) => void }

export class SqliteBroker implements Broker {
  // Rosters live in memory only: members are this process's connections, and
  // after a restart nobody is connected, so there is nothing to keep.
  private readonly local = new InProcessNode('SqliteBroker')
  private db: Database.Database | undefined
  private statements: ReturnType<typeof prepare> | undefined
  private keep: number | undefined
  private queue: Pending[] = []
  private flushing: NodeJS.Immediate | undefined
  private sweeper: NodeJS.Timeout | undefined
  private sweeping = false
  private readonly nextId = messageIds()

  constructor (private readonly options: SqliteBrokerOptions) {
    const problems: string[] = []
    if (typeof options?.file !== 'string' || options.file.length === 0) problems.push('file: must be a non-empty path')
    const positive = (name: string, value: unknown): void => {
      if (value !== undefined && !(typeof value === 'number' && Number.isInteger(value) && value > 0)) problems.push(`${name}: must be a positive integer, not ${String(value)}`)
    }
    positive('idleRoomTtl', options?.idleRoomTtl)
    if (options?.retention?.messages !== 'historySize') positive('retention.messages', options?.retention?.messages)
    positive('retention.age', options?.retention?.age)
    if (problems.length > 0) throw new TypeError(`SqliteBroker options: ${problems.join('; ')}`)
  }

  async open (node: BrokerNode): Promise<void> {
    this.local.open(node)
    try {
      this.db = openDatabase(this.options.file)
    } catch (error) {
      this.local.close()
      throw error
    }
    this.statements = prepare(this.db)
    const messages = this.options.retention?.messages
    this.keep = messages === 'historySize' ? node.historySize : messages
    const interval = Math.max(MIN_SWEEP_INTERVAL_MS, Math.min(SWEEP_INTERVAL_MS, this.options.retention?.age ?? Infinity, this.options.idleRoomTtl ?? Infinity))
    this.sweeper = setInterval(() => { void this.sweep() }, interval)
    this.sweeper.unref()
  }

  async subscribe (room: string): Promise<void> {
    this.local.subscribe(room)
  }

  async unsubscribe (room: string): Promise<void> {
    this.local.unsubscribe(room)
  }

  async append (room: string, draft: MessageDraft): Promise<AppendResult> {
    this.local.opened()
    return await new Promise((resolve, reject) => this.enqueue({ kind: 'append', room, draft, resolve, reject }))
  }

  async publish (room: string, event: Presence | TypingEvent, options: PublishOptions = {}): Promise<void> {
    this.local.opened()
    // Typing touches no table: with nothing queued ahead of it, it goes out now.
    if (event.type === 'typing' && this.queue.length === 0) return this.local.deliver(room, event)
    // Presence creates the room (its epoch) in the file, and anything queued
    // behind appends waits for them, so events go out in the order they came.
    return new Promise((resolve, reject) => this.enqueue({ kind: 'event', room, event, options, resolve, reject }))
  }

  async read (room: string, range: ReadRange): Promise<ReadResult> {
    const s = this.prepared()
    const row = s.room.get(room) as RoomRow | undefined
    if (!row) return { epoch: NO_STREAM_YET, seq: 0, messages: [], more: false }
    // Retention by count may lag behind in the file; reads never show what it will delete.
    const floor = this.keep === undefined ? 0 : Math.max(0, row.seq - this.keep)
    let rows: MessageRow[] = []
    if (range.limit > 0) {
      rows = range.after !== undefined
        ? s.readAfter.all(row.id, Math.max(floor, range.after), range.limit) as MessageRow[]
        : (s.readBefore.all(row.id, floor, range.before ?? row.seq + 1, range.limit) as MessageRow[]).reverse()
    }
    const below = rows[0]?.seq ?? (range.after !== undefined ? row.seq + 1 : range.before ?? row.seq + 1)
    const more = s.anyBetween.get(row.id, floor, below) !== undefined
    return { epoch: row.epoch, seq: row.seq, messages: rows.map((r) => toMessage(room, r)), more }
  }

  async members (room: string): Promise<Member[]> {
    return this.local.members(room)
  }

  async rooms (): Promise<RoomInfo[]> {
    const s = this.prepared()
    return this.local.occupied().map(({ room, members }) => ({ room, members, seq: (s.room.get(room) as RoomRow | undefined)?.seq ?? 0 }))
  }

  async nodes (): Promise<NodeInfo[]> {
    this.prepared()
    return [this.local.self()]
  }

  async close (): Promise<void> {
    clearInterval(this.sweeper)
    // Whatever was queued is committed (or rejected) before the file closes.
    if (this.flushing) {
      clearImmediate(this.flushing)
      this.flush()
    }
    this.db?.close()
    this.db = undefined
    this.statements = undefined
    this.local.close()
  }

  private prepared (): ReturnType<typeof prepare> {
    this.local.opened()
    if (!this.statements) throw new Error('SqliteBroker: not open')
    return this.statements
  }

  private enqueue (pending: Pending): void {
    this.queue.push(pending)
    this.flushing ??= setImmediate(() => this.flush())
  }

  /**
   * The group commit: every append queued this turn in one transaction, then
   * (only once it committed) deliveries in queue order, so per room in seq
   * order. A failed commit stores none of them, and each caller is told.
   */
  private flush (): void {
    const batch = this.queue
    this.queue = []
    this.flushing = undefined
    let results: Array<AppendResult | undefined>
    try {
      const s = this.prepared()
      const now = Date.now()
      results = s.db.transaction(() => batch.map((pending) => {
        if (pending.kind === 'append') return this.store(s, pending.room, pending.draft, now)
        if (pending.event.type === 'presence') this.touch(s, pending.room, now)
        return undefined
      }))()
    } catch (error) {
      this.local.opened().log.error({ err: error, file: this.options.file, calls: batch.length }, 'SqliteBroker: commit failed')
      const refusal = new ChatError('unavailable', 'the chat store (SQLite) could not commit; retry with the same cid')
      for (const pending of batch) pending.reject(refusal)
      return
    }
    batch.forEach((pending, i) => {
      if (pending.kind === 'append') {
        const result = results[i] as AppendResult
        if (!result.duplicate) this.local.deliver(pending.room, result.message)
        pending.resolve(result)
        return
      }
      try {
        const { room, event, options } = pending
        if (event.type === 'typing' || this.local.updateRoster(room, event, options)) this.local.deliver(room, event)
        pending.resolve()
      } catch (error) {
        pending.reject(error as Error)
      }
    })
  }

  /** One append inside the group's transaction. */
  private store (s: ReturnType<typeof prepare>, room: string, draft: MessageDraft, now: number): AppendResult {
    const row = this.touch(s, room, now)
    if (draft.cid !== undefined) {
      const stored = s.byCid.get(row.id, draft.cid) as MessageRow | undefined
      if (stored && (this.keep === undefined || stored.seq > row.seq - this.keep)) return { message: toMessage(room, stored), duplicate: true }
      const seen = stored ?? s.trimmedCid.get(row.id, draft.cid) as { seq: number, ts: number } | undefined
      if (seen) return retryOfTrimmed(room, draft, seen.seq, seen.ts)
    }
    const message = newMessage(room, row.seq + 1, this.nextId(), draft, now)
    s.insert.run(row.id, message.seq, message.id, message.from.id, message.from.name, message.text, now, draft.cid ?? null)
    s.setSeq.run(message.seq, row.id)
    // Retention by count keeps pace with appends here, a bounded batch at a time.
    if (this.keep !== undefined) trimRoom(s, row.id, message.seq - this.keep)
    return { message, duplicate: false }
  }

  /** The room's row, made (with a new epoch) if needed, marked active now. */
  private touch (s: ReturnType<typeof prepare>, room: string, now: number): RoomRow {
    const row = s.room.get(room) as RoomRow | undefined
    if (row) {
      s.setActive.run(now, row.id)
      return row
    }
    return s.createRoom.get(room, randomUUID(), now) as RoomRow
  }

  /**
   * Retention and forgetting, one small transaction per step, yielding to
   * the event loop between steps so appends are never held up for long.
   */
  private async sweep (): Promise<void> {
    if (this.sweeping) return
    this.sweeping = true
    try {
      while (this.statements && this.sweepStep(this.statements, Date.now())) await nextTurn()
    } catch (error) {
      if (this.db) this.local.opened().log.warn({ err: error, file: this.options.file }, 'SqliteBroker: retention sweep failed; retried at the next sweep')
    } finally {
      this.sweeping = false
    }
  }

  /** One batch of the sweep's work; true when more is left. */
  private sweepStep (s: ReturnType<typeof prepare>, now: number): boolean {
    return s.db.transaction((): boolean => {
      if (s.dropTrimmedCids.run(now - CID_RETENTION_MS, TRIM_BATCH).changes === TRIM_BATCH) return true
      const age = this.options.retention?.age
      if (age !== undefined) {
        s.keepCidsOld.run(now - age, TRIM_BATCH)
        if (s.deleteOld.run(now - age, TRIM_BATCH).changes === TRIM_BATCH) return true
      }
      if (this.keep !== undefined) {
        const behind = s.roomBehind.get(this.keep) as { id: number, seq: number } | undefined
        if (behind) return trimRoom(s, behind.id, behind.seq - this.keep) || true
      }
      const ttl = this.options.idleRoomTtl
      if (ttl !== undefined) {
        const idle = (s.idleRooms.all(now - ttl, TRIM_BATCH) as Array<{ id: number, name: string }>)
          .filter(({ name }) => this.local.memberCount(name) === 0)
        for (const { id } of idle) {
          s.markDropped.run(id)
          s.deleteRoom.run(id)
        }
      }
      const dropped = s.droppedRoom.get() as { id: number } | undefined
      if (!dropped) return false
      if (s.deleteDropped.run({ room: dropped.id, limit: TRIM_BATCH }).changes < TRIM_BATCH) s.forgetDropped.run({ room: dropped.id })
      return true
    })()
  }
}

/** Deletes a batch of a room's messages with seq ≤ `upTo`, keeping their cids; true when more are left. */
function trimRoom (s: ReturnType<typeof prepare>, roomId: number, upTo: number): boolean {
  const oldest = (s.oldest.get(roomId) as { seq: number | null }).seq
  if (oldest === null || oldest > upTo) return false
  const last = Math.min(upTo, oldest + TRIM_BATCH - 1)
  s.keepCids.run(roomId, last)
  s.deleteUpTo.run(roomId, last)
  return last < upTo
}

function toMessage (room: string, row: MessageRow): Message {
  const message: Message = { type: 'message', room, seq: row.seq, id: row.id, from: { id: row.from_id, name: row.from_name }, text: row.text, ts: row.ts }
  if (row.cid !== null) message.cid = row.cid
  return message
}

const COLUMNS = 'seq, id, from_id, from_name, text, ts, cid'

function prepare (db: Database.Database) {
  return {
    db,
    room: db.prepare('SELECT id, epoch, seq FROM rooms WHERE name = ?'),
    createRoom: db.prepare('INSERT INTO rooms (name, epoch, seq, last_active) VALUES (?, ?, 0, ?) RETURNING id, epoch, seq'),
    setActive: db.prepare('UPDATE rooms SET last_active = ? WHERE id = ?'),
    setSeq: db.prepare('UPDATE rooms SET seq = ? WHERE id = ?'),
    insert: db.prepare('INSERT INTO messages (room_id, seq, id, from_id, from_name, text, ts, cid) VALUES (?, ?, ?, ?, ?, ?, ?, ?)'),
    byCid: db.prepare(`SELECT ${COLUMNS} FROM messages WHERE room_id = ? AND cid = ?`),
    trimmedCid: db.prepare('SELECT seq, ts FROM trimmed_cids WHERE room_id = ? AND cid = ?'),
    readAfter: db.prepare(`SELECT ${COLUMNS} FROM messages WHERE room_id = ? AND seq > ? ORDER BY seq LIMIT ?`),
    readBefore: db.prepare(`SELECT ${COLUMNS} FROM messages WHERE room_id = ? AND seq > ? AND seq < ? ORDER BY seq DESC LIMIT ?`),
    anyBetween: db.prepare('SELECT 1 FROM messages WHERE room_id = ? AND seq > ? AND seq < ? LIMIT 1'),
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
    forgetDropped: db.prepare('DELETE FROM dropped_rooms WHERE id = @room AND NOT EXISTS (SELECT 1 FROM messages WHERE room_id = @room)'),
  }
}
