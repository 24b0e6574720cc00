/**
 * The broker seam: where a room's messages get their seq and are stored, and
 * how events reach every node that has members in a room. The hub talks only
 * to this interface; `MemoryBroker` (one process) and `RedisBroker` (many)
 * implement it, and `test/broker-contract.ts` holds every broker to it.
 */
import { randomBytes } from 'node:crypto'
import { applyChange } from './client/message-state.js'
import { ChatError } from './errors.js'
import type { Entry, LeftReason, Member, Message, Presence, TypingEvent, RoomEvent, Update } from './protocol.js'

/** A message as the hub hands it to the broker; the broker adds room, seq, id and ts. */
export interface MessageDraft {
  from: Member
  text: string
  cid?: string
}

export interface AppendResult {
  /** The stored message; for a duplicate `cid`, the one stored first. */
  message: Message
  /** True when `cid` was already stored: nothing new was stored or delivered. */
  duplicate: boolean
}

/**
 * Which stored entries to read, oldest first in the answer, messages in their
 * current state:
 * - `after: N`: every entry with seq > N, messages and updates (at most
 *   `limit`): what a member who left at N missed, to replay;
 * - otherwise a page: the newest `limit` messages (updates left out) with
 *   seq < `before` (or the newest, without `before`).
 */
export interface ReadRange {
  after?: number
  before?: number
  limit: number
}

export interface ReadResult {
  /** The incarnation of the room's stream; changes when its seq and history were lost. */
  epoch: string
  /** The room's latest seq (0 when nothing was stored in this epoch). */
  seq: number
  /** The entries read: only messages in a page; messages and updates after `after`. */
  messages: Entry[]
  /** Whether older entries than the first returned are stored (in a page: older messages). */
  more: boolean
}

export interface RoomInfo {
  room: string
  members: number
  seq: number
}

/** Which rooms `rooms` lists, in code point order of their names: those after `after`, at most `limit` (default: all). */
export interface RoomsPage {
  after?: string
  limit?: number
}

/** Orders room names by code point, as Redis and PostgreSQL (`COLLATE "C"`) order UTF-8 bytes. */
export function compareRooms (a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b))
}

/** The page of `rooms` (in any order) that `page` asks for, for a broker that holds all its rooms' counts at hand. */
export function roomsPage (rooms: RoomInfo[], page: RoomsPage = {}): RoomInfo[] {
  const { after, limit } = page
  const listed = (after === undefined ? rooms : rooms.filter(({ room }) => compareRooms(room, after) > 0)).sort((x, y) => compareRooms(x.room, y.room))
  return limit === undefined ? listed : listed.slice(0, limit)
}

/** A live node sharing the broker, as `hub.nodes()` lists it. */
export interface NodeInfo {
  /** The broker's id of the node: new for every process (and every broker instance). */
  id: string
  host: string
  pid: number
  /** When the node opened, in ms since the epoch (its own clock). */
  startedAt: number
  /** When the node last showed it is alive (renewed its lease), in ms since the epoch. */
  lastSeen: number
  /**
   * Its WebSocket connections. Another node's count is the one it sent with
   * its last lease renewal, so it may be up to one renewal interval old.
   */
  connections: number
}

/**
 * What history a durable broker (SQLite, PostgreSQL) keeps. Default: all of
 * it; reads reach whatever is kept.
 */
export interface RetentionOptions {
  /**
   * Keep the newest this many messages per room; `'historySize'`: the
   * plugin's `historySize`, as many as the memory and Redis brokers keep.
   * Reads never show older ones, even before they are deleted.
   */
  messages?: number | 'historySize'
  /** Delete messages older than this many ms. */
  age?: number
}

/** The per-room bound of `retention.messages` once the node's `historySize` is known; undefined: no bound. */
export function keptPerRoom (retention: RetentionOptions | undefined, node: BrokerNode): number | undefined {
  const messages = retention?.messages
  return messages === 'historySize' ? node.historySize : messages
}

/** Options of the brokers on a shared server (Redis, PostgreSQL): node leases and outages. */
export interface SharedStoreOptions {
  /**
   * How long a node counts as alive without renewing its lease. A node that
   * dies without closing has its members removed (and `leave` sent) within
   * about 4/3 of this. Default 15000.
   */
  leaseMs?: number
  /** A call the server has not answered after this many ms fails with `unavailable`. Default 2000. */
  commandTimeout?: number
}

