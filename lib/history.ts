/**
 * A bounded per-room log in memory. Seqs in it are contiguous, so a seq maps
 * to a slot by arithmetic. The array grows with the messages (an idle room
 * holds no empty slots) and, once full, the oldest message is overwritten.
 */
import type { Message } from './protocol.js'
import type { ReadRange } from './broker.js'

export class HistoryRing {
  private readonly slots: Message[] = []
  /** Index of the oldest message once the array is full; 0 until then. */
  private start = 0

  constructor (readonly capacity: number) {}

  /** Seq of the oldest kept message (0 when empty). */
  get firstSeq (): number {
    return this.slots.length === 0 ? 0 : (this.slots[this.start] as Message).seq
  }

  push (message: Message): void {
    if (this.capacity === 0) return
    if (this.slots.length < this.capacity) {
      this.slots.push(message)
      return
    }
    this.slots[this.start] = message
    this.start = (this.start + 1) % this.capacity
  }

  /** The kept message with `seq`, if any. */
  get (seq: number): Message | undefined {
    const index = seq - this.firstSeq
    if (this.slots.length === 0 || index < 0 || index >= this.slots.length) return undefined
    return this.slots[(this.start + index) % this.capacity]
  }

  /** Reads per `ReadRange`, oldest first; `more` tells whether older messages are kept. */
  read (range: ReadRange): { messages: Message[], more: boolean } {
    const length = this.slots.length
    if (length === 0 || range.limit <= 0) return { messages: [], more: length > 0 }
    const first = this.firstSeq
    const last = first + length - 1
    let from: number
    let to: number
    if (range.after !== undefined) {
      from = Math.max(first, range.after + 1)
      to = Math.min(last, from + range.limit - 1)
    } else {
      to = Math.min(last, (range.before ?? last + 1) - 1)
      from = Math.max(first, to - range.limit + 1)
    }
    const messages: Message[] = []
    for (let seq = from; seq <= to; seq++) messages.push(this.get(seq) as Message)
    return { messages, more: messages.length > 0 ? from > first : to >= first }
  }
}
