/**
 * Version 2 of the PostgreSQL broker's schema (postgres-schema.ts): users.
 * Members get their user; `room_users` keeps each user's read marker, ban and
 * mute per room. Presence says `first` and `last` per user, decided under the
 * room's row lock, which every change of a room's roster or users takes
 * first: a transaction that waited for it sees, statement by statement, what
 * the holder before it committed (READ COMMITTED takes a snapshot per
 * statement), so two tabs leaving at once are counted one after the other.
 * No function takes another room's lock while holding one, so none can
 * deadlock with `chat_append_batch`, which takes several in name order.
 */
import { NOTIFY_LIMIT_BYTES } from './postgres-schema-v1.js'

export const SCHEMA_V2 = `
ALTER TABLE members ADD COLUMN user_id text;
-- Members announced before users existed: a connection was its own user then.
UPDATE members SET user_id = id;
ALTER TABLE members ALTER COLUMN user_id SET NOT NULL;
CREATE INDEX members_user ON members (room, user_id);

-- Times are ms since the epoch by the database's clock (float8 holds any JavaScript time exactly).
CREATE TABLE room_users (
  room text NOT NULL REFERENCES rooms ON DELETE CASCADE,
  user_id text NOT NULL,
  read_seq bigint NOT NULL DEFAULT 0,
  ban boolean NOT NULL DEFAULT false,
  ban_until float8,
  mute boolean NOT NULL DEFAULT false,
  mute_until float8,
  PRIMARY KEY (room, user_id)
);

CREATE FUNCTION chat_now_ms() RETURNS float8 LANGUAGE sql VOLATILE AS $fn$
  SELECT (extract(epoch FROM clock_timestamp()) * 1000)::float8
$fn$;

-- room_users as it stands now: a ban or mute whose end has passed reads as none.
CREATE VIEW room_users_now AS
  SELECT u.room, u.user_id, u.read_seq,
    f.ban, CASE WHEN f.ban THEN u.ban_until END AS ban_until,
    f.mute, CASE WHEN f.mute THEN u.mute_until END AS mute_until
  FROM room_users u, LATERAL (SELECT u.ban AND coalesce(u.ban_until > chat_now_ms(), true) AS ban,
    u.mute AND coalesce(u.mute_until > chat_now_ms(), true) AS mute) f;

DROP FUNCTION chat_append_batch(text[], text[], text[], text[], text[], text);
DROP FUNCTION chat_append(text, text, text, text, text, text);

-- As in version 1, except that an append of a user banned or muted in the room stores nothing and answers 'banned' or 'muted'.
CREATE FUNCTION chat_append(p_room text, p_epoch text, p_cid text, p_user text, p_head text, p_tail text, p_channel text)
RETURNS TABLE (r_outcome text, r_body text) LANGUAGE plpgsql SET search_path FROM CURRENT AS $fn$
DECLARE
  v_epoch text;
  v_seq bigint;
  v_body text;
  v_event text;
  v_refusal text;
BEGIN
  INSERT INTO rooms AS r (room, epoch) VALUES (p_room, p_epoch)
    ON CONFLICT (room) DO UPDATE SET changed_at = now()
    RETURNING r.epoch, r.seq INTO v_epoch, v_seq;
  -- Under the room's lock, which a ban or mute takes too; one lookup by primary key.
  SELECT CASE WHEN u.ban THEN 'banned' ELSE 'muted' END INTO v_refusal
    FROM room_users_now u WHERE u.room = p_room AND u.user_id = p_user AND (u.ban OR u.mute);
  IF v_refusal IS NOT NULL THEN
    RETURN QUERY SELECT v_refusal, NULL::text;
    RETURN;
  END IF;
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

-- As in version 1, with each append's user: a banned or muted one is refused alone and the others go on.
CREATE FUNCTION chat_append_batch(p_rooms text[], p_epochs text[], p_cids text[], p_users text[], p_heads text[], p_tails text[], p_channel text)
RETURNS TABLE (r_index int, r_outcome text, r_body text) LANGUAGE plpgsql SET search_path FROM CURRENT AS $fn$
BEGIN
  FOR i IN 1 .. coalesce(array_length(p_rooms, 1), 0) LOOP
    RETURN QUERY SELECT i, a.r_outcome, a.r_body FROM chat_append(p_rooms[i], p_epochs[i], p_cids[i], p_users[i], p_heads[i], p_tails[i], p_channel) a;
  END LOOP;
END
$fn$;

-- The NOTIFY payload of a presence event; p_flags: its first or last, or nothing.
CREATE FUNCTION chat_presence_payload(p_room text, p_action text, p_id text, p_user text, p_name text, p_flags jsonb)
RETURNS text LANGUAGE sql IMMUTABLE AS $fn$
  SELECT jsonb_build_object('room', p_room, 'event', jsonb_build_object('type', 'presence', 'room', p_room, 'action', p_action,
    'member', jsonb_build_object('id', p_id, 'user', p_user, 'name', p_name)) || p_flags)::text
$fn$;

-- Removes a member and notifies its leave, with whether it was its user's last connection in the room.
-- The caller holds the room's row lock (a room with members has its row). False: it was no member.
CREATE FUNCTION chat_leave(p_room text, p_id text, p_channel text)
RETURNS boolean LANGUAGE plpgsql SET search_path FROM CURRENT AS $fn$
DECLARE
  v_user text;
  v_name text;
BEGIN
  DELETE FROM members WHERE room = p_room AND id = p_id RETURNING user_id, name INTO v_user, v_name;
  IF NOT FOUND THEN
    RETURN false;
  END IF;
  PERFORM pg_notify(p_channel, chat_presence_payload(p_room, 'leave', p_id, v_user, v_name,
    jsonb_build_object('last', NOT EXISTS (SELECT 1 FROM members WHERE room = p_room AND user_id = v_user))));
  RETURN true;
END
$fn$;

DROP FUNCTION chat_presence(text, text, text, text, text, bigint, text, int, boolean, text, text);

-- Changes the roster for a presence event and notifies it (a join with first, a leave with last) if it
-- changed something. A join of a banned user answers 'banned', one over p_max 'full', changing nothing;
-- a re-announce (p_only_if_new) of a connection admitted before is not checked again.
CREATE FUNCTION chat_presence(p_room text, p_action text, p_id text, p_user text, p_name text, p_node text, p_serial bigint,
  p_epoch text, p_max int, p_only_if_new boolean, p_channel text)
RETURNS text LANGUAGE plpgsql SET search_path FROM CURRENT AS $fn$
DECLARE
  v_new boolean;
BEGIN
  IF p_action = 'leave' THEN
    UPDATE rooms SET changed_at = now() WHERE room = p_room;
    RETURN CASE WHEN chat_leave(p_room, p_id, p_channel) THEN 'published' ELSE 'unchanged' END;
  END IF;
  INSERT INTO rooms (room, epoch) VALUES (p_room, p_epoch) ON CONFLICT (room) DO UPDATE SET changed_at = now();
  IF p_action = 'join' AND NOT p_only_if_new THEN
    IF EXISTS (SELECT 1 FROM room_users_now u WHERE u.room = p_room AND u.user_id = p_user AND u.ban) THEN
      RETURN 'banned';
    END IF;
    IF p_max > 0 AND NOT EXISTS (SELECT 1 FROM members WHERE room = p_room AND id = p_id)
      AND (SELECT count(*) FROM members WHERE room = p_room) >= p_max THEN
      RETURN 'full';
    END IF;
  END IF;
  INSERT INTO members AS m (room, id, user_id, name, node, serial) VALUES (p_room, p_id, p_user, p_name, p_node, p_serial)
    ON CONFLICT (room, id) DO UPDATE SET user_id = excluded.user_id, name = excluded.name, node = excluded.node, serial = excluded.serial
    RETURNING (m.xmax = 0) INTO v_new;
  IF p_only_if_new AND NOT v_new THEN
    RETURN 'unchanged';
  END IF;
  PERFORM pg_notify(p_channel, chat_presence_payload(p_room, p_action, p_id, p_user, p_name, CASE WHEN p_action = 'join'
    THEN jsonb_build_object('first', NOT EXISTS (SELECT 1 FROM members WHERE room = p_room AND user_id = p_user AND id <> p_id))
    ELSE '{}'::jsonb END));
  RETURN 'published';
END
$fn$;

-- Removes from a room the members a lapsed node announced in registration p_serial or before, one
-- leave each (with last, as chat_leave says it); answers how many.
CREATE OR REPLACE FUNCTION chat_evict(p_room text, p_node text, p_serial bigint, p_channel text)
RETURNS int LANGUAGE plpgsql SET search_path FROM CURRENT AS $fn$
DECLARE
  v_id text;
  v_count int := 0;
BEGIN
  UPDATE rooms SET changed_at = now() WHERE room = p_room;
  FOR v_id IN SELECT id FROM members WHERE room = p_room AND node = p_node AND serial <= p_serial ORDER BY position LOOP
    IF chat_leave(p_room, v_id, p_channel) THEN
      v_count := v_count + 1;
    END IF;
  END LOOP;
  RETURN v_count;
END
$fn$;

-- Changes a user's state in a room by the rule of changedUserState (lib/broker.ts): p_kind 'read'
-- (to p_seq), 'ban' or 'mute' (until p_until, or until lifted), 'unban', 'unmute' or 'kick' (stores
-- nothing). When it changed something (a kick always does), notifies the user event on the room's
-- channel, in order with the room's other events. Answers the state after it.
CREATE FUNCTION chat_change_user(p_room text, p_user text, p_kind text, p_seq bigint, p_until float8,
  p_epoch text, p_connection text, p_channel text)
RETURNS TABLE (r_read bigint, r_ban boolean, r_ban_until float8, r_mute boolean, r_mute_until float8, r_changed boolean)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $fn$
DECLARE
  v_latest bigint;
  v_read bigint;
  v_ban boolean;
  v_ban_until float8;
  v_mute boolean;
  v_mute_until float8;
  v_changed boolean;
BEGIN
  IF p_kind IN ('ban', 'mute') THEN
    -- Kept even for a room nobody used yet: this makes its row.
    INSERT INTO rooms AS r (room, epoch) VALUES (p_room, p_epoch) ON CONFLICT (room) DO UPDATE SET changed_at = now()
      RETURNING r.seq INTO v_latest;
  ELSE
    SELECT r.seq INTO v_latest FROM rooms r WHERE r.room = p_room FOR UPDATE;
  END IF;
  SELECT u.read_seq, u.ban, u.ban_until, u.mute, u.mute_until INTO v_read, v_ban, v_ban_until, v_mute, v_mute_until
    FROM room_users_now u WHERE u.room = p_room AND u.user_id = p_user;
  v_read := coalesce(v_read, 0);
  v_ban := coalesce(v_ban, false);
  v_mute := coalesce(v_mute, false);
  CASE p_kind
    WHEN 'read' THEN
      v_changed := least(p_seq, coalesce(v_latest, 0)) > v_read;
      v_read := greatest(v_read, least(p_seq, coalesce(v_latest, 0)));
    WHEN 'ban' THEN
      v_changed := NOT v_ban OR v_ban_until IS DISTINCT FROM p_until;
      v_ban := true;
      v_ban_until := p_until;
    WHEN 'mute' THEN
      v_changed := NOT v_mute OR v_mute_until IS DISTINCT FROM p_until;
      v_mute := true;
      v_mute_until := p_until;
    WHEN 'unban' THEN
      v_changed := v_ban;
      v_ban := false;
    WHEN 'unmute' THEN
      v_changed := v_mute;
      v_mute := false;
    WHEN 'kick' THEN
      v_changed := true;
  END CASE;
  IF v_changed AND p_kind <> 'kick' THEN
    IF v_read = 0 AND NOT v_ban AND NOT v_mute THEN
      DELETE FROM room_users WHERE room = p_room AND user_id = p_user;
    ELSE
      INSERT INTO room_users AS u (room, user_id, read_seq, ban, ban_until, mute, mute_until)
        VALUES (p_room, p_user, v_read, v_ban, CASE WHEN v_ban THEN v_ban_until END, v_mute, CASE WHEN v_mute THEN v_mute_until END)
        ON CONFLICT (room, user_id) DO UPDATE SET read_seq = excluded.read_seq, ban = excluded.ban, ban_until = excluded.ban_until,
          mute = excluded.mute, mute_until = excluded.mute_until;
    END IF;
  END IF;
  IF v_changed THEN
    -- For a read, the change says the marker's new value; nulls (no until, no connection) are left out.
    PERFORM pg_notify(p_channel, jsonb_build_object('room', p_room, 'event', jsonb_strip_nulls(jsonb_build_object(
      'type', 'user', 'room', p_room, 'user', p_user, 'connection', p_connection, 'change', jsonb_build_object(
        'kind', p_kind, 'seq', CASE WHEN p_kind = 'read' THEN v_read END, 'until', p_until))))::text);
  END IF;
  RETURN QUERY SELECT v_read, v_ban, CASE WHEN v_ban THEN v_ban_until END, v_mute, CASE WHEN v_mute THEN v_mute_until END, v_changed;
END
$fn$;
`
