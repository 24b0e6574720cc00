/**
 * What the brokers whose events stay in one process share (memory, SQLite):
 * the node they deliver to, its subscriptions, the rosters of its members and
 * its own line in `nodes()`. "Every node" is this one, so delivery is a direct call.
 */
import { randomUUID } from 'node:crypto'
import { hostname } from 'node:os'
import type { BrokerNode, NodeInfo, PublishOptions } from '../broker.js'
import { ChatError } from '../errors.js'
import type { Member, Presence, RoomEvent } from '../protocol.js'

export class InProcessNode {
  /** This node's id in `nodes()`, new for every broker like a Redis node's. */
  readonly id = randomUUID()
  private node: BrokerNode | undefined
  private startedAt = 0
  private readonly subscribed = new Set<string>()
  /** room → its members; a room leaves the map with its last member, so rosters hold no memory for empty rooms. */
  private readonly rosters = new Map<string, Map<string, Member>>()

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
  deliver (room: string, event: RoomEvent): void {
    if (this.subscribed.has(room)) this.opened().deliver(room, event)
  }

  /**
   * Applies a presence event to the room's roster: `join` adds, `rename`
   * renames, `leave` removes. Throws `room_full` for a join over `maxMembers`
   * (changing nothing); answers false for a leave of a non-member, which must
   * not be delivered.
   */
  updateRoster (room: string, event: Presence, options: PublishOptions): boolean {
    const roster = this.rosters.get(room) ?? new Map<string, Member>()
    const { id, name } = event.member
    if (event.action === 'leave') {
      if (!roster.delete(id)) return false
      if (roster.size === 0) this.rosters.delete(room)
      return true
    }
    const max = options.maxMembers ?? 0
    if (event.action === 'join' && max > 0 && !roster.has(id) && roster.size >= max) {
      throw new ChatError('room_full', `${room} is full (${max} members)`)
    }
    roster.set(id, { id, name })
    this.rosters.set(room, roster)
    return true
  }

  members (room: string): Member[] {
    return [...(this.rosters.get(room)?.values() ?? [])]
  }

  memberCount (room: string): number {
    return this.rosters.get(room)?.size ?? 0
  }

  /** The rooms with members, with how many. */
  occupied (): Array<{ room: string, members: number }> {
    return [...this.rosters].map(([room, roster]) => ({ room, members: roster.size }))
  }

  /** This node only: nothing else shares an in-process broker. */
  self (): NodeInfo {
    const node = this.opened()
    return { id: this.id, host: hostname(), pid: process.pid, startedAt: this.startedAt, lastSeen: Date.now(), connections: node.connections() }
  }
}
