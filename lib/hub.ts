/**
 * The hub: rooms, local members, presence and fan-out. It knows no sockets:
 * a member is anything with an id, a name, `deliver(frame)` and `close(code)`.
 * Everything that is stored or crosses nodes goes through the broker; events
 * come back through `deliver` and are encoded once for all local members.
 */
import { EventEmitter } from 'node:events'
import { NO_STREAM_YET, pageMessages, removalReason, type Broker, type UpdateDraft, type NodeSignal, type BrokerLogger, type NodeInfo, type RoomInfo, type RoomsPage, type UserEvent } from './broker.js'
import { NO_METRICS, type ChatMetrics } from './chat-metrics.js'
import { ChatError, CloseCodes } from './errors.js'
import { LeaveEchoes } from './leave-echoes.js'
import { Replies, type Joined } from './replies.js'
import { RoomUsers } from './room-users.js'
import { checkRoom, checkSeq, checkText } from './server-arguments.js'
import { encodeFrame, isEntry, assertWellFormed, DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT, type ClientMessageOf, type Member, type Message, type Presence, type RoomEvent, type ServerFrameOf, type Update } from './protocol.js'
import type { HookMember, PendingMessage, ResolvedOptions } from './options.js'
import { TokenBucket } from './rate-limit.js'

/** What the hub needs of a connection. */
export interface MemberLink {
  readonly id: string
  /** The person this connection is one tab or device of. */
  readonly user: string
  name: string
  /** Named by `authenticate`: only `onRename` may let it change its name. */
  readonly authenticated: boolean
  /** What `authenticate` returned as `data`: shown to the hooks, never on the wire nor to the broker. */
  readonly data?: unknown
  /** Queues an encoded frame; never throws (a slow or closed link drops it and says so in stats). */
  deliver(frame: Buffer): void
  close(code: number, reason: string): void
}

/**
 * Bounds the events held for one member while its join is served (a few broker
 * round trips: milliseconds, or seconds when the broker stalls). Held events are
 * shared with every member, so each costs a reference; the bound stops a stalled
 * join in a busy room from holding without end. 1000 typical events (a few hundred
 * bytes each) are flushed after `joined` well within the default `maxBufferedBytes`;
 * a joiner further behind than that before it has even joined is closed as a slow
 * consumer (4008) and resumes. Not `historySize`, which may be 0 (store nothing).
 */
export const MAX_EVENTS_HELD_WHILE_JOINING = 1000

/**
 * How fast one connection may open rooms that have no members on this node
 * (which may make the broker create them): one every 5 s once its burst of
 * `maxRoomsPerConnection` is spent. The burst lets a page join all its rooms
 * at once; a person opens a new room far less often than every 5 s. 300
 * connections joining and leaving fresh names then make 3,600 rooms a minute
 * (after a first 6,000), not 156,000.
 */
export const ROOM_OPENINGS_PER_SECOND = 0.2

/** The reason of a 4010 close: the member's stream cannot go on without a gap. */
export const OUT_OF_SYNC_REASON = 'out of sync: resume with since'

/**
 * The close of `hub.disconnectUser` (and by default of `hub.disconnect`): 1000,
 * which tells the client library not to reconnect (PROTOCOL.md), since the
 * server means to end the session.
 */
export const DISCONNECT_USER_CLOSE = { code: CloseCodes.normal, reason: 'disconnected by the server' } as const

/** The sender of `hub.broadcast` when none is given. */
export const SERVER_MEMBER: Member = Object.freeze({ id: 'server', user: 'server', name: 'server' })

/** The member object of a link, as frames show it. */
function memberOf (link: MemberLink): Member {
  return { id: link.id, user: link.user, name: link.name }
}

/** The member object of a link as the hooks see it: with its `data`. */
function hookMember (link: MemberLink): HookMember {
  return link.data === undefined ? memberOf(link) : { ...memberOf(link), data: link.data }
}

