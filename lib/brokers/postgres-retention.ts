/**
 * What the PostgreSQL broker deletes: entries (messages and updates) beyond
 * the newest `messages` of their room or older than `age`, and rooms idle
 * past `idleRoomTtl`. Each
 * statement deletes one small batch in its own transaction, so no lock is
 * held for long and appends to the same rooms go on meanwhile. A message is
 * kept for at least the cid retention time, so a retried send is still
 * recognised as one.
 */
import { CID_RETENTION_MS, type BrokerLogger, type RetentionOptions } from '../broker.js'
import type { Query } from './postgres-registry.js'

/** Rows per DELETE: short enough that each statement holds its locks for milliseconds. */
const BATCH_ROWS = 1000
/** Idle rooms per DELETE: each takes its whole history with it, so fewer at a time. */
const BATCH_ROOMS = 20
/** How often each node enforces retention: history a minute over its bound costs little, and a minute is no load. */
const INTERVAL_MS = 60_000

/** Throws, naming the field, unless `options` are valid retention options. */
export function checkRetention (options: RetentionOptions): void {
  if (options.messages !== 'historySize' && options.messages !== undefined && !(Number.isInteger(options.messages) && options.messages > 0)) {
    throw new Error(`PostgresBroker: retention.messages must be a positive integer or 'historySize', not ${String(options.messages)}`)
  }
  if (options.age !== undefined && !(Number.isInteger(options.age) && options.age > 0)) throw new Error(`PostgresBroker: retention.age must be a positive integer, not ${String(options.age)}`)
}

export class PostgresRetention {
  private timer: NodeJS.Timeout | undefined
  private running: Promise<number> | undefined
  /** Each DELETE with the most rows one run of it removes. */
  private readonly statements: Array<{ sql: string, batch: number }> = []

  /** `keep`: the newest entries kept per room (`retention.messages`, resolved); `age` as in `RetentionOptions`. */
  constructor (private readonly query: Query, table: string, keep: number | undefined, age: number | undefined, idleRoomTtl: number | undefined, private readonly log: BrokerLogger) {
    const young = `m.created_at > now() - ${CID_RETENTION_MS} * interval '1 millisecond'`
    // Messages and updates share the room's seqs, so the newest `keep` are counted across both tables.
    for (const entries of [`${table}.messages`, `${table}.updates`]) {
      if (keep !== undefined) {
        this.statements.push({ batch: BATCH_ROWS, sql: `DELETE FROM ${entries} WHERE (room, seq) IN (
          SELECT m.room, m.seq FROM ${table}.rooms r JOIN ${entries} m ON m.room = r.room AND m.seq <= r.seq - ${keep}
          WHERE NOT (${young}) LIMIT ${BATCH_ROWS})` })
      }
      if (age !== undefined) {
        this.statements.push({ batch: BATCH_ROWS, sql: `DELETE FROM ${entries} WHERE (room, seq) IN (
          SELECT m.room, m.seq FROM ${entries} m
          WHERE m.created_at < now() - ${age} * interval '1 millisecond' AND NOT (${young}) LIMIT ${BATCH_ROWS})` })
      }
    }
    if (idleRoomTtl !== undefined) {
      // Checked again on the row itself: a join or message meanwhile updates changed_at, and the room stays.
      const idle = `r.changed_at < now() - ${idleRoomTtl} * interval '1 millisecond' AND NOT EXISTS (SELECT 1 FROM ${table}.members m WHERE m.room = r.room)`
      this.statements.push({ batch: BATCH_ROOMS, sql: `DELETE FROM ${table}.rooms r WHERE ${idle} AND r.room IN (SELECT r.room FROM ${table}.rooms r WHERE ${idle} LIMIT ${BATCH_ROOMS})` })
    }
  }

  start (): void {
    if (this.statements.length === 0) return
    void this.enforce().catch(() => {})
    this.timer = setInterval(() => void this.enforce().catch(() => {}), INTERVAL_MS)
    this.timer.unref()
  }

  stop (): void {
    clearInterval(this.timer)
  }

  /** Runs each statement until a batch finds less than a full one; answers how many rows went. */
  enforce (): Promise<number> {
    this.running ??= this.batches().finally(() => { this.running = undefined })
    return this.running
  }

  private async batches (): Promise<number> {
    let deleted = 0
    for (const { sql, batch } of this.statements) {
      for (;;) {
        const rows = await this.query<{ n: number }>(`WITH gone AS (${sql} RETURNING 1) SELECT count(*)::int AS n FROM gone`)
        deleted += rows[0]!.n
        if (rows[0]!.n < batch) break
      }
    }
    if (deleted > 0) this.log.info({ deleted }, 'chat: retention deleted old history')
    return deleted
  }
}
