/**
 * The chat client (`fastify-chat-rooms/client`): typed requests and events over
 * one WebSocket, reconnect with backoff, and exact resume of every room from the
 * last seq seen, and a store per room of its messages in their current state.
 * It imports only its siblings in this directory, so a browser loads the
 * compiled files as they are with `<script type="module">`.
 */
import type { CloseCodes, ErrorCode } from '../errors.js'
import type { ClientMessage, ClientMessageOf, Entry, LeftReason, Member, Message, Presence, ServerFrame, ServerFrameOf, TypingEvent, Update } from '../protocol.js'
import { DEFAULT_STORED_MESSAGES, RoomStore } from './room-store.js'
import type {
  ChatClientEvents, ChatClientOptions, ClientErrorCode, ConnectionStatus, Joined, ReadMarker, Removed, StatusChange, Welcome, WebSocketConstructor, WebSocketLike,
} from './types.js'

export type { Entry, ErrorCode, LeftReason, Member, Message, Presence, TypingEvent, Update }
export type * from './types.js'
export { RoomStore }

type Close = typeof CloseCodes
/** Closes after which reconnecting cannot help (PROTOCOL.md): a deliberate close, or our own bug. */
const FINAL_CLOSE_CODES: ReadonlySet<number> = new Set([
  1000 satisfies Close['normal'],
  1002 satisfies Close['protocolError'],
  1003 satisfies Close['unsupportedData'],
  1007 satisfies Close['invalidPayload'],
  1008 satisfies Close['policyViolation'],
  1009 satisfies Close['messageTooBig'],
])
/**
 * Nothing is wrong with the server, so come back at once and resume: it dropped
 * us for reading too slowly, or could not go on with a room's stream without a
 * gap (resuming says what was missed: `gap` on `recovered: false`).
 */
const RECONNECT_AT_ONCE: ReadonlySet<number> = new Set([
  4008 satisfies Close['slowConsumer'],
  4010 satisfies Close['outOfSync'],
])
/** What a close event reports when the connection ended without a close frame. */
const ABNORMAL_CLOSURE = 1006
/** The HTTP status of a refused `authenticate`, which ends the client as `unauthorized`. */
const UNAUTHORIZED = 401
/** How `ws` names the HTTP status of a refused upgrade in its error event (a browser's says nothing). */
const REFUSED_UPGRADE = /Unexpected server response: (\d{3})/

const DEFAULTS = {
  /** Short enough that a blip goes unnoticed, long enough not to hammer a restarting server. */
  minDelay: 500,
  /** A long outage is still retried twice a minute. */
  maxDelay: 30_000,
  /** Under common proxy idle timeouts (60 s); a dead connection is noticed within two intervals. */
  pingInterval: 25_000,
  /** Generous for a round trip, short enough that a stuck request is reported while the user still waits. */
  requestTimeout: 10_000,
  /** A person offline does not type more than this; beyond it the app should say so rather than pile up. */
  maxQueuedSends: 100,
  /** How long to wait after a `rate_limited` that does not say (`retryAfter`): one second refills any sane rate. */
  retryAfter: 1000,
}

/** A failed request: `code` says why (see `ClientErrorCode`). */
export class ChatClientError extends Error {
  readonly code: ClientErrorCode
  /** For a failed `send`, `edit`, `delete` or `react`: its cid. Retrying with the same cid (`send(room, text, { cid })`) stores it at most once. */
  readonly cid: string | undefined
  constructor (code: ClientErrorCode, message: string, cid?: string) {
    super(message)
    this.name = 'ChatClientError'
    this.code = code
    this.cid = cid
  }
}

// ---------------------------------------------------------------- typed emitter

type Listener<T> = (event: T) => void

/**
 * A small typed event emitter. A listener that throws is reported and does not
 * disturb the others. An event emitted while listeners run (one called
 * `close()`) waits until they are done, so every listener sees every event in
 * the order it happened.
 */
