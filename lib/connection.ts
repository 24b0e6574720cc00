/**
 * One WebSocket connection, in the shape of gorilla's client: a read pump
 * (parse → validate → rate and error budget → hub, one message at a time, in
 * order) and a write pump (`deliver`: frames a broadcast once, batches what a
 * connection gets in one event-loop turn into one write, and is bounded by
 * `maxBufferedBytes`, past which the reader is too slow and is closed with
 * 4008 rather than buffered for). The only module that touches a socket,
 * through `SocketLike`.
 */
import { ChatError, CloseCodes, type ErrorCode } from './errors.js'
import type { BrokerLogger } from './broker.js'
import type { Hub, MemberLink } from './hub.js'
import { PROTOCOL_VERSION, encodeFrame, normalizeName, type ClientMessage, type Decoded, type ServerFrame } from './protocol.js'
import type { ResolvedOptions } from './options.js'
import { TokenBucket } from './rate-limit.js'

/** The part of a `ws` WebSocket this module uses. */
export interface SocketLike {
  readonly readyState: number
  readonly bufferedAmount: number
  /** Negotiated extensions; '' when frames go uncompressed, as they do by default. */
  readonly extensions: string
  send(data: Buffer, options: { binary: boolean }): void
  ping(): void
  close(code: number, reason: string): void
  terminate(): void
  on(event: 'message', listener: (data: Buffer | ArrayBuffer | Buffer[], isBinary: boolean) => void): unknown
  on(event: 'pong', listener: () => void): unknown
  on(event: 'close', listener: () => void): unknown
}

const OPEN = 1

/** The TCP socket under a `ws` WebSocket (its `_socket`: not in ws's types, but what engine.io and others rely on). */
interface Transport {
  write(data: Buffer): boolean
}

/**
 * Frames a text message as a server does (FIN, opcode 1, unmasked; RFC 6455
 * §5.2), header and payload in one buffer, so one `write` queues it.
 */
function textFrame (payload: Buffer): Buffer {
  const length = payload.length
  const header = length < 126 ? 2 : length < 0x10000 ? 4 : 10
  const frame = Buffer.allocUnsafe(header + length)
  frame[0] = 0x81
  if (header === 2) {
    frame[1] = length
  } else if (header === 4) {
    frame[1] = 126
    frame.writeUInt16BE(length, 2)
  } else {
    frame[1] = 127
    frame.writeUInt32BE(0, 2)
    frame.writeUInt32BE(length, 6)
  }
  payload.copy(frame, header)
  return frame
}

/**
 * The last payload framed, and its frame. The hub hands the same payload to
 * every member of a room in a row, so it is framed once per broadcast, not
 * once per member.
 */
let lastPayload: Buffer | undefined
let lastFrame: Buffer = Buffer.alloc(0)

function framed (payload: Buffer): Buffer {
  if (payload !== lastPayload) {
    lastPayload = payload
    lastFrame = textFrame(payload)
  }
  return lastFrame
}

/**
 * Messages received but not yet handled (they are handled one at a time). The
 * rate limit bounds arrivals; this bounds what piles up behind a slow hook or
 * broker, at a burst's worth of messages.
 */
const MAX_WAITING_MESSAGES = 64

/**
 * After sending a close frame, how long a peer gets to complete the close
 * before its socket is destroyed. A slow consumer's close frame waits behind
 * up to `maxBufferedBytes`; five seconds lets a reader that wakes up see its
 * 4008 while bounding how long those bytes are held.
 */
const CLOSE_GRACE_MS = 5000

/**
 * Connections that were handed frames during this turn of the event loop.
 * They hold the frames until the turn's input has all been handled, then each
 * writes everything it got in one system call: gorilla's write pump batching.
 * A `write()` costs several µs; a frame added to a batch, far less. Holding
 * them here rather than corking the socket spares a stream buffer entry per
 * frame, and most batches in rooms of a few members are a single frame.
 */
let batched: Connection[] = []

function flushAll (): void {
  const batch = batched
  batched = []
  for (const connection of batch) connection.flush()
}

/** The queue of a connection with nothing to handle. */
const IDLE: Promise<void> = Promise.resolve()

type ConnectionOptions = Pick<ResolvedOptions, 'maxPayload' | 'rateLimit' | 'errorLimit' | 'maxBufferedBytes'>

export interface ConnectionContext {
  hub: Hub
  options: ConnectionOptions
  decode: (data: string) => Decoded
  log: BrokerLogger
  /** Called once when the socket has closed (one function for every connection, rather than a listener each). */
  closed: (connection: Connection) => void
}