// ------------------------------------------------------------ per-room state of users

/** A ban or a mute in force: until when, in ms since the epoch; without `until`, until it is lifted. */
export interface Restriction {
  until?: number
}

/** What a broker keeps for one user in one room. */
export interface UserState {
  /** The read marker: the seq the user has read up to (0 when none). */
  read: number
  /** Present while a ban is in force: the user's joins of the room are refused. */
  ban?: Restriction
  /** Present while a mute is in force: the user's appends to the room are refused. */
  mute?: Restriction
}

/** A user with a ban or mute in force in a room, as `moderation(room)` lists it. */
export interface ModerationEntry extends Omit<UserState, 'read'> {
  user: string
}

/**
 * One change of a user's state in a room (`Broker.changeUser`):
 * - `read`: the marker becomes max(current, min(seq, the room's latest seq));
 * - `ban`/`mute` (with `until`, ms since the epoch; without it, until lifted),
 *   `unban`/`unmute`: set or lift, replacing any earlier one;
 * - `kick`: stores nothing; every connection of the user leaves the room.
 */
export type UserChange =
  | { kind: 'read', seq: number }
  | { kind: 'ban' | 'mute', until?: number }
  | { kind: 'unban' | 'unmute' | 'kick' }

/**
 * A change of one user's state in a room as every node with members there
 * hears it (never sent on the wire as is; the hub turns it into `read` and
 * `left` frames and into what it enforces). For `read`, `change.seq` is the
 * marker's new value. A `ban` also removes the user from the room, as a kick.
 */
export interface UserEvent {
  type: 'user'
  room: string
  user: string
  change: UserChange
  /** The connection that asked for the change: it hears of it in its direct reply instead. */
  connection?: string
}

/** The event that tells the room's nodes of a change (for `read`, with the marker's new value). */
export function userEvent (room: string, user: string, change: UserChange, state: UserState, connection: string | undefined): UserEvent {
  const told = change.kind === 'read' ? { kind: 'read' as const, seq: state.read } : change
  return connection === undefined ? { type: 'user', room, user, change: told } : { type: 'user', room, user, change: told, connection }
}

/** The reason `left` gives a user a ban or kick removed (PROTOCOL.md). */
export function removalReason (change: UserChange): LeftReason | undefined {
  return change.kind === 'kick' ? 'kicked' : change.kind === 'ban' ? 'banned' : undefined
}

/** Whether `restriction` is in force at `now`. */
export function inForce (restriction: Restriction | undefined, now: number): restriction is Restriction {
  return restriction !== undefined && (restriction.until === undefined || restriction.until > now)
}

/** No state: what `userState` answers for a user nothing is kept for. */
export const NO_USER_STATE: Readonly<UserState> = Object.freeze({ read: 0 })

/** `state` without the restrictions that ended by `now`. */
export function currentUserState (state: UserState, now: number): UserState {
  const current: UserState = { read: state.read }
  if (inForce(state.ban, now)) current.ban = state.ban
  if (inForce(state.mute, now)) current.mute = state.mute
  return current
}

/**
 * What `change` makes of a user's `state` in a room whose latest seq is
 * `latestSeq`: the one rule every broker applies, atomically, in its own store.
 */
export function changedUserState (state: UserState, change: UserChange, latestSeq: number, now: number): { state: UserState, changed: boolean } {
  const before = currentUserState(state, now)
  const after: UserState = { ...before }
  switch (change.kind) {
    case 'read': {
      const read = Math.max(before.read, Math.min(change.seq, latestSeq))
      return { state: { ...after, read }, changed: read !== before.read }
    }
    case 'ban':
    case 'mute': {
      const restriction: Restriction = change.until === undefined ? {} : { until: change.until }
      after[change.kind] = restriction
      return { state: after, changed: before[change.kind]?.until !== restriction.until || before[change.kind] === undefined }
    }
    case 'unban':
    case 'unmute': {
      const kind = change.kind === 'unban' ? 'ban' : 'mute'
      delete after[kind]
      return { state: after, changed: before[kind] !== undefined }
    }
    case 'kick':
      return { state: before, changed: true }
  }
}