export class TypedEmitter<Events> {
  private readonly listeners = new Map<keyof Events, Set<Listener<Events[keyof Events]>>>()
  /** Events emitted while listeners run, in order. */
  private readonly queued: Array<{ type: keyof Events, event: Events[keyof Events] }> = []
  private delivering = false

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof Events> (type: K, listener: Listener<Events[K]>): () => void {
    let set = this.listeners.get(type)
    if (!set) this.listeners.set(type, set = new Set())
    set.add(listener as Listener<Events[keyof Events]>)
    return () => this.off(type, listener)
  }

  off<K extends keyof Events> (type: K, listener: Listener<Events[K]>): void {
    this.listeners.get(type)?.delete(listener as Listener<Events[keyof Events]>)
  }

  protected emit<K extends keyof Events> (type: K, event: Events[K]): void {
    this.queued.push({ type, event })
    if (this.delivering) return
    this.delivering = true
    for (let next = this.queued.shift(); next; next = this.queued.shift()) {
      for (const listener of [...this.listeners.get(next.type) ?? []]) {
        try {
          listener(next.event)
        } catch (error) {
          // Thrown where the platform reports uncaught errors, outside the client's bookkeeping.
          queueMicrotask(() => { throw error })
        }
      }
    }
    this.delivering = false
  }
}

// ---------------------------------------------------------------- the client

/** Requests that store an entry: each carries a cid, so that retrying it after a lost connection stores it once. */
type ChangeType = 'send' | 'edit' | 'delete' | 'react'
type RequestType = ChangeType | 'join' | 'leave' | 'history' | 'members' | 'nick' | 'read'
type Outgoing = { [K in RequestType]: Omit<ClientMessageOf<K>, 'ref'> }[RequestType]
type Change = Extract<Outgoing, { type: ChangeType }> & { cid: string }

interface Pending {
  readonly frame: Outgoing
  readonly resolve: (answer: ServerFrame) => void
  readonly reject: (error: ChatClientError) => void
  /**
   * When the request's `requestTimeout` starts: at the call (waiting offline
   * counts), at each write (a send may wait offline, bounded by count), or
   * never (a rejoin: the connection's own deadline covers it).
   */
  readonly deadline: 'call' | 'write' | 'none'
  timer: ReturnType<typeof setTimeout> | undefined
  /** Whether the frame went out on the current connection, so an answer may come. */
  written: boolean
}

/** Where this client is in a room's stream (what a rejoin resumes from), and the room's messages. */
interface RoomPosition {
  epoch: string | undefined
  seq: number
  readonly store: RoomStore
}

/**
 * A chat connection that survives network loss and server restarts: rooms are
 * rejoined and resumed from the last seq seen, duplicates dropped, losses
 * reported as `gap`, and sends made meanwhile delivered exactly once.
 *
 * ```ts
 * const chat = new ChatClient('wss://example.com/ws', { name: 'alice' })
 * chat.on('message', (m) => console.log(m.room, m.from.name, m.text))
 * await chat.join('lobby')
 * const seq = await chat.send('lobby', 'hello')
 * ```
 */
export class ChatClient extends TypedEmitter<ChatClientEvents> {
  private readonly url: URL
  private readonly WebSocketImpl: WebSocketConstructor
  private readonly reconnectDelays: false | { minDelay: number, maxDelay: number }
  private readonly pingInterval: number
  private readonly requestTimeout: number
  private readonly maxQueuedSends: number
  private readonly storedMessages: number

  private currentStatus: ConnectionStatus = 'connecting'
  private currentName: string | undefined
  private connectionId: string | undefined
  private userId: string | undefined
  private socket: WebSocketLike | undefined
  /** `welcome` arrived on `socket`: joins and leaves may be written. */
  private live = false
  /** Every room was rejoined on `socket`: everything may be written. */
  private ready = false
  private failedAttempts = 0
  /** Whether any frame arrived since the last ping. */
  private heard = false
  private connectionTimer: ReturnType<typeof setTimeout> | undefined
  private pingTimer: ReturnType<typeof setInterval> | undefined
  private retryTimer: ReturnType<typeof setTimeout> | undefined
  /**
   * Set while the server's rate limit holds requests back: nothing is written
   * until it fires. Then, until every refused request has gone out again, one
   * request is written at a time (`pacedRef`), so they are stored in call order.
   */
  private paceTimer: ReturnType<typeof setTimeout> | undefined
  private pacing = false
  private pacedRef: string | undefined

