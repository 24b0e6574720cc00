/**
 * One WebSocket connection, in the shape of gorilla's client. The read pump
 * parses, validates, applies the rate and error budgets and hands messages to
 * the hub one at a time, in order; while messages wait, the socket is not read
 * (backpressure, as gorilla's read pump reads the next message only after it
 * has handled the last). The write side is the writer's (writer.ts). The heart
 * beat finds half-open peers. With writer.ts, the only module that touches a
 * socket, through `SocketLike`.
 */
import { ChatError, CloseCodes, type ErrorCode } from './errors.js'
import type { Admitted } from './admission.js'
import type { BrokerLogger } from './broker.js'
import type { Hub, MemberLink } from './hub.js'
import { PROTOCOL_VERSION, encodeFrame, normalizeName, type ClientMessage, type ClientMessageOf, type Decoded, type Message, type ServerFrame } from './protocol.js'
import type { ResolvedOptions } from './options.js'
import { TokenBucket } from './rate-limit.js'
import { OPEN, type Transport } from './upgrade.js'
import { Outbox, type WritableSocket, type Writer } from './writer.js'

/** The part of a `ws` WebSocket this module uses. */
export interface SocketLike extends WritableSocket {
  ping(): void
  close(code: number, reason: string): void
  terminate(): void
  /** Stops reading from the peer; messages already read may still arrive. */
  pause(): void
  resume(): void
  on(event: 'message', listener: (data: Buffer | ArrayBuffer | Buffer[], isBinary: boolean) => void): unknown
  on(event: 'pong', listener: () => void): unknown
  /** `code`: the peer's close code; 1005 when its close frame had none, 1006 when there was no close frame. */
  on(event: 'close', listener: (code: number) => void): unknown
}

/**
 * After sending a close frame, how long a peer gets to complete the close
 * before its socket is destroyed. A slow consumer's close frame waits behind
 * up to `maxBufferedBytes`; five seconds lets a reader that wakes up see its
 * 4008 while bounding how long those bytes are held.
 */
const CLOSE_GRACE_MS = 5000
/**
 * How many of a connection's sends may be stored at once. Overlap lets a
 * durable broker commit a fast sender's messages together instead of one
 * disk commit each; the bound keeps what one connection can have the server
 * hold (messages and their acks) small, and is well above what the default
 * rate limit lets through between two commits.
 */
const MAX_SENDS_IN_FLIGHT = 64
/**
 * Once a message is refused for its rate, every later one is refused until
 * its `retryAfter`, which is at least this long: the messages a client had
 * already sent behind the refused one (a pasted burst) are refused too, even
 * when load delays reading them by up to this much, so none overtakes it and
 * the client retries them all in order. A client pacing by `retryAfter` loses
 * no throughput: tokens accrue meanwhile.
 */
export const RATE_LIMIT_HOLD_MS = 1000

type ConnectionOptions = Pick<ResolvedOptions, 'maxPayload' | 'rateLimit' | 'errorLimit' | 'maxBufferedBytes'>

export interface ConnectionContext {
  hub: Hub
  writer: Writer
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
  /** The code of the close this server began, which the metrics count rather than the peer's echo of it. */
  private closeCode: number | undefined
  private readonly outbox: Outbox
  private graceTimer: NodeJS.Timeout | undefined
  /** A message is being handled; the next waits in `inbox`, so a `send` right after a `join` finds the room joined. */
  private busy = false
  /**
   * Messages read while one was being handled, oldest first from `next`. The
   * socket is paused as soon as one waits, so this holds at most what ws had
   * already read from the kernel (one read's worth), never what a client sends
   * faster than it is served.
   */
  private inbox: ClientMessage[] | undefined
  private next = 0
  private paused = false
  /** Sends handed to the broker and not yet answered, oldest first: acks come in this order. */
  private sendsInFlight: Array<Promise<void>> = []
  private readonly rate: TokenBucket
  /** Until when messages are refused for the rate, after a refusal (RATE_LIMIT_HOLD_MS). */
  private rateHeldUntil = 0
  /** Made at the first refusal: most connections never err, and a bucket made full later is the same bucket. */
  private errorBudget: TokenBucket | undefined

  /**
   * @param transport where the writer may write frames past ws (upgrade.ts); undefined to send through ws
   */
  readonly id: string
  readonly user: string
  readonly authenticated: boolean
  readonly data: unknown

  constructor (private readonly socket: SocketLike, transport: Transport | undefined, identity: Admitted, private readonly context: ConnectionContext) {
    this.id = identity.id
    this.user = identity.user
    this.name = identity.name
    this.authenticated = identity.authenticated
    this.data = identity.data
    this.outbox = new Outbox(context.writer, socket, transport, this)
    const { rateLimit } = context.options
    this.rate = new TokenBucket(rateLimit.perSecond, rateLimit.burst, Date.now())
    // Listeners are attached before anything awaits, so no early frame is lost.
    socket.on('message', (data, isBinary) => this.receive(data, isBinary))
    socket.on('pong', () => { this.alive = true })
    socket.on('close', (code) => this.closed(code))
    context.hub.attach(this)
    this.reply({ type: 'welcome', protocol: PROTOCOL_VERSION, id: this.id, user: this.user, name: this.name })
    // Written at once, not at the end of the turn: then it joins the 101 response held in the socket (upgrade.ts).
    this.outbox.write()
  }

  // ------------------------------------------------------------ write side

  deliver (payload: Buffer): void {
    const count = this.context.hub.count
    if (this.closing || this.socket.readyState !== OPEN) {
      count.dropped++
      return
    }
    if (!this.outbox.offer(payload, this.context.options.maxBufferedBytes)) {
      count.dropped++
      count.slowConsumerCloses++
      this.close(CloseCodes.slowConsumer, 'slow consumer')
    }
  }

