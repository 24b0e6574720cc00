/**
 * The seam between the chat and the `metrics` option (metrics.ts): the events
 * the hub and the connections report, and a broker whose calls are timed.
 * Without the option the hub holds `NO_METRICS`, whose calls do nothing, and
 * the broker is not wrapped, so the chat pays nothing for metrics it does not
 * serve. What the hub already counts (messages, dropped frames, connections,
 * rooms) is not reported here: the metrics read it when scraped.
 */
import { BROKER_METHODS, type Broker, type BrokerOperation } from './broker.js'
import type { ErrorCode } from './errors.js'

/** Events of the chat that the metrics count; none of them is per delivery. */
export interface ChatMetrics {
  /** A connection ended: with the close code the server sent, else the peer's (1006 without a close frame). */
  closed(code: number): void
  /** An `error` frame with `code` was sent. */
  refused(code: ErrorCode): void
  /** A join with `since` was answered, `recovered` as its `joined` says. */
  resumed(recovered: boolean): void
}

/** The chat without metrics: every report is a call that does nothing. */
export const NO_METRICS: ChatMetrics = Object.freeze({ closed () {}, refused () {}, resumed () {} })

/** Told of every broker call once it settles. */
export interface BrokerCallObserver {
  /** `error`: what the call rejected with, undefined when it resolved. */
  brokerCall(operation: BrokerOperation, seconds: number, error: unknown): void
}

/**
 * `broker` with each call timed from the moment it is made until it settles.
 * The calls themselves are untouched: made at once, in order, and their
 * promises returned as they are, so every guarantee of the broker holds.
 */
export function timedBroker (broker: Broker, observer: BrokerCallObserver): Broker {
  const timed: Partial<Record<BrokerOperation, (...args: unknown[]) => Promise<unknown>>> = {}
  for (const operation of BROKER_METHODS) {
    const call = broker[operation] as (...args: unknown[]) => Promise<unknown>
    timed[operation] = (...args) => {
      const started = performance.now()
      const result = call.apply(broker, args)
      const settled = (error: unknown): void => observer.brokerCall(operation, (performance.now() - started) / 1000, error)
      result.then(() => settled(undefined), settled)
      return result
    }
  }
  // Typed as the broker's methods: a method of Broker missing from BROKER_METHODS fails to compile here.
  return timed as Pick<Broker, BrokerOperation>
}