  /** The rooms this client is in: each one's place in its stream and its messages in their current state. */
  private readonly positions = new Map<string, RoomPosition>()
  /** Requests not answered yet, by ref, in call order (the order they are written). */
  private readonly pending = new Map<string, Pending>()
  /** Refs of pending changes (sends, edits, deletes, reactions) by cid: each is answered by its `ack` or by its own entry. */
  private readonly changeRefs = new Map<string, string>()
  /** Refs of the joins written before `ready`: `ready` comes when none is left. */
  private readonly rejoining = new Set<string>()
  private lastRef = 0

  /**
   * Connects at once (status `connecting`). `url` may be relative to the page
   * (`'/ws'`) and may use `http(s):`, which becomes `ws(s):`.
   */
  constructor (url: string | URL, options: ChatClientOptions = {}) {
    super()
    const WebSocketImpl = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket
    if (!WebSocketImpl) throw new TypeError('ChatClient: no global WebSocket; pass one as options.WebSocket (e.g. from the ws package)')
    this.WebSocketImpl = WebSocketImpl
    this.url = socketUrl(url)
    this.currentName = options.name
    this.reconnectDelays = options.reconnect === false
      ? false
      : { minDelay: options.reconnect?.minDelay ?? DEFAULTS.minDelay, maxDelay: options.reconnect?.maxDelay ?? DEFAULTS.maxDelay }
    this.pingInterval = options.pingInterval ?? DEFAULTS.pingInterval
    this.requestTimeout = options.requestTimeout ?? DEFAULTS.requestTimeout
    this.maxQueuedSends = options.maxQueuedSends ?? DEFAULTS.maxQueuedSends
    this.storedMessages = options.storedMessages ?? DEFAULT_STORED_MESSAGES
    this.connect()
  }

  get status (): ConnectionStatus { return this.currentStatus }
  /** This connection's id from `welcome` (a new one after each reconnect). */
  get id (): string | undefined { return this.connectionId }
  /**
   * The user this connection is, from `welcome`: the same in every tab and
   * device of one person when the server authenticates; a guest's equals `id`.
   */
  get user (): string | undefined { return this.userId }
  /** The display name in use, as the server normalized it. */
  get name (): string | undefined { return this.currentName }
  /** The rooms this client is in, or will rejoin once connected. */
  get rooms (): string[] { return [...this.positions.keys()] }

  /**
   * `room`'s messages in their current state, edits, deletes and reactions
   * applied, oldest first; pages from `history()` are merged in. Undefined
   * when the client is not in the room. Render it on `message` and `update`.
   */
  store (room: string): RoomStore | undefined {
    return this.positions.get(room)?.store
  }

  /**
   * Joins `room`, now or as soon as connected, and keeps it joined across
   * reconnects. Its messages come as `message` events, the newest stored ones first.
   * Rejects on an `error`, a timeout, or `close()`; a room that was not joined before is then not kept.
   */
  async join (room: string): Promise<Joined> {
    const isNew = !this.positions.has(room)
    if (isNew) this.positions.set(room, { epoch: undefined, seq: 0, store: new RoomStore(room, this.storedMessages) })
    try {
      return await this.request({ type: 'join', room }, 'call') as Joined
    } catch (error) {
      if (!isNew) throw error
      this.positions.delete(room)
      // The join may still be served after its timeout: leave, so the server does not keep us there.
      if (error instanceof ChatClientError && error.code === 'timeout') this.leave(room).catch(() => {})
      throw error
    }
  }

  /** Leaves `room`; resolves at once when offline, since the server forgot it with the connection. */
  async leave (room: string): Promise<void> {
    this.positions.delete(room)
    if (!this.live) {
      for (const [ref, pending] of this.pending) {
        if (pending.frame.type === 'join' && pending.frame.room === room) {
          this.settle(ref, pending)
          pending.reject(new ChatClientError('not_joined', `left ${room} before joining it`))
        }
      }
      return
    }
    try {
      await this.request({ type: 'leave', room }, 'call')
    } catch (error) {
      if (!(error instanceof ChatClientError && error.code === 'not_joined')) throw error
    }
  }

