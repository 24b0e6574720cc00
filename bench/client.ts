/**
 * A minimal WebSocket client over a raw TCP socket, for the load generator.
 * It must cost far less per frame than the servers under test, so it parses
 * only frame headers and, in `message` frames, the seq and the send time the
 * publisher wrote into the text, and in `ack` frames the send time the
 * publisher wrote into the `ref`; `ws` as a client would be the bottleneck.
 *
 * A client either times every frame, reading as soon as data arrives, or is
 * batched: once joined, when its reads come less than `BATCH_MS` apart, it
 * stops reading until the generator lets it (`readBatch`). A read of one frame
 * costs the generator about what a write of one frame costs the server (the
 * syscall, the ACK it sends, Node's callback), so a generator whose every
 * member read each frame at once could never outrun a server that batches.
 * Batched clients still count every frame and check its seq, but their
 * latency would be the batching's, so they record none. A batched client
 * that gets frames less often reads them at once: pausing would cost more
 * than it saves.
 */
import { connect, type Socket } from 'node:net'
import { performance } from 'node:perf_hooks'

const HANDSHAKE_END = Buffer.from('\r\n\r\n')
const SEQ = Buffer.from('"seq":')
const STAMP = Buffer.from('"text":"t')
const REF = Buffer.from('"ref":"')
/** Offset of the first letter of the type in `{"type":"…`. */
const TYPE_AT = 9
const M = 0x6d // message
const J = 0x6a // joined
const A = 0x61 // ack

/**
 * Every client reads into this one buffer (net's `onread`), so a read costs no
 * new Buffer and no stream 'data' event: most of what a client paid per frame
 * when each member gets one frame per read. Reads are handled synchronously; a
 * partial frame left at the end of one is copied out before the next.
 */
const READ_BUFFER = Buffer.allocUnsafe(65536)

/** A batched client reads at most this long after its frames arrive: well inside Linux's 40 ms delayed ACK. */
export const BATCH_MS = 20

/** Latencies in 10 µs buckets up to 2 s, and the maximum. */
export class Histogram {
  static readonly BUCKET_US = 10
  readonly buckets = new Uint32Array(200_000)
  count = 0
  max = 0

  record (us: number): void {
    const bucket = Math.min(this.buckets.length - 1, Math.max(0, Math.floor(us / Histogram.BUCKET_US)))
    this.buckets[bucket]!++
    this.count++
    if (us > this.max) this.max = us
  }

  /** The latency (ms) below which `fraction` of the samples fall. */
  quantile (fraction: number): number {
    const target = Math.ceil(this.count * fraction)
    let seen = 0
    for (let i = 0; i < this.buckets.length; i++) {
      seen += this.buckets[i]!
      if (seen >= target && seen > 0) return ((i + 1) * Histogram.BUCKET_US) / 1000
    }
    return 0
  }

  reset (): void {
    this.buckets.fill(0)
    this.count = 0
    this.max = 0
  }
}

/** What every client of one generator adds to. */
export interface Tally {
  messages: number
  orderViolations: number
  gaps: number
  errors: number
  /** Close codes the server sent, and connections lost without one (key 0). */
  closes: Map<number, number>
  /** Time of the last frame of any kind, to tell when the server has gone quiet. */
  lastFrameAt: number
  latency: Histogram
  /** Acks, and acks whose ref (send time) was earlier than the previous ack's on the same connection. */
  acks: number
  ackDisorder: number
  /** Send → ack, from the send time in each ack's ref. */
  ackLatency: Histogram
  /** Each connection's TCP connect → its `joined`: the whole connect path, upgrade and join. */
  connectLatency: Histogram
}

export function newTally (): Tally {
  return { messages: 0, orderViolations: 0, gaps: 0, errors: 0, closes: new Map(), lastFrameAt: 0, latency: new Histogram(), acks: 0, ackDisorder: 0, ackLatency: new Histogram(), connectLatency: new Histogram() }
}

/** Microseconds on this process's monotonic clock: what publishers write and receivers subtract. */
export function nowUs (): number {
  return Math.round(performance.now() * 1000)
}

function digitsAt (buf: Buffer, at: number): number {
  let value = 0
  for (let c = buf[at]!; c >= 0x30 && c <= 0x39; c = buf[++at]!) value = value * 10 + c - 0x30
  return value
}

/** A client frame: FIN + opcode, masked with a zero key (allowed, and leaves the payload as is). */
export function clientFrame (payload: Buffer, opcode = 1): Buffer {
  const long = payload.length >= 126
  const header = Buffer.alloc(long ? 8 : 6)
  header[0] = 0x80 | opcode
  if (long) {
    header[1] = 0x80 | 126
    header.writeUInt16BE(payload.length, 2)
  } else {
    header[1] = 0x80 | payload.length
  }
  return Buffer.concat([header, payload])
}

export class Client {
  private readonly socket: Socket
  private rest: Buffer | undefined
  private upgraded = false
  /** Seq of the last message seen; -1 until `joined` says where the room was. */
  private lastSeq = -1
  /** When this client last read (µs), and whether it has stopped reading until `readBatch`. */
  private lastReadAt = 0
  private paused = false
  /** The ref (send time, µs) of the last ack: a connection's sends are answered in order. */
  private lastAckRef = 0
  open = true
  joined = false
  /** Called on each ack: a closed-loop publisher sends its next message from here. */
  onAck: (() => void) | undefined
  /** When the TCP connect began (µs): its `joined` ends the connect path. */
  private readonly startedAt = nowUs()

