/**
 * One test connection to an application's chat, with no port: connected
 * through @fastify/websocket's `injectWS` and the application's own
 * `authenticate`, it joins, sends, asks for replies, expects frames or their
 * absence, and closes. What Phoenix's ChannelTest gives a channel's tests.
 */
import { AssertionError } from 'node:assert'
import type { FastifyInstance } from 'fastify'
import type { WebSocket } from 'ws'
import type { ClientMessage, ClientMessageOf, ClientMessageType, ServerFrame, ServerFrameOf, ServerFrameType } from '../protocol.js'
import { readFrame } from './frames.js'
import { describeClose, Mailbox, type Closed } from './mailbox.js'
import { matcherOf, show, type FramePattern, type FramePredicate } from './pattern.js'

/**
 * How long a wait for a frame, a reply or a close lasts by default: long
 * enough for a broker on another process under a loaded test machine, short
 * enough that a frame that never comes fails the test soon.
 */
const DEFAULT_TIMEOUT_MS = 2000
/** How long `refute` watches by default: Phoenix's `refute_push` watches 100 ms too. */
const DEFAULT_REFUTE_MS = 100

/** The reply each request type gets (PROTOCOL.md, "direct reply"); `typing` gets none. */
const REPLY_TYPES = {
  join: 'joined',
  leave: 'left',
  send: 'ack',
  edit: 'ack',
  delete: 'ack',
  react: 'ack',
  nick: 'renamed',
  history: 'history',
  members: 'members',
  read: 'read',
  ping: 'pong',
} as const satisfies Partial<Record<ClientMessageType, ServerFrameType>>

/** A client message that gets a direct reply. */
export type RequestType = keyof typeof REPLY_TYPES
/** The reply to a request of type `K`. */
export type ReplyTo<K extends RequestType> = ServerFrameOf<(typeof REPLY_TYPES)[K]>

/** Where a wait's time limit is given. */
export interface WaitOptions {
  /** ms; for `refute`, how long nothing may come. */
  timeout?: number
}

/** Something that runs cleanup when a test ends: node:test's `t` (TestContext), or any object with such an `after`. */
export interface TestCleanup {
  after (fn: () => unknown): unknown
}

export interface ConnectOptions {
  /** The chat's route, as registered (default `/ws`). */
  path?: string
  /** Query parameters of the upgrade request, e.g. the token the application's `authenticate` reads. */
  query?: Record<string, string>
  /** Headers of the upgrade request (`origin`, `authorization`…). */
  headers?: Record<string, string>
  /** Cookies of the upgrade request, sent in one `cookie` header. */
  cookies?: Record<string, string>
  /** The default time limit of this connection's waits, in ms (default 2000). */
  timeout?: number
  /** Closes the connection when the test ends: pass node:test's `t`. Without it, call `close()` or `terminate()`. */
  t?: TestCleanup
}

/** The part of the injected `ws` client a test connection uses (a structural type, so the kit's types need no ws types). */
export interface InjectedSocket {
  send (data: string): void
  close (code: number): void
  terminate (): void
}

/** A request the server refused with an `error` frame. */
export class RefusedError extends Error {
  constructor (readonly request: ClientMessage, readonly frame: ServerFrameOf<'error'>) {
    super(`${request.type} was refused: ${frame.code}: ${frame.message}`)
    this.name = 'RefusedError'
  }
}

/**
 * Connects to the chat of `app` as the application's `authenticate` decides
 * from `options`, and waits for `welcome`. Rejects when the upgrade is
 * refused (its message has the status, e.g. 401).
 */
export async function connect (app: FastifyInstance, options: ConnectOptions = {}): Promise<ChatTestClient> {
  await app.ready()
  const path = options.path ?? '/ws'
  const query = new URLSearchParams(options.query).toString()
  const headers: Record<string, string> = { ...options.headers }
  if (options.cookies) headers.cookie = Object.entries(options.cookies).map(([name, value]) => `${name}=${encodeURIComponent(value)}`).join('; ')
  const mailbox = new Mailbox()
  let socket: WebSocket
  try {
    // Listeners go on in onInit, before the upgrade completes: `welcome` comes at once.
    socket = await app.injectWS(query === '' ? path : `${path}?${query}`, { headers }, { onInit: (ws) => listen(ws, mailbox) })
  } catch (error) {
    throw new Error(`the upgrade of ${path} was refused: ${(error as Error).message}`, { cause: error })
  }
  options.t?.after(() => socket.terminate())
  const timeout = options.timeout ?? DEFAULT_TIMEOUT_MS
  try {
    const welcome = await mailbox.take(matcherOf({ type: 'welcome' }), timeout)
    return new ChatTestClient(socket, mailbox, welcome as ServerFrameOf<'welcome'>, timeout)
  } catch (error) {
    // No client to close is returned: the socket is closed here.
    socket.terminate()
    throw error
  }
}

function listen (socket: WebSocket, mailbox: Mailbox): void {
  socket.on('message', (data: Buffer, isBinary) => {
    const read = readFrame(data, isBinary)
    if ('frame' in read) mailbox.deliver(read.frame)
    else mailbox.violated(read.problem)
  })
  socket.on('close', (code, reason) => mailbox.end({ code, reason: reason.toString() }))
  // ws reports a broken stream as an error, then closes: the close says it to every wait.
  socket.on('error', () => {})
}