/**
 * Why a user's append is refused: a mute, or a ban (whose kick a node may
 * have missed while cut off from the store: the ban still keeps it from sending).
 */
export type AppendRefusal = 'banned' | 'muted'

/** The refusal of an append by a user with `restrictions` at `now`, if any. */
export function appendRefusal (restrictions: Omit<UserState, 'read'> | undefined, now: number): AppendRefusal | undefined {
  if (inForce(restrictions?.ban, now)) return 'banned'
  if (inForce(restrictions?.mute, now)) return 'muted'
  return undefined
}

/** The error a call refused for a ban or mute rejects with (an append; a join, `banned`). */
export function restrictionError (room: string, refusal: AppendRefusal): ChatError {
  return new ChatError('forbidden', refusal === 'banned' ? `banned from ${room}` : `muted in ${room}`)
}

// ------------------------------------------------------------ messages that change

/**
 * A change of a stored message (`Broker.update`), as the hub hands it to the
 * broker: it becomes an `update` entry with the room's next seq.
 */
export type UpdateDraft = {
  /** Who makes the change: a member, or the server's member for `hub.editMessage`/`deleteMessage`. */
  by: Member
  /** The seq of the message to change. */
  target: number
  cid?: string
  /** The server acting: it may edit or delete any user's message, whatever its restrictions. */
  asServer?: boolean
} & ({ action: 'edit', text: string } | { action: 'delete' } | { action: 'react' | 'unreact', reaction: string })

export interface UpdateResult {
  /** The entry's seq: the new update's, a `cid` retry's original's, or the room's latest when nothing changed. */
  seq: number
  /** The update stored and delivered; absent for a retry and for a reaction that changed nothing. */
  update?: Update
  /** True when `cid` was already stored: nothing new was stored or delivered. */
  duplicate: boolean
}

/** The bounds of a message's reactions, from the plugin's options (`BrokerNode.reactionLimits`). */
export interface ReactionLimits {
  /** Distinct reactions on one message (`maxReactionsPerMessage`). */
  maxReactions: number
  /** What `reactionBytes` may count for one message, so that it always fits one reply. */
  maxBytes: number
}

/** "r":[], around a reaction's name in JSON. */
export const REACTION_KEY_BYTES = 6
/** "u", around a user in a reaction's list. */
export const REACTION_USER_BYTES = 3

/**
 * What a message's reactions add to its JSON, counted the same way by every
 * store (UTF-8 bytes of each reaction and user, plus quotes, separators and
 * brackets): their JSON size when nothing needs escaping.
 */
export function reactionBytes (reactions: Record<string, string[]> | undefined): number {
  let bytes = 0
  for (const reaction in reactions) {
    bytes += Buffer.byteLength(reaction) + REACTION_KEY_BYTES
    for (const user of reactions[reaction] ?? []) bytes += Buffer.byteLength(user) + REACTION_USER_BYTES
  }
  return bytes
}

/** The messages of a page read (`read` without `after`): by the contract, all it holds. */
export function pageMessages (entries: Entry[]): Message[] {
  return entries.filter((entry): entry is Message => entry.type === 'message')
}

/** A change that cannot be made: the message is gone from the kept history, or was deleted. */
export function messageNotFound (room: string, seq: number): ChatError {
  return new ChatError('not_found', `no message ${seq} in ${room}: it was deleted or is no longer kept`)
}

/** Editing or deleting another user's message. */
export function notTheAuthor (room: string, seq: number): ChatError {
  return new ChatError('forbidden', `message ${seq} in ${room} is another user's: only its author may change it`)
}

/** A reaction past the message's bounds. */
export function tooManyReactions (room: string, seq: number, limits: ReactionLimits): ChatError {
  return new ChatError('too_many_reactions', `message ${seq} in ${room} holds its most reactions (${limits.maxReactions} distinct, ${limits.maxBytes} bytes of reactions and users)`)
}

/**
 * What `draft` makes of `message` (the stored entry with seq `draft.target`,
 * or undefined when none is kept): its new state, or `undefined` when a
 * reaction changes nothing. Throws the refusal as a `ChatError` (PROTOCOL.md).
 * The one rule every broker applies, in one atomic step with storing the
 * update; `restrictions` are the acting user's in the room at `ts`.
 */