  /** Writing this connection's frames threw: nothing more can be said to it. */
  writeFailed (error: unknown): void {
    this.context.log.error({ err: error, id: this.id }, 'chat connection could not be written to; terminating it')
    this.closing = true
    this.socket.terminate()
  }

  close (code: number, reason: string): void {
    if (this.closing) return
    this.closing = true
    this.closeCode = code
    // What this turn queued goes before the close frame.
    this.outbox.write()
    if (this.socket.readyState === OPEN) this.socket.close(code, reason)
    // The peer's answer to the close frame must be read; what still waits in the inbox is not handled.
    this.resumeReading()
    this.graceTimer = setTimeout(() => this.socket.terminate(), CLOSE_GRACE_MS)
    this.graceTimer.unref()
  }

  /** One heartbeat tick: terminate a peer that did not answer the last ping, ping the others. */
  heartbeat (): void {
    // A closing connection is left to its grace timer, so a slow reader still gets to see its close code.
    if (this.closing) return
    // While paused, the pong is in the socket unread: the peer is not the one that is silent.
    if (!this.alive && !this.paused) {
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
    const now = Date.now()
    const held = now < this.rateHeldUntil
    if (held || !this.rate.take(now)) {
      if (!held) this.rateHeldUntil = now + Math.max(this.rate.msUntilToken(), RATE_LIMIT_HOLD_MS)
      // Flow control, not a mistake of the client's: it is told when to retry, and its error budget is untouched.
      const ref = decoded.message.ref === undefined ? {} : { ref: decoded.message.ref }
      this.context.hub.metrics.refused('rate_limited')
      return this.reply({ type: 'error', ...ref, code: 'rate_limited', message: 'too many messages; slow down', retryAfter: this.rateHeldUntil - now })
    }
    if (!this.busy) {
      void this.pump(decoded.message)
      return
    }
    if (this.inbox === undefined) this.inbox = [decoded.message]
    else this.inbox.push(decoded.message)
    if (!this.paused) {
      this.paused = true
      this.socket.pause()
    }
  }

  /** Handles `first`, then every message that waits behind it, then reads from the socket again. */
  private async pump (first: ClientMessage): Promise<void> {
    this.busy = true
    let message: ClientMessage | undefined = first
    while (message !== undefined) {
      await this.handle(message)
      message = this.inbox?.[this.next++]
    }
    this.inbox = undefined
    this.next = 0
    this.busy = false
    this.resumeReading()
  }

  private resumeReading (): void {
    if (!this.paused) return
    this.paused = false
    this.socket.resume()
  }

  /**
   * Handles one message and never rejects: a refusal is answered, a failure
   * closes the connection. Consecutive sends overlap while they are stored
   * (their acks still come in order); any other message first waits until
   * every send before it is answered, so replies keep the order of requests.
   */
  private async handle (message: ClientMessage): Promise<void> {
    const { hub } = this.context
    const ref = message.ref === undefined ? {} : { ref: message.ref }
    try {
      if (message.type !== 'send' && this.sendsInFlight.length > 0) await this.answeredSends()
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
          const { stored } = await hub.acceptSend(this, message)
          this.sendsInFlight.push(this.acknowledge(message, stored))
          // The socket is not read while the pump waits here, so a fast sender is slowed, not buffered for.
          if (this.sendsInFlight.length >= MAX_SENDS_IN_FLIGHT) await this.sendsInFlight.shift()
          break
        }
        case 'edit':
        case 'delete':
        case 'react': {
          const seq = await hub.changeMessage(this, message)
          if (message.ref !== undefined) this.reply({ type: 'ack', ref: message.ref, room: message.room, seq })
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
        case 'members': {
          const page = await hub.memberList(this, message)
          this.reply({ type: 'members', ...ref, room: message.room, members: page.members, more: page.more })
          break
        }
        case 'read':
          this.reply({ type: 'read', ...ref, room: message.room, seq: await hub.read(this, message) })
          break
        case 'ping':
          this.reply({ type: 'pong', ...ref })
          break
      }
    } catch (error) {
      this.failed(error, message)
    }
  }

  /** Answers a send once it is stored: its ack, or the refusal. */
  private async acknowledge (message: ClientMessageOf<'send'>, stored: Promise<Message>): Promise<void> {
    try {
      const { seq } = await stored
      if (message.ref !== undefined) this.reply({ type: 'ack', ref: message.ref, room: message.room, seq })
    } catch (error) {
      this.failed(error, message)
    }
  }

  private async answeredSends (): Promise<void> {
    const pending = this.sendsInFlight
    this.sendsInFlight = []
    await Promise.all(pending)
  }

  /** A refusal (`ChatError`) is answered; anything else is a bug of ours and closes the connection. */
  private failed (error: unknown, message: ClientMessage): void {
    if (error instanceof ChatError) {
      this.refuse({ ok: false, code: error.code, message: error.message }, message.ref)
    } else {
      this.context.log.error({ err: error, id: this.id, type: message.type }, 'chat message handler failed')
      this.close(CloseCodes.internalError, 'internal error')
    }
  }

  /** Answers a refused message with an `error`; a client that keeps erring is closed with 1008. */
  private refuse (error: { ok: false, code: ErrorCode, message: string }, ref: string | undefined): void {
    this.reply({ type: 'error', ...(ref === undefined ? {} : { ref }), code: error.code, message: error.message })
    this.context.hub.metrics.refused(error.code)
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

  private closed (peerCode: number): void {
    this.closing = true
    clearTimeout(this.graceTimer)
    this.context.hub.metrics.closed(this.closeCode ?? peerCode)
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