  /**
   * Sends `text` to `room` and resolves with its seq. Offline, it waits (up to
   * `maxQueuedSends`) and goes out after the rooms are rejoined; a send cut off
   * by a lost connection is retried with the same `cid`, so it is stored once.
   */
  async send (room: string, text: string, options: { cid?: string } = {}): Promise<number> {
    return await this.change({ type: 'send', room, text, cid: options.cid ?? randomCid() })
  }

  /**
   * Replaces the text of this user's message `seq` and resolves with the seq
   * of the `update` entry. Waits offline and is retried with its cid like a send.
   */
  async edit (room: string, seq: number, text: string, options: { cid?: string } = {}): Promise<number> {
    return await this.change({ type: 'edit', room, seq, text, cid: options.cid ?? randomCid() })
  }

  /** Deletes this user's message `seq`; resolves with the seq of the `update` entry. Waits offline like a send. */
  async delete (room: string, seq: number, options: { cid?: string } = {}): Promise<number> {
    return await this.change({ type: 'delete', room, seq, cid: options.cid ?? randomCid() })
  }

  /**
   * Adds this user's `reaction` to message `seq` (`on: false` takes it back)
   * and resolves with the seq of the `update` entry, or with the room's latest
   * seq when it changed nothing (given twice, or taken back when not given).
   */
  async react (room: string, seq: number, reaction: string, on = true, options: { cid?: string } = {}): Promise<number> {
    return await this.change({ type: 'react', room, seq, reaction, on, cid: options.cid ?? randomCid() })
  }

  /** Pages backwards through `room`'s stored messages (seq < `before`), oldest first. */
  async history (room: string, query: { before?: number, limit?: number } = {}): Promise<{ messages: Message[], more: boolean }> {
    const { messages, more } = await this.request({ type: 'history', room, ...query }, 'call') as ServerFrameOf<'history'>
    this.positions.get(room)?.store.addPage(messages)
    return { messages, more }
  }

  /**
   * Pages through `room`'s members in id order, after the member id `after`:
   * `joined` carries the first page (`members`) and the total (`memberCount`);
   * pass the last id seen to get the next, until `more` is false.
   */
  async members (room: string, query: { after?: string, limit?: number } = {}): Promise<{ members: Member[], more: boolean }> {
    const { members, more } = await this.request({ type: 'members', room, ...query }, 'call') as ServerFrameOf<'members'>
    return { members, more }
  }

  /** Changes the display name; resolves with the name as the server normalized it. */
  async nick (name: string): Promise<string> {
    return (await this.request({ type: 'nick', name }, 'call') as ServerFrameOf<'renamed'>).name
  }

  /**
   * Marks `room` read up to `seq` for this user, in every tab and device: the
   * user's other connections get a `read` event. Resolves with the marker as
   * the server keeps it: it only moves forward and stops at the room's latest seq.
   */
  async read (room: string, seq: number): Promise<number> {
    return (await this.request({ type: 'read', room, seq }, 'call') as ReadMarker).seq
  }

  /** Tells the room's others that this member is typing; dropped when offline (it is ephemeral). */
  typing (room: string): void {
    if (this.ready && !this.pacing) this.write({ type: 'typing', room })
  }

  /**
   * Closes for good, wherever it is called from (a listener too): no reconnect,
   * no event after the `closed` status, and every pending request rejects with `closed`.
   */
  close (): void {
    if (this.ended) return
    const socket = this.socket
    this.socket = undefined
    socket?.close(1000 satisfies Close['normal'], 'client closed')
    this.shutDown(1000, 'client closed')
  }

  // ------------------------------------------------------------ connection