  constructor (port: number, private readonly room: string, private readonly tally: Tally, private readonly onJoined: (client: Client) => void,
    /** Whether this client times its frames (and reads at once) or reads in batches, untimed. */
    private readonly timed: boolean) {
    this.socket = connect({
      host: '127.0.0.1',
      port,
      onread: {
        buffer: READ_BUFFER,
        callback: (bytes) => {
          const now = nowUs()
          this.receive(READ_BUFFER.subarray(0, bytes), now)
          return this.keepsReading(now)
        },
      },
    })
    this.socket.setNoDelay(true)
    this.socket.on('connect', () => {
      this.socket.write(`GET /ws HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n')
    })
    this.socket.on('error', () => {})
    this.socket.on('close', () => {
      if (this.open) tally.closes.set(0, (tally.closes.get(0) ?? 0) + 1)
      this.open = false
    })
  }

  write (bytes: Buffer): void {
    if (this.open) this.socket.write(bytes)
  }

  /** False stops the handle's reads until `readBatch` resumes them: for a batched client whose frames come fast. */
  private keepsReading (now: number): boolean {
    const seldom = now - this.lastReadAt >= BATCH_MS * 1000
    this.lastReadAt = now
    if (this.timed || !this.joined || seldom) return true
    this.paused = true
    return false
  }

  /** Lets a batched client read whatever arrived since its last read, in one read. */
  readBatch (): void {
    if (!this.paused) return
    this.paused = false
    // The callback's false stops the handle's reads without marking the stream paused: resume() restarts them.
    if (this.open) this.socket.resume()
  }

  /** Drops the connection with a reset, so no TIME_WAIT is left behind for the next run. */
  destroy (): void {
    this.open = false
    this.socket.resetAndDestroy()
  }

  /** `now`: when the read happened (µs), the arrival time of every frame in it. */
  private receive (chunk: Buffer, now: number): void {
    const buf = this.rest === undefined ? chunk : Buffer.concat([this.rest, chunk])
    let at = 0
    if (!this.upgraded) {
      const end = buf.indexOf(HANDSHAKE_END)
      if (end < 0) return void (this.rest = Buffer.from(buf))
      if (buf.toString('latin1', 0, 12) !== 'HTTP/1.1 101') {
        this.tally.errors++
        return this.destroy()
      }
      this.upgraded = true
      this.write(clientFrame(Buffer.from(JSON.stringify({ type: 'join', room: this.room }))))
      at = end + HANDSHAKE_END.length
    }
    this.tally.lastFrameAt = now
    while (buf.length - at >= 2) {
      let length = buf[at + 1]! & 0x7f
      let header = 2
      if (length === 126) {
        if (buf.length - at < 4) break
        length = buf.readUInt16BE(at + 2)
        header = 4
      } else if (length === 127) {
        if (buf.length - at < 10) break
        length = buf.readUIntBE(at + 4, 6)
        header = 10
      }
      if (buf.length - at < header + length) break
      this.frame(buf[at]! & 0x0f, buf, at + header, at + header + length, now)
      at += header + length
    }
    this.rest = at < buf.length ? Buffer.from(buf.subarray(at)) : undefined
  }

  private frame (opcode: number, buf: Buffer, start: number, end: number, now: number): void {
    if (opcode === 1) {
      const type = buf[start + TYPE_AT]
      if (type === M) {
        const seq = digitsAt(buf, buf.indexOf(SEQ, start) + SEQ.length)
        if (seq <= this.lastSeq) this.tally.orderViolations++
        else if (this.lastSeq >= 0 && seq !== this.lastSeq + 1) this.tally.gaps++
        this.lastSeq = seq
        this.tally.messages++
        if (this.timed) {
          const stamp = buf.indexOf(STAMP, start)
          if (stamp >= 0 && stamp < end) this.tally.latency.record(now - digitsAt(buf, stamp + STAMP.length))
        }
      } else if (type === A) {
        const ref = digitsAt(buf, buf.indexOf(REF, start) + REF.length)
        if (ref < this.lastAckRef) this.tally.ackDisorder++
        this.lastAckRef = ref
        this.tally.acks++
        this.tally.ackLatency.record(now - ref)
        this.onAck?.()
      } else if (type === J) {
        this.lastSeq = digitsAt(buf, buf.indexOf(SEQ, start) + SEQ.length)
        if (!this.joined) this.tally.connectLatency.record(now - this.startedAt)
        this.joined = true
        this.onJoined(this)
      } else if (buf.toString('latin1', start, start + 14) === '{"type":"error') {
        this.tally.errors++
      }
    } else if (opcode === 8) {
      const code = end - start >= 2 ? buf.readUInt16BE(start) : 1005
      this.tally.closes.set(code, (this.tally.closes.get(code) ?? 0) + 1)
      this.open = false
      this.socket.destroy()
    } else if (opcode === 9) {
      this.write(clientFrame(buf.subarray(start, end), 0xa))
    }
  }
}
