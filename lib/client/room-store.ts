/**
 * A room's messages in their current state, as the client saw them: messages
 * and updates applied in seq order, pages of older messages merged in. An
 * application renders `messages` instead of replaying events. Its only import
 * at run time is its sibling `message-state.js`, which the browser loads as is.
 */
import type { Entry, Message, Update } from '../protocol.js'
import { appliedUpdate } from './message-state.js'

/** How many messages a room's store keeps by default; older ones are dropped as new ones come. */
export const DEFAULT_STORED_MESSAGES = 1000

export class RoomStore {
  readonly room: string
  /** How many messages are kept: the limit given, and one more for each message a page brought in. */
  private capacity: number
  private readonly bySeq = new Map<number, Message>()
  /** `bySeq`'s messages in seq order. */
  private readonly ordered: Message[] = []
  /**
   * Updates of messages the store does not hold, newest last and as many as
   * `limit`: a page read before one of them but answered after it shows the
   * message without it. Applying an update again changes nothing (an edit
   * sets the same text, a reaction given is not given twice, a deleted
   * message takes no change), so each page message gets them all again.
   */
  private readonly unheld: Update[] = []

  constructor (room: string, limit = DEFAULT_STORED_MESSAGES) {
    this.room = room
    this.capacity = limit
  }

  /** The messages held, oldest first, each in its current state (a copy: later changes do not show in it). */
  get messages (): Message[] {
    return [...this.ordered]
  }

  get size (): number { return this.bySeq.size }

  /** The message with this seq, in its current state, if held. */
  get (seq: number): Message | undefined {
    return this.bySeq.get(seq)
  }

  /**
   * Applies the room's next entry: a message is added, an update changes the
   * message it targets. Returns the message as it now is, or undefined when
   * the store does not hold the target.
   */
  apply (entry: Entry): Message | undefined {
    if (entry.type === 'message') {
      this.put(entry)
      this.trim()
      return entry
    }
    const target = this.bySeq.get(entry.target)
    if (target === undefined) {
      this.unheld.push(entry)
      if (this.unheld.length > this.capacity) this.unheld.shift()
      return undefined
    }
    const changed = appliedUpdate(target, entry)
    if (changed !== target) this.put(changed)
    return changed
  }

  /** Adds a page of older messages (from `history()`); messages already held keep their state. */
  addPage (messages: readonly Message[]): void {
    for (const message of messages) {
      if (this.bySeq.has(message.seq)) continue
      let current = message
      for (const update of this.unheld) if (update.target === message.seq) current = appliedUpdate(current, update)
      this.put(current)
      this.capacity++
    }
  }

  /** Forgets everything: the stream went on without this client (a gap or a new epoch). */
  clear (): void {
    this.bySeq.clear()
    this.unheld.length = 0
    this.ordered.length = 0
  }

  private put (message: Message): void {
    const held = this.bySeq.has(message.seq)
    this.bySeq.set(message.seq, message)
    // Live messages come last, so the search is short; a page's go in before them.
    let index = this.ordered.length
    while (index > 0 && (this.ordered[index - 1] as Message).seq > message.seq) index--
    if (held) this.ordered[index - 1] = message
    else this.ordered.splice(index, 0, message)
  }

  /** Drops the oldest messages past `capacity`. */
  private trim (): void {
    const excess = this.ordered.length - this.capacity
    if (excess <= 0) return
    for (const message of this.ordered.splice(0, excess)) this.bySeq.delete(message.seq)
  }
}
