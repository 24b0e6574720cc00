/**
 * Turns what Redis pub/sub delivers into what `BrokerNode.deliver` promises:
 * per room, entries (messages and updates) in seq order with no gap and no duplicate. Pub/sub loses
 * whatever is published while a subscriber reconnects, so each subscribed
 * room remembers the last seq it delivered; a message further ahead, or a
 * reconnect, fills the gap from the stored history first. Events received
 * during a fill wait behind it, so presence and messages keep their order.
 * What cannot be filled (the history was trimmed past it, or the room's
 * stream began again under a new epoch) is reported to `outOfSync`.
 */
import { NO_STREAM_YET, type BrokerEvent, type BrokerLogger, type BrokerNode, type ReadRange, type ReadResult } from '../broker.js'
import { isEntry } from '../protocol.js'

/** What travels on a room's channel (its wire events and user changes); stored messages carry the epoch of their stream. */
export interface Envelope {
  epoch?: string
  event: BrokerEvent
}

/**
 * Messages read per history page while filling a gap: bounds one reply (a
 * few hundred KB of JSON at most), while a gap of a few thousand messages
 * still fills in a handful of round trips.
 */
const FILL_PAGE = 500
/**
 * Pause before reading again when a fill could not read (the store is
 * unavailable): bounds the retries against a store that is down to two a
 * second per room, and a store that comes back is read within half a second.
 */
const FILL_RETRY_MS = 500

/** Names one `open` of a room's feed, so a late step of an earlier subscription cannot touch a newer one. */
export type FeedToken = object

interface Feed {
  epoch: string | undefined
  /** The room had a stream while this feed ran: one that begins now begins again, and its readers missed the old one's end. */
  hadStream: boolean
  lastSeq: number
  /** Events waiting while the feed starts or fills a gap; undefined when it delivers directly. */
  held: Envelope[] | undefined
  /** A reconnect happened during a fill: read once more before delivering the held events. */
  recheck: boolean
}

export class RoomFeeds {
  private readonly feeds = new Map<string, Feed>()

  constructor (
    private readonly read: (room: string, range: ReadRange) => Promise<ReadResult>,
    private readonly deliver: BrokerNode['deliver'],
    private readonly outOfSync: BrokerNode['outOfSync'],
    private readonly log: BrokerLogger,
  ) {}

  rooms (): IterableIterator<string> {
    return this.feeds.keys()
  }

  /**
   * Starts holding a room's events; `begin` then delivers them from the seq
   * the room had once the subscription was confirmed.
   */
  open (room: string): FeedToken {
    const feed: Feed = { epoch: undefined, hadStream: false, lastSeq: 0, held: [], recheck: false }
    this.feeds.set(room, feed)
    return feed
  }

  begin (room: string, token: FeedToken, epoch: string, seq: number): void {
    const feed = this.feeds.get(room)
    if (feed !== token || !feed) return
    feed.epoch = epoch
    feed.hadStream = epoch !== NO_STREAM_YET
    feed.lastSeq = seq
    if (feed.recheck) void this.fill(room, feed)
    else this.release(room, feed)
  }

  /** Stops a room's feed; `token` limits it to the feed `open` returned. */
  close (room: string, token?: FeedToken): void {
    if (token === undefined || this.feeds.get(room) === token) this.feeds.delete(room)
  }

  clear (): void {
    this.feeds.clear()
  }

  receive (room: string, envelope: Envelope): void {
    const feed = this.feeds.get(room)
    if (!feed) return
    if (feed.held) feed.held.push(envelope)
    else this.apply(room, feed, envelope)
  }

  /** After a resubscribe: whatever was published meanwhile is read from history. */
  catchUp (room: string): void {
    const feed = this.feeds.get(room)
    if (!feed) return
    if (feed.held) {
      feed.recheck = true
      return
    }
    feed.held = []
    void this.fill(room, feed)
  }

  private apply (room: string, feed: Feed, { epoch, event }: Envelope): void {
    // Presence, typing and user events are delivered in the order they came, between the entries.
    if (!isEntry(event)) {
      this.deliver(room, event)
      return
    }
    if (epoch !== feed.epoch) this.restart(room, feed, epoch)
    if (event.seq <= feed.lastSeq) return
    if (event.seq === feed.lastSeq + 1) {
      feed.lastSeq = event.seq
      this.deliver(room, event)
      return
    }
    feed.held = [{ epoch, event }]
    void this.fill(room, feed)
  }

  /** Delivers stored entries after `lastSeq` up to the latest, then the held events. */
  private async fill (room: string, feed: Feed): Promise<void> {
    do {
      feed.recheck = false
      while (this.feeds.get(room) === feed) {
        let page: ReadResult
        try {
          page = await this.read(room, { after: feed.lastSeq, limit: FILL_PAGE })
        } catch {
          await new Promise((resolve) => setTimeout(resolve, FILL_RETRY_MS))
          continue
        }
        if (this.feeds.get(room) !== feed) return
        if (page.epoch !== feed.epoch) {
          this.restart(room, feed, page.epoch)
          continue
        }
        if (this.deliverPage(room, feed, page)) break
      }
    } while (feed.recheck && this.feeds.get(room) === feed)
    if (this.feeds.get(room) === feed) this.release(room, feed)
  }

  /** Returns true when the feed has caught up with the room's latest seq. */
  private deliverPage (room: string, feed: Feed, page: ReadResult): boolean {
    const first = page.messages[0]
    if (first === undefined) {
      // Nothing after lastSeq is stored: what was published meanwhile is gone.
      if (page.seq > feed.lastSeq) this.lost(room, feed.lastSeq + 1, page.seq)
      feed.lastSeq = Math.max(feed.lastSeq, page.seq)
      return true
    }
    if (first.seq > feed.lastSeq + 1) this.lost(room, feed.lastSeq + 1, first.seq - 1)
    for (const entry of page.messages) {
      feed.lastSeq = entry.seq
      this.deliver(room, entry)
    }
    return feed.lastSeq >= page.seq
  }

  private release (room: string, feed: Feed): void {
    const held = feed.held ?? []
    feed.held = undefined
    // An event may start another fill; `receive` then holds the rest behind it.
    for (const envelope of held) this.receive(room, envelope)
  }

  /**
   * The room's stream began at seq 1: again when the feed knew one (it
   * expired, or the store lost its data), which is reported; or its first,
   * when the feed started before the room had a stream: nothing was missed.
   */
  private restart (room: string, feed: Feed, epoch: string | undefined): void {
    const again = feed.hadStream
    feed.hadStream = true
    feed.epoch = epoch
    feed.lastSeq = 0
    if (again) this.outOfSync(room, epoch)
  }

  private lost (room: string, from: number, to: number): void {
    this.log.warn({ room, from, to }, 'chat: messages were trimmed from the history before this node could deliver them; its members there resume')
    this.outOfSync(room)
  }
}