  private connect (): void {
    const url = new URL(this.url)
    if (this.currentName !== undefined) url.searchParams.set('name', this.currentName)
    let socket: WebSocketLike
    try {
      socket = new this.WebSocketImpl(url.href)
    } catch (error) {
      return this.lost(ABNORMAL_CLOSURE, String(error))
    }
    this.socket = socket
    this.connectionTimer = setTimeout(() => this.abandon('no welcome in time'), this.requestTimeout)
    socket.onmessage = (event) => { if (socket === this.socket) this.receive(event.data) }
    let refusedWith: number | undefined
    socket.onclose = (event) => {
      if (socket !== this.socket) return
      if (refusedWith === UNAUTHORIZED) {
        this.socket = undefined
        return this.shutDown(UNAUTHORIZED, 'unauthorized', 'unauthorized')
      }
      const refusedUnseen = !this.live && event.code === ABNORMAL_CLOSURE && refusedWith === undefined
      this.lost(event.code, event.reason)
      if (refusedUnseen) void this.askWhyRefused()
    }
    // A close event follows and says what there is to say (without a handler `ws` would throw); `ws` also names
    // the HTTP status of a refused upgrade here.
    socket.onerror = (event) => {
      const status = REFUSED_UPGRADE.exec(String((event as { message?: unknown } | undefined)?.message))?.[1]
      if (status !== undefined) refusedWith = Number(status)
    }
  }

  /** Closed for good: by `close()`, a final close code, or a refused authentication. */
  private get ended (): boolean {
    return this.currentStatus === 'closed' || this.currentStatus === 'unauthorized'
  }

  /**
   * A connection that failed before `welcome` without saying why: a browser
   * hides the HTTP status of a refused upgrade, so ask the same URL over HTTP
   * (with the page's cookies, and the token if the URL holds one). A 401 ends
   * the client as `unauthorized`; anything else, or no answer, leaves it to
   * retry as it is doing.
   */
  private async askWhyRefused (): Promise<void> {
    if (typeof fetch !== 'function') return
    const url = new URL(this.url)
    url.protocol = url.protocol === 'wss:' ? 'https:' : 'http:'
    let status: number
    try {
      status = (await fetch(url, { credentials: 'include' })).status
    } catch {
      return
    }
    if (status !== UNAUTHORIZED || this.ended) return
    const socket = this.socket
    this.socket = undefined
    socket?.close()
    this.shutDown(UNAUTHORIZED, 'unauthorized', 'unauthorized')
  }

  /** Gives up on a connection that stopped answering and starts over. */
  private abandon (reason: string): void {
    const socket = this.socket
    if (socket?.terminate) socket.terminate()
    else socket?.close()
    this.lost(ABNORMAL_CLOSURE, reason)
  }

  private lost (code: number, reason: string): void {
    this.socket = undefined
    this.live = false
    this.ready = false
    this.rejoining.clear()
    clearTimeout(this.connectionTimer)
    clearInterval(this.pingTimer)
    this.stopPacing()
    for (const [ref, pending] of this.pending) {
      if (!pending.written) continue
      pending.written = false
      if (pending.deadline === 'write') clearTimeout(pending.timer)
      if (pending.frame.type === 'leave') {
        this.settle(ref, pending)
        pending.resolve({ type: 'left', room: pending.frame.room })
      }
    }
    if (this.reconnectDelays === false || FINAL_CLOSE_CODES.has(code)) return this.shutDown(code, reason)
    const retryIn = RECONNECT_AT_ONCE.has(code) ? 0 : this.backoff(this.reconnectDelays)
    // Set before it is announced: a listener that calls close() must find the retry there to cancel.
    this.retryTimer = setTimeout(() => this.connect(), retryIn)
    this.setStatus({ status: 'reconnecting', code, reason, retryIn })
  }

  /** Exponential, with "equal jitter": clients that lost the same server come back spread out, none at once. */
  private backoff ({ minDelay, maxDelay }: { minDelay: number, maxDelay: number }): number {
    const ceiling = Math.min(maxDelay, minDelay * 2 ** this.failedAttempts++)
    return Math.round(ceiling / 2 + Math.random() * ceiling / 2)
  }

