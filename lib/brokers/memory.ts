/**
 * The default broker: one process, rooms in memory. "Every node" is this one,
 * so delivery is a direct call, in the same order as append.
 */
import { randomUUID } from 'node:crypto'
import { ChatError } from '../errors.js'
import type { AppendResult, Broker, BrokerNode, MessageDraft, NodeInfo, PublishOptions, ReadRange, ReadResult, RoomInfo } from '../broker.js'
import { CID_RETENTION_MS, DEFAULT_IDLE_ROOM_TTL_MS, NO_STREAM_YET, messageIds, newMessage, retryOfTrimmed } from '../broker.js'
import { HistoryRing } from '../history.js'
import type { Member, Presence, TypingEvent } from '../protocol.js'
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
}

/** How often idle rooms are looked for: often enough to bound memory, rare enough to cost nothing. */
const SWEEP_INTERVAL_MS = 60_000
/**
 * Rooms kept by default: far more than one process serves with members at
 * once, yet a bound on the rooms (each with its history) that clients naming
 * new rooms can make it hold.
 */
const DEFAULT_MAX_ROOMS = 100_000

interface RoomState {
  readonly epoch: string
  seq: number
  readonly history: HistoryRing
  /** cid → when and as which seq it was stored. */
  readonly cids: Map<string, { seq: number, ts: number }>
  lastActive: number
}

export class MemoryBroker implements Broker {
  private readonly local = new InProcessNode('MemoryBroker')
  /** Every room, least recently active first. */
  private readonly rooms_ = new Map<string, RoomState>()
  /** The rooms without messages, least recently active first: those `maxRooms` may forget. */
  private readonly emptyRooms = new Set<string>()
  private readonly idleRoomTtl: number
  private readonly maxRooms: number
  private sweeper: NodeJS.Timeout | undefined
  private readonly nextId = messageIds()

  constructor (options: MemoryBrokerOptions = {}) {
    this.idleRoomTtl = options.idleRoomTtl ?? DEFAULT_IDLE_ROOM_TTL_MS
    this.maxRooms = options.maxRooms ?? DEFAULT_MAX_ROOMS
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
    if (draft.cid !== undefined) {
      const seen = state.cids.get(draft.cid)
      const original = seen && state.history.get(seen.seq)
      if (original) return { message: original, duplicate: true }
      if (seen) return retryOfTrimmed(room, draft, seen.seq, seen.ts)
    }
    const message = newMessage(room, ++state.seq, this.nextId(), draft, now)
    this.emptyRooms.delete(room)
    if (draft.cid !== undefined) state.cids.set(draft.cid, { seq: message.seq, ts: now })
    state.history.push(message)
    this.local.deliver(room, message)
    return { message, duplicate: false }
  }

  async publish (room: string, event: Presence | TypingEvent, options: PublishOptions = {}): Promise<void> {
    this.local.opened()
    if (event.type === 'presence') {
      // A leave never makes a room: one whose roster holds the member exists.
      if (event.action !== 'leave' || this.rooms_.has(room)) this.touch(room, Date.now())
      if (!this.local.updateRoster(room, event, options)) return
    }
    this.local.deliver(room, event)
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

  async rooms (): Promise<RoomInfo[]> {
    return this.local.occupied().map(({ room, members }) => ({ room, members, seq: this.rooms_.get(room)?.seq ?? 0 }))
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
        cids: new Map(),
        lastActive: now,
      }
    }
    state.lastActive = now
    this.rooms_.set(room, state)
    if (state.seq === 0) {
      this.emptyRooms.delete(room)
      this.emptyRooms.add(room)
    }
    return state
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
    this.rooms_.delete(room)
    this.emptyRooms.delete(room)
  }

  private sweep (now: number): void {
    for (const [room, state] of this.rooms_) {
      if (this.local.memberCount(room) === 0 && now - state.lastActive > this.idleRoomTtl) {
        this.forget(room)
        continue
      }
      for (const [cid, seen] of state.cids) {
        if (now - seen.ts > CID_RETENTION_MS && state.history.get(seen.seq) === undefined) state.cids.delete(cid)
      }
    }
  }
}
