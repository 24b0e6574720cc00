/**
 * The Lua scripts of `RedisBroker`, each with a typed wrapper, and the key
 * layout they work on. Each script runs atomically in Redis, so a room's seq,
 * history, roster and the publish that tells every node about a change happen
 * in one step or not at all. Every check comes before the first write: a
 * script that fails, fails before it has changed anything.
 *
 * Key layout. P is the broker's prefix; `{…}` is a Redis hash tag, so the
 * keys of one room hash to one Cluster slot (or one shard), and so do the
 * node registry's:
 *
 *   P{room}:meta      hash { epoch, seq }: together, so they are lost together
 *   P{room}:log       list of message JSON, oldest first, capped at historySize
 *   P{room}:cids      hash cid → "seq:ts" (for retries of a send)
 *   P{room}:cidq      list of cids in seq order (to forget expired ones cheaply)
 *   P{room}:members   hash member id → JSON { id, user, name, node, serial }, in that order
 *   P{room}:present   hash user → how many of the user's connections the roster holds
 *   P{room}:users     hash user → JSON UserState { read, ban?, mute? } (broker.ts)
 *   P{room}:channel   the room's pub/sub channel (not a key)
 *
 *   Pregistry{nodes}:records       hash node id → JSON { serial, lastSeen, id, host, pid, startedAt, connections }
 *   Pregistry{nodes}:leases        sorted set node id → lease deadline (ms, Redis' clock)
 *   Pregistry{nodes}:serial        counter: each registration of a node takes the next value
 *   Pregistry{nodes}:rooms:<node>  set of rooms whose roster may hold the node's members
 *   Pregistry{nodes}:listings      hash room → how many nodes' sets list it
 *   Pregistry{nodes}:occupied      sorted set of the rooms some node lists, all of score 0:
 *                                  the room list pages it by name (ZRANGEBYLEX); each
 *                                  room's count is its roster's HLEN
 *
 * A user names its fields in `present` and `users` as its JSON string (quotes
 * included): EVICT reads it from roster entries as text, without decoding.
 *
 *   Pregistry{nodes}:signal        the channel of node-wide signals (not a key)
 *
 * In a room's tag, `%`, `{` and `}` are percent-encoded, so the tag is the
 * whole room name and never empty. Room keys begin with `P{`, registry keys
 * with `Pregistry{`: no room's key is ever a registry key. (A prefix with a
 * brace in it would put every key in one slot: it works, but does not shard.)
 *
 * A script touches only the keys it is given in KEYS, all of one room or all
 * of the registry; no key name is built in Lua. A room script never reads
 * node leases: which members are on live nodes is decided in TypeScript.
 */
import type { Redis } from 'ioredis'

// ------------------------------------------------------------ key layout

/** The names of a room's keys; every room script that writes takes them all (`touch` needs them). */
export const ROOM_KEYS = ['members', 'meta', 'log', 'cids', 'cidq', 'present', 'users'] as const
export type RoomKeys = Record<typeof ROOM_KEYS[number], string>
export interface RegistryKeys { records: string, leases: string, serial: string, listings: string, occupied: string }

const CHANNEL_SUFFIX = ':channel'

/** A room's hash tag: its name, with the characters that would end or confuse a tag percent-encoded. */
function roomTag (room: string): string {
  return room.replace(/[%{}]/g, (char) => encodeURIComponent(char))
}

/** Names every key and channel of one broker prefix. */
export class RedisKeys {
  readonly registry: RegistryKeys
  /** The channel of `NodeSignal`s: every node of the prefix subscribes to it. */
  readonly signal: string

  constructor (private readonly prefix: string) {
    const tag = `${prefix}registry{nodes}:`
    this.registry = { records: `${tag}records`, leases: `${tag}leases`, serial: `${tag}serial`, listings: `${tag}listings`, occupied: `${tag}occupied` }
    this.signal = `${tag}signal`
  }

  room (room: string): RoomKeys {
    const tag = `${this.prefix}{${roomTag(room)}}:`
    return Object.fromEntries(ROOM_KEYS.map((name) => [name, `${tag}${name}`])) as RoomKeys
  }

  channel (room: string): string {
    return `${this.prefix}{${roomTag(room)}}${CHANNEL_SUFFIX}`
  }

