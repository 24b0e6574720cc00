/**
 * Version 3 of the PostgreSQL broker's schema (postgres-schema.ts): messages
 * that change. An edit, a delete or a reaction is an entry of the room's
 * stream, stored in `updates` with the room's next seq (the counter appends
 * take, so seqs stay contiguous across both tables), while the message's row
 * in `messages` is rewritten to its current state. `messages` keeps holding
 * messages only, so a page ("the newest N messages before X") reads its
 * primary key as before, and appends write exactly what they wrote in
 * version 2. A change is one transaction of two calls around the rule of
 * `changedMessage` (lib/broker.ts), applied by the broker in between:
 * `chat_update_target` takes the room's row lock, as appends do, and reads
 * what the rule needs; `chat_store_update` stores and NOTIFYs what it made.
 */
import { NOTIFY_LIMIT_BYTES } from './postgres-schema-v1.js'

export const SCHEMA_V3 = `
CREATE TABLE updates (
  room text NOT NULL REFERENCES rooms ON DELETE CASCADE,
  seq bigint NOT NULL,
  cid text,
  body text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (room, seq)
);
CREATE UNIQUE INDEX updates_cid ON updates (room, cid) WHERE cid IS NOT NULL;
CREATE INDEX updates_created_at ON updates (created_at);

-- What a change of message p_target needs, under the room's row lock, which the caller's transaction
-- holds until it commits: the room's epoch and latest seq; the seq of the entry a cid already stored
-- names (a retry: nothing else is read); the target's JSON if it is a message kept (among the newest
-- p_window entries, if not null), its row locked too; whether p_user is banned or muted now.
-- No row: the room was never used. Each statement sees what the holder of the lock before committed.
CREATE FUNCTION chat_update_target(p_room text, p_target bigint, p_cid text, p_user text, p_window bigint)
RETURNS TABLE (r_epoch text, r_seq bigint, r_retried bigint, r_body text, r_ban boolean, r_mute boolean)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $fn$
DECLARE
  v_epoch text;
  v_seq bigint;
  v_retried bigint;
  v_body text;
  v_ban boolean;
  v_mute boolean;
BEGIN
  SELECT r.epoch, r.seq INTO v_epoch, v_seq FROM rooms r WHERE r.room = p_room FOR UPDATE;
  IF NOT FOUND THEN
    RETURN;
  END IF;
  IF p_cid IS NOT NULL THEN
    v_retried := coalesce((SELECT u.seq FROM updates u WHERE u.room = p_room AND u.cid = p_cid),
      (SELECT m.seq FROM messages m WHERE m.room = p_room AND m.cid = p_cid));
    IF v_retried IS NOT NULL THEN
      RETURN QUERY SELECT v_epoch, v_seq, v_retried, NULL::text, false, false;
      RETURN;
    END IF;
  END IF;
  SELECT m.body INTO v_body FROM messages m
    WHERE m.room = p_room AND m.seq = p_target AND m.seq > coalesce(v_seq - p_window, 0) FOR UPDATE;
  SELECT u.ban, u.mute INTO v_ban, v_mute FROM room_users_now u WHERE u.room = p_room AND u.user_id = p_user;
  RETURN QUERY SELECT v_epoch, v_seq, NULL::bigint, v_body, coalesce(v_ban, false), coalesce(v_mute, false);
END
$fn$;

-- Stores a change prepared by chat_update_target in the same transaction: message p_target's new state,
-- the update entry p_update as the room's next seq p_seq, and its NOTIFY (by seq alone when too large
-- for NOTIFY, as chat_append does).
CREATE FUNCTION chat_store_update(p_room text, p_epoch text, p_seq bigint, p_target bigint, p_message text,
  p_update text, p_cid text, p_channel text)
RETURNS void LANGUAGE plpgsql SET search_path FROM CURRENT AS $fn$
DECLARE
  v_event text;
BEGIN
  UPDATE rooms SET seq = p_seq, changed_at = now() WHERE room = p_room AND seq = p_seq - 1;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'chat_store_update: % is not the next seq of room %', p_seq, p_room;
  END IF;
  UPDATE messages SET body = p_message WHERE room = p_room AND seq = p_target;
  INSERT INTO updates (room, seq, cid, body) VALUES (p_room, p_seq, p_cid, p_update);
  v_event := '{"room":' || to_json(p_room)::text || ',"epoch":' || to_json(p_epoch)::text || ',"event":' || p_update || '}';
  IF octet_length(v_event) >= ${NOTIFY_LIMIT_BYTES} THEN
    v_event := '{"room":' || to_json(p_room)::text || ',"epoch":' || to_json(p_epoch)::text || ',"seq":' || p_seq::text || '}';
  END IF;
  PERFORM pg_notify(p_channel, v_event);
END
$fn$;

-- As in version 1, except that a read after a seq holds the updates too, in seq order with the messages;
-- a page still holds messages only, and its r_more tells whether older messages are kept.
CREATE OR REPLACE FUNCTION chat_read(p_room text, p_after bigint, p_before bigint, p_limit int, p_window bigint)
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
      SELECT e.body, e.seq FROM (
        (SELECT m.body, m.seq FROM messages m WHERE m.room = p_room AND m.seq > greatest(p_after, v_floor) ORDER BY m.seq LIMIT p_limit)
        UNION ALL
        (SELECT u.body, u.seq FROM updates u WHERE u.room = p_room AND u.seq > greatest(p_after, v_floor) ORDER BY u.seq LIMIT p_limit)
      ) e ORDER BY e.seq LIMIT p_limit
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
    EXISTS (SELECT 1 FROM messages m WHERE m.room = p_room AND m.seq > v_floor AND m.seq < v_first)
      OR (p_after IS NOT NULL AND EXISTS (SELECT 1 FROM updates u WHERE u.room = p_room AND u.seq > v_floor AND u.seq < v_first)),
    coalesce(v_messages, ARRAY[]::text[]);
END
$fn$;
`
