/**
 * Version 1 of the PostgreSQL broker's schema (postgres-schema.ts), as it was
 * released: rooms, messages, rosters, the node registry, and the functions
 * that change them. A released migration never changes; later versions alter it.
 */

/**
 * NOTIFY refuses a payload of 8000 bytes or more (the server's default
 * limit); a larger message is announced by its seq and read from the table.
 */
export const NOTIFY_LIMIT_BYTES = 8000

export const SCHEMA_V1 = `
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
`