export interface HubStats {
  connections: number
  /** Rooms with members on this node. */
  rooms: number
  messagesIn: number
  messagesOut: number
  /** Frames not delivered because the connection was closing or too slow. */
  dropped: number
  slowConsumerCloses: number
}

export interface HubEvents {
  /** A message was stored through this node (by a member here, or `broadcast`). */
  message: [message: Message]
  /** A message was changed through this node (by a member here, or `editMessage`/`deleteMessage`). */
  update: [update: Update]
  /** A member on this node joined a room; `first`: its user had no other connection there, on any node. */
  join: [event: { room: string, member: Member, first: boolean }]
  /**
   * A member on this node left a room (or disconnected, or was removed by
   * moderation); `last`: its user has no connection left there, on any node
   * (absent when the broker did not confirm the leave).
   */
  leave: [event: { room: string, member: Member, last?: boolean }]
}

type HubOptions = Pick<ResolvedOptions, 'reactionLimits' |
  'maxRoomsPerConnection' | 'maxMembersPerRoom' | 'maxMembersInReply' | 'historyOnJoin' | 'historySize' | 'onJoin' | 'onMessage' | 'onRename' | 'roomPattern' | 'maxTextLength' | 'maxBufferedBytes'>

/** Where a member is in a room's stream: the epoch its `joined` carried and the newest seq it was given. */
interface StreamPosition {
  epoch: string
  seq: number
}

interface RoomMember {
  readonly link: MemberLink
  /** Events that arrived while the join was being served; flushed after `joined`. */
  pending: Held[] | undefined
  /**
   * Set by its `joined`; an entry at or below `seq` is never delivered to it
   * (it was in `joined` or came before it), whichever broker delivers it late.
   */
  position: StreamPosition
  /** Whether others were told of this member (so a leave must be told too). */
  announced: boolean
}

/** What a joining member may be held: the room's events, and the markers its user's other connections moved. */
type Held = RoomEvent | ServerFrameOf<'read'>

interface LocalRoom {
  readonly members: Map<string, RoomMember>
  /** Leaves published and not yet heard back: the room stays subscribed meanwhile. */
  readonly departing: LeaveEchoes
  readonly users: RoomUsers<RoomMember>
  /** The room's epoch as the broker last reported it (`outOfSync`); undefined until it does. */
  epoch: string | undefined
  /** Settles when the broker delivers this room's events here. */
  readonly subscribed: Promise<void>
}

type JoinRequest = ClientMessageOf<'join'>
/** A member's change of a stored message. */
type ChangeRequest = ClientMessageOf<'edit' | 'delete' | 'react'>

interface LinkEntry {
  readonly link: MemberLink
  readonly rooms: Set<string>
  /** Rooms it may still open (join while nobody on this node is in them). */
  readonly openings: TokenBucket
}

export class Hub extends EventEmitter<HubEvents> {
  private readonly links = new Map<string, LinkEntry>()
  private readonly rooms_ = new Map<string, LocalRoom>()
  /** Leaves being told for closed connections; shutdown waits for them. */
  private readonly departures = new Set<Promise<void>>()
  private readonly counters = { messagesIn: 0, messagesOut: 0, dropped: 0, slowConsumerCloses: 0 }

  /** What a member's replies hold, bounded so that a reply never makes its own reader a slow consumer (4008 on every resume). */
  private readonly replies: Replies

  constructor (
    private readonly broker: Broker,
    private readonly options: HubOptions,
    private readonly log: BrokerLogger,
    /** What connections and joins report for the `metrics` option; nothing by default. */
    readonly metrics: ChatMetrics = NO_METRICS,
  ) {
    super({ captureRejections: true })
    this.replies = new Replies(broker, options)
  }

  /** Opens the broker; events it delivers fan out to local members. */
  async open (): Promise<void> {
    await this.broker.open({
      deliver: (room, event) => { if (event.type === 'user') this.userEvent(room, event); else this.fanOut(room, event) },
      signal: (event) => this.signal(event),
      outOfSync: (room, epoch) => this.outOfSync(room, epoch),
      historySize: this.options.historySize,
      reactionLimits: this.options.reactionLimits,
      connections: () => this.links.size,
      log: this.log,
    })
  }

