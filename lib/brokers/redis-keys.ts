/**
 * The names of `RedisBroker`'s keys and channels, for its scripts
 * (redis-scripts.ts) and its calls.
 *
 * P is the broker's prefix; `{…}` is a Redis hash tag, so the keys of one
 * room hash to one Cluster slot (or one shard), and so do the node registry's:
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
 *   Pregistry{nodes}:signal        the channel of node-wide signals (not a key)
 *
 * A user names its fields in `present` and `users` by its JSON string (quotes
 * included): EVICT reads it from roster entries as text, without decoding.
 *
 * In a room's tag, `%`, `{` and `}` are percent-encoded, so the tag is the
 * whole room name and never empty. Room keys begin with `P{`, registry keys
 * with `Pregistry{`: no room's key is ever a registry key. (A prefix with a
 * brace in it would put every key in one slot: it works, but does not shard.)
 */

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