  /**
   * Ends the client for good. Every listener runs inside some step of the
   * reconnect cycle and may call close() there; so the client is closed and
   * bare (no timer, no room, no request) before anything is announced, and
   * each step either does its work before announcing it or finds nothing left
   * to act on after. A re-entered close() returns at once.
   */
  private shutDown (code: number, reason: string, status: 'closed' | 'unauthorized' = 'closed'): void {
    this.currentStatus = status
    this.live = false
    this.ready = false
    clearTimeout(this.connectionTimer)
    clearTimeout(this.retryTimer)
    clearInterval(this.pingTimer)
    this.stopPacing()
    // Before the rejections: a rejoin that fails because the client closed is no lost room to report.
    this.positions.clear()
    const error = new ChatClientError('closed', `the client is closed (${code} ${reason})`.trim())
    for (const [ref, pending] of this.pending) {
      this.settle(ref, pending)
      pending.reject(error)
    }
    this.setStatus({ status, code, reason })
  }

  private setStatus (change: StatusChange): void {
    this.currentStatus = change.status
    this.emit('status', change)
  }

  private welcomed (frame: Welcome): void {
    this.connectionId = frame.id
    this.userId = frame.user
    this.currentName = frame.name
    this.live = true
    this.heard = true
    clearTimeout(this.connectionTimer)
    this.connectionTimer = setTimeout(() => this.abandon('rooms not rejoined in time'), this.requestTimeout)
    if (this.pingInterval > 0) this.pingTimer = setInterval(() => this.ping(), this.pingInterval)
    this.emit('welcome', frame)
    const joining = new Set<string>()
    for (const pending of this.pending.values()) {
      if (pending.frame.type === 'join') joining.add(pending.frame.room)
    }
    for (const room of this.positions.keys()) {
      if (!joining.has(room)) this.rejoin(room)
    }
    this.flush()
    if (this.rejoining.size === 0) this.becomeReady()
  }

  /** A join that no caller waits for: the room was joined on an earlier connection. */
  private rejoin (room: string): void {
    this.track({ type: 'join', room }, 'none', () => {}, (error) => {
      if (this.positions.delete(room)) this.emit('error', error)
    })
  }

  private becomeReady (): void {
    if (!this.live || this.ready) return
    this.ready = true
    this.failedAttempts = 0
    clearTimeout(this.connectionTimer)
    this.setStatus({ status: 'open' })
    this.flush()
  }

  private ping (): void {
    if (!this.heard) return this.abandon('no answer to ping')
    this.heard = false
    this.write({ type: 'ping' })
  }

  // ------------------------------------------------------------ requests

  /** A request that stores an entry: it may wait for a connection (up to `maxQueuedSends`) and resolves with the entry's seq. */
  private async change (frame: Change): Promise<number> {
    const waiting = [...this.pending.values()].filter((pending) => changeCid(pending.frame) !== undefined && !pending.written).length
    if (waiting >= this.maxQueuedSends) throw new ChatClientError('queue_full', `${waiting} sends are already waiting for a connection`)
    const answer = await this.request(frame, 'write')
    return (answer as ServerFrameOf<'ack'> | Entry).seq
  }

  private request (frame: Outgoing, deadline: 'call' | 'write'): Promise<ServerFrame> {
    if (this.ended) return Promise.reject(new ChatClientError('closed', 'the client is closed'))
    return new Promise((resolve, reject) => this.track(frame, deadline, resolve, reject))
  }

  private track (frame: Outgoing, deadline: Pending['deadline'], resolve: Pending['resolve'], reject: Pending['reject']): void {
    const ref = String(++this.lastRef)
    const pending: Pending = { frame, resolve, reject, deadline, timer: undefined, written: false }
    this.pending.set(ref, pending)
    const cid = changeCid(frame)
    if (cid !== undefined) this.changeRefs.set(cid, ref)
    if (deadline === 'call') pending.timer = setTimeout(() => this.expire(ref), this.requestTimeout)
    if (this.writable(pending)) this.writeRequest(ref, pending)
  }

