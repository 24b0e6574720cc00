/**
 * The default broker: one process, rooms in memory. "Every node" is this one,
 * so delivery is a direct call, in the same order as append.
 */
import { randomUUID } from 'node:crypto'
import { ChatError } from '../errors.js'
import type { AppendResult, Broker, BrokerNode, MessageDraft, ModerationEntry, NodeInfo, NodeSignal, PublishOptions, ReadRange, ReadResult, RoomInfo, RoomsPage, UpdateDraft, UpdateResult, UserChange, UserState } from '../broker.js'
import { CID_RETENTION_MS, DEFAULT_IDLE_ROOM_TTL_MS, NO_STREAM_YET, NO_USER_STATE, appendRefusal, changedMessage, changedUserState, currentUserState, inForce, messageIds, messageNotFound, newMessage, newUpdate, restrictionError, retryOfTrimmed, roomsPage, userEvent } from '../broker.js'
import { HistoryRing, messageBytes } from '../history.js'
import type { Entry, Member, Message, Presence, TypingEvent } from '../protocol.js'
import { InProcessNode } from './in-process.js'

export interface MemoryBrokerOptions {
  /**
   * A room with no members and no message for this long is forgotten (its
   * history and seq; a later join starts a new epoch). Bounds the memory that
   * rooms nobody uses can hold. Default one day.
   */
  idleRoomTtl?: number
  /**
   * At most this many rooms are kept; making one more forgets the room without
   * members and without messages that was active longest ago. Bounds what
   * clients creating rooms can make the process hold, whatever the TTL. A room
   * that holds messages is never forgotten to make room for another: when every
   * room holds members or messages, making a new one is refused with
   * `unavailable`. Default 100000.
   */
  maxRooms?: number
  /**
   * Stored messages take at most this many bytes (as `messageBytes` counts
   * them: 2 a UTF-16 unit plus 256 a message). A message that would go past
   * it first drops the oldest messages of the least recently active rooms,
   * but never a room's newest one; when that cannot free enough, it is
   * refused with `unavailable`. Default 64 MiB.
   */
  maxBytes?: number
}

/** How often idle rooms are looked for: often enough to bound memory, rare enough to cost nothing. */
const SWEEP_INTERVAL_MS = 60_000
/**
 * Rooms kept by default: far more than one process serves with members at
 * once, yet a bound on the rooms (each with its history) that clients naming
 * new rooms can make it hold.
 */
const DEFAULT_MAX_ROOMS = 100_000
/**
 * Message memory by default: a small share of a server's memory, yet about
 * 8,000 messages of 2000 emoji, or 100,000 of 300 ASCII characters.
 */
const DEFAULT_MAX_BYTES = 64 * 1024 * 1024

interface RoomState {
  readonly epoch: string
  seq: number
  readonly history: HistoryRing
  /** cid → when and as which seq it was stored; made with the first cid, since an empty Map costs more than the rest of a room. */
  cids: Map<string, { seq: number, ts: number }> | undefined
  /** user → read marker, ban and mute; made with the first, like `cids`. */
  users: Map<string, UserState> | undefined
  lastActive: number
}

export class MemoryBroker implements Broker {
  private readonly local = new InProcessNode('MemoryBroker')
  /** Every room, least recently active first. */
  private readonly rooms_ = new Map<string, RoomState>()
  /** The rooms without messages, least recently active first: those `maxRooms` may forget. */
  private readonly emptyRooms = new Set<string>()
  /** The rooms with more than one message, least recently active first: those whose old history `maxBytes` may drop. */
  private readonly trimmableRooms = new Set<string>()
  /** What every room's kept messages cost, per `messageBytes`. */
  private storedBytes = 0
  /** What the newest message of every room costs: the part of `storedBytes` that is never dropped. */
  private newestBytes = 0
  private readonly idleRoomTtl: number
  private readonly maxRooms: number
  private readonly maxBytes: number
  private sweeper: NodeJS.Timeout | undefined
  private readonly nextId = messageIds()

  constructor (options: MemoryBrokerOptions = {}) {
    this.idleRoomTtl = options.idleRoomTtl ?? DEFAULT_IDLE_ROOM_TTL_MS
    this.maxRooms = options.maxRooms ?? DEFAULT_MAX_ROOMS
    this.maxBytes = options.maxBytes ?? DEFAULT_MAX_BYTES
  }

  async open (node: BrokerNode): Promise<void> {
    this.local.open(node)
    this.sweeper = setInterval(() => this.sweep(Date.now()), Math.min(SWEEP_INTERVAL_MS, this.idleRoomTtl))
    this.sweeper.unref()
  }

  async subscribe (room: string): Promise<void> {
    this.local.subscribe(room)
  }

  async unsubscribe (room: string): Promise<void> {
    this.local.unsubscribe(room)
  }

