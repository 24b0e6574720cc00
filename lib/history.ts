/**
 * A bounded per-room log of entries (messages and updates) in memory that
 * knows what it costs. Seqs in it are contiguous, so a seq maps to a slot by
 * arithmetic. Entries leave from the oldest end: past `capacity`, or when the
 * broker drops old history to stay within its bytes. A message is replaced in
 * its slot when it changes.
 */
import type { Entry, Message } from './protocol.js'
import { reactionBytes, type ReadRange } from './broker.js'

/**
 * What a stored message costs besides its strings: the message and sender
 * objects, their numbers and the string headers, in V8 (about 250 bytes),
 * rounded up.
 */
const MESSAGE_OVERHEAD_BYTES = 256

/** What a reaction's list holds per user besides the user's string: its slot and the string's header. */
const REACTION_USER_OVERHEAD_BYTES = 24

/**
 * The memory a stored entry holds, as counted against a byte bound: 2 bytes
 * per UTF-16 unit of its strings (V8 stores a string with any non-Latin-1
 * character that way; a Latin-1 one takes half, so this errs high) plus the
 * objects around them. A 2000-emoji text is 4000 units: about 8.3 KB in all.
 */
export function messageBytes (entry: Entry): number {
  const sender = entry.type === 'message' ? entry.from : entry.by
  const units = (entry.text?.length ?? 0) + entry.room.length + sender.id.length + sender.user.length + sender.name.length + (entry.cid?.length ?? 0) +
    (entry.type === 'message' ? entry.id.length : (entry.reaction?.length ?? 0))
  const reactions = entry.type === 'message' && entry.reactions !== undefined
    ? 2 * reactionBytes(entry.reactions) + REACTION_USER_OVERHEAD_BYTES * Object.values(entry.reactions).reduce((count, users) => count + users.length, 0)
    : 0
  return 2 * units + reactions + MESSAGE_OVERHEAD_BYTES
}

/** Dropped slots at the front are given back once they are this many and half of the array. */
const COMPACT_AFTER = 1024

export class HistoryRing {
  /** Kept entries from `head` on, oldest first; slots before `head` were dropped. */
  private slots: Array<Entry | undefined> = []
  private head = 0
  private keptBytes = 0

  constructor (readonly capacity: number) {}

  get length (): number {
    return this.slots.length - this.head
  }

  /** What the kept messages cost, per `messageBytes`. */
  get bytes (): number {
    return this.keptBytes
  }

  /** What the newest kept message costs (0 when empty). */
  get newestBytes (): number {
    const newest = this.slots.at(-1)
    return this.length === 0 || newest === undefined ? 0 : messageBytes(newest)
  }

  /** Seq of the oldest kept message (0 when empty). */
  get firstSeq (): number {
    return this.slots[this.head]?.seq ?? 0
  }

  /** Keeps `message` as the newest, dropping the oldest past `capacity`; returns how much `bytes` changed. */
  push (message: Entry): number {
    if (this.capacity === 0) return 0
    const before = this.keptBytes
    this.slots.push(message)
    this.keptBytes += messageBytes(message)
    if (this.length > this.capacity) this.dropOldest()
    return this.keptBytes - before
  }

  /** Drops the oldest kept message; returns the bytes freed (0 when empty). */
  dropOldest (): number {
    const oldest = this.slots[this.head]
    if (oldest === undefined) return 0
    this.slots[this.head++] = undefined
    const freed = messageBytes(oldest)
    this.keptBytes -= freed
    if (this.head >= COMPACT_AFTER && this.head * 2 >= this.slots.length) {
      this.slots = this.slots.slice(this.head)
      this.head = 0
    }
    return freed
  }

  /** The kept entry with `seq`, if any. */
  get (seq: number): Entry | undefined {
    const index = seq - this.firstSeq
    if (this.length === 0 || index < 0 || index >= this.length) return undefined
    return this.slots[this.head + index]
  }

  /** Puts `message` in place of the kept message with its seq (which must be kept); returns how much `bytes` changed. */
  replace (message: Message): number {
    const index = this.head + message.seq - this.firstSeq
    const change = messageBytes(message) - messageBytes(this.slots[index] as Entry)
    this.slots[index] = message
    this.keptBytes += change
    return change
  }

  /**
   * Reads per `ReadRange`, oldest first: after a seq, every entry; otherwise
   * a page of messages only. `more` tells whether older ones (in a page:
   * older messages) are kept.
   */
  read (range: ReadRange): { messages: Entry[], more: boolean } {
    const length = this.length
    if (length === 0 || range.limit <= 0) return { messages: [], more: length > 0 }
    const first = this.firstSeq
    const last = first + length - 1
    const messages: Entry[] = []
    if (range.after !== undefined) {
      const from = Math.max(first, range.after + 1)
      const to = Math.min(last, from + range.limit - 1)
      for (let seq = from; seq <= to; seq++) messages.push(this.get(seq) as Entry)
      return { messages, more: messages.length > 0 ? from > first : to >= first }
    }
    let seq = Math.min(last, (range.before ?? last + 1) - 1)
    for (; seq >= first && messages.length < range.limit; seq--) {
      const entry = this.get(seq) as Entry
      if (entry.type === 'message') messages.push(entry)
    }
    while (seq >= first && this.get(seq)?.type !== 'message') seq--
    return { messages: messages.reverse(), more: seq >= first }
  }
}
