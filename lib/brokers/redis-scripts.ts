/**
 * The Lua scripts of `RedisBroker`, each with a typed wrapper: a room's
 * (redis-room-scripts.ts) and the node registry's (here), on the keys of
 * redis-keys.ts. Each script runs atomically in Redis. Every check comes
 * before the first write: a script that fails, fails before it has changed
 * anything.
 *
 * A script touches only the keys it is given in KEYS, all of one room or all
 * of the registry; no key name is built in Lua. A room script never reads
 * node leases: which members are on live nodes is decided in TypeScript.
 */
import type { Cluster, Redis } from 'ioredis'
import { NOW, decodeCount, publishFunction, script, type Args, type PublishCommand, type Script, type ScriptInput } from './redis-lua.js'
import { APPEND, COUNT, EVICT, PRESENCE, READ, USER } from './redis-room-scripts.js'
import { UPDATE } from './redis-update-script.js'

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

export const SCRIPTS = { append: APPEND, update: UPDATE, read: READ, presence: PRESENCE, evict: EVICT, user: USER, count: COUNT, renew: RENEW, nodes: NODES, list: LIST, unlist: UNLIST, forget: FORGET, release: RELEASE } as const
type Scripts = typeof SCRIPTS

/** Each script as one typed call. */
export type ScriptCalls = {
  [N in keyof Scripts]: Scripts[N] extends Script<infer K, infer A, infer R> ? (input: ScriptInput<K, A>) => Promise<R> : never
}

/** The command name ioredis defines for a script; prefixed, so that none shadows a Redis command. */
const commandName = (name: string): string => `chat${name[0]!.toUpperCase()}${name.slice(1)}`

/** For ioredis' `scripts` option: each script becomes a command (EVALSHA, and EVAL on a script cache miss). */
export function scriptCommands (publish: PublishCommand): Record<string, { lua: string, numberOfKeys: number }> {
  return Object.fromEntries(Object.entries(SCRIPTS).map(([name, { lua, keys }]) =>
    [commandName(name), { lua: publishFunction(publish) + lua, numberOfKeys: keys.length }]))
}

/** The typed calls of the scripts on `redis` (a Redis or a Cluster), which must have been created with `scripts: scriptCommands(…)`. */
export function scriptCalls (redis: Redis | Cluster): ScriptCalls {
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