  async append (room: string, draft: MessageDraft): Promise<AppendResult> {
    this.local.opened()
    const now = Date.now()
    const state = this.touch(room, now)
    const refusal = appendRefusal(state.users?.get(draft.from.user), now)
    if (refusal) throw restrictionError(room, refusal)
    const retried = this.retried(state, draft.cid)
    if (retried?.entry?.type === 'message') return { message: retried.entry, duplicate: true }
    if (retried) return retryOfTrimmed(room, draft, retried.seq, retried.ts)
    const message = newMessage(room, state.seq + 1, this.nextId(), draft, now)
    this.makeSpace(room, state, state.history.capacity === 0 ? 0 : messageBytes(message))
    this.store(room, state, message, draft.cid, now)
    return { message, duplicate: false }
  }

  async update (room: string, draft: UpdateDraft): Promise<UpdateResult> {
    const node = this.local.opened()
    const now = Date.now()
    const state = this.rooms_.get(room)
    if (!state) throw messageNotFound(room, draft.target)
    this.touch(room, now)
    const retried = this.retried(state, draft.cid)
    if (retried) return { seq: retried.seq, duplicate: true }
    const target = state.history.get(draft.target)
    const changed = changedMessage(room, target, draft, state.users?.get(draft.by.user), node.reactionLimits, now)
    if (changed === undefined || target === undefined) return { seq: state.seq, duplicate: false }
    const update = newUpdate(room, state.seq + 1, draft, now)
    this.makeSpace(room, state, messageBytes(update) + messageBytes(changed) - messageBytes(target))
    // Making space may have dropped the target itself, as one of the room's oldest entries: then nothing is stored.
    if (state.history.get(draft.target) === undefined) throw messageNotFound(room, draft.target)
    this.store(room, state, update, draft.cid, now, changed)
    return { seq: update.seq, update, duplicate: false }
  }

  /** The entry a `cid` already stored in the room names (undefined `entry`: trimmed since), if any. */
  private retried (state: RoomState, cid: string | undefined): { seq: number, ts: number, entry: Entry | undefined } | undefined {
    const seen = cid === undefined ? undefined : state.cids?.get(cid)
    return seen && { ...seen, entry: state.history.get(seen.seq) }
  }

  /**
   * Stores `entry` as the room's next, with `changed` (the new state of the
   * message an update changes) in its place, and delivers it. `makeSpace`
   * has made room for both.
   */
  private store (room: string, state: RoomState, entry: Entry, cid: string | undefined, now: number, changed?: Message): void {
    state.seq = entry.seq
    this.emptyRooms.delete(room)
    if (cid !== undefined) (state.cids ??= new Map()).set(cid, { seq: entry.seq, ts: now })
    this.newestBytes -= state.history.newestBytes
    if (changed) this.storedBytes += state.history.replace(changed)
    this.storedBytes += state.history.push(entry)
    this.newestBytes += state.history.newestBytes
    if (state.history.length > 1) this.trimmableRooms.add(room)
    this.local.deliver(room, entry)
  }

  async publish (room: string, event: Presence | TypingEvent, options: PublishOptions = {}): Promise<void> {
    this.local.opened()
    if (event.type === 'typing') return this.local.deliver(room, event)
    const now = Date.now()
    // A leave never makes a room: one whose roster holds the member exists.
    const state = event.action !== 'leave' || this.rooms_.has(room) ? this.touch(room, now) : undefined
    if (event.action === 'join' && inForce(state?.users?.get(event.member.user)?.ban, now)) throw restrictionError(room, 'banned')
    const told = this.local.updateRoster(room, event, options)
    if (told) this.local.deliver(room, told)
  }

  async changeUser (room: string, user: string, change: UserChange, connection?: string): Promise<{ state: UserState, changed: boolean }> {
    this.local.opened()
    const now = Date.now()
    // A read marker needs a room with messages; a ban or mute is kept for a room nobody used yet.
    const state = change.kind === 'read' || change.kind === 'kick' ? this.rooms_.get(room) : this.touch(room, now)
    const result = changedUserState(state?.users?.get(user) ?? NO_USER_STATE, change, state?.seq ?? 0, now)
    if (state && result.changed && change.kind !== 'kick') (state.users ??= new Map()).set(user, result.state)
    if (result.changed) this.local.deliver(room, userEvent(room, user, change, result.state, connection))
    return result
  }

  async userState (room: string, user: string): Promise<UserState> {
    return currentUserState(this.rooms_.get(room)?.users?.get(user) ?? NO_USER_STATE, Date.now())
  }

