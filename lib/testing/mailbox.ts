/**
 * The frames one test connection received and the test has not yet taken, in
 * order of arrival, like a Phoenix test process's mailbox: `take` removes the
 * first frame that matches (waiting for it a bounded time), `refute` sees that
 * none comes. Each wait holds one timer, cleared as soon as it is answered,
 * and a failure lists what did arrive.
 */
import { AssertionError } from 'node:assert'
import type { ServerFrame } from '../protocol.js'
import { show, type Matcher } from './pattern.js'

/** How the connection ended. */
export interface Closed {
  code: number
  reason: string
}

/** How many frames not taken a failure message lists, the latest ones: a screenful. */
const MAX_LISTED_FRAMES = 20

/** An AssertionError with `message` and the stack of `site`: where the test waited, not the timer that gave up. */
function failure (site: Error, message: string): AssertionError {
  const error = new AssertionError({ message })
  const frames = site.stack?.slice(site.stack.indexOf('\n')) ?? ''
  error.stack = `${error.name}: ${message}${frames}`
  return error
}

export class Mailbox {
  private readonly received: ServerFrame[] = []
  /** Called on every change: a frame came, the connection ended. Each returns whether its wait is over. */
  private readonly waiters = new Set<() => boolean>()
  private closedWith: Closed | undefined
  /** What the server sent that the protocol does not allow: every wait fails with it. */
  private violation: string | undefined

  /** Frames received and not yet taken, oldest first. */
  get frames (): readonly ServerFrame[] {
    return this.received
  }

  get closed (): Closed | undefined {
    return this.closedWith
  }

  deliver (frame: ServerFrame): void {
    this.received.push(frame)
    this.changed()
  }

  /** The server broke the protocol: `problem` says how. */
  violated (problem: string): void {
    this.violation ??= problem
    this.changed()
  }

  end (closed: Closed): void {
    this.closedWith = closed
    this.changed()
  }

  /** Takes the first frame `matcher` accepts, waiting up to `timeoutMs` for one. */
  take (matcher: Matcher, timeoutMs: number): Promise<ServerFrame> {
    const site = new Error()
    return this.wait(timeoutMs, (finish) => {
      if (this.violation !== undefined) return finish.reject(failure(site, `${this.violation}; while waiting for ${matcher.description}`))
      const index = this.received.findIndex((frame) => matcher.test(frame))
      if (index !== -1) return finish.resolve(this.received.splice(index, 1)[0] as ServerFrame)
      if (this.closedWith !== undefined) return finish.reject(failure(site, `the connection closed (${describeClose(this.closedWith)}) with no ${matcher.description}; ${this.listing()}`))
      return false
    }, (finish) => finish.reject(failure(site, `no ${matcher.description} within ${timeoutMs} ms; ${this.listing()}`)))
  }

  /** Resolves once `withinMs` passed with no frame `matcher` accepts, or once the connection closed without one. */
  refute (matcher: Matcher, withinMs: number): Promise<void> {
    const site = new Error()
    return this.wait<void>(withinMs, (finish) => {
      if (this.violation !== undefined) return finish.reject(failure(site, this.violation))
      const frame = this.received.find((received) => matcher.test(received))
      if (frame !== undefined) return finish.reject(failure(site, `expected no ${matcher.description} within ${withinMs} ms, but got ${show(frame)}`))
      return this.closedWith !== undefined && finish.resolve()
    }, (finish) => finish.resolve())
  }

  /** Waits for the connection to close, up to `timeoutMs`. */
  closing (timeoutMs: number): Promise<Closed> {
    const site = new Error()
    return this.wait(timeoutMs, (finish) => this.closedWith !== undefined && finish.resolve(this.closedWith),
      (finish) => finish.reject(failure(site, `the connection did not close within ${timeoutMs} ms; ${this.listing()}`)))
  }

  /** What a failure says of the frames not taken. */
  listing (): string {
    if (this.received.length === 0) return 'no frame received and not taken'
    const listed = this.received.slice(-MAX_LISTED_FRAMES)
    const left = this.received.length - listed.length
    const head = `${this.received.length} frame${this.received.length === 1 ? '' : 's'} received and not taken${left > 0 ? ` (the last ${listed.length})` : ''}:`
    return [head, ...listed.map((frame) => `  ${show(frame)}`)].join('\n')
  }

  /**
   * Runs `check` now and on every change until it answers (through `finish`,
   * returning true) or `timeoutMs` passes: then `onTimeout` answers.
   */
  private wait<T> (timeoutMs: number, check: (finish: Finish<T>) => boolean, onTimeout: (finish: Finish<T>) => true): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const done = (): true => {
        clearTimeout(timer)
        this.waiters.delete(waiter)
        return true
      }
      const finish: Finish<T> = {
        resolve: (value) => { resolve(value); return done() },
        reject: (error) => { reject(error); return done() },
      }
      const waiter = (): boolean => check(finish)
      const timer = setTimeout(() => onTimeout(finish), timeoutMs)
      if (!waiter()) this.waiters.add(waiter)
    })
  }

  private changed (): void {
    for (const waiter of this.waiters) waiter()
  }
}

interface Finish<T> {
  resolve (value: T): true
  reject (error: Error): true
}

export function describeClose ({ code, reason }: Closed): string {
  return reason === '' ? `code ${code}` : `code ${code}, "${reason}"`
}
