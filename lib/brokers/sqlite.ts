/**
 * The durable one-process broker: rooms' seq, epoch, stream (messages and
 * their updates), cids and users' state (read markers, bans, mutes) in a
 * SQLite file, events delivered in-process as by the memory broker. Appends,
 * message changes and user changes of one event-loop turn are committed together (and, with `synchronous: 'full'`,
 * those made while a commit is being flushed to disk); each is delivered and
 * acknowledged only once that commit is done (and on disk, with 'full').
 */
import { randomUUID } from 'node:crypto'
import type Database from 'better-sqlite3'
import type { AppendResult, Broker, BrokerNode, MessageDraft, ModerationEntry, NodeInfo, NodeSignal, PublishOptions, ReactionLimits, ReadRange, ReadResult, RetentionOptions, RoomInfo, RoomsPage, UserChange, UserState, UpdateDraft, UpdateResult } from '../broker.js'
import { NO_STREAM_YET, changedMessage, keptPerRoom, messageIds, messageNotFound, newMessage, newUpdate, refusalOf, restrictionError, retryOfTrimmed, roomsPage, userEvent } from '../broker.js'
import { ChatError } from '../errors.js'
import type { Member, Presence, TypingEvent } from '../protocol.js'
import { GroupCommit, type Pending } from './group-commit.js'
import { InProcessNode } from './in-process.js'
import { SqliteRetention } from './sqlite-retention.js'
import { type DurableFile, openDatabase } from './sqlite-schema.js'
import { SqliteStream, type StoredCid } from './sqlite-stream.js'
import { SqliteUsers } from './sqlite-users.js'

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
   * What history is kept (`RetentionOptions`). Default: all of it, whatever
   * the hub's `historySize` (which then bounds only what one resume or join
   * hands out, not what is stored or paged through). Older messages are
   * deleted in small batches, a transaction each, so no lock is held long.
   */
  retention?: RetentionOptions
  /**
   * When an append is acknowledged. Default `'normal'`: once its transaction
   * committed, so it survives the process being killed; the log is flushed to
   * disk within a second, so a power loss or an OS crash loses at most about
   * a second of acknowledged messages. `'full'`: once the commit is flushed to
   * disk as well, so it survives a power loss; each flush takes a few ms, and
   * a connection's sends wait one flush each (calls made meanwhile share it).
   * The flush runs on the thread pool either way, never blocking the event loop.
   */
  synchronous?: 'normal' | 'full'
}

/**
 * How often retention and idle rooms are looked at: often enough to bound the
 * file, rare enough to cost nothing; more often (down to a second) when
 * `retention.age` or `idleRoomTtl` is shorter, so they hold within one interval.
 */
const SWEEP_INTERVAL_MS = 60_000
const MIN_SWEEP_INTERVAL_MS = 1000
/** Rooms whose row is kept in memory: the active ones of a busy server; past this the cache starts over. */
const MAX_CACHED_ROOMS = 10_000
/** With `synchronous: 'normal'`, how long a commit may wait in the OS before the log is flushed to disk: what a power loss may cost. */
const BACKGROUND_FLUSH_MS = 1000


interface RoomRow { id: number, epoch: string, seq: number }

/** A call that waits for the next group commit: an append, a message change, a user change, or an event that must not overtake one. */
type Call =
  | { kind: 'append', room: string, draft: MessageDraft }
  | { kind: 'update', room: string, draft: UpdateDraft }
  | { kind: 'event', room: string, event: Presence | TypingEvent, options: PublishOptions }
  | { kind: 'user', room: string, user: string, change: UserChange, connection: string | undefined }

interface UserResult { state: UserState, changed: boolean }
/** What a call's commit answers (per its kind), or the refusal of that call alone. */
type Outcome = AppendResult | UpdateResult | UserResult | undefined | ChatError

