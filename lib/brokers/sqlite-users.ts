/**
 * Users' state in the SQLite broker's rooms: read markers, bans and mutes in
 * the `user_states` table, and the bans and mutes in force held in memory, so
 * that a join or an append checks them without reading the file. This
 * process alone writes the file, so the memory stays true.
 */
import type Database from 'better-sqlite3'
import type { AppendRefusal, ModerationEntry, Restriction, UserChange, UserState } from '../broker.js'
import { NO_USER_STATE, appendRefusal, changedUserState, currentUserState, inForce } from '../broker.js'

/** A user's ban and mute in a room; `{}`: none (lifted). */
type Restrictions = Omit<UserState, 'read'>

interface UserRow { read: number, banned: number, ban_until: number | null, muted: number, mute_until: number | null }

export class SqliteUsers {
  private readonly s: ReturnType<typeof prepare>
  /** room → user → its ban and mute, as committed; loaded at open, then kept by `settle`. */
  private readonly committed = new Map<string, Map<string, Restrictions>>()
  /** What the transaction under way changed: seen by the checks after it in its batch, committed or dropped by `settle`. */
  private readonly pending = new Map<string, Map<string, Restrictions>>()

  constructor (db: Database.Database, now: number) {
    this.s = prepare(db)
    for (const row of this.s.restricted.all() as Array<UserRow & { room: string, user: string }>) {
      const current = restrictionsOf(currentUserState(toState(row), now))
      if (current.ban || current.mute) byUser(this.committed, row.room).set(row.user, current)
    }
  }

  banned (room: string, user: string, now: number): boolean {
    return inForce(this.restrictions(room, user)?.ban, now)
  }

  appendRefusal (room: string, user: string, now: number): AppendRefusal | undefined {
    return appendRefusal(this.restrictions(room, user), now)
  }

  /** The user's ban and mute as the transaction under way has them (a change of a message is checked against them). */
  restrictions (room: string, user: string): Restrictions | undefined {
    return this.pending.get(room)?.get(user) ?? this.committed.get(room)?.get(user)
  }

  /**
   * Applies `change` inside the caller's transaction: `roomId` is the room's
   * row (undefined: the room has none, so there is nothing to read or keep),
   * `latestSeq` its seq as the transaction has it so far.
   */
  change (roomId: number | undefined, room: string, user: string, change: UserChange, latestSeq: number, now: number): { state: UserState, changed: boolean } {
    const row = roomId === undefined ? undefined : this.s.get.get(roomId, user) as UserRow | undefined
    const result = changedUserState(row ? toState(row) : NO_USER_STATE, change, latestSeq, now)
    if (roomId === undefined || !result.changed || change.kind === 'kick') return result
    const { read, ban, mute } = result.state
    if (read === 0 && !ban && !mute) this.s.delete.run(roomId, user)
    else this.s.upsert.run(roomId, user, read, ban ? 1 : 0, ban?.until ?? null, mute ? 1 : 0, mute?.until ?? null)
    if (change.kind !== 'read') byUser(this.pending, room).set(user, restrictionsOf(result.state))
    return result
  }

  /** After the transaction: what it changed is now committed, or (when it failed) never was. */
  settle (committed: boolean): void {
    if (committed) {
      for (const [room, users] of this.pending) {
        for (const [user, restrictions] of users) {
          if (restrictions.ban || restrictions.mute) byUser(this.committed, room).set(user, restrictions)
          else this.forgetUser(room, user)
        }
      }
    }
    this.pending.clear()
  }

  /** What the file keeps for `user` in `room`. */
  state (room: string, user: string, now: number): UserState {
    const row = this.s.byName.get(room, user) as UserRow | undefined
    return currentUserState(row ? toState(row) : NO_USER_STATE, now)
  }

  moderation (room: string, now: number): ModerationEntry[] {
    const listed: ModerationEntry[] = []
    for (const [user, kept] of this.committed.get(room) ?? []) {
      const current = restrictionsOf(currentUserState({ read: 0, ...kept }, now))
      if (current.ban || current.mute) listed.push({ user, ...current })
    }
    return listed
  }

  /** Drops a forgotten room's restrictions from memory (`SqliteRetention` deletes its rows). */
  forgetRoom (room: string): void {
    this.committed.delete(room)
  }

  /** Drops the restrictions that ended by `now` from memory; the file's rows go with the user's next change or the room. */
  forgetEnded (now: number): void {
    for (const [room, users] of this.committed) {
      for (const [user, kept] of users) {
        if (!inForce(kept.ban, now) && !inForce(kept.mute, now)) this.forgetUser(room, user)
      }
    }
  }

  private forgetUser (room: string, user: string): void {
    const users = this.committed.get(room)
    users?.delete(user)
    if (users?.size === 0) this.committed.delete(room)
  }
}

function byUser (rooms: Map<string, Map<string, Restrictions>>, room: string): Map<string, Restrictions> {
  let users = rooms.get(room)
  if (!users) rooms.set(room, users = new Map())
  return users
}

/** The ban and mute of `state`, without keys for those it lacks. */
function restrictionsOf ({ ban, mute }: UserState): Restrictions {
  return { ...(ban ? { ban } : {}), ...(mute ? { mute } : {}) }
}

function toState (row: UserRow): UserState {
  const state: UserState = { read: row.read }
  if (row.banned) state.ban = restriction(row.ban_until)
  if (row.muted) state.mute = restriction(row.mute_until)
  return state
}

function restriction (until: number | null): Restriction {
  return until === null ? {} : { until }
}

const COLUMNS = 'read, banned, ban_until, muted, mute_until'

function prepare (db: Database.Database) {
  return {
    get: db.prepare(`SELECT ${COLUMNS} FROM user_states WHERE room_id = ? AND user = ?`),
    byName: db.prepare(`SELECT ${COLUMNS} FROM user_states WHERE room_id = (SELECT id FROM rooms WHERE name = ?) AND user = ?`),
    restricted: db.prepare(`SELECT r.name AS room, u.user, ${COLUMNS} FROM user_states u JOIN rooms r ON r.id = u.room_id WHERE u.banned = 1 OR u.muted = 1`),
    upsert: db.prepare(`INSERT INTO user_states (room_id, user, ${COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)
      ON CONFLICT (room_id, user) DO UPDATE SET read = excluded.read, banned = excluded.banned, ban_until = excluded.ban_until, muted = excluded.muted, mute_until = excluded.mute_until`),
    delete: db.prepare('DELETE FROM user_states WHERE room_id = ? AND user = ?'),
  }
}
