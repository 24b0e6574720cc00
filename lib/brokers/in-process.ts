/**
 * What the brokers whose events stay in one process share (memory, SQLite):
 * the node they deliver to, its subscriptions, the rosters of its members and
 * its own line in `nodes()`. "Every node" is this one, so delivery is a direct call.
 */
import { randomUUID } from 'node:crypto'
import { hostname } from 'node:os'
import { withUserFlags, type BrokerEvent, type BrokerNode, type NodeInfo, type NodeSignal, type PublishOptions } from '../broker.js'
import { ChatError } from '../errors.js'
import type { Member, Presence } from '../protocol.js'

/** A room's members by connection id, and how many connections each user has among them. */
interface Roster {
  readonly members: Map<string, Member>
  readonly connectionsOfUser: Map<string, number>
}

export class InProcessNode {
  /** This node's id in `nodes()`, new for every broker like a Redis node's. */
  readonly id = randomUUID()
  private node: BrokerNode | undefined
  private startedAt = 0
  private readonly subscribed = new Set<string>()
  /** room → its roster; a room leaves the map with its last member, so rosters hold no memory for empty rooms. */
  private readonly rosters = new Map<string, Roster>()

  /** `broker` names the broker in errors. */
  constructor (private readonly broker: string) {}

  open (node: BrokerNode): void {
    if (this.node) throw new Error(`${this.broker}: already open; use one broker per Fastify instance`)
    this.node = node
    this.startedAt = Date.now()
  }

  close (): void {
    this.node = undefined
    this.subscribed.clear()
    this.rosters.clear()
  }

  opened (): BrokerNode {
    if (!this.node) throw new Error(`${this.broker}: not open`)
    return this.node
  }

  subscribe (room: string): void {
    this.subscribed.add(room)
  }

  unsubscribe (room: string): void {
    this.subscribed.delete(room)
  }

  /** Hands `event` to the node when it is subscribed to `room`. */
  deliver (room: string, event: BrokerEvent): void {
    if (this.subscribed.has(room)) this.opened().deliver(room, event)
  }

  /** Hands a node-wide event to the node: the only one. */
  signal (event: NodeSignal): void {
    this.opened().signal(event)
  }

  /**
   * Applies a presence event to the room's roster: `join` adds, `rename`
   * renames, `leave` removes. Answers the event to deliver, with `first` or
   * `last` for its user, or undefined for a leave of a non-member (not
   * delivered). Throws `room_full` for a join over `maxMembers`, changing nothing.
   */
  updateRoster (room: string, event: Presence, options: PublishOptions): Presence | undefined {
    const roster = this.rosters.get(room) ?? { members: new Map<string, Member>(), connectionsOfUser: new Map<string, number>() }
    const { id, user, name } = event.member
    const { members, connectionsOfUser } = roster
    if (event.action === 'leave') {
      if (!members.delete(id)) return undefined
      if (members.size === 0) this.rosters.delete(room)
      return withUserFlags(event, countConnection(connectionsOfUser, user, -1))
    }
    const known = members.get(id)
    const max = options.maxMembers ?? 0
    if (event.action === 'join' && max > 0 && !known && members.size >= max) {
      throw new ChatError('room_full', `${room} is full (${max} members)`)
    }
    members.set(id, { id, user, name })
    this.rosters.set(room, roster)
    const connections = known ? connectionsOfUser.get(user) ?? 1 : countConnection(connectionsOfUser, user, 1)
    return withUserFlags(event, connections - 1)
  }

  members (room: string): Member[] {
    return [...(this.rosters.get(room)?.members.values() ?? [])]
  }

  memberCount (room: string): number {
    return this.rosters.get(room)?.members.size ?? 0
  }

  /** The rooms with members, with how many. */
  occupied (): Array<{ room: string, members: number }> {
    return [...this.rosters].map(([room, roster]) => ({ room, members: roster.members.size }))
  }

  /** This node only: nothing else shares an in-process broker. */
  self (): NodeInfo {
    const node = this.opened()
    return { id: this.id, host: hostname(), pid: process.pid, startedAt: this.startedAt, lastSeen: Date.now(), connections: node.connections() }
  }
}

/** Adds `delta` to `user`'s connections in a roster and answers how many it has now (0: none, and forgotten). */
function countConnection (connectionsOfUser: Map<string, number>, user: string, delta: number): number {
  const count = (connectionsOfUser.get(user) ?? 0) + delta
  if (count <= 0) connectionsOfUser.delete(user)
  else connectionsOfUser.set(user, count)
  return Math.max(count, 0)
}