export function changedMessage (room: string, message: Entry | undefined, draft: UpdateDraft, restrictions: Omit<UserState, 'read'> | undefined, limits: ReactionLimits, ts: number): Message | undefined {
  if (!draft.asServer) {
    const refusal = appendRefusal(restrictions, ts)
    if (refusal) throw restrictionError(room, refusal)
  }
  if (message === undefined || message.type !== 'message' || message.deleted === true) throw messageNotFound(room, draft.target)
  if ((draft.action === 'edit' || draft.action === 'delete') && !draft.asServer && message.from.user !== draft.by.user) throw notTheAuthor(room, draft.target)
  const changed = applyChange(message, { ...draft, user: draft.by.user, ts })
  if (changed !== undefined && draft.action === 'react' && (Object.keys(changed.reactions ?? {}).length > limits.maxReactions || reactionBytes(changed.reactions) > limits.maxBytes)) {
    throw tooManyReactions(room, draft.target, limits)
  }
  return changed
}

/** What `decide` answers, or the ChatError it throws (a refusal), answered rather than thrown. */
export function refusalOf<T> (decide: () => T): T | ChatError {
  try {
    return decide()
  } catch (error) {
    if (error instanceof ChatError) return error
    throw error
  }
}

/** The update entry for `draft`, once it has its seq. */
export function newUpdate (room: string, seq: number, draft: UpdateDraft, ts: number): Update {
  const update: Update = { type: 'update', room, seq, target: draft.target, action: draft.action, by: { id: draft.by.id, user: draft.by.user, name: draft.by.name }, ts }
  if (draft.action === 'edit') update.text = draft.text
  if (draft.action === 'react' || draft.action === 'unreact') update.reaction = draft.reaction
  if (draft.cid !== undefined) update.cid = draft.cid
  return update
}

/** What a broker delivers to a node for a room: wire events and user changes. */
export type BrokerEvent = RoomEvent | UserEvent

/** Events for every node, whatever its rooms: `hub.disconnectUser` closes the user's connections everywhere. */
export interface NodeSignal {
  type: 'disconnect-user'
  user: string
}

/** Minimal logger (pino and Fastify's logger fit). */
export interface BrokerLogger {
  info(obj: object, msg?: string): void
  warn(obj: object, msg?: string): void
  error(obj: object, msg?: string): void
}

/** Limits a presence `join` is checked against, atomically with the roster update. */
export interface PublishOptions {
  /** Refuse the join with `room_full` when the roster already holds this many others (0: no limit). */
  maxMembers?: number
}

/** Whether the user of a presence event had another connection in the room before a `join`, or has one left after a `leave`. */
export function withUserFlags (event: Presence, othersOfUser: number): Presence {
  if (event.action === 'join') return { ...event, first: othersOfUser === 0 }
  if (event.action === 'leave') return { ...event, last: othersOfUser === 0 }
  return event
}

/** What a node (its hub) gives the broker when it opens. */
export interface BrokerNode {
  /**
   * Receives every event of the rooms this node subscribed to, its own
   * included. Per room, messages arrive in seq order with no gap and no
   * duplicate while the node stays subscribed. Must not throw.
   */
  deliver(room: string, event: BrokerEvent): void
  /**
   * The broker cannot continue `room`'s stream here without a gap: its epoch
   * changed to `epoch` (the stream was lost and began again at seq 1; also
   * said when a stream first shows its epoch), or, without `epoch`, messages
   * were lost before they could be delivered. Must not throw.
   */
  outOfSync(room: string, epoch?: string): void
  /** Receives every `signal`, on every node, its own included. Must not throw. */
  signal(event: NodeSignal): void
  /** Entries (messages and updates) kept per room. */
  historySize: number
  /** The bounds of one message's reactions. */
  reactionLimits: ReactionLimits
  /** This node's current WebSocket connections, which `nodes()` lists with it. */
  connections(): number
  log: BrokerLogger
}

