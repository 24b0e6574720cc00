/**
 * The PostgreSQL broker's schema and its migrations. Every table and function
 * lives in one PostgreSQL schema (the broker's `schema` option), so nodes that
 * share a database and a schema form one chat. `migrate` brings a schema to
 * the newest version when a broker opens: each migration runs once, in order,
 * in one transaction under an advisory lock, so nodes that start together
 * wait for each other instead of racing.
 *
 * Tables (version 1):
 *   rooms     room → epoch, seq (its latest), changed_at: one row per room; its
 *             row lock orders the room's appends and presence changes
 *   messages  (room, seq) → cid, body (the message JSON as delivered), created_at
 *   members   (room, id) → name, node, serial: the rosters, stamped with the
 *             registration that announced each member (node-registry.ts)
 *   nodes     id → serial, record, last_seen, lease_until: the node registry
 * Per-room state of later versions (read markers, bans) goes in tables of its
 * own keyed by room, added by further migrations.
 *
 * The functions do each change in one round trip: they lock the room's row,
 * change it and NOTIFY in the caller's transaction, so an event goes out only
 * when its change commits, in commit order.
 */
import type { PoolClient } from 'pg'

/**
 * NOTIFY refuses a payload of 8000 bytes or more (the server's default
 * limit); a larger message is announced by its seq and read from the table.
 */
