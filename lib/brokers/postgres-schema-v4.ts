/**
 * Version 4 of the PostgreSQL broker's schema (postgres-schema.ts): one cid
 * per entry of a room. A send whose cid a change (version 3's `updates`)
 * already took is a retry, as it is on every other broker: it answers that
 * change's seq and time and stores nothing. Before, `chat_append` looked for
 * the cid among messages only and stored the send as a new message.
 */
import { NOTIFY_LIMIT_BYTES } from './postgres-schema-v1.js'

export const SCHEMA_V4 = `
-- As in version 2, except that a cid a change took answers 'change' with that update's JSON.
CREATE OR REPLACE FUNCTION chat_append(p_room text, p_epoch text, p_cid text, p_user text, p_head text, p_tail text, p_channel text)
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
    SELECT u.body INTO v_body FROM updates u WHERE u.room = p_room AND u.cid = p_cid;
    IF FOUND THEN
      RETURN QUERY SELECT 'change'::text, v_body;
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
`