/**
 * One connection of a test. It keeps the frames it received and the test has
 * not yet taken, in order: `expect` and the requests take from them, `refute`
 * looks at them and at what comes next.
 */
export class ChatTestClient {
  private refs = 0

  /**
   * Made by `connect`.
   * @param welcome the server's `welcome`: the connection's `id`, its `user` and `name`, as `authenticate` made them
   */
  constructor (private readonly socket: InjectedSocket, private readonly mailbox: Mailbox, readonly welcome: ServerFrameOf<'welcome'>, private readonly timeout: number) {}

  /** Frames received and not yet taken by `expect` or a request, oldest first. */
  get frames (): readonly ServerFrame[] {
    return this.mailbox.frames
  }

  /** Sends `message` with a fresh `ref` and returns its reply; rejects with `RefusedError` when the server answers `error`. */
  async request<K extends RequestType> (message: Omit<ClientMessageOf<K>, 'ref'> & { type: K }, options: WaitOptions = {}): Promise<ReplyTo<K>> {
    const ref = `test-${++this.refs}`
    const sent = { ...message, ref } as ClientMessage
    const replyType: ServerFrameType = REPLY_TYPES[message.type]
    this.push(sent)
    const answer = await this.mailbox.take({
      description: `${replyType} or error frame answering ${show(sent)}`,
      test: (frame) => (frame.type === replyType || frame.type === 'error') && 'ref' in frame && frame.ref === ref,
    }, options.timeout ?? this.timeout)
    if (answer.type === 'error') throw new RefusedError(sent, answer)
    return answer as ReplyTo<K>
  }

  /** Joins `room` (with `since` and `epoch` to resume) and returns `joined`. */
  join (room: string, resume: { since?: number, epoch?: string } = {}, options?: WaitOptions): Promise<ServerFrameOf<'joined'>> {
    return this.request({ type: 'join', room, ...resume }, options)
  }

  /** Leaves `room` and returns `left`. */
  leave (room: string, options?: WaitOptions): Promise<ServerFrameOf<'left'>> {
    return this.request({ type: 'leave', room }, options)
  }

  /** Sends `text` to `room` and returns the seq its `ack` gives it; the `message` itself stays to be expected. */
  async send (room: string, text: string, fields: { cid?: string } = {}, options?: WaitOptions): Promise<number> {
    return (await this.request({ type: 'send', room, text, ...fields }, options)).seq
  }

  /** Sends `message` as it is, waiting for nothing: for `typing`, or to expect its reply or refusal yourself. */
  push (message: ClientMessage): void {
    this.socket.send(JSON.stringify(message))
  }

  /** Takes the first frame (received or to come) that matches `pattern`: Phoenix's `assert_push`. */
  expect<K extends ServerFrameType> (pattern: FramePattern<K>, options?: WaitOptions): Promise<ServerFrameOf<K>>
  /** Takes the first frame of `type` that `predicate` accepts. */
  expect<K extends ServerFrameType> (type: K, predicate: FramePredicate<K>, options?: WaitOptions): Promise<ServerFrameOf<K>>
  async expect (pattern: FramePattern<ServerFrameType> | ServerFrameType, second?: FramePredicate<ServerFrameType> | WaitOptions, third?: WaitOptions): Promise<ServerFrame> {
    const [predicate, options] = typeof second === 'function' ? [second, third] : [undefined, second]
    return this.mailbox.take(matcherOf(pattern, predicate), options?.timeout ?? this.timeout)
  }

  /** Fails if a frame matching `pattern` was received and not taken, or comes within the time (default 100 ms): Phoenix's `refute_push`. */
  refute<K extends ServerFrameType> (pattern: FramePattern<K>, options?: WaitOptions): Promise<void>
  refute<K extends ServerFrameType> (type: K, predicate: FramePredicate<K>, options?: WaitOptions): Promise<void>
  async refute (pattern: FramePattern<ServerFrameType> | ServerFrameType, second?: FramePredicate<ServerFrameType> | WaitOptions, third?: WaitOptions): Promise<void> {
    const [predicate, options] = typeof second === 'function' ? [second, third] : [undefined, second]
    return this.mailbox.refute(matcherOf(pattern, predicate), options?.timeout ?? DEFAULT_REFUTE_MS)
  }

  /** Waits for the server to close the connection, failing unless it closes with `code` when one is given. */
  async expectClose (code?: number, options?: WaitOptions): Promise<Closed> {
    const closed = await this.mailbox.closing(options?.timeout ?? this.timeout)
    if (code !== undefined && closed.code !== code) {
      throw new AssertionError({ message: `expected the connection to close with code ${code}, but it closed with ${describeClose(closed)}; ${this.mailbox.listing()}` })
    }
    return closed
  }

  /** Closes the connection as a client does (default 1000) and waits for the server's close. */
  async close (code = 1000, options?: WaitOptions): Promise<Closed> {
    if (this.mailbox.closed === undefined) this.socket.close(code)
    return this.mailbox.closing(options?.timeout ?? this.timeout)
  }

  /** Drops the connection at once, as a lost network does (no close frame). */
  terminate (): void {
    this.socket.terminate()
  }
}