  /** Closes the broker once the leaves of closed connections are told. */
  async close (): Promise<void> {
    await Promise.allSettled(this.departures)
    await this.broker.close()
  }

  /** Counters a connection updates; kept here so `stats()` has one source. */
  get count (): { messagesIn: number, messagesOut: number, dropped: number, slowConsumerCloses: number } {
    return this.counters
  }

  // ------------------------------------------------------------ connections

  attach (link: MemberLink): void {
    const openings = new TokenBucket(ROOM_OPENINGS_PER_SECOND, this.options.maxRoomsPerConnection, Date.now())
    this.links.set(link.id, { link, rooms: new Set(), openings })
  }

  /** Removes a closed link from every room it is in; others are told it left. */
  async detach (link: MemberLink): Promise<void> {
    const entry = this.links.get(link.id)
    if (!entry || entry.link !== link) return
    this.links.delete(link.id)
    await this.track(Promise.all([...entry.rooms].map((room) => this.removeMember(link, room))).then(() => {}))
  }

  isMember (link: MemberLink, room: string): boolean {
    return this.links.get(link.id)?.rooms.has(room) ?? false
  }

  // ------------------------------------------------------------ member actions

  /**
   * Serves a `join`: the member is subscribed before the snapshot is read and
   * events arriving meanwhile are held, then `joined` is delivered followed by
   * those held events not already in it: no gap, no duplicate.
   */
  async join (link: MemberLink, request: JoinRequest): Promise<void> {
    const { room } = request
    const entry = this.linkEntry(link)
    if (entry.rooms.has(room)) {
      const { frame, snapshot } = await this.joinedReply(request, link.user)
      link.deliver(frame)
      // What this snapshot reaches is in this `joined` or came before it: a late copy is not delivered.
      const roomMember = this.rooms_.get(room)?.members.get(link.id)
      if (roomMember && !roomMember.pending && roomMember.position.epoch === snapshot.epoch) {
        roomMember.position.seq = Math.max(roomMember.position.seq, snapshot.seq)
      }
      return
    }
    if (entry.rooms.size >= this.options.maxRoomsPerConnection) {
      throw new ChatError('too_many_rooms', `a connection may be in at most ${this.options.maxRoomsPerConnection} rooms`)
    }
    if (!this.rooms_.has(room) && !entry.openings.take(Date.now())) {
      throw new ChatError('too_many_rooms', `opening rooms too fast: ${this.options.maxRoomsPerConnection} at once, then one every ${1 / ROOM_OPENINGS_PER_SECOND} s`)
    }
    if (this.options.onJoin && (await this.options.onJoin(room, hookMember(link))) === false) {
      throw new ChatError('forbidden', `joining ${room} was refused`)
    }
    if (!this.links.has(link.id) || entry.rooms.has(room)) return this.join(link, request)

    entry.rooms.add(room)
    const local = this.localRoom(room)
    const roomMember: RoomMember = { link, pending: [], position: { epoch: NO_STREAM_YET, seq: 0 }, announced: false }
    local.members.set(link.id, roomMember)
    local.users.add(roomMember)
    const stillJoining = (): boolean => local.members.get(link.id) === roomMember
    try {
      await local.subscribed
      if (!stillJoining()) return
      roomMember.announced = true
      await this.broker.publish(room, { type: 'presence', room, action: 'join', member: memberOf(link) }, { maxMembers: this.options.maxMembersPerRoom })
      const { frame, snapshot, state } = await this.joinedReply(request, link.user)
      local.users.read(link.user, state.mute)
      if (!stillJoining()) return
      if (local.epoch !== undefined && local.epoch !== snapshot.epoch) {
        // The stream this snapshot belongs to is not the one being delivered here.
        link.close(CloseCodes.outOfSync, OUT_OF_SYNC_REASON)
        return
      }
      link.deliver(frame)
      const held = roomMember.pending ?? []
      roomMember.pending = undefined
      roomMember.position = { epoch: snapshot.epoch, seq: snapshot.seq }
      for (const event of held) {
        // A marker `joined` already shows is not told again.
        if (event.type !== 'read' || event.seq > state.read) this.forward(roomMember, event, () => encodeFrame(event))
      }
    } catch (error) {
      // A refused join (a full room, a banned user) changed no roster: there is no leave to tell.
      if (error instanceof ChatError && (error.code === 'room_full' || error.code === 'forbidden')) roomMember.announced = false
      if (stillJoining()) {
        entry.rooms.delete(room)
        await this.removeMember(link, room)
      }
      throw error
    }
  }

