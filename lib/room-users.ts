/**
 * One node's view of the users in one room: their local connections (whom a
 * marker or a removal concerns) and their mutes, so that a muted user's
 * `typing` is dropped without a broker round trip per keystroke. Mutes come
 * from `userState` at each join and stay current through the broker's `user`
 * events, which reach every node subscribed to the room while it has members.
 */
import { inForce, type Restriction, type UserChange } from './broker.js'

export class RoomUsers<M extends { readonly link: { readonly user: string } }> {
  private readonly connections = new Map<string, Set<M>>()
  /** user → its mute (undefined: known not muted); only of users with a connection here. */
  private readonly mutes = new Map<string, Restriction | undefined>()

  add (member: M): void {
    const { user } = member.link
    const ofUser = this.connections.get(user)
    if (ofUser) ofUser.add(member)
    else this.connections.set(user, new Set([member]))
  }

  remove (member: M): void {
    const { user } = member.link
    const ofUser = this.connections.get(user)
    if (!ofUser?.delete(member) || ofUser.size > 0) return
    this.connections.delete(user)
    // Read again at the user's next join here: no event reaches a node for a room it left.
    this.mutes.delete(user)
  }

  /** The user's connections in the room here. */
  of (user: string): M[] {
    return [...(this.connections.get(user) ?? [])]
  }

  /**
   * What a join read of `user`'s state. An event heard meanwhile is as new as
   * the read or newer, so the read never overrides one.
   */
  read (user: string, mute: Restriction | undefined): void {
    if (this.connections.has(user) && !this.mutes.has(user)) this.mutes.set(user, mute)
  }

  /** A `user` event: a mute or unmute replaces what was known. */
  heard (user: string, change: UserChange): void {
    if (!this.connections.has(user)) return
    if (change.kind === 'mute') this.mutes.set(user, change.until === undefined ? {} : { until: change.until })
    else if (change.kind === 'unmute') this.mutes.set(user, undefined)
  }

  /** Whether `user`'s mute is in force at `now`. */
  muted (user: string, now: number): boolean {
    return inForce(this.mutes.get(user), now)
  }
}
