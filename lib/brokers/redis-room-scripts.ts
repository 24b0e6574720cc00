/**
 * The scripts of one room: each touches only that room's keys (one hash tag,
 * one Cluster slot) and runs atomically, so a message's seq, the history,
 * the roster, users' state and the publish that tells every node about the
 * change happen in one step or not at all.
 */
import { ROOM_KEYS } from './redis-keys.js'
import { IS_UPDATE, PRESENT, STREAM, TOUCH, USER_STATE, decodeCount, script } from './redis-lua.js'

export type AppendReply =
  | { outcome: 'new' | 'stored', message: string }
  | { outcome: 'forgotten', seq: number, ts: number }
  | { outcome: 'banned' }
  | { outcome: 'muted' }

/**
 * Stores a message once and publishes it. The seq goes between `head` and
 * `tail`, the two halves of the message JSON. `epoch` is used if the room has
 * none. Answers 'stored' for a retried cid still in the history, 'forgotten'
 * (with its seq and time) for one whose message was trimmed away, 'banned'
 * or 'muted' when the sender's `user` (its JSON string) is so in the room at `now`.
 */
export const APPEND = script({
  keys: ROOM_KEYS,
  args: { epoch: 'string', head: 'string', tail: 'string', cid: 'string', historySize: 'number', now: 'number', idleTtl: 'number', channel: 'string', cidRetentionMs: 'number', user: 'string' },
  body: TOUCH + USER_STATE + STREAM + `
local sender = redis.call('HGET', users, user)
if inForce(sender, 'ban', now) then return { 'banned' } end
if inForce(sender, 'mute', now) then return { 'muted' } end

local seen, ts = retried(cid)
if seen then
  local first = firstKept(latestSeq())
  local entry = seen >= first and redis.call('LINDEX', log, seen - first)
  -- A cid an update took answers like one whose message is gone: its seq and time.
  if entry and not isUpdate(entry) then return { 'stored', entry } end
  return { 'forgotten', seen, ts }
end

-- The first write: it fails, having changed nothing, if the stored seq is not a number.
local seq = redis.call('HINCRBY', meta, 'seq', 1)
redis.call('HSETNX', meta, 'epoch', epoch)
local message = head .. seq .. tail
storeEntry(seq, message, cid)
touch()
return { 'new', message }
`,
  reply: (raw): AppendReply => {
    const [outcome, stored, ts] = raw as [string, string | number, string?]
    if (outcome === 'banned' || outcome === 'muted') return { outcome }
    if (outcome === 'forgotten') return { outcome, seq: Number(stored), ts: Number(ts) }
    return { outcome: outcome as 'new' | 'stored', message: String(stored) }
  },
})

/**
 * Reads a room's epoch, latest seq and a range of its history, the way
 * `HistoryRing.read` does: after a seq, every entry; otherwise a page of
 * messages only, found by scanning down from `before` in slices of the log,
 * so updates are skipped without leaving Redis. Writes nothing: reading a
 * room nobody used leaves no key behind, and its epoch is '' until a join or
 * a message creates it.
 */
export const READ = script({
  keys: ['meta', 'log'],
  args: { after: 'number?', before: 'number?', limit: 'number' },
  body: IS_UPDATE + `
-- Entries read per LRANGE while paging, at least: a page with few updates among its messages takes one.
local MIN_SLICE = 64
local epoch = redis.call('HGET', meta, 'epoch') or ''
local last = tonumber(redis.call('HGET', meta, 'seq') or '0')
local length = redis.call('LLEN', log)
if length == 0 or limit <= 0 then return { epoch, last, length > 0 and 1 or 0, {} } end
local first = last - length + 1
if after then
  local from = math.max(first, after + 1)
  local to = math.min(last, from + limit - 1)
  local entries = {}
  if from <= to then entries = redis.call('LRANGE', log, from - first, to - first) end
  local more
  if #entries > 0 then more = from > first else more = to >= first end
  return { epoch, last, more and 1 or 0, entries }
end
local newest = {}
local more = false
local top = math.min(last, (before or last + 1) - 1)
-- Newest first: the page's messages, then one more message tells that older ones are kept.
while top >= first and not more do
  local bottom = math.max(first, top - math.max(limit, MIN_SLICE))
  local slice = redis.call('LRANGE', log, bottom - first, top - first)
  for i = #slice, 1, -1 do
    if not isUpdate(slice[i]) then
      if #newest == limit then
        more = true
        break
      end
      newest[#newest + 1] = slice[i]
    end
  end
  top = bottom - 1
end
local messages = {}
for i = #newest, 1, -1 do messages[#messages + 1] = newest[i] end
return { epoch, last, more and 1 or 0, messages }
`,
  reply: (raw) => {
    const [epoch, seq, more, messages] = raw as [string, number, number, string[]]
    return { epoch, seq, more: more === 1, messages }
  },
})

