/**
 * The open connections of one instance and their graceful drain on shutdown:
 * closed with 1001 in batches spread over a bounded time, so that the clients
 * do not all land on the other nodes in the same second, while the connections
 * not yet closed are served as usual.
 */
import { CloseCodes } from './errors.js'

/** What the drain needs of a connection. */
export interface Closable {
  close(code: number, reason: string): void
}

export interface DrainOptions {
  /** Connections closed together. */
  readonly batchSize: number
  /** ms between two batches, at most: see `MAX_DRAIN_MS`. */
  readonly intervalMs: number
}

/**
 * 250 every 100 ms is 2,500 closes a second: 10,000 connections drain in
 * 3.9 s. That is about what the surviving nodes can take together (one node
 * accepts some 2,000 connections a second in `npm run bench`'s `idle`
 * workload), and the clients' own jitter (a first retry 250 to 500 ms after
 * the 1001) smooths each batch into the next. Small batches at a short
 * interval make a smoother stream than large ones at a long interval.
 */
export const DEFAULT_DRAIN: DrainOptions = Object.freeze({ batchSize: 250, intervalMs: 100 })

/**
 * The last batch is closed at most this long after the drain starts, however
 * many connections there are: beyond `MAX_DRAIN_MS / intervalMs + 1` batches
 * (101 at the defaults, 25,250 connections), the interval shrinks so that they
 * all fit, and the closes come faster than configured. With `CLOSE_WAIT_MS`
 * after it, shutdown ends in 13 s, well within the 30 s an orchestrator
 * (Kubernetes' default grace period) allows before it kills the process.
 */
export const MAX_DRAIN_MS = 10_000

/**
 * After the last batch, how long `close()` waits for the connections to
 * complete their 1001 close; each connection destroys its own socket if its
 * peer does not answer (connection.ts).
 */
const CLOSE_WAIT_MS = 3000

export interface DrainSchedule {
  batches: number
  /** ms between two batches: the configured interval, or less to keep within `MAX_DRAIN_MS`. */
  intervalMs: number
}

/** How `count` connections are drained: the last batch goes `(batches - 1) * intervalMs` after the first, never past `MAX_DRAIN_MS`. */
export function drainSchedule (count: number, { batchSize, intervalMs }: DrainOptions): DrainSchedule {
  const batches = Math.ceil(count / batchSize)
  return { batches, intervalMs: batches > 1 ? Math.min(intervalMs, MAX_DRAIN_MS / (batches - 1)) : intervalMs }
}

const sleep = async (ms: number): Promise<void> => { await new Promise((resolve) => setTimeout(resolve, ms)) }

export class Drain<C extends Closable> {
  private readonly open = new Set<C>()
  private draining: Promise<void> | undefined
  private allClosed: (() => void) | undefined

  constructor (private readonly options: DrainOptions) {}

  /** A new connection; one that arrives once the drain has begun (admitted just before) is closed at once. */
  add (connection: C): void {
    this.open.add(connection)
    if (this.draining) connection.close(CloseCodes.goingAway, 'server shutting down')
  }

  /** A connection whose socket has closed. */
  delete (connection: C): void {
    this.open.delete(connection)
    if (this.open.size === 0) this.allClosed?.()
  }

  /**
   * Closes every connection with 1001, oldest first, batch by batch, and
   * resolves once all have closed or `CLOSE_WAIT_MS` after the last batch.
   * Oldest first is the order they are kept in; which go first hardly
   * matters, as a batch's clients are spread by their jitter anyway. Called
   * again, it returns the same drain.
   */
  async close (): Promise<void> {
    this.draining ??= this.run()
    await this.draining
  }

  private async run (): Promise<void> {
    const closed = new Promise<void>((resolve) => { this.allClosed = resolve })
    if (this.open.size === 0) return
    const queue = [...this.open]
    const { batchSize } = this.options
    const { batches, intervalMs } = drainSchedule(queue.length, this.options)
    const start = Date.now()
    for (let batch = 0; batch < batches && this.open.size > 0; batch++) {
      // Against the start, not the previous batch, so that late timers do not add up past MAX_DRAIN_MS.
      const due = start + batch * intervalMs - Date.now()
      if (due > 0) await sleep(due)
      for (const connection of queue.slice(batch * batchSize, (batch + 1) * batchSize)) {
        // One that closed meanwhile is gone; one the server is closing already keeps its own code.
        if (this.open.has(connection)) connection.close(CloseCodes.goingAway, 'server shutting down')
      }
    }
    let timer: NodeJS.Timeout | undefined
    await Promise.race([closed, new Promise((resolve) => { timer = setTimeout(resolve, CLOSE_WAIT_MS) })])
    clearTimeout(timer)
  }
}
