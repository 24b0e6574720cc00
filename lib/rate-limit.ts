/**
 * A token bucket: `burst` tokens, refilled at `perSecond`. Pure: the caller
 * passes the time, so tests need no clock. Serves both the message rate limit
 * and the error budget (N errors per window is a bucket of N refilled over it).
 */
export class TokenBucket {
  private tokens: number
  private updatedAt: number

  constructor (private readonly perSecond: number, private readonly burst: number, now: number) {
    this.tokens = burst
    this.updatedAt = now
  }

  /** Takes one token; false when none is left. */
  take (now: number): boolean {
    const elapsed = Math.max(0, now - this.updatedAt)
    this.updatedAt = now
    this.tokens = Math.min(this.burst, this.tokens + (elapsed * this.perSecond) / 1000)
    if (this.tokens < 1) return false
    this.tokens -= 1
    return true
  }

  /** After a refused `take`: ms until the next token, rounded up so that a retry then is accepted. */
  msUntilToken (): number {
    return Math.ceil(((1 - this.tokens) * 1000) / this.perSecond)
  }
}