  /** The room whose channel this is, or undefined for a channel that is not one of ours. */
  roomOfChannel (channel: string): string | undefined {
    const start = `${this.prefix}{`
    const end = `}${CHANNEL_SUFFIX}`
    if (!channel.startsWith(start) || !channel.endsWith(end) || channel.length <= start.length + end.length) return undefined
    try {
      return decodeURIComponent(channel.slice(start.length, -end.length))
    } catch {
      return undefined
    }
  }

  nodeRooms (node: string): string {
    return `${this.prefix}registry{nodes}:rooms:${node}`
  }
}

// ------------------------------------------------------------ typed scripts

/** How an ARGV value travels: Lua sees a string, a number, nil for an absent `number?`, or a boolean. */
type ArgType = 'string' | 'number' | 'number?' | 'boolean'
interface ArgValues { string: string, number: number, 'number?': number | undefined, boolean: boolean }
type Args = Record<string, ArgType>

/** What a script's wrapper takes: each key by name, each argument by name (an absent `number?` may be left out). */
export type ScriptInput<K extends string, A extends Args> =
  { readonly [N in K]: string } &
  { readonly [N in keyof A as A[N] extends 'number?' ? never : N]: ArgValues[A[N]] } &
  { readonly [N in keyof A as A[N] extends 'number?' ? N : never]?: number }

export interface Script<K extends string, A extends Args, R> {
  /** Its KEYS in order; the Lua sees each as a local of that name. */
  readonly keys: readonly K[]
  /** Its ARGV in order, by name and type; the Lua sees each as a local of that name, already converted. */
  readonly args: A
  /** The script's own Lua, without the prologue that names KEYS and ARGV. */
  readonly body: string
  /** The Lua that Redis runs: the prologue, then the body. */
  readonly lua: string
  /** KEYS then ARGV, in the order the prologue reads them. */
  argv (input: ScriptInput<K, A>): Array<string | number>
  /** The reply, typed. */
  reply (raw: unknown): R
}

/** Defines a script: the one place where names meet KEYS and ARGV positions. */
function script<const K extends string, const A extends Args, R> (
  spec: { keys: readonly K[], args: A, body: string, reply: (raw: unknown) => R },
): Script<K, A, R> {
  const argNames = Object.keys(spec.args) as Array<keyof A & string>
  const read = (type: ArgType, at: string): string =>
    type === 'string' ? at : type === 'boolean' ? `${at} == '1'` : `tonumber(${at})`
  const prologue = [
    ...spec.keys.map((name, i) => `local ${name} = KEYS[${i + 1}]`),
    ...argNames.map((name, i) => `local ${name} = ${read(spec.args[name]!, `ARGV[${i + 1}]`)}`),
  ].join('\n')
  return {
    ...spec,
    lua: `${prologue}\n${spec.body}`,
    argv (input) {
      const values = input as unknown as Record<string, string | number | boolean | undefined>
      return [
        ...spec.keys.map((name) => values[name] as string),
        ...argNames.map((name) => {
          const value = values[name]
          return typeof value === 'boolean' ? (value ? '1' : '0') : value ?? ''
        }),
      ]
    },
  }
}

// ------------------------------------------------------------ shared Lua

/**
 * Keeps a room's keys while it has members, and lets them expire `idleTtl`
 * ms after the last change once it has none: idle rooms do not pile up.
 */
const TOUCH = `
local function touch()
  if redis.call('HLEN', members) > 0 then
    redis.call('PERSIST', meta)
    redis.call('PERSIST', log)
    redis.call('PERSIST', cids)
    redis.call('PERSIST', cidq)
    redis.call('PERSIST', present)
    redis.call('PERSIST', users)
  else
    redis.call('PEXPIRE', meta, idleTtl)
    redis.call('PEXPIRE', log, idleTtl)
    redis.call('PEXPIRE', cids, idleTtl)
    redis.call('PEXPIRE', cidq, idleTtl)
    redis.call('PEXPIRE', present, idleTtl)
    redis.call('PEXPIRE', users, idleTtl)
  end
end
`

/** Redis' clock in ms: every node's lease is timed by the same clock, whatever the nodes' own. */
const NOW = `
local function now()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end
`

/**
 * A user's state in `users`, read as text (junk reads as no state):
 * `stored` is the JSON `encoded` wrote, or nil. A ban or mute is kept as
 * { ends = its until, nil while it lasts until lifted }.
 */