  async leave (link: MemberLink, room: string): Promise<void> {
    const entry = this.memberEntry(link, room)
    entry.rooms.delete(room)
    await this.removeMember(link, room)
  }

  /** Stores and delivers a member's message; resolves with what was stored (or the original of a retried `cid`). */
  async send (link: MemberLink, request: ClientMessageOf<'send'>): Promise<Message> {
    return await (await this.acceptSend(link, request)).stored
  }

  /**
   * The first half of `send`: its checks and the `onMessage` hook, then the
   * message handed to the broker. Resolves once handed over, with `stored`,
   * which settles once the broker stored it (or refused it). A connection may
   * hand over its next message meanwhile: the broker stores a room's messages
   * in the order they were handed over, and a durable broker commits those
   * that overlap together.
   */
  async acceptSend (link: MemberLink, request: ClientMessageOf<'send'>): Promise<{ stored: Promise<Message> }> {
    const { room } = request
    this.memberEntry(link, room)
    const text = await this.vetted(link, { room, text: request.text })
    const member = memberOf(link)
    const draft = request.cid === undefined ? { from: member, text } : { from: member, text, cid: request.cid }
    const stored = this.broker.append(room, draft).then(({ message, duplicate }) => {
      if (!duplicate) this.tell('message', message)
      return message
    })
    return { stored }
  }

  /**
   * A member's `edit`, `delete` or `react` (PROTOCOL.md, "Messages that
   * change"): an edit's new text passes the `onMessage` hook as a send's does;
   * who may change what, the broker decides. Resolves with the entry's seq.
   */
  async changeMessage (link: MemberLink, request: ChangeRequest): Promise<number> {
    const { room, seq: target } = request
    this.memberEntry(link, room)
    const by = memberOf(link)
    const cid = request.cid === undefined ? {} : { cid: request.cid }
    switch (request.type) {
      case 'edit':
        return await this.update(room, { by, target, action: 'edit', text: await this.vetted(link, { room, text: request.text, edit: target }), ...cid })
      case 'delete':
        return await this.update(room, { by, target, action: 'delete', ...cid })
      case 'react':
        return await this.update(room, { by, target, action: request.on ? 'react' : 'unreact', reaction: request.reaction, ...cid })
    }
  }

  /** Tells the room the member is typing; a muted user's typing is dropped (PROTOCOL.md), as this node knows its mutes. */
  async typing (link: MemberLink, room: string): Promise<void> {
    this.memberEntry(link, room)
    if (this.rooms_.get(room)?.users.muted(link.user, Date.now())) return
    await this.broker.publish(room, { type: 'typing', room, member: memberOf(link) })
  }

  /**
   * Moves the user's read marker in `room` (forward only, capped at the
   * latest seq); its other connections hear of it through the broker.
   * Resolves with the marker, moved or not.
   */
  async read (link: MemberLink, request: ClientMessageOf<'read'>): Promise<number> {
    this.memberEntry(link, request.room)
    const { state } = await this.broker.changeUser(request.room, link.user, { kind: 'read', seq: request.seq }, link.id)
    return state.read
  }

