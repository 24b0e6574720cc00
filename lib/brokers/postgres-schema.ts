/**
 * The PostgreSQL broker's schema and its migrations. Every table and function
 * lives in one PostgreSQL schema (the broker's `schema` option), so nodes that
 * share a database and a schema form one chat. `migrate` brings a schema to
 * the newest version when a broker opens: each migration runs once, in order,
 * in one transaction under an advisory lock, so nodes that start together
 * wait for each other instead of racing.
 *
 * Tables (version 1, postgres-schema-v1.ts):
 *   rooms     room → epoch, seq (its latest), changed_at: one row per room; its
 *             row lock orders the room's appends, presence and user changes
 *   messages  (room, seq) → cid, body (the message JSON as delivered), created_at
 *   members   (room, id) → name, node, serial: the rosters, stamped with the
 *             registration that announced each member (node-registry.ts)
 *   nodes     id → serial, record, last_seen, lease_until: the node registry
 * Version 2 (postgres-schema-v2.ts) adds users:
 *   members.user_id: the user of each member
 *   room_users (room, user_id) → read marker, ban, mute (each with an optional
 *             end): per-room state of users, deleted with its room
 * Version 3 (postgres-schema-v3.ts) adds messages that change:
 *   updates   (room, seq) → cid, body (the update JSON), created_at: edits,
 *             deletes and reactions, numbered with the room's messages;
 *             a message's body in `messages` is its current state
 * Version 4 (postgres-schema-v4.ts) changes no table: a send whose cid a
 * change took is a retry of that change, as on every other broker.
 *
 * The functions do each change in one round trip: they lock the room's row,
 * change it and NOTIFY in the caller's transaction, so an event goes out only
 * when its change commits, in commit order.
 */
import type { ClientBase } from 'pg'
import { SCHEMA_V1 } from './postgres-schema-v1.js'
import { SCHEMA_V2 } from './postgres-schema-v2.js'
import { SCHEMA_V3 } from './postgres-schema-v3.js'
import { SCHEMA_V4 } from './postgres-schema-v4.js'

/**
 * Migrations may wait for another node's: far longer than one runs, short
 * enough that a stuck start fails. (The pool's own `query_timeout`, if
 * shorter, still bounds each statement on the client.)
 */
const MIGRATION_TIMEOUT_MS = 30_000

/** What a schema name may be: lower-case, so it needs no quoting surprises, and short enough to name its channel. */
export const SCHEMA_PATTERN = /^[a-z_][a-z0-9_]{0,49}$/

/** The channel every node of a schema listens on. */
export function channelOf (schema: string): string {
  return `${schema}_events`
}

interface Migration {
  version: number
  sql: string
}

/** In order; a released migration never changes: a change is a new version. */
const MIGRATIONS: Migration[] = [{ version: 1, sql: SCHEMA_V1 }, { version: 2, sql: SCHEMA_V2 }, { version: 3, sql: SCHEMA_V3 }, { version: 4, sql: SCHEMA_V4 }]

/** The schema was migrated by a newer fastify-chat-rooms: upgrading the package helps, waiting does not. */
export class NewerSchemaError extends Error {}

/** The version `migrate` brings a schema to. */
export const SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1]!.version

/**
 * Creates `schema` if needed and applies the migrations it lacks up to
 * `target` (default: the newest), in one transaction under an advisory lock
 * named after the schema: a node that starts meanwhile waits, then finds
 * nothing left to do. (An older `target` makes a schema as an older release
 * left it, to upgrade from.)
 */
export async function migrate (client: ClientBase, schema: string, target = SCHEMA_VERSION): Promise<void> {
  const run = (text: string, values: unknown[] = []): Promise<{ rows: Array<Record<string, unknown>> }> => client.query(text, values)
  await run('BEGIN')
  try {
    await run(`SET LOCAL statement_timeout = ${MIGRATION_TIMEOUT_MS}`)
    await run('SELECT pg_advisory_xact_lock(hashtext($1))', [`fastify-chat-rooms:${schema}`])
    await run(`CREATE SCHEMA IF NOT EXISTS "${schema}"`)
    // Functions created now keep this search path (SET search_path FROM CURRENT).
    await run(`SET LOCAL search_path TO "${schema}"`)
    await run('CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())')
    const { rows } = await run('SELECT coalesce(max(version), 0)::int AS version FROM schema_migrations')
    const current = rows[0]!.version as number
    if (current > SCHEMA_VERSION) {
      throw new NewerSchemaError(`PostgresBroker: schema "${schema}" is at version ${current}, newer than this fastify-chat-rooms knows (${SCHEMA_VERSION}); upgrade the package`)
    }
    for (const { version, sql } of MIGRATIONS.filter((migration) => migration.version > current && migration.version <= target)) {
      await run(sql)
      await run('INSERT INTO schema_migrations (version) VALUES ($1)', [version])
    }
    await run('COMMIT')
  } catch (error) {
    await client.query('ROLLBACK').catch(() => {})
    throw error
  }
}
