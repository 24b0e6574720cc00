/**
 * Whether the server behind a broker (Redis, PostgreSQL) answers, as the
 * broker's calls see it. A failed call becomes `unavailable` for its caller
 * (PROTOCOL.md: retry with the same cid); the outage and the recovery are
 * logged once each, however many calls fail or succeed meanwhile.
 */
import type { BrokerLogger } from '../broker.js'
import { ChatError } from '../errors.js'

export interface AvailabilityOptions {
  /** The server's name in logs and errors. */
  store: string
  /** The node's logger; undefined while the broker is closed (nothing is logged then). */
  log: () => BrokerLogger | undefined
  /** Whether every connection the broker needs is up, so that a call that succeeds means it recovered. */
  connected: () => boolean
  /** Called at every loss (e.g. rosters may now disagree with the store). */
  onLoss: () => void
}

export class Availability {
  private available = true

  constructor (private readonly options: AvailabilityOptions) {}

  /**
   * Awaits one call. A failure that `isOutage` says is the server's is an
   * outage; any other (a script or statement that failed) is logged as an error.
   * Either way the caller gets `unavailable`.
   */
  async run<T> (call: Promise<T>, isOutage: (error: unknown) => boolean): Promise<T> {
    try {
      const result = await call
      this.answered()
      return result
    } catch (error) {
      if (isOutage(error)) this.lost(error as Error)
      else this.options.log()?.error({ err: error }, `chat: a ${this.options.store} call failed`)
      throw new ChatError('unavailable', `the chat store (${this.options.store}) did not answer in time; retry with the same cid`)
    }
  }

  /** The server stopped answering (a failed call, or a connection that dropped). */
  lost (error: Error): void {
    this.options.onLoss()
    const log = this.options.log()
    if (!this.available || !log) return
    this.available = false
    log.warn({ err: error.message }, `chat: ${this.options.store} is unavailable; chat calls fail with "unavailable" until it answers again`)
  }

  /** The server answered: once every connection is up again, that ends an outage. */
  answered (): void {
    const log = this.options.log()
    if (this.available || !log || !this.options.connected()) return
    this.available = true
    log.info({}, `chat: ${this.options.store} is available again`)
  }
}