  /** Renames a link; members of each of its rooms are told. */
  async rename (link: MemberLink, name: string): Promise<void> {
    const entry = this.linkEntry(link)
    // A name `authenticate` gave is the application's: nobody takes another user's name unless `onRename` says so.
    const verdict = await this.options.onRename?.(hookMember(link), name)
    if (verdict === false || (verdict !== true && link.authenticated)) {
      throw new ChatError('forbidden', link.authenticated ? 'this server sets the names of signed-in users' : 'the name change was refused')
    }
    link.name = name
    const member = { id: link.id, user: link.user, name }
    await Promise.all([...entry.rooms].map((room) =>
      this.broker.publish(room, { type: 'presence', room, action: 'rename', member })))
  }

  /** A member's `history` request: only members may page a room. */
  async memberHistory (link: MemberLink, request: ClientMessageOf<'history'>): Promise<{ messages: Message[], more: boolean }> {
    this.memberEntry(link, request.room)
    return this.replies.fitting(await this.history(request.room, request))
  }

  /** A member's `members` request: the room's members after `after`, in id order, at most `maxMembersInReply`. */
  async memberList (link: MemberLink, request: ClientMessageOf<'members'>): Promise<{ members: Member[], more: boolean }> {
    this.memberEntry(link, request.room)
    const { members, more } = await this.replies.memberPage(request.room, request.after, request.limit)
    return { members, more }
  }

  // ------------------------------------------------------------ server API

  /**
   * Sends `text` to `room` as the server (or as `from`): it gets a seq, is
   * stored and delivered exactly like a member's message.
   */
  async broadcast (room: string, text: string, from: Member = SERVER_MEMBER): Promise<Message> {
    checkRoom(room, this.options.roomPattern)
    checkText(text, this.options.maxTextLength)
    assertWellFormed('from', from.id, from.name)
    const { message } = await this.broker.append(room, { from: { id: from.id, user: from.user, name: from.name }, text })
    this.tell('message', message)
    return message
  }

  /** Replaces the text of message `seq` in `room` as the server, whoever wrote it; resolves with the update's seq. */
  async editMessage (room: string, seq: number, text: string): Promise<number> {
    checkRoom(room, this.options.roomPattern)
    checkSeq(seq)
    checkText(text, this.options.maxTextLength)
    return await this.update(room, { by: SERVER_MEMBER, target: seq, action: 'edit', text, asServer: true })
  }

  /** Deletes message `seq` in `room` as the server, whoever wrote it; resolves with the update's seq. */
  async deleteMessage (room: string, seq: number): Promise<number> {
    checkRoom(room, this.options.roomPattern)
    checkSeq(seq)
    return await this.update(room, { by: SERVER_MEMBER, target: seq, action: 'delete', asServer: true })
  }

  /** Rooms with members, across every node, by name; `page` takes those after a name, at most so many. */
  rooms (page?: RoomsPage): Promise<RoomInfo[]> {
    return this.broker.rooms(page)
  }

  /** Members of a room, across every node. */
  members (room: string): Promise<Member[]> {
    return this.broker.members(room)
  }

  /** The live nodes sharing the broker; also how readiness asks whether the broker answers. */
  nodes (): Promise<NodeInfo[]> {
    return this.broker.nodes()
  }

  /** Pages backwards through a room's stored messages, oldest first. */
  async history (room: string, query: { before?: number, limit?: number } = {}): Promise<{ messages: Message[], more: boolean }> {
    const limit = Math.min(Math.max(query.limit ?? DEFAULT_HISTORY_LIMIT, 1), MAX_HISTORY_LIMIT)
    const { messages, more } = await this.broker.read(room, query.before === undefined ? { limit } : { before: query.before, limit })
    return { messages: pageMessages(messages), more }
  }

  /** Closes the connection with `id` on this node; false when there is none. */
  disconnect (id: string, code: number = DISCONNECT_USER_CLOSE.code, reason: string = DISCONNECT_USER_CLOSE.reason): boolean {
    const entry = this.links.get(id)
    if (!entry) return false
    entry.link.close(code, reason)
    return true
  }

  /** A node-wide event: the user's connections on this node are closed (`hub.disconnectUser`). */
  private signal (event: NodeSignal): void {
    for (const { link } of this.links.values()) {
      if (link.user === event.user) link.close(DISCONNECT_USER_CLOSE.code, DISCONNECT_USER_CLOSE.reason)
    }
  }