  async moderation (room: string): Promise<ModerationEntry[]> {
    const now = Date.now()
    const listed: ModerationEntry[] = []
    for (const [user, kept] of this.rooms_.get(room)?.users ?? []) {
      const { ban, mute } = currentUserState(kept, now)
      if (ban || mute) listed.push({ user, ...(ban ? { ban } : {}), ...(mute ? { mute } : {}) })
    }
    return listed
  }

  async signal (event: NodeSignal): Promise<void> {
    this.local.signal(event)
  }

  async read (room: string, range: ReadRange): Promise<ReadResult> {
    // Reading a room nobody used does not create it, so reads of random names hold no memory.
    const state = this.rooms_.get(room)
    if (!state) return { epoch: NO_STREAM_YET, seq: 0, messages: [], more: false }
    return { epoch: state.epoch, seq: state.seq, ...state.history.read(range) }
  }

  async members (room: string): Promise<Member[]> {
    return this.local.members(room)
  }

  async rooms (page?: RoomsPage): Promise<RoomInfo[]> {
    return roomsPage(this.local.occupied().map(({ room, members }) => ({ room, members, seq: this.rooms_.get(room)?.seq ?? 0 })), page)
  }

  async nodes (): Promise<NodeInfo[]> {
    return [this.local.self()]
  }

  async close (): Promise<void> {
    clearInterval(this.sweeper)
    this.local.close()
  }

  /**
   * The room, made if needed, marked active now. Rooms are kept in the order
   * they were last active, so the first empty room without members is the one
   * to forget when there are too many.
   */
  private touch (room: string, now: number): RoomState {
    let state = this.rooms_.get(room)
    if (state) {
      this.rooms_.delete(room)
    } else {
      if (this.rooms_.size >= this.maxRooms && !this.forgetLeastActiveEmpty()) {
        throw new ChatError('unavailable', `the server holds its most rooms (${this.maxRooms}), each with members or messages: ${room} cannot be made now`)
      }
      state = {
        epoch: randomUUID(),
        seq: 0,
        history: new HistoryRing(this.local.opened().historySize),
        cids: undefined,
        users: undefined,
        lastActive: now,
      }
    }
    state.lastActive = now
    this.rooms_.set(room, state)
    for (const order of [this.emptyRooms, this.trimmableRooms]) {
      if (order.delete(room)) order.add(room)
    }
    if (state.seq === 0) this.emptyRooms.add(room)
    return state
  }

  /**
   * Frees what a message of `needed` bytes for `room` (just touched, so the
   * most recently active) takes beyond `maxBytes`: the oldest messages of the
   * least recently active rooms first, each keeping its newest, then this
   * room's own, whose new message becomes its newest. Throws `unavailable`,
   * dropping nothing, when that cannot free enough.
   */
  private makeSpace (room: string, state: RoomState, needed: number): void {
    const over = (): number => this.storedBytes + needed - this.maxBytes
    if (over() <= 0) return
    const droppable = this.storedBytes - this.newestBytes + state.history.newestBytes
    if (over() > droppable) {
      throw new ChatError('unavailable', `the server holds its most message memory (${this.maxBytes} bytes), each room down to its newest message: ${room} cannot take a new one now`)
    }
    for (const other of this.trimmableRooms) {
      const history = (this.rooms_.get(other) as RoomState).history
      while (history.length > 1 && over() > 0) this.storedBytes -= history.dropOldest()
      if (history.length <= 1) this.trimmableRooms.delete(other)
      if (over() <= 0) return
    }
    this.newestBytes -= state.history.newestBytes
    while (over() > 0 && state.history.length > 0) this.storedBytes -= state.history.dropOldest()
    this.newestBytes += state.history.newestBytes
  }

  /** Forgets the least recently active room without members or messages; false when there is none. */
  private forgetLeastActiveEmpty (): boolean {
    for (const room of this.emptyRooms) {
      if (this.local.memberCount(room) === 0) {
        this.forget(room)
        return true
      }
    }
    return false
  }

  private forget (room: string): void {
    const state = this.rooms_.get(room)
    if (!state) return
    this.storedBytes -= state.history.bytes
    this.newestBytes -= state.history.newestBytes
    this.rooms_.delete(room)
    this.emptyRooms.delete(room)
    this.trimmableRooms.delete(room)
  }

  private sweep (now: number): void {
    for (const [room, state] of this.rooms_) {
      if (this.local.memberCount(room) === 0 && now - state.lastActive > this.idleRoomTtl) {
        this.forget(room)
        continue
      }
      for (const [cid, seen] of state.cids ?? []) {
        if (now - seen.ts > CID_RETENTION_MS && state.history.get(seen.seq) === undefined) state.cids?.delete(cid)
      }
      for (const [user, kept] of state.users ?? []) {
        const current = currentUserState(kept, now)
        if (current.read === 0 && !current.ban && !current.mute) state.users?.delete(user)
      }
    }
  }
}
