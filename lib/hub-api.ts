/**
 * The hub's public API, which `fastify.hub` is: the server's calls and the
 * hub's events, and nothing of what members do (join, send…), which only
 * connections may ask of the hub.
 */
import type { EventEmitter } from 'node:events'
import type { ModerationEntry, NodeInfo, RoomInfo, RoomsPage } from './broker.js'
import type { Hub as MemberHub, HubEvents, HubStats } from './hub.js'
import type { Moderation, RestrictionOptions } from './moderation.js'
import type { Member, Message } from './protocol.js'

/** A listener of one hub event; it may be async (a rejection is logged, like a throw). */
export type HubListener<K extends keyof HubEvents> = (...args: HubEvents[K]) => void

/** `fastify.hub`: the chat of this Fastify instance, as the application sees it. */
export interface Hub {
  /**
   * Sends `text` to `room` as the server, or as `from`: it gets a seq, is
   * stored and delivered exactly like a member's message.
   * @returns the stored message
   * @throws {ChatError} `invalid` for a room name or text the options do not allow; `unavailable` while the broker is down
   */
  broadcast(room: string, text: string, from?: Member): Promise<Message>
  /**
   * Replaces the text of message `seq` in `room` as the server (whoever wrote
   * it): stored and delivered as an `update` entry, like a member's edit.
   * @returns the update's seq
   * @throws {ChatError} `invalid` for a room name, seq or text the options do not allow; `not_found` when no such message is kept (or it was deleted); `unavailable` while the broker is down
   */
  editMessage(room: string, seq: number, text: string): Promise<number>
  /**
   * Deletes message `seq` in `room` as the server (whoever wrote it): it keeps
   * its place as a tombstone, and members get an `update` entry.
   * @returns the update's seq
   * @throws {ChatError} `invalid` for a room name or seq the options do not allow; `not_found` when no such message is kept (or it was already deleted); `unavailable` while the broker is down
   */
  deleteMessage(room: string, seq: number): Promise<number>
  /**
   * Rooms with members, across every node, with each one's latest seq, in
   * code point order of their names. `page` takes those after `after`, at
   * most `limit` (default: all).
   */
  rooms(page?: RoomsPage): Promise<RoomInfo[]>
  /** Members of `room`, across every node. */
  members(room: string): Promise<Member[]>
  /**
   * The live nodes sharing the broker, this one included (with the memory
   * broker, only this one). A node that stops renewing its lease drops out
   * within the broker's lease time. Another node's `connections` is the count
   * it sent with its last renewal, so it may be one renewal interval old.
   * @throws {ChatError} `unavailable` while the broker is down
   */
  nodes(): Promise<NodeInfo[]>
  /**
   * Pages backwards through a room's stored messages, oldest first.
   * `before` is a seq (exclusive); `limit` is capped at `MAX_HISTORY_LIMIT`.
   */
  history(room: string, query?: { before?: number, limit?: number }): Promise<{ messages: Message[], more: boolean }>
  /**
   * Closes the connection with `id` if it is on this node (default 1000).
   * @returns false when this node has no such connection
   */
  disconnect(id: string, code?: number, reason?: string): boolean
  /**
   * Closes every connection of `user`, on every node, with 1000 ("disconnected
   * by the server"), which tells the client library not to reconnect.
   * @throws {ChatError} `invalid` for a user that is not a string of 1 to 256 characters; `unavailable` while the broker is down
   */
  disconnectUser(user: string): Promise<void>
  /**
   * Every connection of `user` in `room`, on every node, leaves it and gets
   * `left` with `reason: "kicked"`; the others see a `leave`. The user may join again.
   * Like every moderation call, resolves with the user's ban and mute in force after it.
   * @throws {ChatError} `invalid` for a room name the options do not allow or a bad user; `unavailable` while the broker is down
   */
  kick(room: string, user: string): Promise<ModerationEntry>
  /**
   * Kicks `user` (`left.reason` is `"banned"`), then refuses its joins of
   * `room` with `forbidden` for `ms` (a positive whole number), or until `unban`.
   */
  ban(room: string, user: string, options?: RestrictionOptions): Promise<ModerationEntry>
  /** Lifts a ban. */
  unban(room: string, user: string): Promise<ModerationEntry>
  /**
   * Refuses `user`'s messages to `room` with `forbidden` ("muted") and drops
   * its `typing`, for `ms` (a positive whole number), or until `unmute`.
   */
  mute(room: string, user: string, options?: RestrictionOptions): Promise<ModerationEntry>
  /** Lifts a mute. */
  unmute(room: string, user: string): Promise<ModerationEntry>
  /** The users with a ban or mute in force in `room`, each with its end (`until`, ms since the epoch) if it has one. */
  moderation(room: string): Promise<ModerationEntry[]>
  /** Counters of this node. */
  stats(): HubStats
  /**
   * Listens to an event: `message` and `update` (stored through this node), `join` and
   * `leave` (of a member on this node). A listener that throws or rejects is
   * logged and never fails the member's request.
   */
  on<K extends keyof HubEvents>(event: K, listener: HubListener<K>): Hub
  /** Like `on`, for the next event only. */
  once<K extends keyof HubEvents>(event: K, listener: HubListener<K>): Hub
  /** Removes a listener added with `on` or `once`. */
  off<K extends keyof HubEvents>(event: K, listener: HubListener<K>): Hub
}

/** The public API over the hub that `fastify.hub` is decorated with; frozen, so it cannot be extended by accident. */
export function hubApi (hub: MemberHub, moderation: Moderation): Hub {
  // The same emitter, untyped: TypeScript cannot resolve node's listener type for a generic event name.
  // `Hub`'s signatures keep each listener typed by its event.
  const events: EventEmitter = hub
  const api: Hub = Object.freeze({
    broadcast: (room: string, text: string, from?: Member) => hub.broadcast(room, text, from),
    editMessage: (room: string, seq: number, text: string) => hub.editMessage(room, seq, text),
    deleteMessage: (room: string, seq: number) => hub.deleteMessage(room, seq),
    rooms: (page?: RoomsPage) => hub.rooms(page),
    members: (room: string) => hub.members(room),
    nodes: () => hub.nodes(),
    history: (room: string, query?: { before?: number, limit?: number }) => hub.history(room, query),
    disconnect: (id: string, code?: number, reason?: string) => hub.disconnect(id, code, reason),
    disconnectUser: (user: string) => moderation.disconnectUser(user),
    kick: (room: string, user: string) => moderation.kick(room, user),
    ban: (room: string, user: string, options?: RestrictionOptions) => moderation.ban(room, user, options),
    unban: (room: string, user: string) => moderation.unban(room, user),
    mute: (room: string, user: string, options?: RestrictionOptions) => moderation.mute(room, user, options),
    unmute: (room: string, user: string) => moderation.unmute(room, user),
    moderation: (room: string) => moderation.moderation(room),
    stats: () => hub.stats(),
    on <K extends keyof HubEvents>(event: K, listener: HubListener<K>): Hub {
      events.on(event, listener)
      return api
    },
    once <K extends keyof HubEvents>(event: K, listener: HubListener<K>): Hub {
      events.once(event, listener)
      return api
    },
    off <K extends keyof HubEvents>(event: K, listener: HubListener<K>): Hub {
      events.off(event, listener)
      return api
    },
  })
  return api
}