  /**
   * Joins and leaves go out as soon as connected; sends, history and members
   * need the rooms rejoined first; while the rate limit holds, nothing goes
   * out, and while pacing, one at a time.
   */
  private writable (pending: Pending): boolean {
    const needsRooms = pending.frame.type !== 'join' && pending.frame.type !== 'leave' && pending.frame.type !== 'nick'
    const rateAllows = !this.pacing || (this.paceTimer === undefined && this.pacedRef === undefined)
    return this.live && !pending.written && (this.ready || !needsRooms) && rateAllows
  }

  private flush (): void {
    for (const [ref, pending] of this.pending) {
      if (this.writable(pending)) this.writeRequest(ref, pending)
    }
  }

  private writeRequest (ref: string, pending: Pending): void {
    const { frame } = pending
    const position = frame.type === 'join' ? this.positions.get(frame.room) : undefined
    // Resume from the last seq seen, in the stream it belongs to; a new room starts from its newest messages.
    const resume = position?.epoch === undefined ? {} : { since: position.seq, epoch: position.epoch }
    this.write({ ...frame, ...resume, ref })
    pending.written = true
    if (this.pacing) this.pacedRef = ref
    if (frame.type === 'join' && !this.ready) this.rejoining.add(ref)
    if (pending.deadline === 'write') pending.timer = setTimeout(() => this.expire(ref), this.requestTimeout)
  }

  private write (frame: ClientMessage): void {
    try {
      this.socket?.send(JSON.stringify(frame))
    } catch {
      // The socket is closing: its close event follows, and unanswered requests are written again.
    }
  }

  private expire (ref: string): void {
    const pending = this.pending.get(ref)
    if (!pending) return
    this.settle(ref, pending)
    const cid = changeCid(pending.frame)
    const mayBeStored = cid === undefined ? '' : ' (it may have been stored: retry with the same cid)'
    pending.reject(new ChatClientError('timeout', `no answer to ${pending.frame.type} within ${this.requestTimeout} ms${mayBeStored}`, cid))
  }

  /** Forgets a request that is answered, failed or given up; the caller then resolves or rejects it. */
  private settle (ref: string, pending: Pending): void {
    this.pending.delete(ref)
    clearTimeout(pending.timer)
    const cid = changeCid(pending.frame)
    if (cid !== undefined) this.changeRefs.delete(cid)
    if (this.rejoining.delete(ref) && this.rejoining.size === 0) this.becomeReady()
    if (ref === this.pacedRef) this.nextPaced()
  }

  /**
   * The server's rate refused a request: it waits in its place and goes out
   * again once the rate allows (`retryAfter`), as does everything after it.
   */
  private retryLater (pending: Pending, retryAfter: number | undefined): void {
    pending.written = false
    if (pending.deadline === 'write') clearTimeout(pending.timer)
    this.pacing = true
    this.pacedRef = undefined
    // Refusals of requests written together come together: the hold starts once, from the first.
    if (this.paceTimer !== undefined) return
    this.paceTimer = setTimeout(() => {
      this.paceTimer = undefined
      this.flush()
    }, retryAfter ?? DEFAULTS.retryAfter)
  }

  /** The request written while pacing was answered: the next goes out, or pacing ends when none waits. */
  private nextPaced (): void {
    this.pacedRef = undefined
    if (![...this.pending.values()].some((pending) => !pending.written)) this.pacing = false
    this.flush()
  }

  private stopPacing (): void {
    clearTimeout(this.paceTimer)
    this.paceTimer = undefined
    this.pacing = false
    this.pacedRef = undefined
  }

  private answer (ref: string | undefined, frame: ServerFrame): void {
    const pending = ref === undefined ? undefined : this.pending.get(ref)
    if (!pending || ref === undefined) return
    this.settle(ref, pending)
    pending.resolve(frame)
  }

  // ------------------------------------------------------------ incoming

