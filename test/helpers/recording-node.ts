/**
 * A `BrokerNode` that records what a broker delivers and logs, so broker
 * tests can run without a hub or sockets.
 */
import { EventEmitter } from 'node:events'
import type { BrokerEvent, BrokerNode, NodeSignal, ReactionLimits, UserEvent } from '../../lib/broker.js'
import { isEntry, type Entry, type Message, type RoomEvent } from '../../lib/protocol.js'
import { resolveOptions } from '../../lib/options.js'

/** Long enough for a delivery through Redis on a busy machine. */
const WAIT_TIMEOUT_MS = 10_000

export class RecordingNode implements BrokerNode {
  readonly delivered: Array<{ room: string, event: BrokerEvent }> = []
  readonly logs: Array<{ level: 'info' | 'warn' | 'error', msg: string | undefined }> = []
  private readonly changed = new EventEmitter()

  readonly log = {
    info: (_obj: object, msg?: string) => this.record('info', msg),
    warn: (_obj: object, msg?: string) => this.record('warn', msg),
    error: (_obj: object, msg?: string) => this.record('error', msg),
  }

  /** What `connections()` answers: a test sets it to see it listed in `nodes()`. */
  connectionCount = 0

  /** Bounds of reactions: the plugin's defaults unless a test gives its own. */
  constructor (readonly historySize = 100, readonly reactionLimits: ReactionLimits = resolveOptions().reactionLimits) {}

  connections (): number {
    return this.connectionCount
  }

  deliver (room: string, event: BrokerEvent): void {
    this.delivered.push({ room, event })
    this.changed.emit('change')
  }

  /** What `outOfSync` reported, in order. */
  readonly outOfSyncs: Array<{ room: string, epoch: string | undefined }> = []

  /** What `signal` delivered, in order. */
  readonly signals: NodeSignal[] = []

  signal (event: NodeSignal): void {
    this.signals.push(event)
    this.changed.emit('change')
  }

  outOfSync (room: string, epoch?: string): void {
    this.outOfSyncs.push({ room, epoch })
    this.changed.emit('change')
  }

  /** The wire events delivered for `room` (user events left out: `userEvents` has them). */
  events (room: string): RoomEvent[] {
    return this.delivered.filter((entry) => entry.room === room).map((entry) => entry.event).filter((event): event is RoomEvent => event.type !== 'user')
  }

  userEvents (room: string): UserEvent[] {
    return this.delivered.filter((entry) => entry.room === room).map((entry) => entry.event).filter((event): event is UserEvent => event.type === 'user')
  }

  /** The stored entries delivered for `room`: messages and updates. */
  entries (room: string): Entry[] {
    return this.events(room).filter(isEntry)
  }

  messages (room: string): Message[] {
    return this.events(room).filter((event): event is Message => event.type === 'message')
  }

  /** Resolves once `done()` holds; rejects naming `what` after a timeout. */
  async until (what: string, done: () => boolean, timeoutMs = WAIT_TIMEOUT_MS): Promise<void> {
    if (done()) return
    await new Promise<void>((resolve, reject) => {
      const check = (): void => {
        if (!done()) return
        cleanup()
        resolve()
      }
      const timer = setTimeout(() => {
        cleanup()
        reject(new Error(`timed out waiting for ${what}`))
      }, timeoutMs)
      // Some conditions change without a delivery (a log line): look now and then too.
      const poll = setInterval(check, 50)
      const cleanup = (): void => {
        clearTimeout(timer)
        clearInterval(poll)
        this.changed.off('change', check)
      }
      this.changed.on('change', check)
    })
  }

  private record (level: 'info' | 'warn' | 'error', msg: string | undefined): void {
    this.logs.push({ level, msg })
    this.changed.emit('change')
  }
}