/**
 * Updates the roster for a presence event and publishes it: `head` is the
 * envelope JSON without its closing `}}`, to which the script adds the
 * event's `first` (join) or `last` (leave), decided with `present`, the
 * count of the user's connections. A join gives the room its epoch if it has
 * none, so the `joined` that follows shows the epoch the first message will
 * keep. A `leave` of a member who is not in the roster (already removed with
 * its dead node) is not published again; with `onlyIfNew`, neither is a join
 * of a member already there (its entry is rewritten quietly). A join of a
 * user (its JSON string) banned at `now` is refused, unless `onlyIfNew` (the
 * node announces again a member it still has). `maxMembers` 0: no limit.
 */
export const PRESENCE = script({
  keys: ROOM_KEYS,
  args: { action: 'string', id: 'string', user: 'string', entry: 'string', channel: 'string', head: 'string', idleTtl: 'number', epoch: 'string', maxMembers: 'number', onlyIfNew: 'boolean', now: 'number' },
  body: TOUCH + USER_STATE + PRESENT + `
local changed, flag
if action == 'leave' then
  changed = redis.call('HDEL', members, id) == 1
  if changed then flag = ',"last":' .. tostring(leftLast(user)) end
else
  if action == 'join' and not onlyIfNew and inForce(redis.call('HGET', users, user), 'ban', now) then return 'banned' end
  if action == 'join' and maxMembers > 0 and redis.call('HEXISTS', members, id) == 0 and redis.call('HLEN', members) >= maxMembers then return 'full' end
  redis.call('HSETNX', meta, 'epoch', epoch)
  local added = redis.call('HSET', members, id, entry) == 1
  -- A member already there (renamed, or announced again) is counted once.
  local connections
  if added then connections = redis.call('HINCRBY', present, user, 1) else connections = tonumber(redis.call('HGET', present, user)) or 1 end
  changed = added or not onlyIfNew
  flag = action == 'join' and ',"first":' .. tostring(connections == 1) or ''
end
touch()
if changed then publish(channel, head .. flag .. '}}') end
return changed and 'published' or 'unchanged'
`,
  reply: (raw) => raw as 'published' | 'unchanged' | 'full' | 'banned',
})

/**
 * Removes from one room the members a dead node announced in its
 * registration `serial` or an earlier one, and publishes `leave` for each
 * (`leaveHead` followed by the member's JSON and `}}`). HDEL makes each
 * removal happen once, whichever node sweeps; a member the node announced
 * again after it came back carries a newer serial and stays. Answers how many
 * were removed.
 *
 * Entries are matched as text, not decoded: each ends with its node and
 * serial (`RedisRegistryStore` writes them last), so an entry cjson cannot
 * decode (a lone surrogate an older server let in) is removed like the
 * others, and every entry is read before the first write. Each user's count
 * in `present` goes down as in PRESENCE, so each leave carries its `last`.
 */
