/**
 * The node registry's store in PostgreSQL: leases in the `nodes` table, timed
 * by the database's clock, and the rosters in `members`, changed by the
 * functions of postgres-schema.ts. A node's rooms are found from the rosters
 * themselves, so `listRoom` and `unlistRoom` have nothing to do.
 */
import { randomUUID } from 'node:crypto'
import { restrictionError, type NodeInfo } from '../broker.js'
import { ChatError } from '../errors.js'
import type { Member, Presence } from '../protocol.js'
import type { PresenceOptions, RegisteredNode, RegistryStore, RosterEntry, Stamp } from './node-registry.js'

/** Runs one statement; any failure becomes `ChatError('unavailable')`. */
export type Query = <R extends Record<string, unknown>>(text: string, values?: unknown[]) => Promise<R[]>

export class PostgresRegistryStore implements RegistryStore {
  /** `schema`: quoted, to prefix table and function names. */
  constructor (private readonly query: Query, private readonly schema: string, private readonly channel: string) {}

  async renew (node: Omit<NodeInfo, 'lastSeen'>, leaseMs: number): Promise<{ held: boolean, serial: number }> {
    const [row] = await this.query<{ r_held: boolean, r_serial: string }>(
      `SELECT * FROM ${this.schema}.chat_renew($1, $2, $3)`, [node.id, JSON.stringify(node), leaseMs])
    return { held: row!.r_held, serial: Number(row!.r_serial) }
  }

  async nodes (): Promise<RegisteredNode[]> {
    const rows = await this.query<{ serial: string, record: Omit<NodeInfo, 'lastSeen'>, last_seen: number, live: boolean }>(
      `SELECT serial, record, (extract(epoch FROM last_seen) * 1000)::float8 AS last_seen,
        coalesce(lease_until > clock_timestamp(), false) AS live FROM ${this.schema}.nodes`)
    return rows.map(({ serial, record, last_seen: lastSeen, live }) => ({ ...record, lastSeen: Math.round(lastSeen), serial: Number(serial), live }))
  }

  async release (node: string): Promise<void> {
    await this.query(`DELETE FROM ${this.schema}.nodes WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM ${this.schema}.members WHERE node = $1)`, [node])
    await this.query(`UPDATE ${this.schema}.nodes SET lease_until = NULL WHERE id = $1`, [node])
  }

  async forget (node: string, serial: number): Promise<void> {
    await this.query(`DELETE FROM ${this.schema}.nodes
      WHERE id = $1 AND serial = $2 AND (lease_until IS NULL OR lease_until <= clock_timestamp())`, [node, serial])
  }

  async roomsOf (nodes: string[]): Promise<string[]> {
    if (nodes.length === 0) return []
    const rows = await this.query<{ room: string }>(`SELECT DISTINCT room FROM ${this.schema}.members WHERE node = ANY($1::text[])`, [nodes])
    return rows.map(({ room }) => room)
  }

  async listRoom (): Promise<void> {}

  async unlistRoom (): Promise<void> {}

  async roster (room: string): Promise<RosterEntry[]> {
    const rows = await this.query<{ id: string, user_id: string, name: string, node: string, serial: string }>(
      `SELECT id, user_id, name, node, serial FROM ${this.schema}.members WHERE room = $1 ORDER BY position`, [room])
    return rows.map(({ id, user_id: user, name, node, serial }) => ({ member: { id, user, name }, node, serial: Number(serial) }))
  }

  /** The function decides `first` or `last` with the roster change and builds the event it notifies. */
  async presence (room: string, action: Presence['action'], member: Member, stamp: Stamp, options: PresenceOptions): Promise<void> {
    const maxMembers = options.maxMembers ?? 0
    const [row] = await this.query<{ outcome: string }>(
      `SELECT ${this.schema}.chat_presence($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) AS outcome`,
      [room, action, member.id, member.user, member.name, stamp.node, stamp.serial, randomUUID(), maxMembers, options.onlyIfNew ?? false, this.channel])
    if (row!.outcome === 'full') throw new ChatError('room_full', `${room} is full (${maxMembers} members)`)
    if (row!.outcome === 'banned') throw restrictionError(room, 'banned')
  }

  async evict (room: string, node: string, serial: number): Promise<number> {
    const [row] = await this.query<{ removed: number }>(
      `SELECT ${this.schema}.chat_evict($1, $2, $3, $4) AS removed`, [room, node, serial, this.channel])
    return row!.removed
  }
}