  private receive (data: unknown): void {
    let frame: ServerFrame
    try {
      frame = JSON.parse(String(data)) as ServerFrame
    } catch {
      return
    }
    this.heard = true
    switch (frame.type) {
      case 'welcome': return this.welcomed(frame)
      case 'joined': return this.joined(frame)
      case 'message': return this.deliver(frame)
      case 'presence': return this.roomEvent('presence', frame)
      case 'typing': return this.roomEvent('typing', frame)
      case 'read': return frame.ref === undefined ? this.roomEvent('read', frame) : this.answer(frame.ref, frame)
      case 'left': return frame.ref === undefined ? this.removed(frame) : this.answer(frame.ref, frame)
      case 'renamed':
        this.currentName = frame.name
        return this.answer(frame.ref, frame)
      case 'error': return this.failed(frame)
      case 'update': return this.deliver(frame)
      case 'pong': return
      default: return this.answer(frame.ref, frame)
    }
  }

  /** An event of a room this client is in; one it left says nothing more. */
  private roomEvent<K extends 'presence' | 'typing' | 'read'> (type: K, event: ChatClientEvents[K] & { room: string }): void {
    if (this.positions.has(event.room)) this.emit(type, event)
  }

  /**
   * The server took this client out of a room (kicked, banned): the room is
   * forgotten, so it is not rejoined on reconnect (a send still waiting for it
   * fails with `not_joined`, as the server answers).
   */
  private removed (frame: ServerFrameOf<'left'>): void {
    if (!this.positions.delete(frame.room)) return
    const removal: Removed = frame.reason === undefined ? { room: frame.room } : { room: frame.room, reason: frame.reason }
    this.emit('left', removal)
  }

  private joined (frame: Joined): void {
    const position = this.positions.get(frame.room)
    if (position) {
      const { epoch: previousEpoch, seq: since } = position
      // Not recovered: seq may have restarted (new epoch), so what was seen says nothing about what comes,
      // and the messages held may miss changes: the store starts again from the history.
      if (frame.recovered !== true) {
        position.seq = 0
        position.store.clear()
      }
      position.epoch = frame.epoch
      this.emit('joined', frame)
      // Unless a listener left the room or closed the client: then nothing more of the room is reported.
      if (this.positions.get(frame.room) === position) {
        if (frame.recovered === false && previousEpoch !== undefined) {
          this.emit('gap', { room: frame.room, since, previousEpoch, epoch: frame.epoch })
        }
        for (const entry of frame.history) this.deliver(entry)
        position.seq = Math.max(position.seq, frame.seq)
      }
    }
    this.answer(frame.ref, frame)
  }

  /** A room's next entry, live or from a join's history: applied to the room's store, then reported. */
  private deliver (entry: Entry): void {
    // Our own entry answers its request even when the ack was lost with a connection.
    if (entry.cid !== undefined) this.answer(this.changeRefs.get(entry.cid), entry)
    const position = this.positions.get(entry.room)
    if (!position || entry.seq <= position.seq) return
    position.seq = entry.seq
    position.store.apply(entry)
    if (entry.type === 'message') this.emit('message', entry)
    else this.emit('update', entry)
  }

  private failed (frame: ServerFrameOf<'error'>): void {
    const pending = frame.ref === undefined ? undefined : this.pending.get(frame.ref)
    if (frame.code === 'rate_limited') {
      // Flow control: a request is retried; a refused ping or typing without one is ephemeral and let go.
      if (pending) this.retryLater(pending, frame.retryAfter)
      return
    }
    const cid = pending === undefined ? undefined : changeCid(pending.frame)
    const error = new ChatClientError(frame.code, frame.message, cid)
    if (!pending || frame.ref === undefined) return this.emit('error', error)
    this.settle(frame.ref, pending)
    pending.reject(error)
  }
}

/** Resolves `url` against the page, if any, and maps `http(s):` to `ws(s):`. */
function socketUrl (url: string | URL): URL {
  const page = (globalThis as { location?: { href: string } }).location?.href
  const resolved = new URL(url, page)
  if (resolved.protocol === 'http:') resolved.protocol = 'ws:'
  if (resolved.protocol === 'https:') resolved.protocol = 'wss:'
  return resolved
}

/** The cid of a request that stores an entry. */
function changeCid (frame: Outgoing): string | undefined {
  return 'cid' in frame ? frame.cid : undefined
}

/** 128 random bits; `getRandomValues` works on plain-http pages too, unlike `randomUUID`. */
function randomCid (): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16))
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, '0')).join('')
}
