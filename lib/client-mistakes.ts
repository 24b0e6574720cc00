/**
 * The log of what clients do wrong (a malformed or oversized frame): their
 * mistake, not the server's, and any client can make as many as it likes. So
 * each is one debug line without a stack trace, and only so many a minute,
 * per instance (a mistake closes its connection, so a flood comes from many);
 * the rest are counted and said in one line. Pure: the caller passes the time.
 */

/** Enough to see which mistakes come and from where; few enough that a flood of them stays a few lines. */
export const CLIENT_MISTAKES_LOGGED_PER_MINUTE = 10
const MINUTE_MS = 60_000

export interface DebugLogger {
  debug(obj: object, msg: string): void
}

export class ClientMistakes {
  private minuteStartedAt: number
  private logged = 0
  private notLogged = 0

  constructor (private readonly log: DebugLogger, now: number) {
    this.minuteStartedAt = now
  }

  record (fields: object, message: string, now: number): void {
    if (now - this.minuteStartedAt >= MINUTE_MS) {
      this.flush()
      this.minuteStartedAt = now
      this.logged = 0
    }
    if (this.logged === CLIENT_MISTAKES_LOGGED_PER_MINUTE) {
      this.notLogged++
      return
    }
    this.logged++
    this.log.debug(fields, message)
  }

  /** Says how many mistakes were counted and not logged, if any: when their minute is over, and at close. */
  flush (): void {
    if (this.notLogged === 0) return
    this.log.debug({ notLogged: this.notLogged }, `chat client mistakes not logged: ${this.notLogged} (at most ${CLIENT_MISTAKES_LOGGED_PER_MINUTE} a minute are)`)
    this.notLogged = 0
  }
}