/**
 * The guarantees every broker keeps (the contract suite checks them):
 * - `append` gives a room's messages seq 1, 2, 3… with no gap across all nodes,
 *   stores, and publishes in one atomic step, so publish order is seq order;
 *   appends called one after another without waiting take their seqs in call
 *   order (a connection's overlapping sends keep their order); a `cid` already stored in the room (within the kept history, and for at
 *   least 10 minutes) is not stored again.
 * - `publish` of a presence event also updates the room's roster (`join` adds,
 *   `leave` removes, `rename` renames) before it is delivered; typing is only delivered.
 *   A `join` over `maxMembers` is refused with `ChatError('room_full')`, and one of a
 *   user banned from the room with `ChatError('forbidden')`; either changes
 *   nothing. A `leave` of a member not in the roster is not delivered. In the
 *   same atomic step the broker sets `first` on a `join` (the member's `user`
 *   had no other connection in the room, on any node) and `last` on a `leave`
 *   (it has none left), so two tabs leaving at once give one `last: true`;
 *   members a dead node leaves behind are removed the same way.
 * - An `append` whose `from.user` is muted or banned in the room is refused
 *   with `ChatError('forbidden')` (`restrictionError`) and stores nothing.
 * - `update` changes a stored message in one atomic step with storing and
 *   publishing the `update` entry (next seq, like an append; `cid` retries
 *   as for messages): `changedMessage` says what it does and what it refuses
 *   (`not_found`, `forbidden`, `too_many_reactions`). A reaction that changes
 *   nothing stores and delivers nothing. `read` shows the message's new state.
 * - `changeUser` changes one user's state in a room atomically (a read marker
 *   never passes the room's latest seq nor moves back); what it changed is
 *   delivered as a `user` event to every node subscribed to the room. What it
 *   stores is kept as long as the room's messages are (durable on a durable
 *   broker); a ban or mute ends by itself at its `until`.
 * - Every call settles in bounded time; when the backing store cannot confirm,
 *   it rejects with `ChatError('unavailable')` and never half-stores.
 */
export interface Broker {
  open(node: BrokerNode): Promise<void>
  /** This node has local members in `room` now: deliver its events here. */
  subscribe(room: string): Promise<void>
  /** This node has no local members in `room` any more. */
  unsubscribe(room: string): Promise<void>
  append(room: string, draft: MessageDraft): Promise<AppendResult>
  /** Changes a stored message: an edit, a delete or a reaction, stored as an `update` entry (see `changedMessage`). */
  update(room: string, draft: UpdateDraft): Promise<UpdateResult>
  publish(room: string, event: Presence | TypingEvent, options?: PublishOptions): Promise<void>
  read(room: string, range: ReadRange): Promise<ReadResult>
  /** Members of `room` on every node. */
  members(room: string): Promise<Member[]>
  /**
   * Rooms that have members, on every node, in code point order of their
   * names; `page` takes those after a name, at most so many. Never reads every
   * member of every room: a store keeps each room's count as its roster changes.
   */
  rooms(page?: RoomsPage): Promise<RoomInfo[]>
  /**
   * Changes `user`'s state in `room` in one atomic step (see `UserChange`)
   * and, when something changed, delivers a `user` event to every node
   * subscribed to the room (a `kick` always is). Resolves with the user's
   * state after it. `connection` is copied into the event.
   */
  changeUser(room: string, user: string, change: UserChange, connection?: string): Promise<{ state: UserState, changed: boolean }>
  /** What is kept for `user` in `room`: its read marker, and the ban and mute in force. */
  userState(room: string, user: string): Promise<UserState>
  /** The users with a ban or mute in force in `room`. */
  moderation(room: string): Promise<ModerationEntry[]>
  /** Delivers `event` to every node sharing the broker (`BrokerNode.signal`), this one included. */
  signal(event: NodeSignal): Promise<void>
  /**
   * The live nodes sharing this broker, this one included. It reads the
   * store, so it also tells whether the store answers (readiness asks it).
   */
  nodes(): Promise<NodeInfo[]>
  close(): Promise<void>
}

/** Every method of `Broker`: what the options check a broker has, and what the metrics time (one label value each). */
export const BROKER_METHODS = ['open', 'subscribe', 'unsubscribe', 'append', 'update', 'publish', 'read', 'members', 'rooms', 'changeUser', 'userState', 'moderation', 'signal', 'nodes', 'close'] as const satisfies ReadonlyArray<keyof Broker>