const USER_STATE = `
local function restriction(stored, kind)
  if not stored then return nil end
  local ends = string.match(stored, '"' .. kind .. '":{"until":(%d+)}')
  if ends then return { ends = tonumber(ends) } end
  if string.find(stored, '"' .. kind .. '":{}', 1, true) then return {} end
  return nil
end
local function inForce(stored, kind, at)
  local kept = restriction(stored, kind)
  return kept ~= nil and (kept.ends == nil or kept.ends > at)
end
-- The state as of \`at\`: restrictions that ended are dropped.
local function decoded(stored, at)
  local state = { read = tonumber(stored and string.match(stored, '^{"read":(%d+)') or '0') }
  if inForce(stored, 'ban', at) then state.ban = restriction(stored, 'ban') end
  if inForce(stored, 'mute', at) then state.mute = restriction(stored, 'mute') end
  return state
end
local function encoded(state)
  local json = '{"read":' .. string.format('%d', state.read)
  for _, kind in ipairs({ 'ban', 'mute' }) do
    local kept = state[kind]
    if kept then json = json .. ',"' .. kind .. '":' .. (kept.ends and '{"until":' .. string.format('%d', kept.ends) .. '}' or '{}') end
  end
  return json .. '}'
end
`

/** Counts a user's connections in the roster (`present`, by its JSON string): the one whose leave was the last. */
const PRESENT = `
local function leftLast(user)
  local connections = tonumber(redis.call('HGET', present, user)) or 0
  if connections > 1 then
    redis.call('HINCRBY', present, user, -1)
    return false
  end
  redis.call('HDEL', present, user)
  return true
end
`

const decodeCount = (raw: unknown): number => Number(raw)

// ------------------------------------------------------------ room scripts

export type AppendReply =
  | { outcome: 'new' | 'stored', message: string }
  | { outcome: 'forgotten', seq: number, ts: number }
  | { outcome: 'muted' }

/**
 * Stores a message once and publishes it. The seq goes between `head` and
 * `tail`, the two halves of the message JSON. `epoch` is used if the room has
 * none. Answers 'stored' for a retried cid still in the history, 'forgotten'
 * (with its seq and time) for one whose message was trimmed away, 'muted'
 * when the sender's `user` (its JSON string) is muted in the room at `now`.
 */
export const APPEND = script({
  keys: ROOM_KEYS,
  args: { epoch: 'string', head: 'string', tail: 'string', cid: 'string', historySize: 'number', now: 'number', idleTtl: 'number', channel: 'string', cidRetentionMs: 'number', user: 'string' },
  body: TOUCH + USER_STATE + `
if inForce(redis.call('HGET', users, user), 'mute', now) then return { 'muted' } end

-- Cids forgotten per append, at most: more than the one each append adds, so
-- the queue keeps up, and few, so the work per append stays bounded.
local FORGET_PER_APPEND = 2
local function firstKept(last) return last - redis.call('LLEN', log) + 1 end

if cid ~= '' then
  local seen = redis.call('HGET', cids, cid)
  local seq, ts
  if seen then seq, ts = string.match(seen, '^(%d+):(%d+)$') end
  if seq then
    seq = tonumber(seq)
    local first = firstKept(tonumber(redis.call('HGET', meta, 'seq') or '0'))
    if seq >= first then return { 'stored', redis.call('LINDEX', log, seq - first) } end
    return { 'forgotten', seq, ts }
  end
end

-- The first write: it fails, having changed nothing, if the stored seq is not a number.
local seq = redis.call('HINCRBY', meta, 'seq', 1)
redis.call('HSETNX', meta, 'epoch', epoch)
local stream = redis.call('HGET', meta, 'epoch')
local message = head .. seq .. tail
if historySize > 0 then
  redis.call('RPUSH', log, message)
  redis.call('LTRIM', log, -historySize, -1)
end
if cid ~= '' then
  redis.call('HSET', cids, cid, seq .. ':' .. now)
  redis.call('RPUSH', cidq, cid)
  local first = firstKept(seq)
  for _ = 1, FORGET_PER_APPEND do
    local oldest = redis.call('LINDEX', cidq, 0)
    if not oldest then break end
    local seen = redis.call('HGET', cids, oldest)
    if seen then
      local oldSeq, ts = string.match(seen, '^(%d+):(%d+)$')
      -- An entry this script did not write (no seq in it) goes like an expired one.
      if oldSeq and (tonumber(oldSeq) >= first or now - tonumber(ts) < cidRetentionMs) then break end
      redis.call('HDEL', cids, oldest)
    end
    redis.call('LPOP', cidq)
  end
end
redis.call('PUBLISH', channel, '{"epoch":"' .. stream .. '","event":' .. message .. '}')
touch()
return { 'new', message }
`,
  reply: (raw): AppendReply => {
    const [outcome, stored, ts] = raw as [string, string | number, string?]
    if (outcome === 'muted') return { outcome }
    if (outcome === 'forgotten') return { outcome, seq: Number(stored), ts: Number(ts) }
    return { outcome: outcome as 'new' | 'stored', message: String(stored) }
  },
})

