/**
 * The Lua scripts of `RedisBroker`. Each runs atomically in Redis, so a room's
 * seq, history, roster and the publish that tells every node about a change
 * happen in one step or not at all. Every check comes before the first write:
 * a script that fails, fails before it has changed anything.
 *
 * Keys of a room (see `roomKeys` in redis.ts), all under the broker's prefix:
 *   meta:<room>     hash { epoch, seq }: together, so they are lost together
 *   log:<room>      list of message JSON, oldest first, capped at historySize
 *   cids:<room>     hash cid → "seq:ts" (for retries of a send)
 *   cidq:<room>     list of cids in seq order (to forget expired ones cheaply)
 *   members:<room>  hash member id → JSON { id, name, node }
 * Keys of a node: node:<id> (its lease), node-rooms:<id> (hash room → local
 * member count); nodes (set of node ids), rooms (set of rooms with members).
 */

/**
 * Keeps a room's keys while it has members, and lets them expire `ttl` ms
 * after the last change once it has none: idle rooms do not pile up.
 * KEYS 1..5 of every script that calls it are the room's keys in this order:
 * members, meta, log, cids, cidq.
 */
const TOUCH = `
local function touch(ttl)
  local keep = redis.call('HLEN', KEYS[1]) > 0
  for i = 2, 5 do
    if keep then redis.call('PERSIST', KEYS[i]) else redis.call('PEXPIRE', KEYS[i], ttl) end
  end
end
`

/** Members whose node still holds its lease; `alive` caches node liveness within one script run. */
const LIVE_MEMBERS = `
local function liveMembers(key, prefix, alive)
  local live = {}
  for _, value in ipairs(redis.call('HVALS', key)) do
    local node = cjson.decode(value).node
    if alive[node] == nil then alive[node] = redis.call('EXISTS', prefix .. 'node:' .. node) == 1 end
    if alive[node] then live[#live + 1] = value end
  end
  return live
end
`

/**
 * Stores a message once and publishes it.
 * KEYS: members, meta, log, cids, cidq.
 * ARGV: epoch (used if the room has none), head and tail of the message JSON
 * (the seq goes between them), cid ('' for none), historySize, now, idle ttl,
 * channel, cid retention ms.
 * Returns { 'new', json } | { 'stored', json } for a retried cid still in the
 * history | { 'forgotten', seq, ts } for one whose message was trimmed away.
 */
export const APPEND = TOUCH + `
local head, tail, cid = ARGV[2], ARGV[3], ARGV[4]
local historySize, now, ttl, channel, retention = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7], ARGV[8], tonumber(ARGV[9])
redis.call('HSETNX', KEYS[2], 'epoch', ARGV[1])
local epoch = redis.call('HGET', KEYS[2], 'epoch')
local function firstKept(last) return last - redis.call('LLEN', KEYS[3]) + 1 end

if cid ~= '' then
  local seen = redis.call('HGET', KEYS[4], cid)
  if seen then
    local seq, ts = string.match(seen, '^(%d+):(%d+)$')
    seq = tonumber(seq)
    local first = firstKept(tonumber(redis.call('HGET', KEYS[2], 'seq') or '0'))
    if seq >= first then return { 'stored', redis.call('LINDEX', KEYS[3], seq - first) } end
    return { 'forgotten', seq, ts }
  end
end

local seq = redis.call('HINCRBY', KEYS[2], 'seq', 1)
local message = head .. seq .. tail
if historySize > 0 then
  redis.call('RPUSH', KEYS[3], message)
  redis.call('LTRIM', KEYS[3], -historySize, -1)
end
if cid ~= '' then
  redis.call('HSET', KEYS[4], cid, seq .. ':' .. now)
  redis.call('RPUSH', KEYS[5], cid)
  -- Forget at most two cids per append: more than one is added, so the list
  -- keeps up, and the work per append stays bounded.
  local first = firstKept(seq)
  for _ = 1, 2 do
    local oldest = redis.call('LINDEX', KEYS[5], 0)
    if not oldest then break end
    local seen = redis.call('HGET', KEYS[4], oldest)
    if seen then
      local oldSeq, ts = string.match(seen, '^(%d+):(%d+)$')
      if tonumber(oldSeq) >= first or now - tonumber(ts) < retention then break end
      redis.call('HDEL', KEYS[4], oldest)
    end
    redis.call('LPOP', KEYS[5])
  end
end
redis.call('PUBLISH', channel, '{"epoch":"' .. epoch .. '","event":' .. message .. '}')
touch(ttl)
return { 'new', message }
`

/**
 * Reads a room's epoch, latest seq and a range of its history, the way
 * `HistoryRing.read` does. Writes nothing: reading a room nobody used leaves
 * no key behind, and its epoch is '' until a join or a message creates it.
 * KEYS: meta, log.
 * ARGV: after ('' for none), before ('' for none), limit.
 * Returns { epoch, seq, more (0|1), { json… } }.
 */
export const READ = `
local epoch = redis.call('HGET', KEYS[1], 'epoch') or ''
local last = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
local length = redis.call('LLEN', KEYS[2])
local limit = tonumber(ARGV[3])
if length == 0 or limit <= 0 then return { epoch, last, length > 0 and 1 or 0, {} } end
local first = last - length + 1
local from, to
if ARGV[1] ~= '' then
  from = math.max(first, tonumber(ARGV[1]) + 1)
  to = math.min(last, from + limit - 1)
else
  local before = ARGV[2] ~= '' and tonumber(ARGV[2]) or last + 1
  to = math.min(last, before - 1)
  from = math.max(first, to - limit + 1)
end
local messages = {}
if from <= to then messages = redis.call('LRANGE', KEYS[2], from - first, to - first) end
local more
if #messages > 0 then more = from > first else more = to >= first end
return { epoch, last, more and 1 or 0, messages }
`

