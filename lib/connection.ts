/**
 * One WebSocket connection, in the shape of gorilla's client: a read pump
 * (parse → validate → rate and error budget → hub, one message at a time, in
 * order) and a write pump (`deliver`: bounded by `maxBufferedBytes`, past
 * which the reader is too slow and is closed with 4008 rather than buffered
 * for). The only module that touches a socket, through `SocketLike`.
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
  send(data: Buffer, options: { binary: boolean }): void
  ping(): void
  close(code: number, reason: string): void
  terminate(): void
  on(event: 'message', listener: (data: Buffer | ArrayBuffer | Buffer[], isBinary: boolean) => void): unknown
  on(event: 'pong', listener: () => void): unknown
  on(event: 'close', listener: () => void): unknown
}

const OPEN = 1

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

type ConnectionOptions = Pick<ResolvedOptions, 'maxPayload' | 'rateLimit' | 'errorLimit' | 'maxBufferedBytes'>

export interface ConnectionContext {
  hub: Hub
  options: ConnectionOptions
  decode: (data: string) => Decoded
  log: BrokerLogger
}

export class Connection implements MemberLink {
  name: string
  /** Set by a pong; the heartbeat terminates a connection that stays silent for a whole interval. */
  alive = true
  private closing = false
  private graceTimer: NodeJS.Timeout | undefined
  /** Messages are handled one at a time so a `send` right after a `join` finds the room joined. */
  private queue: Promise<void> = Promise.resolve()
  private waiting = 0
  private readonly rate: TokenBucket
  private readonly errorBudget: TokenBucket

  constructor (private readonly socket: SocketLike, readonly id: string, name: string, private readonly context: ConnectionContext) {
    this.name = name
    const { rateLimit, errorLimit } = context.options
    const now = Date.now()
    this.rate = new TokenBucket(rateLimit.perSecond, rateLimit.burst, now)
    this.errorBudget = new TokenBucket((errorLimit.count * 1000) / errorLimit.windowMs, errorLimit.count, now)
    // Listeners are attached before anything awaits, so no early frame is lost.
    socket.on('message', (data, isBinary) => this.receive(data, isBinary))
    socket.on('pong', () => { this.alive = true })
    socket.on('close', () => this.closed())
    context.hub.attach(this)
    this.reply({ type: 'welcome', protocol: PROTOCOL_VERSION, id, name })
  }

  // ------------------------------------------------------------ write pump

  deliver (frame: Buffer): void {
    const count = this.context.hub.count
    if (this.closing || this.socket.readyState !== OPEN) {
      count.dropped++
      return
    }
    if (this.socket.bufferedAmount + frame.length > this.context.options.maxBufferedBytes) {
      count.dropped++
      count.slowConsumerCloses++
      this.close(CloseCodes.slowConsumer, 'slow consumer')
      return
    }
    this.socket.send(frame, { binary: false })
    count.messagesOut++
  }

  close (code: number, reason: string): void {
    if (this.closing) return
    this.closing = true
    if (this.socket.readyState === OPEN) this.socket.close(code, reason)
    this.graceTimer = setTimeout(() => this.socket.terminate(), CLOSE_GRACE_MS)
    this.graceTimer.unref()
  }

  /** One heartbeat tick: terminate a peer that did not answer the last ping, ping the others. */
  heartbeat (): void {
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
    if (!this.rate.take(Date.now())) {
      return this.refuse({ ok: false, code: 'rate_limited', message: 'too many messages; slow down' }, undefined)
    }
    const decoded = this.context.decode(bytes.toString('utf8'))
    if (!decoded.ok) return this.refuse(decoded, decoded.ref)
    if (this.waiting >= MAX_WAITING_MESSAGES) {
      return this.refuse({ ok: false, code: 'rate_limited', message: 'too many messages waiting to be handled' }, decoded.message.ref)
    }
    const message = decoded.message
    this.waiting++
    this.queue = this.queue.then(() => this.handle(message)).finally(() => { this.waiting-- })
  }

  private async handle (message: ClientMessage): Promise<void> {
    if (this.closing) return
    const { hub } = this.context
    const ref = message.ref === undefined ? {} : { ref: message.ref }
    try {
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
    }
  }

  /** Answers a refused message with an `error`; a client that keeps erring is closed with 1008. */
  private refuse (error: { ok: false, code: ErrorCode, message: string }, ref: string | undefined): void {
    this.reply({ type: 'error', ...(ref === undefined ? {} : { ref }), code: error.code, message: error.message })
    // An outage is not the client's fault; everything else counts against its budget.
    if (error.code !== 'unavailable' && !this.errorBudget.take(Date.now())) {
      this.close(CloseCodes.policyViolation, 'too many protocol errors')
    }
  }

  private reply (frame: ServerFrame): void {
    this.deliver(Buffer.from(encodeFrame(frame)))
  }

  private closed (): void {
    this.closing = true
    clearTimeout(this.graceTimer)
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
