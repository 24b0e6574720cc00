/**
 * Per-room state of users in PostgreSQL: read markers, bans and mutes in the
 * `room_users` table (postgres-schema-v2.ts). A change is one call of
 * `chat_change_user`, which applies `changedUserState`'s rule under the
 * room's row lock and NOTIFYs the `user` event on the channel of the room's
 * events; reads see only the bans and mutes in force (`room_users_now`).
 */
import { randomUUID } from 'node:crypto'
import type { ModerationEntry, Restriction, UserChange, UserState } from '../broker.js'
import type { Query } from './postgres-registry.js'

/** A user's state as the functions and views answer it (float8 comes as a number, bigint as a string). */
interface StateRow extends Record<string, unknown> {
  read_seq: string
  ban: boolean
  ban_until: number | null
  mute: boolean
  mute_until: number | null
}

export class PostgresUsers {
  /** `schema`: quoted, to prefix table and function names. */
  constructor (private readonly query: Query, private readonly schema: string, private readonly channel: string) {}

  async change (room: string, user: string, change: UserChange, connection?: string): Promise<{ state: UserState, changed: boolean }> {
    const [row] = await this.query<StateRow & { changed: boolean }>(
      `SELECT r_read AS read_seq, r_ban AS ban, r_ban_until AS ban_until, r_mute AS mute, r_mute_until AS mute_until, r_changed AS changed
        FROM ${this.schema}.chat_change_user($1, $2, $3, $4, $5, $6, $7, $8)`,
      [room, user, change.kind, change.kind === 'read' ? change.seq : null, 'until' in change ? change.until ?? null : null,
        randomUUID(), connection ?? null, this.channel])
    return { state: userState(row!), changed: row!.changed }
  }

  async state (room: string, user: string): Promise<UserState> {
    const [row] = await this.query<StateRow>(
      `SELECT read_seq, ban, ban_until, mute, mute_until FROM ${this.schema}.room_users_now WHERE room = $1 AND user_id = $2`, [room, user])
    return row === undefined ? { read: 0 } : userState(row)
  }

  async moderation (room: string): Promise<ModerationEntry[]> {
    const rows = await this.query<StateRow & { user_id: string }>(
      `SELECT user_id, read_seq, ban, ban_until, mute, mute_until FROM ${this.schema}.room_users_now
        WHERE room = $1 AND (ban OR mute) ORDER BY user_id COLLATE "C"`, [room])
    return rows.map((row) => {
      const { read: _read, ...restrictions } = userState(row)
      return { user: row.user_id, ...restrictions }
    })
  }
}

function userState (row: StateRow): UserState {
  const state: UserState = { read: Number(row.read_seq) }
  if (row.ban) state.ban = restriction(row.ban_until)
  if (row.mute) state.mute = restriction(row.mute_until)
  return state
}

function restriction (until: number | null): Restriction {
  return until === null ? {} : { until }
}