/**
 * Reads a room's epoch, latest seq and a range of its history, the way
 * `HistoryRing.read` does. Writes nothing: reading a room nobody used leaves
 * no key behind, and its epoch is '' until a join or a message creates it.
 */
export const READ = script({
  keys: ['meta', 'log'],
  args: { after: 'number?', before: 'number?', limit: 'number' },
  body: `
local epoch = redis.call('HGET', meta, 'epoch') or ''
local last = tonumber(redis.call('HGET', meta, 'seq') or '0')
local length = redis.call('LLEN', log)
if length == 0 or limit <= 0 then return { epoch, last, length > 0 and 1 or 0, {} } end
local first = last - length + 1
local from, to
if after then
  from = math.max(first, after + 1)
  to = math.min(last, from + limit - 1)
else
  to = math.min(last, (before or last + 1) - 1)
  from = math.max(first, to - limit + 1)
end
local messages = {}
if from <= to then messages = redis.call('LRANGE', log, from - first, to - first) end
local more
if #messages > 0 then more = from > first else more = to >= first end
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
if changed then redis.call('PUBLISH', channel, head .. flag .. '}}') end
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
  redis.call('PUBLISH', channel, leaveHead .. member .. ',"last":' .. tostring(last) .. '}}')
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
if changed then redis.call('PUBLISH', channel, head .. (kind == 'read' and string.format('%d', state.read) or '') .. tail) end
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

// ------------------------------------------------------------ registry scripts

/** One node's set of rooms (`rooms`) no longer lists `room`: the last node to unlist it takes it out of `occupied`. */
const UNLISTED = `
local function unlisted(room)
  local count = (tonumber(redis.call('HGET', listings, room)) or 0) - 1
  if count > 0 then
    redis.call('HSET', listings, room, count)
  else
    redis.call('HDEL', listings, room)
    redis.call('ZREM', occupied, room)
  end
end
`

/** A node lists `room` (in its set `rooms`): the first node to list it puts it in `occupied`. */
export const LIST = script({
  keys: ['rooms', 'listings', 'occupied'],
  args: { room: 'string' },
  body: `
if redis.call('SISMEMBER', rooms, room) == 1 then return 0 end
local count = (tonumber(redis.call('HGET', listings, room)) or 0) + 1
redis.call('SADD', rooms, room)
redis.call('HSET', listings, room, count)
if count == 1 then redis.call('ZADD', occupied, 0, room) end
return 0
`,
  reply: decodeCount,
})

/** A node unlists `room` from its set `rooms`. */
export const UNLIST = script({
  keys: ['rooms', 'listings', 'occupied'],
  args: { room: 'string' },
  body: UNLISTED + `
if redis.call('SREM', rooms, room) == 1 then unlisted(room) end
return 0
`,
  reply: decodeCount,
})

/**
 * Takes or renews a node's lease and stores its record (`record`: JSON of
 * { id, host, pid, startedAt, connections }; the script adds serial and lastSeen). Answers
 * { held (1 when the lease was still held), serial }: a node without a lease
 * (new, or lapsed) gets a new serial.
 */
export const RENEW = script({
  keys: ['records', 'leases', 'serial'],
  args: { id: 'string', record: 'string', leaseMs: 'number' },
  body: NOW + `
local at = now()
local deadline = redis.call('ZSCORE', leases, id)
local stored = redis.call('HGET', records, id)
-- The record begins with its serial (this script writes it so): read as text, it cannot fail to decode.
local current = deadline and tonumber(deadline) > at and stored and tonumber(string.match(stored, '^{"serial":(%d+),'))
local held = current ~= nil and current ~= false
if not held then current = redis.call('INCR', serial) end
redis.call('HSET', records, id, '{"serial":' .. current .. ',"lastSeen":' .. at .. ',' .. string.sub(record, 2))
redis.call('ZADD', leases, at + leaseMs, id)
return { held and 1 or 0, current }
`,
  reply: (raw) => {
    const [held, serial] = raw as [number, number]
    return { held: held === 1, serial: Number(serial) }
  },
})

/** Every registered node: { record JSON, live (1 while it holds its lease), … }. */
export const NODES = script({
  keys: ['records', 'leases'],
  args: {},
  body: NOW + `
local at = now()
local out = {}
local entries = redis.call('HGETALL', records)
for i = 1, #entries, 2 do
  local deadline = redis.call('ZSCORE', leases, entries[i])
  out[#out + 1] = entries[i + 1]
  out[#out + 1] = (deadline and tonumber(deadline) > at) and 1 or 0
end
return out
`,
  reply: (raw) => {
    const flat = raw as Array<string | number>
    const nodes: Array<{ record: string, live: boolean }> = []
    for (let i = 0; i < flat.length; i += 2) nodes.push({ record: String(flat[i]), live: flat[i + 1] === 1 })
    return nodes
  },
})

/**
 * Drops a swept node from the registry, with its list of rooms, unless it
 * came back meanwhile (it holds a lease, or registered again with a newer
 * serial). `rooms`: its rooms key; the rooms it lists are unlisted.
 */
export const FORGET = script({
  keys: ['records', 'leases', 'rooms', 'listings', 'occupied'],
  args: { id: 'string', serial: 'number' },
  body: NOW + UNLISTED + `
local deadline = redis.call('ZSCORE', leases, id)
if deadline and tonumber(deadline) > now() then return 0 end
local stored = redis.call('HGET', records, id)
if stored and tonumber(string.match(stored, '^{"serial":(%d+),')) ~= serial then return 0 end
redis.call('HDEL', records, id)
redis.call('ZREM', leases, id)
for _, room in ipairs(redis.call('SMEMBERS', rooms)) do unlisted(room) end
redis.call('DEL', rooms)
return 1
`,
  reply: decodeCount,
})

/**
 * A closing node gives up its lease. It leaves the registry at once if it
 * lists no room; otherwise others sweep the members still listed, as after a
 * crash. `rooms`: its rooms key.
 */
export const RELEASE = script({
  keys: ['records', 'leases', 'rooms'],
  args: { id: 'string' },
  body: `
redis.call('ZREM', leases, id)
if redis.call('SCARD', rooms) == 0 then redis.call('HDEL', records, id) end
return 0
`,
  reply: decodeCount,
})

// ------------------------------------------------------------ binding to ioredis

export const SCRIPTS = { append: APPEND, read: READ, presence: PRESENCE, evict: EVICT, user: USER, count: COUNT, renew: RENEW, nodes: NODES, list: LIST, unlist: UNLIST, forget: FORGET, release: RELEASE } as const
type Scripts = typeof SCRIPTS

/** Each script as one typed call. */
export type ScriptCalls = {
  [N in keyof Scripts]: Scripts[N] extends Script<infer K, infer A, infer R> ? (input: ScriptInput<K, A>) => Promise<R> : never
}

/** The command name ioredis defines for a script; prefixed, so that none shadows a Redis command. */
const commandName = (name: string): string => `chat${name[0]!.toUpperCase()}${name.slice(1)}`

/** For ioredis' `scripts` option: each script becomes a command (EVALSHA, and EVAL on a script cache miss). */
export const SCRIPT_COMMANDS = Object.fromEntries(Object.entries(SCRIPTS).map(([name, { lua, keys }]) =>
  [commandName(name), { lua, numberOfKeys: keys.length }]))

/** The typed calls of the scripts on `redis`, which must have been created with `scripts: SCRIPT_COMMANDS`. */
export function scriptCalls (redis: Redis): ScriptCalls {
  // ioredis adds a method per script at run time; its types cannot know them.
  const commands = redis as unknown as Record<string, (...args: Array<string | number>) => Promise<unknown>>
  const calls = Object.entries(SCRIPTS).map(([name, definition]) => {
    const { argv, reply } = definition as unknown as Script<string, Args, unknown>
    const command = commands[commandName(name)]
    if (!command) throw new Error(`RedisBroker: ioredis did not define the script ${name}`)
    return [name, async (input: ScriptInput<string, Args>) => reply(await command.apply(redis, argv(input)))]
  })
  return Object.fromEntries(calls) as ScriptCalls
}