export class Connection implements MemberLink {
  name: string
  /** Set by a pong; the heartbeat terminates a connection that stays silent for a whole interval. */
  alive = true
  private closing = false
  /** This turn's frames (payloads when compressing), not yet given to the socket, and their size. */
  private pending: Buffer[] | undefined
  private pendingBytes = 0
  private inBatch = false
  private readonly transport: Transport
  /** Without compression every member gets the same bytes, so they are framed here once and written as they are. */
  private readonly framesOnce: boolean
  private graceTimer: NodeJS.Timeout | undefined
  /** Messages are handled one at a time so a `send` right after a `join` finds the room joined. */
  private queue = IDLE
  /** Messages received and not yet handled, the one being handled included. */
  private waiting = 0
  private readonly rate: TokenBucket
  /** Made at the first refusal: most connections never err, and a bucket made full later is the same bucket. */
  private errorBudget: TokenBucket | undefined

  constructor (private readonly socket: SocketLike, readonly id: string, name: string, private readonly context: ConnectionContext) {
    this.name = name
    this.transport = (socket as unknown as { _socket: Transport })._socket
    this.framesOnce = socket.extensions === ''
    const { rateLimit } = context.options
    this.rate = new TokenBucket(rateLimit.perSecond, rateLimit.burst, Date.now())
    // Listeners are attached before anything awaits, so no early frame is lost.
    socket.on('message', (data, isBinary) => this.receive(data, isBinary))
    socket.on('pong', () => { this.alive = true })
    socket.on('close', () => this.closed())
    context.hub.attach(this)
    this.reply({ type: 'welcome', protocol: PROTOCOL_VERSION, id, name })
  }

  // ------------------------------------------------------------ write pump

  deliver (payload: Buffer): void {
    const count = this.context.hub.count
    if (this.closing || this.socket.readyState !== OPEN) {
      count.dropped++
      return
    }
    const frame = this.framesOnce ? framed(payload) : payload
    const max = this.context.options.maxBufferedBytes
    if (this.socket.bufferedAmount + this.pendingBytes + frame.length > max) {
      // This turn's frames were never offered to the reader: offer them now, so only bytes the kernel
      // refused count against the bound, exactly as without batching.
      this.writePending()
      if (this.socket.bufferedAmount + frame.length > max) {
        count.dropped++
        count.slowConsumerCloses++
        this.close(CloseCodes.slowConsumer, 'slow consumer')
        return
      }
    }
    if (this.pending === undefined) this.pending = [frame]
    else this.pending.push(frame)
    this.pendingBytes += frame.length
    if (!this.inBatch) {
      this.inBatch = true
      // setImmediate runs once the poll phase has handled every socket that had input this turn.
      if (batched.push(this) === 1) setImmediate(flushAll)
    }
  }

  /** Ends this turn's batch. */
  flush (): void {
    this.inBatch = false
    this.writePending()
  }

  /** Gives the frames held so far to the socket: one write when framed here. */
  private writePending (): void {
    const frames = this.pending
    if (frames === undefined) return
    this.pending = undefined
    const bytes = this.pendingBytes
    this.pendingBytes = 0
    const count = this.context.hub.count
    if (this.socket.readyState !== OPEN) {
      count.dropped += frames.length
      return
    }
    count.messagesOut += frames.length
    // Written past ws, which holds nothing back without compression; `close` writes what is held before its close frame.
    if (this.framesOnce) this.transport.write(frames.length === 1 ? frames[0] as Buffer : Buffer.concat(frames, bytes))
    else for (const payload of frames) this.socket.send(payload, { binary: false })
  }

  close (code: number, reason: string): void {
    if (this.closing) return
    this.closing = true
    // What this turn queued goes before the close frame.
    this.writePending()
    if (this.socket.readyState === OPEN) this.socket.close(code, reason)
    this.graceTimer = setTimeout(() => this.socket.terminate(), CLOSE_GRACE_MS)
    this.graceTimer.unref()
  }

  /** One heartbeat tick: terminate a peer that did not answer the last ping, ping the others. */
  heartbeat (): void {
    // A closing connection is left to its grace timer, so a slow reader still gets to see its close code.
    if (this.closing) return
    if (!this.alive) {
      this.context.log.info({ id: this.id }, 'chat connection missed its heartbeat; terminating')
      this.closing = true
      this.socket.terminate()
      return
    }
    this.alive = false
    if (this.socket.readyState === OPEN) this.socket.ping()
  }

  // ------------------------------------------------------------ read pump

