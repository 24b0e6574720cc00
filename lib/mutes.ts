/**
 * What one node knows of the mutes in one room, so that a muted user's
 * `typing` is dropped without a broker round trip per keystroke. Filled from
 * `userState` at each join and kept current by the broker's `user` events,
 * which reach every node subscribed to the room while it has members there.
 */
import { inForce, type Restriction, type UserChange } from './broker.js'

export class RoomMutes {
  /** user → its mute (undefined: known not muted). A user with an entry was heard of since the room was subscribed. */
  private readonly known = new Map<string, Restriction | undefined>()

  /**
   * What a join read of `user`'s state. An event heard meanwhile is newer
   * than the read (or equal to it), so the read never overrides an entry.
   */
  read (user: string, mute: Restriction | undefined): void {
    if (!this.known.has(user)) this.known.set(user, mute)
  }

  /** A `user` event: a mute or unmute replaces what was known. */
  heard (user: string, change: UserChange): void {
    if (change.kind === 'mute') this.known.set(user, change.until === undefined ? {} : { until: change.until })
    else if (change.kind === 'unmute') this.known.set(user, undefined)
  }

  /** The user has no connection left in the room here: what is known of it may grow stale. */
  forget (user: string): void {
    this.known.delete(user)
  }

  /** Whether `user`'s mute is in force at `now`. */
  muted (user: string, now: number): boolean {
    return inForce(this.known.get(user), now)
  }
}
