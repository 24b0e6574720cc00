/**
 * The server's moderation calls (PROTOCOL.md, "Moderation"): checked
 * arguments in, one broker change out. What a change does to connections
 * (leaving the room, `left`, dropped typing) the hub of every node does when
 * the broker delivers the change back as a `user` event.
 */
import type { Broker, ModerationEntry, UserChange, UserState } from './broker.js'
import { ChatError } from './errors.js'
import { assertWellFormed } from './protocol.js'
import { checkRoom } from './server-arguments.js'

/**
 * The longest user id the moderation calls take: far above any id an
 * application gives (a UUID, an account number), and short enough that a
 * mistaken call (a whole token, a message) is refused rather than stored.
 */
export const MAX_USER_LENGTH = 256

/** How long a ban or mute lasts; without `ms`, until it is lifted. */
export interface RestrictionOptions {
  /** A positive whole number of ms. */
  ms?: number
}

/** Throws `invalid` naming the argument unless `user` is a user id the calls take. */
function checkUser (user: unknown): asserts user is string {
  if (typeof user !== 'string' || user.length === 0 || user.length > MAX_USER_LENGTH) {
    throw new ChatError('invalid', `user: must be a string of 1 to ${MAX_USER_LENGTH} characters`)
  }
  assertWellFormed('user', user)
}

/** A ban or mute of `options.ms` from now, or until lifted without `ms`. */
function restriction (kind: 'ban' | 'mute', options: RestrictionOptions | undefined): UserChange {
  const ms = options?.ms
  if (ms === undefined) return { kind }
  if (!Number.isSafeInteger(ms) || ms < 1) throw new ChatError('invalid', 'ms: must be a positive whole number of milliseconds')
  return { kind, until: Date.now() + ms }
}

/** A user's restrictions in force, as `moderation(room)` lists them. */
function entryOf (user: string, state: UserState): ModerationEntry {
  return { user, ...(state.ban ? { ban: state.ban } : {}), ...(state.mute ? { mute: state.mute } : {}) }
}

export class Moderation {
  constructor (private readonly broker: Broker, private readonly roomPattern: RegExp) {}

  async kick (room: string, user: string): Promise<ModerationEntry> {
    return await this.change(room, user, { kind: 'kick' })
  }

  async ban (room: string, user: string, options?: RestrictionOptions): Promise<ModerationEntry> {
    return await this.change(room, user, restriction('ban', options))
  }

  async unban (room: string, user: string): Promise<ModerationEntry> {
    return await this.change(room, user, { kind: 'unban' })
  }

  async mute (room: string, user: string, options?: RestrictionOptions): Promise<ModerationEntry> {
    return await this.change(room, user, restriction('mute', options))
  }

  async unmute (room: string, user: string): Promise<ModerationEntry> {
    return await this.change(room, user, { kind: 'unmute' })
  }

  async moderation (room: string): Promise<ModerationEntry[]> {
    checkRoom(room, this.roomPattern)
    return await this.broker.moderation(room)
  }

  async disconnectUser (user: string): Promise<void> {
    checkUser(user)
    await this.broker.signal({ type: 'disconnect-user', user })
  }

  private async change (room: string, user: string, change: UserChange): Promise<ModerationEntry> {
    checkRoom(room, this.roomPattern)
    checkUser(user)
    const { state } = await this.broker.changeUser(room, user, change)
    return entryOf(user, state)
  }
}
