/**
 * The client library's public types. Types only: this file compiles to
 * nothing, so `index.js` stays one self-contained file for browsers.
 */
import type { ErrorCode } from '../errors.js'
import type { LeftReason, Message, Presence, ServerFrameOf, TypingEvent, Update } from '../protocol.js'
import type { ChatClientError } from './index.js'

export type Welcome = ServerFrameOf<'welcome'>
/** A room's join: its members, latest `seq`, history, and `read`, this user's read marker (0 when none). */
export type Joined = ServerFrameOf<'joined'>
/** A user's read marker in `room`: every message up to `seq` is read. */
export type ReadMarker = ServerFrameOf<'read'>

/** The server took this client out of `room`; it is not rejoined. */
export interface Removed {
  room: string
  /** `kicked` (it may join again) or `banned` (a join is refused until the ban ends). */
  reason?: LeftReason
}

/** A handler type compared bivariantly, so that both the DOM's and `ws`'s event types fit. */
type Handler<E> = { bivariant (event: E): void }['bivariant']

/** The part of a WebSocket the client uses: the browser's and `ws`'s both fit. */
export interface WebSocketLike {
  send (data: string): void
  close (code?: number, reason?: string): void
  /** `ws` has it: drops a half-open socket at once instead of waiting for a close handshake. */
  terminate?: () => void
  onmessage: Handler<{ data: unknown }> | null
  onclose: Handler<{ code: number, reason: string }> | null
  onerror: Handler<unknown> | null
}

export type WebSocketConstructor = new (url: string) => WebSocketLike

export interface ChatClientOptions {
  /** Display name asked for with `?name=`. After `welcome` and `nick`, the current name is asked for on reconnect. */
  name?: string
  /** The WebSocket implementation. Defaults to the global one (browsers, Node ≥ 22); on Node 20 pass `WebSocket` from `ws`. */
  WebSocket?: WebSocketConstructor
  /** Delays between reconnect attempts (ms, doubling from `minDelay` up to `maxDelay`, jittered), or `false` never to reconnect. */
  reconnect?: false | { minDelay?: number, maxDelay?: number }
  /** ms between protocol pings; when nothing arrived since the previous one the connection is dead and replaced. `0` disables. Default 25000. */
  pingInterval?: number
  /** ms a request waits for its answer, and a connection for its `welcome` and rejoins. Default 10000. */
  requestTimeout?: number
  /** How many sends, edits, deletes and reactions may wait for a connection, or for the server's rate limit; more are refused with `queue_full`. Default 100. */
  maxQueuedSends?: number
  /** How many messages each room's store (`store(room)`) keeps, dropping the oldest; each message a `history()` page brings in raises it by one. Default 1000. */
  storedMessages?: number
}

/**
 * - `connecting`: the first connection is being made;
 * - `open`: connected and every room rejoined;
 * - `reconnecting`: the connection was lost, another is being made;
 * - `closed`: for good, after `close()` or a close that must not be retried;
 * - `unauthorized`: for good: the server's `authenticate` refused us (HTTP
 *   401), so retrying cannot help; sign in again and make a new client.
 */
export type ConnectionStatus = 'connecting' | 'open' | 'reconnecting' | 'closed' | 'unauthorized'

export interface StatusChange {
  status: ConnectionStatus
  /** Close code of the connection that ended (1006 when it was lost without one). */
  code?: number
  reason?: string
  /** With `reconnecting`: ms until the next attempt. */
  retryIn?: number
}

/** Messages of `room` after `since` may be missing: fetch them with `history()` if they matter. */
export interface Gap {
  room: string
  /** The last seq this client had seen, in `previousEpoch`. */
  since: number
  previousEpoch: string
  /** When it differs from `previousEpoch`, the old stream is gone and seq started again at 1. */
  epoch: string
}

/** Events of a `ChatClient`, by name, with what the listener receives. */
export interface ChatClientEvents {
  /** A connection was accepted: `id` is this connection's, `user` who it is (the same in each tab of one person), `name` the one in use. */
  welcome: Welcome
  status: StatusChange
  /**
   * A room was (re)joined: the first `maxMembersInReply` members (page the rest
   * with `members()`), `memberCount`, the raw history (whose new messages also
   * come as `message`), and `read`, this user's read marker in the room.
   */
  joined: Joined
  /** Every message of a joined room, from live delivery or a join's history, once each and in seq order (with the updates). */
  message: Message
  /**
   * A message was edited, deleted or reacted to: every change of a joined
   * room, live or replayed by a resume, once each and in seq order. The room's
   * store already holds the changed message (`store(room).get(update.target)`).
   */
  update: Update
  /**
   * Someone joined, left or renamed. A `join` has `first` (the user had no
   * other connection in the room) and a `leave` has `last` (the user has none
   * left): show "alice joined" on `first` and "alice left" on `last`.
   */
  presence: Presence
  /** This user's read marker moved in another tab or device (not for this client's own `read()`). */
  read: ReadMarker
  /** The server removed this client from a room (kicked or banned): it is not rejoined on reconnect. */
  left: Removed
  typing: TypingEvent
  gap: Gap
  /** An `error` the server sent that answers no request (e.g. for `typing`; never `rate_limited`, which only paces the client), or a room that could not be rejoined. */
  error: ChatClientError
}

/**
 * Why a request failed: a wire `ErrorCode`, or `timeout` (no answer in time; a
 * send may have been stored), `closed` (the client closed), `queue_full`.
 */
export type ClientErrorCode = ErrorCode | 'timeout' | 'closed' | 'queue_full'
