/**
 * How `RedisBroker`'s Lua scripts are defined: each names its KEYS and ARGV
 * once, and gets a typed wrapper; and the Lua that several scripts share.
 */

/** How an ARGV value travels: Lua sees a string, a number, nil for an absent `number?`, or a boolean. */
type ArgType = 'string' | 'number' | 'number?' | 'boolean'
interface ArgValues { string: string, number: number, 'number?': number | undefined, boolean: boolean }
export type Args = Record<string, ArgType>

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
export function script<const K extends string, const A extends Args, R> (
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
export const TOUCH = `
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
export const NOW = `
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
export const USER_STATE = `
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

/** Whether a stored entry is an update: updates are written by `JSON.stringify`, type first; anything else is a message. */
export const IS_UPDATE = `
local function isUpdate(entry) return string.sub(entry, 1, 16) == '{"type":"update"' end
`

/**
 * A room's stream of entries (messages and updates) as the scripts that
 * store one share it: the kept log, the retries recognised by cid, and the
 * publish. The script names `historySize`, `now`, `cidRetentionMs` and
 * `channel` among its arguments.
 */
export const STREAM = IS_UPDATE + `
-- Cids forgotten per stored entry, at most: more than the one each entry adds,
-- so the queue keeps up, and few, so the work per entry stays bounded.
local FORGET_PER_ENTRY = 2
local function latestSeq() return tonumber(redis.call('HGET', meta, 'seq') or '0') end
local function firstKept(last) return last - redis.call('LLEN', log) + 1 end
-- The seq and time (text) an entry with this cid was stored with, or nil.
local function retried(cid)
  if cid == '' then return nil end
  local seen = redis.call('HGET', cids, cid)
  local seq, ts
  if seen then seq, ts = string.match(seen, '^(%d+):(%d+)$') end
  if seq then return tonumber(seq), ts end
  return nil
end
-- Keeps entry as the room's newest, with seq, and tells every node.
local function storeEntry(seq, entry, cid)
  if historySize > 0 then
    redis.call('RPUSH', log, entry)
    redis.call('LTRIM', log, -historySize, -1)
  end
  if cid ~= '' then
    redis.call('HSET', cids, cid, seq .. ':' .. now)
    redis.call('RPUSH', cidq, cid)
    local first = firstKept(seq)
    for _ = 1, FORGET_PER_ENTRY do
      local oldest = redis.call('LINDEX', cidq, 0)
      if not oldest then break end
      local seen = redis.call('HGET', cids, oldest)
      if seen then
        local oldSeq, ts = string.match(seen, '^(%d+):(%d+)$')
        -- An entry no script wrote (no seq in it) goes like an expired one.
        if oldSeq and (tonumber(oldSeq) >= first or now - tonumber(ts) < cidRetentionMs) then break end
        redis.call('HDEL', cids, oldest)
      end
      redis.call('LPOP', cidq)
    end
  end
  publish(channel, '{"epoch":"' .. redis.call('HGET', meta, 'epoch') .. '","event":' .. entry .. '}')
end
`

/** Counts a user's connections in the roster (`present`, by its JSON string): the one whose leave was the last. */
export const PRESENT = `
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

/**
 * How a script tells the nodes: PUBLISH on one Redis or on shards, where
 * every subscriber of the server hears it; SPUBLISH on a Redis Cluster, so
 * that the event crosses only the shard that owns the room (the channel
 * carries the room's hash tag, so it hashes to the slot of the room's keys).
 */
export type PublishCommand = 'PUBLISH' | 'SPUBLISH'

/** The `publish(channel, message)` that the scripts call, defined before their prologue. */
export function publishFunction (command: PublishCommand): string {
  return `local function publish(channel, message) return redis.call('${command}', channel, message) end\n`
}

export const decodeCount = (raw: unknown): number => Number(raw)