  stats (): HubStats {
    return { connections: this.links.size, rooms: this.rooms_.size, ...this.counters }
  }

  // ------------------------------------------------------------ internals

  /** Emits to the application's listeners; one that throws is logged and never fails the member's request. */
  private tell<K extends keyof HubEvents> (event: K, ...args: HubEvents[K]): void {
    try {
      this.emit(event, ...(args as never))
    } catch (error) {
      this.log.error({ err: error, event }, 'a chat hub listener threw')
    }
  }

  /** A listener's rejected promise (with `captureRejections`): logged, never an unhandled rejection. */
  override [EventEmitter.captureRejectionSymbol] (error: Error, event: unknown, ..._args: unknown[]): void {
    this.log.error({ err: error, event }, 'a chat hub listener failed')
  }

  /** The text `onMessage` lets through for `pending`: its own, or the hook's replacement; a refusal is `forbidden`. */
  private async vetted (link: MemberLink, pending: PendingMessage): Promise<string> {
    if (!this.options.onMessage) return pending.text
    const verdict = await this.options.onMessage(pending, hookMember(link))
    if (verdict === false) throw new ChatError('forbidden', pending.edit === undefined ? 'the message was refused' : 'the edit was refused')
    return typeof verdict === 'string' ? verdict : pending.text
  }

  /** The `joined` reply to `request`; one with `since` is a resume, counted as recovered or not. */
  private async joinedReply (request: JoinRequest, user: string): Promise<Joined> {
    const joined = await this.replies.joined(request, user)
    if (joined.snapshot.recovered !== undefined) this.metrics.resumed(joined.snapshot.recovered)
    return joined
  }

  /** Hands a change to the broker and tells the hub's `update` event when it was applied; resolves with the entry's seq. */
  private async update (room: string, draft: UpdateDraft): Promise<number> {
    const { seq, update } = await this.broker.update(room, draft)
    if (update) this.tell('update', update)
    return seq
  }

  /** Keeps a departure (leaves being told) for shutdown to wait for. */
  private async track (departure: Promise<void>): Promise<void> {
    this.departures.add(departure)
    try {
      await departure
    } finally {
      this.departures.delete(departure)
    }
  }

  /** One event to every local member of `room`: encoded once, the same bytes to each. */
  private fanOut (room: string, event: RoomEvent): void {
    const local = this.rooms_.get(room)
    if (!local) return
    if (event.type === 'presence') this.heardPresence(room, local, event)
    const skip = isEntry(event) ? undefined : event.member.id
    let frame: Buffer | undefined
    const encoded = (): Buffer => (frame ??= encodeFrame(event))
    for (const member of local.members.values()) {
      if (member.link.id !== skip) this.forward(member, event, encoded)
    }
  }

  /**
   * The hub's `join` and `leave` events follow the broker's presence events
   * of local members, since only the broker knows `first` and `last` across
   * nodes. (A broker of protocol 1 knew one connection per user: first and last.)
   */
  private heardPresence (room: string, local: LocalRoom, event: Presence): void {
    if (event.action === 'join' && local.members.has(event.member.id)) this.tell('join', { room, member: event.member, first: event.first ?? true })
    else if (event.action === 'leave') local.departing.heard(event)
  }

  /**
   * A change of a user's state in `room`, from the broker: a moved marker
   * goes to the user's other connections here, a mute is noted, and a kick
   * or ban takes every connection of the user here out of the room.
   */
  private userEvent (room: string, event: UserEvent): void {
    const local = this.rooms_.get(room)
    if (!local) return
    const { change } = event
    local.users.heard(event.user, change)
    const connections = local.users.of(event.user)
    if (change.kind === 'read') {
      const frame: Held = { type: 'read', room, seq: change.seq }
      let encoded: Buffer | undefined
      for (const member of connections) {
        if (member.link.id !== event.connection) this.forward(member, frame, () => (encoded ??= encodeFrame(frame)))
      }
      return
    }
    const reason = removalReason(change)
    if (reason === undefined) return
    const left = encodeFrame({ type: 'left', room, reason })
    for (const { link } of connections) {
      this.links.get(link.id)?.rooms.delete(room)
      link.deliver(left)
      this.track(this.removeMember(link, room)).catch((error: unknown) => {
        this.log.warn({ err: error, id: link.id, room }, 'chat member removed by moderation left with an error')
      })
    }
  }