/**
 * Updates the roster for a presence event and publishes it. A join gives the
 * room its epoch if it has none, so the `joined` that follows shows the epoch
 * the first message will keep. A `leave` of a member who is not in the roster
 * (already removed with its dead node) is not published again.
 * KEYS: members, meta, log, cids, cidq, node-rooms of this node, rooms.
 * ARGV: action, member id, roster value, room, channel, payload, idle ttl, epoch (used if none), max members (0: none).
 * Returns 1 when published, 0 when not (a leave of a member not there), -1 when a join finds the room full.
 */
export const PRESENCE = TOUCH + `
local action, id, value, room = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local changed = true
if action == 'leave' then
  changed = redis.call('HDEL', KEYS[1], id) == 1
  if changed and redis.call('HINCRBY', KEYS[6], room, -1) <= 0 then redis.call('HDEL', KEYS[6], room) end
else
  local max = tonumber(ARGV[9])
  if action == 'join' and max > 0 and redis.call('HEXISTS', KEYS[1], id) == 0 and redis.call('HLEN', KEYS[1]) >= max then return -1 end
  redis.call('HSETNX', KEYS[2], 'epoch', ARGV[8])
  if redis.call('HSET', KEYS[1], id, value) == 1 then
    redis.call('HINCRBY', KEYS[6], room, 1)
    redis.call('SADD', KEYS[7], room)
  end
end
if redis.call('HLEN', KEYS[1]) == 0 then redis.call('SREM', KEYS[7], room) end
touch(ARGV[7])
if changed then redis.call('PUBLISH', ARGV[5], ARGV[6]) end
return changed and 1 or 0
`

/**
 * Removes a dead node's members from one room and publishes `leave` for each.
 * Does nothing if the node holds its lease again; HDEL makes each removal
 * happen once, whichever node sweeps.
 * KEYS: members, meta, log, cids, cidq, lease of the dead node, its node-rooms, rooms.
 * ARGV: dead node id, room, channel, idle ttl.
 * Returns how many members were removed.
 */
export const EVICT = TOUCH + `
if redis.call('EXISTS', KEYS[6]) == 1 then return 0 end
local dead, room, channel = ARGV[1], ARGV[2], ARGV[3]
local entries = redis.call('HGETALL', KEYS[1])
local removed = 0
for i = 1, #entries, 2 do
  local member = cjson.decode(entries[i + 1])
  if member.node == dead then
    redis.call('HDEL', KEYS[1], entries[i])
    local event = { type = 'presence', room = room, action = 'leave', member = { id = member.id, name = member.name } }
    redis.call('PUBLISH', channel, cjson.encode({ event = event }))
    removed = removed + 1
  end
end
redis.call('HDEL', KEYS[7], room)
if redis.call('HLEN', KEYS[1]) == 0 then redis.call('SREM', KEYS[8], room) end
touch(ARGV[4])
return removed
`

/**
 * Drops a dead node from the registry once none of its rooms is left.
 * KEYS: its lease, its node-rooms, nodes. ARGV: node id.
 */
export const FORGET_NODE = `
if redis.call('EXISTS', KEYS[1]) == 0 and redis.call('HLEN', KEYS[2]) == 0 then
  redis.call('SREM', KEYS[3], ARGV[1])
end
return 0
`

/**
 * Renews this node's lease and registers it.
 * KEYS: lease, nodes. ARGV: node id, lease ms.
 * Returns 0 when the lease had lapsed: others may have removed this node's
 * members, so they must be announced again.
 */
export const HEARTBEAT = `
redis.call('SADD', KEYS[2], ARGV[1])
if redis.call('SET', KEYS[1], '1', 'PX', ARGV[2], 'XX') then return 1 end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[2])
return 0
`

/** KEYS: nodes. ARGV: prefix. Returns the registered nodes whose lease has lapsed. */
export const DEAD_NODES = `
local dead = {}
for _, node in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[1] .. 'node:' .. node) == 0 then dead[#dead + 1] = node end
end
return dead
`

/** KEYS: members. ARGV: prefix. Returns the roster values of members on live nodes. */
export const MEMBERS = LIVE_MEMBERS + `
return liveMembers(KEYS[1], ARGV[1], {})
`

/**
 * KEYS: rooms. ARGV: prefix.
 * Returns { room, live member count, seq, … } for rooms with live members.
 */
export const ROOMS = LIVE_MEMBERS + `
local prefix, alive, out = ARGV[1], {}, {}
for _, room in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local count = #liveMembers(prefix .. 'members:' .. room, prefix, alive)
  if count > 0 then
    out[#out + 1] = room
    out[#out + 1] = count
    out[#out + 1] = tonumber(redis.call('HGET', prefix .. 'meta:' .. room, 'seq') or '0')
  end
end
return out
`

/** The scripts by the name of the command ioredis defines for each (EVALSHA, EVAL on a script cache miss). */
export const SCRIPTS = {
  chatAppend: { lua: APPEND, numberOfKeys: 5 },
  chatRead: { lua: READ, numberOfKeys: 2 },
  chatPresence: { lua: PRESENCE, numberOfKeys: 7 },
  chatEvict: { lua: EVICT, numberOfKeys: 8 },
  chatForgetNode: { lua: FORGET_NODE, numberOfKeys: 3 },
  chatHeartbeat: { lua: HEARTBEAT, numberOfKeys: 2 },
  chatDeadNodes: { lua: DEAD_NODES, numberOfKeys: 1 },
  chatMembers: { lua: MEMBERS, numberOfKeys: 1 },
  chatRooms: { lua: ROOMS, numberOfKeys: 1 },
} as const
