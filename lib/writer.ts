/**
 * The write side of the connections of one plugin instance, gorilla's write
 * pump in Node's idiom: a broadcast is framed once for all its recipients, and
 * what a connection is handed during one turn of the event loop is written in
 * one system call once that turn's input is handled. Each connection's queue is
 * bounded by `maxBufferedBytes`; past it the reader is too slow, and the
 * connection is told so rather than buffered for.
 */
import { OPEN, type Transport } from './upgrade.js'

/** The part of a `ws` WebSocket the writer uses. */
export interface WritableSocket {
  readonly readyState: number
  /** Bytes given to the socket and not yet sent (ws counts what was written to its TCP socket too). */
  readonly bufferedAmount: number
  /** Negotiated extensions; '' when frames go uncompressed, as they do by default. */
  readonly extensions: string
  send(data: Buffer, options: { binary: boolean }): void
}

/** The counters the writer keeps up to date (the hub's, so that `stats()` has one source). */
export interface WriteCounts {
  messagesOut: number
  dropped: number
}

/** Header bytes of a server text frame by payload length (RFC 6455 §5.2: 7-bit, 16-bit or 64-bit length). */
const SHORT_HEADER = 2
const MEDIUM_HEADER = 4
const LONG_HEADER = 10
const MAX_SHORT_LENGTH = 125
const MAX_MEDIUM_LENGTH = 0xffff
/** FIN and opcode 1 (text): a whole text message in one frame. */
const FIN_TEXT = 0x81
const LENGTH_16 = 126
const LENGTH_64 = 127

/** Frames a text message as a server does (unmasked), header and payload in one buffer, so one write queues it. */
export function textFrame (payload: Buffer): Buffer {
  const length = payload.length
  const header = length <= MAX_SHORT_LENGTH ? SHORT_HEADER : length <= MAX_MEDIUM_LENGTH ? MEDIUM_HEADER : LONG_HEADER
  const frame = Buffer.allocUnsafe(header + length)
  frame[0] = FIN_TEXT
  if (header === SHORT_HEADER) {
    frame[1] = length
  } else if (header === MEDIUM_HEADER) {
    frame[1] = LENGTH_16
    frame.writeUInt16BE(length, 2)
  } else {
    frame[1] = LENGTH_64
    frame.writeUInt32BE(0, 2)
    frame.writeUInt32BE(length, 6)
  }
  payload.copy(frame, header)
  return frame
}

/**
 * One per plugin instance: the frame cache and the connections holding frames
 * this turn. Instances never share state, so one that fails cannot hold up
 * another.
 */
export class Writer {
  /**
   * The last payload framed, and its frame. The hub hands the same payload to
   * every member of a room in a row, so it is framed once per broadcast.
   */
  private lastPayload: Buffer | undefined
  private lastFrame: Buffer = Buffer.alloc(0)
  /** Outboxes handed frames this turn. */
  private batch: Outbox[] = []

  /** @param counts updated as frames are written or dropped */
  constructor (readonly counts: WriteCounts) {}

  framed (payload: Buffer): Buffer {
    if (payload !== this.lastPayload) {
      this.lastPayload = payload
      this.lastFrame = textFrame(payload)
    }
    return this.lastFrame
  }

  /** Writes `outbox` at the end of this turn, with everything else it is handed meanwhile. */
  enlist (outbox: Outbox): void {
    // setImmediate runs once the poll phase has handled every socket that had input this turn.
    if (this.batch.push(outbox) === 1) setImmediate(this.flush)
  }

  /** Ends the turn's batch. Each outbox is written on its own, so one that throws strands none of the others. */
  private readonly flush = (): void => {
    const batch = this.batch
    this.batch = []
    for (const outbox of batch) {
      try {
        outbox.flush()
      } catch (error) {
        outbox.owner.writeFailed(error)
      }
    }
  }
}

/**
 * One connection's frames of this turn, not yet given to the socket. Holding
 * them here rather than corking the socket spares a stream buffer entry per
 * frame, and most batches in rooms of a few members are a single frame.
 */
export class Outbox {
  private pending: Buffer[] | undefined
  private pendingBytes = 0
  private enlisted = false
  /**
   * Where frames framed here are written, past ws. Only without compression:
   * then every member gets the same bytes, so they are framed once and written as they are.
   */
  private readonly direct: Transport | undefined

  /**
   * @param transport the TCP socket under `socket` (upgrade.ts); without one,
   *   frames go through `socket.send`, one call each
   * @param owner told when a write at the end of a turn threw
   */
  constructor (
    private readonly writer: Writer,
    private readonly socket: WritableSocket,
    transport: Transport | undefined,
    readonly owner: { writeFailed(error: unknown): void },
  ) {
    this.direct = socket.extensions === '' ? transport : undefined
  }

  /**
   * Queues `payload` for the end of this turn, unless the queue would pass
   * `maxBytes`: then false, and the caller closes the connection as a slow consumer.
   */
  offer (payload: Buffer, maxBytes: number): boolean {
    const frame = this.direct ? this.writer.framed(payload) : payload
    if (this.socket.bufferedAmount + this.pendingBytes + frame.length > maxBytes) {
      // This turn's frames were never offered to the reader: offer them now, so only bytes the kernel
      // refused count against the bound, exactly as without batching.
      this.write()
      if (this.socket.bufferedAmount + frame.length > maxBytes) return false
    }
    if (this.pending === undefined) this.pending = [frame]
    else this.pending.push(frame)
    this.pendingBytes += frame.length
    if (!this.enlisted) {
      this.enlisted = true
      this.writer.enlist(this)
    }
    return true
  }

  /** Ends this turn's batch for this connection. */
  flush (): void {
    // Reset first: whatever the write does, the next turn's frames get a batch of their own.
    this.enlisted = false
    this.write()
  }

  /** Gives the frames held so far to the socket: one write when framed here. */
  write (): void {
    const frames = this.pending
    if (frames === undefined) return
    this.pending = undefined
    const bytes = this.pendingBytes
    this.pendingBytes = 0
    const counts = this.writer.counts
    if (this.socket.readyState !== OPEN) {
      counts.dropped += frames.length
      return
    }
    counts.messagesOut += frames.length
    if (this.direct) {
      this.direct.write(frames.length === 1 ? frames[0] as Buffer : Buffer.concat(frames, bytes))
    } else {
      for (const payload of frames) this.socket.send(payload, { binary: false })
    }
  }
}