  /**
   * Delivers `event` to a member: held while it joins, dropped when it is an
   * entry (a message or an update) the member already has.
   */
  private forward (member: RoomMember, event: Held, encoded: () => Buffer): void {
    if (member.pending) {
      if (member.pending.length >= MAX_EVENTS_HELD_WHILE_JOINING) member.link.close(CloseCodes.slowConsumer, 'too far behind while joining')
      else member.pending.push(event)
      return
    }
    if (isEntry(event)) {
      if (event.seq <= member.position.seq) return
      member.position.seq = event.seq
    }
    member.link.deliver(encoded())
  }

  /**
   * The broker cannot continue `room`'s stream without a gap (see
   * `BrokerNode.outOfSync`): members here in another epoch, or all of them when
   * messages were lost, are closed with 4010 and resume with `since`, which
   * tells them what they missed. A member still joining is checked against the
   * new epoch once its snapshot is read.
   */
  private outOfSync (room: string, epoch?: string): void {
    const local = this.rooms_.get(room)
    if (!local) return
    if (epoch !== undefined) local.epoch = epoch
    for (const member of local.members.values()) {
      const behind = member.pending === undefined ? member.position.epoch !== epoch : epoch === undefined
      if (behind) member.link.close(CloseCodes.outOfSync, OUT_OF_SYNC_REASON)
    }
  }

  private localRoom (room: string): LocalRoom {
    let local = this.rooms_.get(room)
    if (!local) {
      const subscribed = this.broker.subscribe(room)
      // A failed subscription is reported to the joins awaiting it; keep it from being unhandled meanwhile.
      subscribed.catch(() => {})
      local = { members: new Map(), departing: new LeaveEchoes(), users: new RoomUsers(), epoch: undefined, subscribed }
      this.rooms_.set(room, local)
    }
    return local
  }

  /**
   * Takes a member out of a local room; others are told through the broker.
   * The room stays subscribed until the leave comes back, so that the hub's
   * `leave` event can say `last`.
   */
  private async removeMember (link: MemberLink, room: string): Promise<void> {
    const local = this.rooms_.get(room)
    const roomMember = local?.members.get(link.id)
    if (!local || !roomMember || roomMember.link !== link) return
    local.members.delete(link.id)
    local.users.remove(roomMember)
    try {
      if (roomMember.announced) await this.announceLeave(room, local, memberOf(link))
    } finally {
      if (local.members.size === 0 && local.departing.size === 0 && this.rooms_.get(room) === local) {
        this.rooms_.delete(room)
        await this.broker.unsubscribe(room)
      }
    }
  }

  /** Publishes a member's leave and tells the hub's `leave` event with the `last` the broker decided. */
  private async announceLeave (room: string, local: LocalRoom, member: Member): Promise<void> {
    let leave: Presence | undefined
    try {
      leave = await local.departing.publish(member.id, () => this.broker.publish(room, { type: 'presence', room, action: 'leave', member }))
    } finally {
      this.tell('leave', leave?.last === undefined ? { room, member } : { room, member, last: leave.last })
    }
  }

  private linkEntry (link: MemberLink): LinkEntry {
    const entry = this.links.get(link.id)
    if (!entry || entry.link !== link) throw new ChatError('not_joined', 'the connection is closed')
    return entry
  }

  private memberEntry (link: MemberLink, room: string): LinkEntry {
    const entry = this.linkEntry(link)
    if (!entry.rooms.has(room)) throw new ChatError('not_joined', `not a member of ${room}`)
    return entry
  }
}
