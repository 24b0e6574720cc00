/**
 * Messages that change, in PostgreSQL (postgres-schema-v3.ts): each edit,
 * delete or reaction is one transaction on a connection of its own. It takes
 * the room's row lock, as appends do, so the update gets the room's next seq
 * gap-free across nodes and two changes of one message apply one after the
 * other; it applies `changedMessage`, the rule every broker shares, here in
 * JavaScript between reading the target and storing the result. Changes are
 * rarer than appends: one transaction each, no batching, and the append path
 * is left as it was.
 */
import type pg from 'pg'
import type { ReactionLimits, UpdateDraft, UpdateResult, UserState } from '../broker.js'
import { changedMessage, messageNotFound, newUpdate, refusalOf, storedMessage } from '../broker.js'
import { ChatError } from '../errors.js'
import type { Message } from '../protocol.js'

/** What `chat_update_target` answers (bigint comes as a string). */
interface TargetRow {
  r_epoch: string
  r_seq: string
  r_retried: string | null
  r_body: string | null
  r_ban: boolean
  r_mute: boolean
}

export class PostgresUpdates {
  /** Changes under way, which `settled` waits for. */
  private readonly running = new Set<Promise<unknown>>()

  /**
   * `schema`: quoted, to prefix function names; `keep`: the newest entries
   * kept per room (`retention.messages`, resolved), beyond which no message
   * can be changed. Undefined: all.
   */
  constructor (
    private readonly pool: pg.Pool,
    private readonly schema: string,
    private readonly channel: string,
    private readonly keep: number | undefined,
    private readonly limits: ReactionLimits,
  ) {}

  /**
   * Makes the change `draft` asks for in one transaction. A refusal is
   * answered, not thrown: the caller turns every failure it catches into
   * `unavailable`, and a refusal is no outage.
   */
  async apply (room: string, draft: UpdateDraft): Promise<UpdateResult | ChatError> {
    const change = this.transaction(room, draft)
    this.running.add(change)
    try {
      return await change
    } finally {
      this.running.delete(change)
    }
  }

  /** Resolves once every change begun so far has committed or failed. */
  async settled (): Promise<void> {
    await Promise.allSettled(this.running)
  }

  private async transaction (room: string, draft: UpdateDraft): Promise<UpdateResult | ChatError> {
    const client = await this.pool.connect()
    try {
      await client.query('BEGIN')
      const outcome = await this.change(client, room, draft)
      await client.query(outcome instanceof ChatError ? 'ROLLBACK' : 'COMMIT')
      client.release()
      return outcome
    } catch (error) {
      // Maybe mid-statement: the connection is dropped rather than reused, which rolls the transaction back.
      client.release(error as Error)
      throw error
    }
  }

  private async change (client: pg.PoolClient, room: string, draft: UpdateDraft): Promise<UpdateResult | ChatError> {
    const now = Date.now()
    const { rows: [row] } = await client.query<TargetRow>(`SELECT * FROM ${this.schema}.chat_update_target($1, $2, $3, $4, $5)`,
      [room, draft.target, draft.cid ?? null, draft.by.user, this.keep ?? null])
    if (row === undefined) return messageNotFound(room, draft.target)
    if (row.r_retried !== null) return { seq: Number(row.r_retried), duplicate: true }
    const target = row.r_body === null ? undefined : storedMessage(JSON.parse(row.r_body) as Message)
    const changed = refusalOf(() => changedMessage(room, target, draft, restrictions(row), this.limits, now))
    if (changed instanceof ChatError) return changed
    const seq = Number(row.r_seq)
    if (changed === undefined) return { seq, duplicate: false }
    const update = newUpdate(room, seq + 1, draft, now)
    await client.query(`SELECT ${this.schema}.chat_store_update($1, $2, $3, $4, $5, $6, $7, $8)`,
      [room, row.r_epoch, update.seq, draft.target, JSON.stringify(changed), JSON.stringify(update), draft.cid ?? null, this.channel])
    return { seq: update.seq, update, duplicate: false }
  }
}

/** The user's restrictions in force, as the database's clock decides (as for appends): without an end, so `changedMessage` agrees. */
function restrictions (row: TargetRow): Omit<UserState, 'read'> {
  return { ...(row.r_ban ? { ban: {} } : {}), ...(row.r_mute ? { mute: {} } : {}) }
}
