/**
 * The leaves a node published and waits to hear back from the broker: only
 * the delivered `presence` says `last`, which the broker decides across nodes
 * with the roster change. A room stays subscribed while any is awaited.
 */
import type { Presence } from './protocol.js'

/**
 * How long a leave is awaited once the broker took it: a delivery takes a
 * round trip through the broker (milliseconds); past this the broker is taken
 * to be in trouble and the hub's `leave` is told without `last`.
 */
export const LEAVE_ECHO_MS = 2000

export class LeaveEchoes {
  /** member id → those waiting, oldest first (a member may leave, join and leave again). */
  private readonly waiting = new Map<string, Array<(leave: Presence | undefined) => void>>()

  /** Whether a leave is awaited. */
  get size (): number {
    return this.waiting.size
  }

  /** A delivered `leave`: the oldest one awaited for its member hears it. */
  heard (leave: Presence): void {
    this.waiting.get(leave.member.id)?.shift()?.(leave)
  }

  /**
   * Runs `publish` (the leave of `memberId`) and resolves with the leave as
   * delivered, or undefined when it did not come back within LEAVE_ECHO_MS.
   */
  async publish (memberId: string, publish: () => Promise<void>): Promise<Presence | undefined> {
    let hear: (leave: Presence | undefined) => void = () => {}
    const echo = new Promise<Presence | undefined>((resolve) => { hear = resolve })
    const waiting = this.waiting.get(memberId) ?? []
    waiting.push(hear)
    this.waiting.set(memberId, waiting)
    let timer: NodeJS.Timeout | undefined
    try {
      // The broker may deliver within `publish` (memory, SQLite): the waiter is in place before.
      await publish()
      timer = setTimeout(hear, LEAVE_ECHO_MS, undefined)
      return await echo
    } finally {
      clearTimeout(timer)
      const index = waiting.indexOf(hear)
      if (index >= 0) waiting.splice(index, 1)
      if (waiting.length === 0 && this.waiting.get(memberId) === waiting) this.waiting.delete(memberId)
    }
  }
}
