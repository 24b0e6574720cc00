/**
 * The node registry's store in Redis: leases and node records under the
 * registry's hash tag, on the registry's shard; each room's roster in the
 * room's own keys, on the room's shard; all through the scripts of
 * redis-scripts.ts. No call touches keys of two slots.
 */
import { randomUUID } from 'node:crypto'
import { restrictionError, type NodeInfo } from '../broker.js'
import { ChatError } from '../errors.js'
import type { Member, Presence } from '../protocol.js'
import type { PresenceOptions, RegisteredNode, RegistryStore, RosterEntry, Stamp } from './node-registry.js'
import type { RedisKeys } from './redis-keys.js'
import type { RedisShard } from './redis-shards.js'

/** What a roster entry holds in Redis. */
interface StoredEntry extends Member {
  node: string
  serial?: number
}

export interface RedisRegistryContext {
  shards: { readonly registry: RedisShard, of: (room: string) => RedisShard }
  keys: RedisKeys
  idleRoomTtl: number
}

export class RedisRegistryStore implements RegistryStore {
  constructor (private readonly redis: RedisRegistryContext) {}

  async renew (node: Omit<NodeInfo, 'lastSeen'>, leaseMs: number): Promise<{ held: boolean, serial: number }> {
    const { keys, shards: { registry: { scripts, run } } } = this.redis
    return await run(() => scripts.renew({ ...keys.registry, id: node.id, record: JSON.stringify(node), leaseMs }))
  }

  async nodes (): Promise<RegisteredNode[]> {
    const { keys, shards: { registry: { scripts, run } } } = this.redis
    const nodes = await run(() => scripts.nodes(keys.registry))
    return nodes.map(({ record, live }) => {
      const stored = JSON.parse(record) as Omit<RegisteredNode, 'live' | 'connections'> & { connections?: number }
      // A node of an earlier version sends no connection count.
      return { ...stored, connections: stored.connections ?? 0, live }
    })
  }

  async release (node: string): Promise<void> {
    const { keys, shards: { registry: { scripts, run } } } = this.redis
    await run(() => scripts.release({ ...keys.registry, rooms: keys.nodeRooms(node), id: node }))
  }

  async forget (node: string, serial: number): Promise<void> {
    const { keys, shards: { registry: { scripts, run } } } = this.redis
    await run(() => scripts.forget({ ...keys.registry, rooms: keys.nodeRooms(node), id: node, serial }))
  }

  async roomsOf (nodes: string[]): Promise<string[]> {
    const { keys, shards: { registry: { commands, run } } } = this.redis
    if (nodes.length === 0) return []
    return await run(() => commands.sunion(...nodes.map((node) => keys.nodeRooms(node))))
  }

  async listRoom (node: string, room: string): Promise<void> {
    const { keys, shards: { registry: { scripts, run } } } = this.redis
    await run(() => scripts.list({ ...keys.registry, rooms: keys.nodeRooms(node), room }))
  }

  async unlistRoom (node: string, room: string): Promise<void> {
    const { keys, shards: { registry: { scripts, run } } } = this.redis
    await run(() => scripts.unlist({ ...keys.registry, rooms: keys.nodeRooms(node), room }))
  }

  async roster (room: string): Promise<RosterEntry[]> {
    const { keys, shards } = this.redis
    const { commands, run } = shards.of(room)
    const values = await run(() => commands.hvals(keys.room(room).members))
    // An entry that is not JSON was not written by a node: it names no member, and stops no other.
    return values.flatMap((value) => {
      let entry: StoredEntry
      try {
        entry = JSON.parse(value) as StoredEntry
      } catch {
        return []
      }
      const { id, user, name, node, serial } = entry
      return [{ member: { id, user: user ?? id, name }, node, serial: serial ?? 0 }]
    })
  }

  async presence (room: string, action: Presence['action'], member: Member, stamp: Stamp, options: PresenceOptions): Promise<void> {
    const { keys, shards, idleRoomTtl } = this.redis
    const { scripts, run } = shards.of(room)
    const event: Presence = { type: 'presence', room, action, member }
    // In this order: EVICT finds the user after the id, and the node and serial at the end of the JSON.
    const entry: StoredEntry = { id: member.id, user: member.user, name: member.name, node: stamp.node, serial: stamp.serial }
    const maxMembers = options.maxMembers ?? 0
    const outcome = await run(() => scripts.presence({
      ...keys.room(room), action, id: member.id, user: JSON.stringify(member.user), entry: JSON.stringify(entry), channel: keys.channel(room),
      // The script closes the envelope after adding `first` or `last` (`withUserFlags` puts them last too).
      head: JSON.stringify({ event }).slice(0, -2), idleTtl: idleRoomTtl, epoch: randomUUID(), maxMembers, onlyIfNew: options.onlyIfNew ?? false, now: Date.now(),
    }))
    if (outcome === 'full') throw new ChatError('room_full', `${room} is full (${maxMembers} members)`)
    if (outcome === 'banned') throw restrictionError(room, 'banned')
  }

  async evict (room: string, node: string, serial: number): Promise<number> {
    const { keys, shards, idleRoomTtl } = this.redis
    const { scripts, run } = shards.of(room)
    // The leave event up to its member, whose JSON the script takes from the roster entry.
    const leaveHead = `{"event":{"type":"presence","room":${JSON.stringify(room)},"action":"leave","member":`
    return await run(() => scripts.evict({ ...keys.room(room), node, serial, leaveHead, channel: keys.channel(room), idleTtl: idleRoomTtl }))
  }
}