  private receive (data: Buffer | ArrayBuffer | Buffer[], isBinary: boolean): void {
    if (this.closing) return
    this.context.hub.count.messagesIn++
    if (isBinary) return this.close(CloseCodes.unsupportedData, 'binary frames are not accepted')
    const bytes = Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data)
    // When the application registered @fastify/websocket itself, ws may allow more than our maxPayload.
    if (bytes.length > this.context.options.maxPayload) return this.close(CloseCodes.messageTooBig, 'message too big')
    // Decoded before the rate check, so that a refusal carries the message's ref.
    const decoded = this.context.decode(bytes.toString('utf8'))
    if (!decoded.ok) return this.refuse(decoded, decoded.ref)
    if (!this.rate.take(Date.now())) {
      return this.refuse({ ok: false, code: 'rate_limited', message: 'too many messages; slow down' }, decoded.message.ref)
    }
    if (this.waiting >= MAX_WAITING_MESSAGES) {
      return this.refuse({ ok: false, code: 'rate_limited', message: 'too many messages waiting to be handled' }, decoded.message.ref)
    }
    const message = decoded.message
    // With nothing waiting, every earlier message is handled: this one starts now, without a link in the chain.
    const handled = this.waiting++ === 0 ? this.handle(message) : this.queue.then(() => this.handle(message))
    // One handled at once has left the queue idle already.
    if (this.waiting > 0) this.queue = handled
  }

  /** Handles one message and never rejects: a refusal is answered, a failure closes the connection. */
  private async handle (message: ClientMessage): Promise<void> {
    const { hub } = this.context
    const ref = message.ref === undefined ? {} : { ref: message.ref }
    try {
      if (this.closing) return
      switch (message.type) {
        case 'join':
          await hub.join(this, message)
          break
        case 'leave':
          await hub.leave(this, message.room)
          this.reply({ type: 'left', ...ref, room: message.room })
          break
        case 'send': {
          const stored = await hub.send(this, message)
          if (message.ref !== undefined) this.reply({ type: 'ack', ref: message.ref, room: message.room, seq: stored.seq })
          break
        }
        case 'typing':
          await hub.typing(this, message.room)
          break
        case 'nick': {
          const name = normalizeName(message.name)
          await hub.rename(this, name)
          this.reply({ type: 'renamed', ...ref, name })
          break
        }
        case 'history': {
          const page = await hub.memberHistory(this, message)
          this.reply({ type: 'history', ...ref, room: message.room, messages: page.messages, more: page.more })
          break
        }
        case 'ping':
          this.reply({ type: 'pong', ...ref })
          break
      }
    } catch (error) {
      if (error instanceof ChatError) {
        this.refuse({ ok: false, code: error.code, message: error.message }, message.ref)
      } else {
        this.context.log.error({ err: error, id: this.id, type: message.type }, 'chat message handler failed')
        this.close(CloseCodes.internalError, 'internal error')
      }
    } finally {
      // An idle connection holds no settled promise.
      if (--this.waiting === 0) this.queue = IDLE
    }
  }

  /** Answers a refused message with an `error`; a client that keeps erring is closed with 1008. */
  private refuse (error: { ok: false, code: ErrorCode, message: string }, ref: string | undefined): void {
    this.reply({ type: 'error', ...(ref === undefined ? {} : { ref }), code: error.code, message: error.message })
    // An outage is not the client's fault; everything else counts against its budget.
    if (error.code === 'unavailable') return
    const { count, windowMs } = this.context.options.errorLimit
    this.errorBudget ??= new TokenBucket((count * 1000) / windowMs, count, Date.now())
    if (!this.errorBudget.take(Date.now())) {
      this.close(CloseCodes.policyViolation, 'too many protocol errors')
    }
  }

  private reply (frame: ServerFrame): void {
    this.deliver(encodeFrame(frame))
  }

  private closed (): void {
    this.closing = true
    clearTimeout(this.graceTimer)
    this.context.closed(this)
    this.context.hub.detach(this).catch((error: unknown) => {
      this.context.log.warn({ err: error, id: this.id }, 'chat connection left its rooms with an error')
    })
  }
}

/** One timer for every connection of an instance, rather than one per connection. */
export class Heartbeat {
  private readonly connections = new Set<Connection>()
  private readonly timer: NodeJS.Timeout

  constructor (intervalMs: number) {
    this.timer = setInterval(() => {
      for (const connection of this.connections) connection.heartbeat()
    }, intervalMs)
    this.timer.unref()
  }

  add (connection: Connection): void {
    this.connections.add(connection)
  }

  delete (connection: Connection): void {
    this.connections.delete(connection)
  }

  stop (): void {
    clearInterval(this.timer)
  }
}