const NOTIFY_LIMIT_BYTES = 8000
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
const MIGRATIONS: Migration[] = [{
  version: 1,
  sql: `
CREATE TABLE rooms (
  room text PRIMARY KEY,
  epoch text NOT NULL,
  seq bigint NOT NULL DEFAULT 0,
  changed_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE messages (
  room text NOT NULL REFERENCES rooms ON DELETE CASCADE,
  seq bigint NOT NULL,
  cid text,
  body text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (room, seq)
);
CREATE UNIQUE INDEX messages_cid ON messages (room, cid) WHERE cid IS NOT NULL;
CREATE INDEX messages_created_at ON messages (created_at);
CREATE TABLE members (
  room text NOT NULL,
  id text NOT NULL,
  name text NOT NULL,
  node text NOT NULL,
  serial bigint NOT NULL,
  position bigint GENERATED ALWAYS AS IDENTITY,
  PRIMARY KEY (room, id)
);
CREATE INDEX members_node ON members (node);
CREATE TABLE nodes (
  id text PRIMARY KEY,
  serial bigint NOT NULL,
  record jsonb NOT NULL,
  last_seen timestamptz NOT NULL,
  lease_until timestamptz
);
CREATE SEQUENCE node_serial;

-- Stores a message once (a cid already stored answers 'stored' with it) and notifies it.
CREATE FUNCTION chat_append(p_room text, p_epoch text, p_cid text, p_head text, p_tail text, p_channel text)
RETURNS TABLE (r_outcome text, r_body text) LANGUAGE plpgsql SET search_path FROM CURRENT AS $fn$
DECLARE
  v_epoch text;
  v_seq bigint;
  v_body text;
  v_event text;
BEGIN
  INSERT INTO rooms AS r (room, epoch) VALUES (p_room, p_epoch)
    ON CONFLICT (room) DO UPDATE SET changed_at = now()
    RETURNING r.epoch, r.seq INTO v_epoch, v_seq;
  IF p_cid IS NOT NULL THEN
    SELECT m.body INTO v_body FROM messages m WHERE m.room = p_room AND m.cid = p_cid;
    IF FOUND THEN
      RETURN QUERY SELECT 'stored'::text, v_body;
      RETURN;
    END IF;
  END IF;
  v_seq := v_seq + 1;
  v_body := p_head || v_seq::text || p_tail;
  UPDATE rooms SET seq = v_seq WHERE room = p_room;
  INSERT INTO messages (room, seq, cid, body) VALUES (p_room, v_seq, p_cid, v_body);
  v_event := '{"room":' || to_json(p_room)::text || ',"epoch":' || to_json(v_epoch)::text || ',"event":' || v_body || '}';
  IF octet_length(v_event) >= ${NOTIFY_LIMIT_BYTES} THEN
    v_event := '{"room":' || to_json(p_room)::text || ',"epoch":' || to_json(v_epoch)::text || ',"seq":' || v_seq::text || '}';
  END IF;
  PERFORM pg_notify(p_channel, v_event);
  RETURN QUERY SELECT 'new'::text, v_body;
END
$fn$;

-- Appends a batch in one transaction, in the order given (the caller sorts by room, so
-- concurrent batches lock rooms in one order); r_index is the append's place in the arrays.
CREATE FUNCTION chat_append_batch(p_rooms text[], p_epochs text[], p_cids text[], p_heads text[], p_tails text[], p_channel text)
RETURNS TABLE (r_index int, r_outcome text, r_body text) LANGUAGE plpgsql SET search_path FROM CURRENT AS $fn$
BEGIN
  FOR i IN 1 .. coalesce(array_length(p_rooms, 1), 0) LOOP
    RETURN QUERY SELECT i, a.r_outcome, a.r_body FROM chat_append(p_rooms[i], p_epochs[i], p_cids[i], p_heads[i], p_tails[i], p_channel) a;
  END LOOP;
END
$fn$;

-- A room's epoch, latest seq and a range of its messages (of the newest p_window, if not null),
-- as HistoryRing.read answers (lib/broker.ts ReadRange).
CREATE FUNCTION chat_read(p_room text, p_after bigint, p_before bigint, p_limit int, p_window bigint)
RETURNS TABLE (r_epoch text, r_seq bigint, r_more boolean, r_messages text[]) LANGUAGE plpgsql STABLE SET search_path FROM CURRENT AS $fn$
DECLARE
  v_epoch text;
  v_last bigint;
  v_floor bigint;
  v_messages text[];
  v_first bigint;
BEGIN
  SELECT r.epoch, r.seq INTO v_epoch, v_last FROM rooms r WHERE r.room = p_room;
  IF NOT FOUND THEN
    RETURN QUERY SELECT ''::text, 0::bigint, false, ARRAY[]::text[];
    RETURN;
  END IF;
  v_floor := greatest(coalesce(v_last - p_window, 0), 0);
  IF p_limit > 0 AND p_after IS NOT NULL THEN
    SELECT array_agg(x.body ORDER BY x.seq), min(x.seq) INTO v_messages, v_first FROM (
      SELECT m.body, m.seq FROM messages m WHERE m.room = p_room AND m.seq > greatest(p_after, v_floor) ORDER BY m.seq LIMIT p_limit
    ) x;
  ELSIF p_limit > 0 THEN
    SELECT array_agg(x.body ORDER BY x.seq), min(x.seq) INTO v_messages, v_first FROM (
      SELECT m.body, m.seq FROM messages m
      WHERE m.room = p_room AND m.seq > v_floor AND m.seq < coalesce(p_before, v_last + 1) ORDER BY m.seq DESC LIMIT p_limit
    ) x;
  END IF;
  -- Older than the first returned; with none returned, older than where the range ends.
  v_first := coalesce(v_first, CASE WHEN p_after IS NULL THEN least(coalesce(p_before, v_last + 1), v_last + 1) ELSE v_last + 1 END);
  RETURN QUERY SELECT v_epoch, v_last,
    EXISTS (SELECT 1 FROM messages m WHERE m.room = p_room AND m.seq > v_floor AND m.seq < v_first),
    coalesce(v_messages, ARRAY[]::text[]);
END
$fn$;

-- Changes the roster for a presence event and notifies p_payload if it changed something.
CREATE FUNCTION chat_presence(p_room text, p_action text, p_id text, p_name text, p_node text, p_serial bigint,
  p_epoch text, p_max int, p_only_if_new boolean, p_channel text, p_payload text)
RETURNS text LANGUAGE plpgsql SET search_path FROM CURRENT AS $fn$
DECLARE
  v_changed boolean;
BEGIN
  IF p_action = 'leave' THEN
    UPDATE rooms SET changed_at = now() WHERE room = p_room;
    DELETE FROM members WHERE room = p_room AND id = p_id;
    v_changed := FOUND;
  ELSE
    INSERT INTO rooms (room, epoch) VALUES (p_room, p_epoch) ON CONFLICT (room) DO UPDATE SET changed_at = now();
    IF p_action = 'join' AND p_max > 0
      AND NOT EXISTS (SELECT 1 FROM members WHERE room = p_room AND id = p_id)
      AND (SELECT count(*) FROM members WHERE room = p_room) >= p_max THEN
      RETURN 'full';
    END IF;
    INSERT INTO members AS m (room, id, name, node, serial) VALUES (p_room, p_id, p_name, p_node, p_serial)
      ON CONFLICT (room, id) DO UPDATE SET name = excluded.name, node = excluded.node, serial = excluded.serial
      RETURNING (m.xmax = 0) INTO v_changed;
    v_changed := v_changed OR NOT p_only_if_new;
  END IF;
  IF v_changed THEN
    PERFORM pg_notify(p_channel, p_payload);
    RETURN 'published';
  END IF;
  RETURN 'unchanged';
END
$fn$;

-- Removes from a room the members a lapsed node announced in registration p_serial or before, one leave each.
CREATE FUNCTION chat_evict(p_room text, p_node text, p_serial bigint, p_channel text)
RETURNS int LANGUAGE plpgsql SET search_path FROM CURRENT AS $fn$
DECLARE
  v_member record;
  v_count int := 0;
BEGIN
  UPDATE rooms SET changed_at = now() WHERE room = p_room;
  FOR v_member IN DELETE FROM members WHERE room = p_room AND node = p_node AND serial <= p_serial RETURNING id, name LOOP
    PERFORM pg_notify(p_channel, json_build_object('room', p_room, 'event', json_build_object(
      'type', 'presence', 'room', p_room, 'action', 'leave', 'member', json_build_object('id', v_member.id, 'name', v_member.name)))::text);
    v_count := v_count + 1;
  END LOOP;
  RETURN v_count;
END
$fn$;

-- Takes or renews a node's lease by the database's clock; a node without one gets a new serial.
CREATE FUNCTION chat_renew(p_id text, p_record jsonb, p_lease_ms bigint)
RETURNS TABLE (r_held boolean, r_serial bigint) LANGUAGE plpgsql SET search_path FROM CURRENT AS $fn$
DECLARE
  v_serial bigint;
  v_held boolean;
BEGIN
  SELECT n.serial, coalesce(n.lease_until > clock_timestamp(), false) INTO v_serial, v_held FROM nodes n WHERE n.id = p_id FOR UPDATE;
  IF NOT coalesce(v_held, false) THEN
    v_held := false;
    v_serial := nextval('node_serial');
  END IF;
  INSERT INTO nodes AS n (id, serial, record, last_seen, lease_until)
    VALUES (p_id, v_serial, p_record, clock_timestamp(), clock_timestamp() + p_lease_ms * interval '1 millisecond')
    ON CONFLICT (id) DO UPDATE SET serial = excluded.serial, record = excluded.record, last_seen = excluded.last_seen, lease_until = excluded.lease_until;
  RETURN QUERY SELECT v_held, v_serial;
END
$fn$;
`,
}]

/** The schema was migrated by a newer fastify-chat-rooms: upgrading the package helps, waiting does not. */
export class NewerSchemaError extends Error {}

/** The version `migrate` brings a schema to. */
export const SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1]!.version

/**
 * Creates `schema` if needed and applies the migrations it lacks, in one
 * transaction under an advisory lock named after the schema: a node that
 * starts meanwhile waits, then finds nothing left to do.
 */
export async function migrate (client: PoolClient, schema: string): Promise<void> {
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
    for (const { version, sql } of MIGRATIONS.filter((migration) => migration.version > current)) {
      await run(sql)
      await run('INSERT INTO schema_migrations (version) VALUES ($1)', [version])
    }
    await run('COMMIT')
  } catch (error) {
    await client.query('ROLLBACK').catch(() => {})
    throw error
  }
}
