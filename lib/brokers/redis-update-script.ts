/**
 * The script of a message that changes (`RedisBroker.update`): in one atomic
 * step on the room's keys it applies the rule of `changedMessage`
 * (lib/broker.ts) to the stored message, puts its new state in its place in
 * the log, and stores and publishes the `update` entry with the room's next
 * seq, as APPEND does a message.
 */
import { REACTION_KEY_BYTES, REACTION_USER_BYTES } from '../broker.js'
import { ROOM_KEYS } from './redis-keys.js'
import { STREAM, TOUCH, USER_STATE, script } from './redis-lua.js'

export type UpdateReply =
  | { outcome: 'new' | 'duplicate' | 'unchanged', seq: number }
  | { outcome: 'banned' | 'muted' | 'not_found' | 'forbidden' | 'too_many_reactions' }

/**
 * Changes message `target` as `action` says (`text` for an edit, `reaction`
 * for react/unreact; empty otherwise) for `user` (its JSON string), unless
 * `asServer` skips the checks of who acts. The update's JSON is `head`, its
 * seq, `tail`. Answers 'new' with the update's seq; 'duplicate' with the
 * seq a retried cid was stored with; 'unchanged' with the room's latest seq
 * for a reaction that changes nothing; or the refusal: 'banned' or 'muted'
 * (the user, at `now`), 'not_found' (not a kept message, or deleted),
 * 'forbidden' (another user's message to edit or delete),
 * 'too_many_reactions' (past `maxReactions` distinct or `maxBytes`).
 *
 * The message is decoded with cjson and written again field by field in the
 * order `newMessage` gives them, without `reactions` when none are left (an
 * empty Lua table would encode as `{}`, never `[]`); integers are written
 * with %d, as cjson's 14 digits could round them.
 */
export const UPDATE = script({
  keys: ROOM_KEYS,
  args: {
    target: 'number', action: 'string', text: 'string', reaction: 'string', user: 'string', asServer: 'boolean', cid: 'string',
    head: 'string', tail: 'string', now: 'number', historySize: 'number', idleTtl: 'number', channel: 'string', cidRetentionMs: 'number',
    maxReactions: 'number', maxBytes: 'number',
  },
  body: TOUCH + USER_STATE + STREAM + `
local FIELDS = { 'type', 'room', 'seq', 'id', 'from', 'text', 'ts', 'cid', 'edited', 'deleted', 'reactions' }
local function encodedMessage(message)
  local parts = {}
  for _, field in ipairs(FIELDS) do
    local value = message[field]
    if type(value) == 'number' then value = string.format('%d', value) elseif value ~= nil then value = cjson.encode(value) end
    if value ~= nil then parts[#parts + 1] = '"' .. field .. '":' .. value end
  end
  return '{' .. table.concat(parts, ',') .. '}'
end
-- As \`reactionBytes\` counts them (Lua's # is the UTF-8 length).
local function reactionBytes(reactions)
  local bytes = 0
  for name, users in pairs(reactions) do
    bytes = bytes + #name + ${REACTION_KEY_BYTES}
    for _, given in ipairs(users) do bytes = bytes + #given + ${REACTION_USER_BYTES} end
  end
  return bytes
end
local function distinct(reactions)
  local count = 0
  for _ in pairs(reactions) do count = count + 1 end
  return count
end

local seen = retried(cid)
if seen then return { 'duplicate', seen } end
if not asServer then
  local restrictions = redis.call('HGET', users, user)
  if inForce(restrictions, 'ban', now) then return { 'banned' } end
  if inForce(restrictions, 'mute', now) then return { 'muted' } end
end
local last = latestSeq()
local first = firstKept(last)
local stored = target >= first and target <= last and redis.call('LINDEX', log, target - first)
if not stored or isUpdate(stored) then return { 'not_found' } end
-- A message cjson cannot decode (a lone surrogate an older server let in) cannot change, as if gone.
local decoded, message = pcall(cjson.decode, stored)
if not decoded or type(message) ~= 'table' or type(message.from) ~= 'table' or message.deleted == true then return { 'not_found' } end
local by = cjson.decode(user)
-- A message stored before members had a user was its sender's connection id's.
local author = message.from.user or message.from.id
if (action == 'edit' or action == 'delete') and not asServer and author ~= by then return { 'forbidden' } end

local reactions = message.reactions or {}
if action == 'edit' then
  message.text = text
  message.edited = now
elseif action == 'delete' then
  message.text = ''
  message.deleted = true
  message.edited = nil
  reactions = {}
else
  local given = reactions[reaction] or {}
  local at
  for i, other in ipairs(given) do
    if other == by then
      at = i
      break
    end
  end
  if action == 'react' then
    if at then return { 'unchanged', last } end
    given[#given + 1] = by
    reactions[reaction] = given
    if distinct(reactions) > maxReactions or reactionBytes(reactions) > maxBytes then return { 'too_many_reactions' } end
  else
    if not at then return { 'unchanged', last } end
    table.remove(given, at)
    if #given == 0 then reactions[reaction] = nil end
  end
end
message.reactions = next(reactions) ~= nil and reactions or nil

-- The first write: it fails, having changed nothing, if the stored seq is not a number.
local seq = redis.call('HINCRBY', meta, 'seq', 1)
redis.call('LSET', log, target - first, encodedMessage(message))
storeEntry(seq, head .. seq .. tail, cid)
touch()
return { 'new', seq }
`,
  reply: (raw): UpdateReply => {
    const [outcome, seq] = raw as [string, number?]
    if (outcome === 'new' || outcome === 'duplicate' || outcome === 'unchanged') return { outcome, seq: Number(seq) }
    return { outcome: outcome as Exclude<UpdateReply['outcome'], 'new' | 'duplicate' | 'unchanged'> }
  },
})
