/**
 * What a member's `joined`, `history` and `members` replies hold, read from
 * the broker and bounded in size: a reply never carries more messages than
 * half of `maxBufferedBytes`, nor more members than a quarter, so answering a
 * reader can never make it a slow consumer.
 */
import type { Broker, ReadResult, UserState } from './broker.js'
import { encodeFrame, MEMBER_REPLY_BYTES, type ClientMessageOf, type Entry, type Member, type Message, type ServerFrame } from './protocol.js'
import type { ResolvedOptions } from './options.js'

type ReplyOptions = Pick<ResolvedOptions, 'maxMembersInReply' | 'historyOnJoin' | 'historySize' | 'maxBufferedBytes'>

/** One page of a room's roster, in member id order, and the roster's size. */
export interface MemberPage {
  members: Member[]
  more: boolean
  total: number
}

/** The entries `joined` carries, with whether nothing was lost since the client's `since`. */
export type Snapshot = ReadResult & { recovered?: boolean }

/** A `joined` reply, encoded, and what the hub needs of it: its stream position and the user's state. */
export interface Joined {
  frame: Buffer
  snapshot: Snapshot
  state: UserState
}

/** The newest of `messages` (oldest first) whose encoded size adds up to at most `budget` bytes. */
function newestThatFit<E extends Entry> (messages: E[], budget: number): E[] {
  let used = 0
  let first = messages.length
  while (first > 0) {
    used += Buffer.byteLength(JSON.stringify(messages[first - 1])) + 1
    if (used > budget) break
    first--
  }
  return first === 0 ? messages : messages.slice(first)
}

/** Orders members by id as JavaScript compares strings, the order `members` pages in. */
function byId (a: Member, b: Member): number {
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0
}

export class Replies {
  /** Bytes of messages one reply carries at most: half of what may be queued for a reader. */
  private readonly messageBudget: number

  constructor (private readonly broker: Broker, private readonly options: ReplyOptions) {
    this.messageBudget = Math.floor(options.maxBufferedBytes / 2)
  }

  /** The `joined` reply for `user`'s `request`: members, history per `since`, and the user's read marker. */
  async joined (request: ClientMessageOf<'join'>, user: string): Promise<Joined> {
    const [members, snapshot, state] = await Promise.all([this.memberPage(request.room), this.snapshot(request), this.broker.userState(request.room, user)])
    const frame: ServerFrame = {
      type: 'joined',
      ...(request.ref === undefined ? {} : { ref: request.ref }),
      room: request.room,
      epoch: snapshot.epoch,
      seq: snapshot.seq,
      members: members.members,
      memberCount: members.total,
      history: snapshot.messages,
      read: state.read,
      ...(snapshot.recovered === undefined ? {} : { recovered: snapshot.recovered }),
    }
    return { frame: encodeFrame(frame), snapshot, state }
  }

  /** A page of history as one reply may carry it: the newest that fit, `more` when older ones were left out. */
  fitting (page: { messages: Message[], more: boolean }): { messages: Message[], more: boolean } {
    const messages = newestThatFit(page.messages, this.messageBudget)
    return { messages, more: page.more || messages.length < page.messages.length }
  }

  /**
   * Members of `room` with an id after `after`, in id order: at most `limit`
   * (capped at `maxMembersInReply`) and that many times MEMBER_REPLY_BYTES in
   * bytes, so that a roster of any size or names never makes a reply too big.
   */
  async memberPage (room: string, after?: string, limit = this.options.maxMembersInReply): Promise<MemberPage> {
    const roster = (await this.broker.members(room)).sort(byId)
    const cap = Math.min(limit, this.options.maxMembersInReply)
    const budget = cap * MEMBER_REPLY_BYTES
    const start = after === undefined ? 0 : roster.findIndex((member) => member.id > after)
    const from = start < 0 ? roster.length : start
    const members: Member[] = []
    let used = 0
    for (const member of roster.slice(from, from + cap)) {
      used += Buffer.byteLength(JSON.stringify(member)) + 1
      if (used > budget) break
      members.push(member)
    }
    return { members, more: from + members.length < roster.length, total: roster.length }
  }

  /**
   * What `joined` carries: the newest messages in their current state, or
   * every entry after `since` (messages and updates, to replay) with whether
   * nothing was lost. When the entries cannot be replayed (lost, another
   * stream, too many for one reply), the newest messages, and `recovered: false`.
   */
  private async snapshot (request: ClientMessageOf<'join'>): Promise<Snapshot> {
    const { room } = request
    const fitting = (read: ReadResult): ReadResult => ({ ...read, messages: newestThatFit(read.messages, this.messageBudget) })
    const newest = async (): Promise<ReadResult> => fitting(await this.broker.read(room, { limit: this.options.historyOnJoin }))
    if (request.since === undefined) return await newest()
    const since = request.since
    const after = await this.broker.read(room, { after: since, limit: this.options.historySize })
    const sameStream = request.epoch === undefined || request.epoch === after.epoch
    // A store that keeps more than `historySize` (SQLite) may hold more after `since` than one reply hands out.
    const reachesLatest = since === after.seq || after.messages.at(-1)?.seq === after.seq
    if (sameStream && since <= after.seq && reachesLatest) {
      const recovered = since === after.seq || after.messages[0]?.seq === since + 1
      // What was missed may be stored but too much for one reply: then the client pages back with `history`.
      const fit = fitting(after)
      if (fit.messages.length === after.messages.length) return { ...fit, recovered }
    }
    return { ...(await newest()), recovered: false }
  }
}