export const EVICT = script({
  keys: ROOM_KEYS,
  args: { node: 'string', serial: 'number', leaveHead: 'string', channel: 'string', idleTtl: 'number' },
  body: TOUCH + PRESENT + `
-- The position of the quote that ends the JSON string beginning at position at, or nil.
local function stringEnd(text, at)
  if string.sub(text, at, at) ~= '"' then return nil end
  local i = at + 1
  while true do
    local found = string.find(text, '["\\\\]', i)
    if not found then return nil end
    if string.sub(text, found, found) == '"' then return found end
    i = found + 2
  end
end
-- A member's JSON with its user, and the user's JSON string (nil if the entry
-- is not as written): one written before members had a user gets its id.
local function withUser(member)
  local idEnd = string.sub(member, 1, 6) == '{"id":' and stringEnd(member, 7)
  if not idEnd then return member, nil end
  local id = string.sub(member, 7, idEnd)
  local rest = string.sub(member, idEnd + 1)
  if string.sub(rest, 1, 8) ~= ',"user":' then return '{"id":' .. id .. ',"user":' .. id .. rest, id end
  local userEnd = stringEnd(rest, 9)
  return member, userEnd and string.sub(rest, 9, userEnd)
end

local entries = redis.call('HGETALL', members)
local leaving = {}
for i = 1, #entries, 2 do
  local value = entries[i + 1]
  local member, owner, stamp = string.match(value, '^(.*),"node":"([^"]*)","serial":(%d+)}$')
  if not member then member, owner = string.match(value, '^(.*),"node":"([^"]*)"}$') end
  if owner == node and (tonumber(stamp) or 0) <= serial then leaving[#leaving + 1] = { entries[i], member .. '}' } end
end
for _, leaver in ipairs(leaving) do
  redis.call('HDEL', members, leaver[1])
  local member, user = withUser(leaver[2])
  local last = user == nil or leftLast(user)
  publish(channel, leaveHead .. member .. ',"last":' .. tostring(last) .. '}}')
end
touch()
return #leaving
`,
  reply: decodeCount,
})

export interface UserReply {
  changed: boolean
  /** The user's state after the change, as `users` keeps it (UserState JSON). */
  state: string
}

/**
 * Applies one `UserChange` to a user's state (`user`: its JSON string), the
 * rule of `changedUserState` in broker.ts: `read` moves the marker to
 * max(current, min(seq, the room's latest seq)); `ban`/`mute` set or replace
 * (`ends`: its until, absent while it lasts until lifted); `unban`/`unmute`
 * lift; `kick` stores nothing and is always told. Restrictions that ended by
 * `now` are dropped. When something changed, publishes the `user` event:
 * `head`, then the new marker for a `read`, then `tail`.
 */
export const USER = script({
  keys: ROOM_KEYS,
  args: { user: 'string', kind: 'string', seq: 'number?', ends: 'number?', now: 'number', head: 'string', tail: 'string', channel: 'string', idleTtl: 'number' },
  body: TOUCH + USER_STATE + `
local state = decoded(redis.call('HGET', users, user), now)
local changed = true
if kind == 'read' then
  local read = math.max(state.read, math.min(seq, tonumber(redis.call('HGET', meta, 'seq') or '0')))
  changed = read ~= state.read
  state.read = read
elseif kind == 'ban' or kind == 'mute' then
  changed = state[kind] == nil or state[kind].ends ~= ends
  state[kind] = { ends = ends }
elseif kind == 'unban' or kind == 'unmute' then
  local lifted = string.sub(kind, 3)
  changed = state[lifted] ~= nil
  state[lifted] = nil
end
if changed and kind ~= 'kick' then
  if state.read == 0 and not state.ban and not state.mute then
    redis.call('HDEL', users, user)
  else
    redis.call('HSET', users, user, encoded(state))
  end
  touch()
end
if changed then publish(channel, head .. (kind == 'read' and string.format('%d', state.read) or '') .. tail) end
return { changed and 1 or 0, encoded(state) }
`,
  reply: (raw): UserReply => {
    const [changed, state] = raw as [number, string]
    return { changed: changed === 1, state }
  },
})

/** A room's member count (its roster's HLEN, kept by Redis as the roster changes) and latest seq: O(1). */
export const COUNT = script({
  keys: ['members', 'meta'],
  args: {},
  body: `
return { redis.call('HLEN', members), tonumber(redis.call('HGET', meta, 'seq') or '0') }
`,
  reply: (raw) => {
    const [members, seq] = raw as [number, number]
    return { members, seq }
  },
})
