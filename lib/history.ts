/**
 * A bounded per-room log in memory. Seqs in it are contiguous, so a seq maps
 * to a slot by arithmetic; the oldest message is overwritten when it is full.
 */
import type { Message } from './protocol.js'
import type { ReadRange } from './broker.js'

export class HistoryRing {
  private readonly slots: Array<Message | undefined>
  private start = 0
  private length = 0

  constructor (readonly capacity: number) {
    this.slots = new Array<Message | undefined>(capacity)
  }

  /** Seq of the oldest kept message (0 when empty). */
  get firstSeq (): number {
    return this.length === 0 ? 0 : (this.slots[this.start] as Message).seq
  }

  push (message: Message): void {
    if (this.capacity === 0) return
    const end = (this.start + this.length) % this.capacity
    this.slots[end] = message
    if (this.length < this.capacity) this.length++
    else this.start = (this.start + 1) % this.capacity
  }

  /** The kept message with `seq`, if any. */
  get (seq: number): Message | undefined {
    const index = seq - this.firstSeq
    if (this.length === 0 || index < 0 || index >= this.length) return undefined
    return this.slots[(this.start + index) % this.capacity]
  }

  /** Reads per `ReadRange`, oldest first; `more` tells whether older messages are kept. */
  read (range: ReadRange): { messages: Message[], more: boolean } {
    if (this.length === 0 || range.limit <= 0) return { messages: [], more: this.length > 0 }
    const first = this.firstSeq
    const last = first + this.length - 1
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