export class SqliteBroker implements Broker {
  // Rosters live in memory only: members are this process's connections, and
  // after a restart nobody is connected, so there is nothing to keep.
  private readonly local = new InProcessNode('SqliteBroker')
  private file: DurableFile | undefined
  private statements: ReturnType<typeof prepare> | undefined
  private stream: SqliteStream | undefined
  private users: SqliteUsers | undefined
  /** Set when a flush to disk failed: what the disk holds is unknown, so nothing more is acknowledged. */
  private failure: Error | undefined
  /** With `synchronous: 'normal'`: the flush due within `BACKGROUND_FLUSH_MS` of a commit, and the one under way. */
  private flushTimer: NodeJS.Timeout | undefined
  private flushing: Promise<void> | undefined
  private keep: number | undefined
  /**
   * Room rows as last committed. This process alone writes the file, so they
   * stay true, and an append needs no read of its room.
   */
  private readonly roomRows = new Map<string, RoomRow>()
  /** Whether a retry may name a cid that retention trimmed (else no append needs to look). */
  private mayHaveTrimmedCids = false
  private readonly commits = new GroupCommit<Call, Outcome>((batch) => this.commit(batch))
  private retention: SqliteRetention | undefined
  private sweeper: NodeJS.Timeout | undefined
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
    if (options?.synchronous !== undefined && options.synchronous !== 'normal' && options.synchronous !== 'full') problems.push(`synchronous: must be 'normal' or 'full', not ${String(options.synchronous)}`)
    if (problems.length > 0) throw new TypeError(`SqliteBroker options: ${problems.join('; ')}`)
  }

  async open (node: BrokerNode): Promise<void> {
    this.local.open(node)
    try {
      this.file = openDatabase(this.options.file)
    } catch (error) {
      this.local.close()
      throw error
    }
    this.failure = undefined
    this.statements = prepare(this.file.db)
    this.stream = new SqliteStream(this.file.db)
    this.users = new SqliteUsers(this.file.db, Date.now())
    this.keep = keptPerRoom(this.options.retention, node)
    this.roomRows.clear()
    this.mayHaveTrimmedCids = this.options.retention !== undefined || this.stream.anyTrimmedCid()
    const { age } = this.options.retention ?? {}
    const { idleRoomTtl } = this.options
    this.retention = new SqliteRetention(this.file.db, {
      keep: this.keep,
      age,
      idleRoomTtl,
      hasMembers: (room) => this.local.memberCount(room) > 0,
      forgotten: (room) => {
        this.roomRows.delete(room)
        this.users!.forgetRoom(room)
      },
    })
    const interval = Math.max(MIN_SWEEP_INTERVAL_MS, Math.min(SWEEP_INTERVAL_MS, age ?? Infinity, idleRoomTtl ?? Infinity))
    this.sweeper = setInterval(() => { void this.sweep() }, interval)
    this.sweeper.unref()
  }

  async subscribe (room: string): Promise<void> {
    this.local.subscribe(room)
  }

  async unsubscribe (room: string): Promise<void> {
    this.local.unsubscribe(room)
    this.roomRows.delete(room)
  }

  async update (room: string, draft: UpdateDraft): Promise<UpdateResult> {
    this.prepared()
    // Through the group commit, as an append: its seq in call order, acknowledged and delivered once committed.
    return await this.commits.add({ kind: 'update', room, draft }) as UpdateResult
  }

  async append (room: string, draft: MessageDraft): Promise<AppendResult> {
    this.prepared()
    return await this.commits.add({ kind: 'append', room, draft }) as AppendResult
  }

  async publish (room: string, event: Presence | TypingEvent, options: PublishOptions = {}): Promise<void> {
    this.prepared()
    // Typing touches no table: with nothing being committed ahead of it, it goes out now.
    if (event.type === 'typing' && this.commits.idle) return this.local.deliver(room, event)
    // Presence creates the room (its epoch) in the file, and anything queued
    // behind appends waits for them, so events go out in the order they came.
    await this.commits.add({ kind: 'event', room, event, options })
  }

  async read (room: string, range: ReadRange): Promise<ReadResult> {
    const s = this.prepared()
    const row = s.room.get(room) as RoomRow | undefined
    if (!row) return { epoch: NO_STREAM_YET, seq: 0, messages: [], more: false }
    return { epoch: row.epoch, seq: row.seq, ...this.stream!.read(row.id, room, this.floor(row.seq), row.seq, range) }
  }

  async members (room: string): Promise<Member[]> {
    return this.local.members(room)
  }

  async rooms (page?: RoomsPage): Promise<RoomInfo[]> {
    const s = this.prepared()
    return roomsPage(this.local.occupied().map(({ room, members }) => ({ room, members, seq: (s.room.get(room) as RoomRow | undefined)?.seq ?? 0 })), page)
  }

  async changeUser (room: string, user: string, change: UserChange, connection?: string): Promise<UserResult> {
    this.prepared()
    // Through the group commit: durable as an append is, and in order with the appends and joins around it.
    return await this.commits.add({ kind: 'user', room, user, change, connection }) as UserResult
  }

  async userState (room: string, user: string): Promise<UserState> {
    this.prepared()
    return this.users!.state(room, user, Date.now())
  }

  async moderation (room: string): Promise<ModerationEntry[]> {
    this.prepared()
    return this.users!.moderation(room, Date.now())
  }

  async signal (event: NodeSignal): Promise<void> {
    this.local.signal(event)
  }

  async nodes (): Promise<NodeInfo[]> {
    this.prepared()
    return [this.local.self()]
  }

  /**
   * The open better-sqlite3 handle, for the application's own tables in the
   * same file (which this connection holds alone). Throws unless open.
   */
  get database (): Database.Database {
    if (!this.file) throw new Error('SqliteBroker: not open')
    return this.file.db
  }

  async close (): Promise<void> {
    clearInterval(this.sweeper)
    // Whatever was queued is committed (or refused) before the file closes;
    // closing flushes the log itself (SQLite checkpoints the file on close).
    await this.commits.settled()
    clearTimeout(this.flushTimer)
    this.flushTimer = undefined
    await this.flushing
    this.file?.close()
    this.file = undefined
    this.statements = undefined
    this.stream = undefined
    this.users = undefined
    this.retention = undefined
    this.local.close()
  }

  private prepared (): ReturnType<typeof prepare> {
    this.local.opened()
    if (!this.statements) throw new Error('SqliteBroker: not open')
    if (this.failure) throw new ChatError('unavailable', `the chat store (SQLite) could not write to disk (${this.failure.message}); the server must be restarted`)
    return this.statements
  }

  /**
   * The group commit: a batch of calls in one transaction (flushed to disk,
   * with `synchronous: 'full'`), then (only then) deliveries in the calls'
   * order, so per room in seq order. A failed commit stores none of them, and
   * each caller is told; a call refused on its own (a ban, a mute) fails alone.
   */
  private async commit (batch: Array<Pending<Call, Outcome>>): Promise<void> {
    const s = this.prepared()
    const users = this.users!
    const { log, reactionLimits } = this.local.opened()
    let outcomes: Outcome[]
    // The batch's rooms as it leaves them: each row is written once per batch, not once per append.
    const touched = new Map<string, RoomRow>()
    try {
      const now = Date.now()
      const existing = (room: string): RoomRow | undefined => touched.get(room) ?? this.roomRows.get(room) ?? s.room.get(room) as RoomRow | undefined
      const roomRow = (room: string): RoomRow => {
        let row = touched.get(room)
        if (!row) {
          row = { ...(existing(room) ?? s.createRoom.get(room, randomUUID(), now) as RoomRow) }
          touched.set(room, row)
        }
        return row
      }
      outcomes = s.db.transaction(() => {
        // Bans and mutes are checked in the calls' order, so one changed earlier in the batch holds for the calls after it.
        const done = batch.map(({ call }): Outcome => {
          switch (call.kind) {
            case 'append': {
              const refusal = users.appendRefusal(call.room, call.draft.from.user, now)
              if (refusal) return restrictionError(call.room, refusal)
              return this.store(roomRow(call.room), call.room, call.draft, now)
            }
            case 'update': {
              // A room never used makes no row: it holds no message to change. A refusal is that call's alone, not its batch's.
              const row = existing(call.room) && roomRow(call.room)
              return refusalOf(() => this.change(row, call.room, call.draft, reactionLimits, now))
            }
            case 'event':
              if (call.event.type === 'typing') return undefined
              if (call.event.action === 'join' && users.banned(call.room, call.event.member.user, now)) return restrictionError(call.room, 'banned')
              roomRow(call.room)
              return undefined
            case 'user': {
              // A read marker needs a room with messages, a kick no room; a ban or mute is kept for a room nobody used yet.
              const row = call.change.kind === 'read' || call.change.kind === 'kick' ? existing(call.room) : roomRow(call.room)
              return users.change(row?.id, call.room, call.user, call.change, row?.seq ?? 0, now)
            }
          }
        })
        for (const row of touched.values()) {
          s.setRoom.run(row.seq, now, row.id)
          // Retention by count keeps pace with appends here, a bounded batch at a time.
          if (this.keep !== undefined) this.retention!.trimRoom(row.id, row.seq - this.keep)
        }
        return done
      })()
      users.settle(true)
    } catch (error) {
      users.settle(false)
      log.error({ err: error, file: this.options.file, calls: batch.length }, 'SqliteBroker: commit failed')
      throw new ChatError('unavailable', 'the chat store (SQLite) could not commit; retry with the same cid')
    }
    if (this.roomRows.size + touched.size > MAX_CACHED_ROOMS) this.roomRows.clear()
    for (const [room, row] of touched) this.roomRows.set(room, row)
    if (this.options.synchronous === 'full') await this.flush()
    else this.flushTimer ??= setTimeout(() => { void this.flush().catch(() => {}) }, BACKGROUND_FLUSH_MS).unref()
    batch.forEach(({ call, resolve, reject }, i) => {
      const outcome = outcomes[i]
      if (outcome instanceof ChatError) return reject(outcome)
      if (call.kind === 'append') {
        const result = outcome as AppendResult
        if (!result.duplicate) this.local.deliver(call.room, result.message)
        return resolve(result)
      }
      if (call.kind === 'update') {
        const result = outcome as UpdateResult
        if (result.update) this.local.deliver(call.room, result.update)
        return resolve(result)
      }
      if (call.kind === 'user') {
        const result = outcome as UserResult
        if (result.changed) this.local.deliver(call.room, userEvent(call.room, call.user, call.change, result.state, call.connection))
        return resolve(result)
      }
      try {
        const told = call.event.type === 'typing' ? call.event : this.local.updateRoster(call.room, call.event, call.options)
        if (told) this.local.deliver(call.room, told)
        resolve(undefined)
      } catch (error) {
        reject(error as Error)
      }
    })
  }

  /**
   * Puts every commit made so far on disk. A failure stops the broker, as
   * PostgreSQL stops on a failed fsync: what reached the disk is unknown, so
   * nothing more may be acknowledged.
   */
  private async flush (): Promise<void> {
    this.flushTimer = undefined
    const flushing = this.file!.flush()
    this.flushing = flushing.catch(() => {})
    try {
      await flushing
    } catch (error) {
      this.failure = error as Error
      this.local.opened().log.error({ err: error, file: this.options.file }, 'SqliteBroker: flushing to disk failed; refusing every call until the server restarts')
      throw new ChatError('unavailable', `the chat store (SQLite) could not write to disk (${(error as Error).message})`)
    }
  }

  /** Retention and forgetting (`SqliteRetention`), and the bans and mutes that ended, from memory. */
  private async sweep (): Promise<void> {
    this.users?.forgetEnded(Date.now())
    try {
      await this.retention?.sweep(() => this.statements !== undefined && this.failure === undefined)
    } catch (error) {
      if (this.file) this.local.opened().log.warn({ err: error, file: this.options.file }, 'SqliteBroker: retention sweep failed; retried at the next sweep')
    }
  }

  /** The seq at and below which retention by count hides a room's entries, when its latest is `latest`. */
  private floor (latest: number): number {
    // Retention by count may lag behind in the file; reads and changes never see what it will delete.
    return this.keep === undefined ? 0 : Math.max(0, latest - this.keep)
  }

  /** The entry `cid` names in the room of `row`, if any. */
  private retried (row: RoomRow, room: string, cid: string | undefined): StoredCid | undefined {
    return cid === undefined ? undefined : this.stream!.retried(row.id, room, cid, this.floor(row.seq), this.mayHaveTrimmedCids)
  }

  /** One append inside the group's transaction; takes the next seq of `row` (the room's row as the batch has it so far). */
  private store (row: RoomRow, room: string, draft: MessageDraft, now: number): AppendResult {
    const retried = this.retried(row, room, draft.cid)
    if (retried?.entry?.type === 'message') return { message: retried.entry, duplicate: true }
    if (retried) return retryOfTrimmed(room, draft, retried.seq, retried.ts)
    const message = newMessage(room, row.seq + 1, this.nextId(), draft, now)
    this.stream!.addMessage(row.id, message)
    row.seq = message.seq
    return { message, duplicate: false }
  }

  /**
   * One change of a message inside the group's transaction (`changedMessage`
   * decides and throws its refusal): the message's new state and the update
   * with the next seq of `row` (undefined: the room has no row).
   */
  private change (row: RoomRow | undefined, room: string, draft: UpdateDraft, limits: ReactionLimits, now: number): UpdateResult {
    if (!row) throw messageNotFound(room, draft.target)
    const retried = this.retried(row, room, draft.cid)
    if (retried) return { seq: retried.seq, duplicate: true }
    const target = this.stream!.entry(row.id, room, draft.target, this.floor(row.seq))
    // The bans and mutes an append is checked against, as the batch has them so far.
    const changed = changedMessage(room, target, draft, this.users!.restrictions(room, draft.by.user), limits, now)
    if (changed === undefined) return { seq: row.seq, duplicate: false }
    const update = newUpdate(room, row.seq + 1, draft, now)
    this.stream!.addUpdate(row.id, update, changed)
    row.seq = update.seq
    return { seq: update.seq, update, duplicate: false }
  }
}

function prepare (db: Database.Database) {
  return {
    db,
    room: db.prepare('SELECT id, epoch, seq FROM rooms WHERE name = ?'),
    createRoom: db.prepare('INSERT INTO rooms (name, epoch, seq, last_active) VALUES (?, ?, 0, ?) RETURNING id, epoch, seq'),
    setRoom: db.prepare('UPDATE rooms SET seq = ?, last_active = ? WHERE id = ?'),
  }
}