/** One of the broker's methods, by name. */
export type BrokerOperation = (typeof BROKER_METHODS)[number]

/** Messages with a `cid` are recognised as retries for at least this long (PROTOCOL.md). */
export const CID_RETENTION_MS = 10 * 60 * 1000

/**
 * A room without members is forgotten this long after its last change, by
 * default: long enough that a room left overnight keeps its history, short
 * enough that rooms nobody comes back to do not pile up.
 */
export const DEFAULT_IDLE_ROOM_TTL_MS = 24 * 60 * 60 * 1000

/**
 * Defaults of the brokers that talk to a server (Redis, PostgreSQL), shared so
 * that they behave alike during an outage.
 */
/** A call the server has not answered after this many ms fails with `unavailable`: well above a healthy round trip, well below a client's patience. */
export const DEFAULT_COMMAND_TIMEOUT_MS = 2000
/** Short enough that a crashed node's members vanish within seconds, long enough to ride out a GC pause. */
export const DEFAULT_LEASE_MS = 15_000
/** Reconnect attempt n waits n times this: the first retries come quickly, for a server that only blinked. */
export const RECONNECT_STEP_MS = 100
/** Reconnect attempts back off to this: a returning server is found within two seconds. */
const MAX_RECONNECT_DELAY_MS = 2000

/** How long reconnect attempt `attempt` (1, 2, …) waits. */
export function reconnectDelay (attempt: number): number {
  return Math.min(attempt * RECONNECT_STEP_MS, MAX_RECONNECT_DELAY_MS)
}

/**
 * Message ids for one broker: a random prefix (96 bits, so brokers never share
 * one) and a counter. Unique like a UUID, without a call into crypto per message.
 */
export function messageIds (): () => string {
  const prefix = randomBytes(12).toString('base64url')
  let count = 0
  return () => `${prefix}.${(++count).toString(36)}`
}

/** The epoch `read` answers for a room that was never used; a join creates the room, and its real epoch, first. */
export const NO_STREAM_YET = ''

/** The message a broker stores for `draft`, once it has its seq. */
export function newMessage (room: string, seq: number, id: string, draft: MessageDraft, ts: number): Message {
  const message: Message = { type: 'message', room, seq, id, from: { id: draft.from.id, user: draft.from.user, name: draft.from.name }, text: draft.text, ts }
  if (draft.cid !== undefined) message.cid = draft.cid
  return message
}

/**
 * An entry's JSON in two halves around its seq, for a store that takes the
 * seq and splices it in, in one atomic step (Redis, PostgreSQL). `entry` is
 * made with seq 0 by `newMessage` or `newUpdate`.
 */
export function jsonAroundSeq (entry: Entry): { head: string, tail: string } {
  const head = `{"type":"${entry.type}","room":${JSON.stringify(entry.room)},"seq":`
  // `newMessage` and `newUpdate` put seq third, so the JSON with seq 0 is exactly head, '0', tail.
  return { head, tail: JSON.stringify(entry).slice(head.length + 1) }
}

/** The message `draft` makes, in two halves around its seq (`jsonAroundSeq`). */
export function messageJsonAroundSeq (room: string, id: string, draft: MessageDraft, ts: number): { head: string, tail: string } {
  return jsonAroundSeq(newMessage(room, 0, id, draft, ts))
}

/**
 * A stored message as protocol 2 shows it: one stored before members had a
 * `user` (protocol 1) gets its sender's connection id, which was its user then.
 */
export function storedMessage (message: Message): Message {
  if (message.from.user === undefined) message.from = { id: message.from.id, user: message.from.id, name: message.from.name }
  return message
}

/** A stored entry as protocol 2 shows it: a message per `storedMessage`; an update needs nothing. */
export function storedEntry (entry: Entry): Entry {
  return entry.type === 'message' ? storedMessage(entry) : entry
}

/** The answer to a retry whose original was trimmed from the history: its seq and time are all that is left. */
export function retryOfTrimmed (room: string, draft: MessageDraft, seq: number, ts: number): AppendResult {
  return { message: newMessage(room, seq, '', draft, ts), duplicate: true }
}
