/**
 * A room's stream in the SQLite broker's file: messages and the updates that
 * change them, rows of the one `messages` table (see sqlite-schema.ts), read
 * back as entries. Everything here runs inside the caller's transaction or
 * read; `floor` is the seq at and below which the caller's retention hides
 * rows (they may still be in the file until trimmed).
 */
import type Database from 'better-sqlite3'
import type { ReadRange } from '../broker.js'
import type { Entry, Member, Message, Update, UpdateAction } from '../protocol.js'

interface EntryRow {
  seq: number
  id: string
  from_id: string
  from_user: string | null
  from_name: string
  text: string
  ts: number
  cid: string | null
  target: number | null
  action: UpdateAction | null
  reaction: string | null
  edited: number | null
  deleted: number
  reactions: string | null
}

/** What a `cid` already stored in a room names: its seq and time, and its entry unless that is no longer kept. */
export interface StoredCid {
  seq: number
  ts: number
  entry: Entry | undefined
}

export class SqliteStream {
  private readonly s: ReturnType<typeof prepare>

  constructor (db: Database.Database) {
    this.s = prepare(db)
  }

  /** Whether any cid was ever trimmed into `trimmed_cids` (else no retry needs to look there). */
  anyTrimmedCid (): boolean {
    return this.s.anyTrimmedCid.get() !== undefined
  }

  /** The entry `cid` names in the room, kept or trimmed; `lookTrimmed`: whether trimmed cids may exist. */
  retried (roomId: number, room: string, cid: string, floor: number, lookTrimmed: boolean): StoredCid | undefined {
    const stored = this.s.byCid.get(roomId, cid) as EntryRow | undefined
    if (stored) return { seq: stored.seq, ts: stored.ts, entry: stored.seq > floor ? toEntry(room, stored) : undefined }
    const trimmed = lookTrimmed ? this.s.trimmedCid.get(roomId, cid) as { seq: number, ts: number } | undefined : undefined
    return trimmed && { ...trimmed, entry: undefined }
  }

  /** The kept entry with `seq`, if any. */
  entry (roomId: number, room: string, seq: number, floor: number): Entry | undefined {
    if (seq <= floor) return undefined
    const row = this.s.bySeq.get(roomId, seq) as EntryRow | undefined
    return row && toEntry(room, row)
  }

  addMessage (roomId: number, message: Message): void {
    this.insert(roomId, message.seq, message.id, message.from, message.text, message.ts, message.cid, null, null, null)
  }

  /** Stores `update` and, in place of the message it changed, `changed` (that message's new state). */
  addUpdate (roomId: number, update: Update, changed: Message): void {
    this.s.setState.run(changed.text, changed.edited ?? null, changed.deleted ? 1 : 0, changed.reactions ? JSON.stringify(changed.reactions) : null, roomId, changed.seq)
    this.insert(roomId, update.seq, '', update.by, update.text ?? '', update.ts, update.cid, update.target, update.action, update.reaction ?? null)
  }

  /** Reads per `ReadRange` (oldest first) a room whose latest seq is `latest`; `more`: older entries (in a page, messages) are kept. */
  read (roomId: number, room: string, floor: number, latest: number, range: ReadRange): { messages: Entry[], more: boolean } {
    const s = this.s
    let rows: EntryRow[] = []
    if (range.limit > 0) {
      rows = range.after !== undefined
        ? s.readAfter.all(roomId, Math.max(floor, range.after), range.limit) as EntryRow[]
        : (s.readPage.all(roomId, floor, range.before ?? latest + 1, range.limit) as EntryRow[]).reverse()
    }
    const below = rows[0]?.seq ?? (range.after !== undefined ? latest + 1 : range.before ?? latest + 1)
    const older = range.after !== undefined ? s.anyEntryBetween : s.anyMessageBetween
    return { messages: rows.map((row) => toEntry(room, row)), more: older.get(roomId, floor, below) !== undefined }
  }

  private insert (roomId: number, seq: number, id: string, from: Member, text: string, ts: number, cid: string | undefined, target: number | null, action: UpdateAction | null, reaction: string | null): void {
    this.s.insert.run(roomId, seq, id, from.id, from.user, from.name, text, ts, cid ?? null, target, action, reaction)
  }
}

function toEntry (room: string, row: EntryRow): Entry {
  // A row stored before members had a user has none: its sender's connection id was its user then (as `storedMessage`).
  const member: Member = { id: row.from_id, user: row.from_user ?? row.from_id, name: row.from_name }
  if (row.target !== null) {
    const update: Update = { type: 'update', room, seq: row.seq, target: row.target, action: row.action as UpdateAction, by: member, ts: row.ts }
    if (row.action === 'edit') update.text = row.text
    if (row.reaction !== null) update.reaction = row.reaction
    if (row.cid !== null) update.cid = row.cid
    return update
  }
  const message: Message = { type: 'message', room, seq: row.seq, id: row.id, from: member, text: row.text, ts: row.ts }
  if (row.cid !== null) message.cid = row.cid
  if (row.edited !== null) message.edited = row.edited
  if (row.deleted === 1) message.deleted = true
  if (row.reactions !== null) message.reactions = JSON.parse(row.reactions) as Record<string, string[]>
  return message
}

const COLUMNS = 'seq, id, from_id, from_user, from_name, text, ts, cid, target, action, reaction, edited, deleted, reactions'

function prepare (db: Database.Database) {
  return {
    insert: db.prepare('INSERT INTO messages (room_id, seq, id, from_id, from_user, from_name, text, ts, cid, target, action, reaction) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)'),
    setState: db.prepare('UPDATE messages SET text = ?, edited = ?, deleted = ?, reactions = ? WHERE room_id = ? AND seq = ?'),
    bySeq: db.prepare(`SELECT ${COLUMNS} FROM messages WHERE room_id = ? AND seq = ?`),
    byCid: db.prepare(`SELECT ${COLUMNS} FROM messages WHERE room_id = ? AND cid = ?`),
    trimmedCid: db.prepare('SELECT seq, ts FROM trimmed_cids WHERE room_id = ? AND cid = ?'),
    anyTrimmedCid: db.prepare('SELECT 1 FROM trimmed_cids LIMIT 1'),
    readAfter: db.prepare(`SELECT ${COLUMNS} FROM messages WHERE room_id = ? AND seq > ? ORDER BY seq LIMIT ?`),
    // Through the partial index of messages (`target IS NULL`), named: without statistics the planner
    // would take the primary key and step over every update between a page's messages.
    readPage: db.prepare(`SELECT ${COLUMNS} FROM messages INDEXED BY messages_only WHERE room_id = ? AND seq > ? AND seq < ? AND target IS NULL ORDER BY seq DESC LIMIT ?`),
    anyEntryBetween: db.prepare('SELECT 1 FROM messages WHERE room_id = ? AND seq > ? AND seq < ? LIMIT 1'),
    anyMessageBetween: db.prepare('SELECT 1 FROM messages INDEXED BY messages_only WHERE room_id = ? AND seq > ? AND seq < ? AND target IS NULL LIMIT 1'),
  }
}
