/**
 * The broker for many processes: rooms live in Redis, so every node that
 * shares one Redis and key prefix serves the same rooms. Each change (a
 * message, a change of one, a presence event, a user's marker or ban) is one
 * Lua script that checks, stores and publishes it (redis-room-scripts.ts,
 * redis-update-script.ts); pub/sub carries
 * events to the nodes subscribed to the room and `RoomFeeds` turns that into
 * ordered, gap-free delivery. Node-wide signals have a channel of their own. Each node
 * registers in the `NodeRegistry` and holds a lease; the others remove the
 * members of a node whose lease lapsed (it crashed) and tell their rooms.
 *
 * When Redis is down or hung, every call fails with `unavailable` within
 * `commandTimeout`: nothing waits in a queue for Redis to return.
 */
import { randomUUID } from 'node:crypto'
import type { RedisOptions } from 'ioredis'
import type { AppendResult, Broker, BrokerNode, MessageDraft, ModerationEntry, NodeInfo, NodeSignal, PublishOptions, ReadRange, ReadResult, RoomInfo, RoomsPage, SharedStoreOptions, UserChange, UserState, UpdateDraft, UpdateResult } from '../broker.js'
import { CID_RETENTION_MS, DEFAULT_COMMAND_TIMEOUT_MS, DEFAULT_IDLE_ROOM_TTL_MS, DEFAULT_LEASE_MS, NO_USER_STATE, currentUserState, jsonAroundSeq, messageIds, messageJsonAroundSeq, messageNotFound, newUpdate, notTheAuthor, restrictionError, retryOfTrimmed, storedEntry, storedMessage, tooManyReactions, userEvent } from '../broker.js'
import type { Entry, Member, Message, Presence, TypingEvent } from '../protocol.js'
import { NodeRegistry } from './node-registry.js'
import { RedisRegistryStore } from './redis-registry.js'
import { RedisKeys } from './redis-keys.js'
import { RedisShards, type RedisShard } from './redis-shards.js'
import { RoomFeeds, type Envelope } from './room-feeds.js'

export interface RedisBrokerOptions extends SharedStoreOptions {
  /** `redis://` or `rediss://` URL of one Redis. Default: ioredis' default, 127.0.0.1:6379. Set at most one of `url`, `shards` and `cluster`. */
  url?: string
  /**
   * URLs of several standalone Redis servers that share the rooms: each room
   * lives on one of them, chosen by a jump consistent hash of its name over
   * this list. Add a shard at the end of the list: a shard inserted, removed
   * or reordered moves many more rooms (README, "Past one Redis").
   */
  shards?: string[]
  /** With `shards`: the URL of the shard that holds the node registry and node-wide signals. Default: the first. */
  registryShard?: string
  /**
   * Seed URLs of a Redis Cluster (Redis 7 or later): rooms spread over its
   * slots by their hash tags, and each room's events use sharded pub/sub.
   */
  cluster?: string[]
  /**
   * ioredis options for every connection (password, tls, sentinels…); with
   * `cluster`, those of each cluster node. The broker overrides those that
   * decide outage behaviour (offline queue, timeouts, resubscription).
   */
  redis?: RedisOptions
  /** Prefix of every key and channel: nodes sharing a Redis and a prefix form one chat. Default `'chat:'`. */
  prefix?: string
  /** A room with no members is forgotten this long after its last change (a later join starts a new epoch). Default one day. */
  idleRoomTtl?: number
}

const DEFAULT_PREFIX = 'chat:'
/** Rooms counted per read of the room index: one round of O(1) calls, small enough not to hold Redis. */
const ROOMS_PER_READ = 100

interface Open {
  readonly node: BrokerNode
  readonly shards: RedisShards
  readonly store: RedisRegistryStore
  readonly registry: NodeRegistry
  readonly feeds: RoomFeeds
}

export class RedisBroker implements Broker {
  /** Random per broker: a restarted process is a new node, and its old members are swept like a crash's. */
  readonly nodeId = randomUUID()
  private readonly nextId = messageIds()
  private readonly keys: RedisKeys
  private readonly idleRoomTtl: number
  private readonly leaseMs: number
  private readonly commandTimeout: number
  private state: Open | undefined

  constructor (private readonly options: RedisBrokerOptions = {}) {
    const problem = placeProblem(options)
    if (problem !== undefined) throw new TypeError(`RedisBroker: ${problem}`)
    this.keys = new RedisKeys(options.prefix ?? DEFAULT_PREFIX)
    this.idleRoomTtl = options.idleRoomTtl ?? DEFAULT_IDLE_ROOM_TTL_MS
    this.leaseMs = options.leaseMs ?? DEFAULT_LEASE_MS
    this.commandTimeout = options.commandTimeout ?? DEFAULT_COMMAND_TIMEOUT_MS
  }

  async open (node: BrokerNode): Promise<void> {
    if (this.state) throw new Error('RedisBroker: already open; use one broker per Fastify instance')
    const shards = RedisShards.open(this.options, { nodeId: this.nodeId, commandTimeout: this.commandTimeout, redis: this.options.redis }, {
      message: (channel, payload) => this.receive(channel, payload),
      subscriber: (shard) => { void this.resubscribe(shard) },
      commands: (shard) => {
        // Renew at once; sweep only at the next tick, so after an outage other nodes get to renew first.
        if (shard === shards.registry) void this.state?.registry.renewNow()
      },
      lost: () => this.state?.registry.markStale(),
      log: () => this.state?.node.log,
    })
    const store = new RedisRegistryStore({ shards, keys: this.keys, idleRoomTtl: this.idleRoomTtl })
    const registry = new NodeRegistry(store, { nodeId: this.nodeId, leaseMs: this.leaseMs, connections: () => node.connections(), log: node.log })
    const feeds = new RoomFeeds((room, range) => this.read(room, range), (room, event) => node.deliver(room, event), (room, epoch) => node.outOfSync(room, epoch), node.log)
    this.state = { node, shards, store, registry, feeds }
    await shards.ready()
    // Signals sent once `open` resolves reach this node (a shard that is down subscribes once it is back).
    await shards.registry.subscribe([this.keys.signal]).catch(() => {})
    await registry.start()
  }

  async subscribe (room: string): Promise<void> {
    const { shards, feeds } = this.opened()
    const token = feeds.open(room)
    try {
      await shards.of(room).subscribe([this.keys.channel(room)])
      const { epoch, seq } = await this.read(room, { limit: 0 })
      feeds.begin(room, token, epoch, seq)
    } catch (error) {
      feeds.close(room, token)
      throw error
    }
  }

  async unsubscribe (room: string): Promise<void> {
    const { shards, feeds } = this.opened()
    feeds.close(room)
    // Events of a room without a feed are ignored, and a reconnect subscribes
    // only to rooms with one, so a failed UNSUBSCRIBE leaves nothing behind.
    await shards.of(room).unsubscribe(this.keys.channel(room)).catch(() => {})
  }

  async update (room: string, draft: UpdateDraft): Promise<UpdateResult> {
    const { node, shards } = this.opened()
    const { scripts, run } = shards.of(room)
    const ts = Date.now()
    // The script splices the seq it takes between the two halves of the update's JSON.
    const update = newUpdate(room, 0, draft, ts)
    const { head, tail } = jsonAroundSeq(update)
    const { maxReactions, maxBytes } = node.reactionLimits
    const changed = await run(() => scripts.update({
      ...this.keys.room(room), target: draft.target, action: draft.action, text: draft.action === 'edit' ? draft.text : '',
      reaction: draft.action === 'react' || draft.action === 'unreact' ? draft.reaction : '', user: JSON.stringify(draft.by.user),
      asServer: draft.asServer === true, cid: draft.cid ?? '', head, tail, now: ts,
      historySize: node.historySize, idleTtl: this.idleRoomTtl, channel: this.keys.channel(room), cidRetentionMs: CID_RETENTION_MS, maxReactions, maxBytes,
    }))
    switch (changed.outcome) {
      case 'new':
        update.seq = changed.seq
        return { seq: changed.seq, update, duplicate: false }
      case 'duplicate': return { seq: changed.seq, duplicate: true }
      case 'unchanged': return { seq: changed.seq, duplicate: false }
      case 'banned':
      case 'muted': throw restrictionError(room, changed.outcome)
      case 'not_found': throw messageNotFound(room, draft.target)
      case 'forbidden': throw notTheAuthor(room, draft.target)
      case 'too_many_reactions': throw tooManyReactions(room, draft.target, node.reactionLimits)
    }
  }

  async append (room: string, draft: MessageDraft): Promise<AppendResult> {
    const { node, shards } = this.opened()
    const { scripts, run } = shards.of(room)
    const ts = Date.now()
    // The script splices the seq it takes between these two halves of the message JSON.
    const { head, tail } = messageJsonAroundSeq(room, this.nextId(), draft, ts)
    const stored = await run(() => scripts.append({
      ...this.keys.room(room), epoch: randomUUID(), head, tail, cid: draft.cid ?? '', historySize: node.historySize, now: ts,
      idleTtl: this.idleRoomTtl, channel: this.keys.channel(room), cidRetentionMs: CID_RETENTION_MS, user: JSON.stringify(draft.from.user),
    }))
    if (stored.outcome === 'banned' || stored.outcome === 'muted') throw restrictionError(room, stored.outcome)
    if (stored.outcome === 'forgotten') return retryOfTrimmed(room, draft, stored.seq, stored.ts)
    return { message: storedMessage(JSON.parse(stored.message) as Message), duplicate: stored.outcome === 'stored' }
  }

  async publish (room: string, event: Presence | TypingEvent, options: PublishOptions = {}): Promise<void> {
    const { shards, registry } = this.opened()
    if (event.type === 'typing') {
      await shards.of(room).publish(this.keys.channel(room), JSON.stringify({ event }))
      return
    }
    await registry.announce(room, event, options)
  }

  async read (room: string, range: ReadRange): Promise<ReadResult> {
    const { scripts, run } = this.opened().shards.of(room)
    const { meta, log } = this.keys.room(room)
    const { epoch, seq, more, messages } = await run(() => scripts.read({ meta, log, after: range.after, before: range.before, limit: range.limit }))
    return { epoch, seq, more, messages: messages.map((json) => storedEntry(JSON.parse(json) as Entry)) }
  }

  /** Members on live nodes (`NodeRegistry.live`): a crashed node's members are gone before they are swept. */
  async members (room: string): Promise<Member[]> {
    const { store, registry } = this.opened()
    const roster = await store.roster(room)
    const live = await registry.live(roster.map(({ node }) => node))
    return roster.filter(({ node }) => live.has(node)).map(({ member }) => member)
  }

  /**
   * Pages the index of rooms some node lists, by name, and counts each room
   * of the page in O(1): no call reads every member. A dead node's members
   * count until they are swept (within about 4/3 of `leaseMs`).
   */
  async rooms (page: RoomsPage = {}): Promise<RoomInfo[]> {
    const { shards } = this.opened()
    const { commands, run } = shards.registry
    const limit = page.limit ?? Infinity
    const listed: RoomInfo[] = []
    let after = page.after
    // A room is listed from just before its first join to just after its last leave: an empty one is skipped, and the next read.
    while (listed.length < limit) {
      const want = Math.min(ROOMS_PER_READ, limit - listed.length)
      const from = after === undefined ? '-' : `(${after}`
      const names = await run(() => commands.zrangebylex(this.keys.registry.occupied, from, '+', 'LIMIT', 0, want))
      const counted = await Promise.all(names.map(async (room) => {
        const { members, meta } = this.keys.room(room)
        const shard = shards.of(room)
        return { room, ...(await shard.run(() => shard.scripts.count({ members, meta }))) }
      }))
      listed.push(...counted.filter((room) => room.members > 0))
      if (names.length < want) break
      after = names.at(-1)
    }
    return listed
  }

  async changeUser (room: string, user: string, change: UserChange, connection?: string): Promise<{ state: UserState, changed: boolean }> {
    const { scripts, run } = this.opened().shards.of(room)
    // For a `read`, the script puts the new marker where this event's seq 0 (NO_USER_STATE's marker) is.
    const json = JSON.stringify({ event: userEvent(room, user, change, NO_USER_STATE, connection) })
    // The first `"seq":` is the change's: room and user come first, and a JSON string cannot hold an unescaped quote.
    const at = change.kind === 'read' ? json.indexOf('"seq":') + '"seq":'.length : json.length
    const { changed, state } = await run(() => scripts.user({
      ...this.keys.room(room), user: JSON.stringify(user), kind: change.kind, seq: change.kind === 'read' ? change.seq : undefined,
      ends: change.kind === 'ban' || change.kind === 'mute' ? change.until : undefined, now: Date.now(),
      head: json.slice(0, at), tail: json.slice(at + (change.kind === 'read' ? 1 : 0)), channel: this.keys.channel(room), idleTtl: this.idleRoomTtl,
    }))
    return { state: JSON.parse(state) as UserState, changed }
  }

  async userState (room: string, user: string): Promise<UserState> {
    const { commands, run } = this.opened().shards.of(room)
    const stored = await run(() => commands.hget(this.keys.room(room).users, JSON.stringify(user)))
    return currentUserState(parseUserState(stored), Date.now())
  }

  /** Reads every user kept for the room (markers too): restrictions that ended are left out, and go with the room's keys. */
  async moderation (room: string): Promise<ModerationEntry[]> {
    const { commands, run } = this.opened().shards.of(room)
    const stored = await run(() => commands.hgetall(this.keys.room(room).users))
    const now = Date.now()
    return Object.entries(stored).flatMap(([field, value]) => {
      const { ban, mute } = currentUserState(parseUserState(value), now)
      const user = parseJson(field)
      return (ban || mute) && typeof user === 'string' ? [{ user, ...(ban ? { ban } : {}), ...(mute ? { mute } : {}) }] : []
    })
  }

  async signal (event: NodeSignal): Promise<void> {
    await this.opened().shards.registry.publish(this.keys.signal, JSON.stringify(event))
  }

  /** Nodes holding their lease: one that stops renewing drops out within `leaseMs`. */
  async nodes (): Promise<NodeInfo[]> {
    const { registry } = this.opened()
    return (await registry.nodes()).filter((node) => node.live)
      .map(({ id, host, pid, startedAt, lastSeen, connections }) => ({ id, host, pid, startedAt, lastSeen, connections }))
  }

  async close (): Promise<void> {
    const state = this.state
    if (!state) return
    this.state = undefined
    state.feeds.clear()
    // Give up the lease now: other nodes remove any member still listed here at their next sweep.
    await state.registry.stop()
    await state.shards.close()
  }

  // ------------------------------------------------------------ connections and outages

  /**
   * Once a shard's subscriber is connected again: subscribe (where the shard
   * does not keep its subscriptions) to signals and to every room of it with
   * a feed, then fill what was published meanwhile.
   */
  private async resubscribe (shard: RedisShard): Promise<void> {
    const state = this.state
    if (!state) return
    const rooms = [...state.feeds.rooms()].filter((room) => state.shards.of(room) === shard)
    if (!shard.keepsSubscriptions) {
      const channels = [...(shard === state.shards.registry ? [this.keys.signal] : []), ...rooms.map((room) => this.keys.channel(room))]
      // On failure the connection is dropped (socket timeout) or already down; its next `ready` tries again.
      const subscribed = channels.length === 0 || await shard.subscribe(channels).then(() => true, () => false)
      if (!subscribed) return
    }
    for (const room of rooms) state.feeds.catchUp(room)
  }

  private receive (channel: string, payload: string): void {
    const state = this.state
    const room = this.keys.roomOfChannel(channel)
    if (!state || (room === undefined && channel !== this.keys.signal)) return
    const parsed = parseJson(payload) as Partial<Envelope & NodeSignal> | null | undefined
    // Anything else is not ours: something else published on our channel.
    if (room === undefined) {
      if (typeof parsed?.type === 'string') state.node.signal(parsed as NodeSignal)
      return
    }
    if (typeof parsed?.event?.type !== 'string') return
    // A message published by a node of an earlier version has no `user`.
    if (parsed.event.type === 'message') storedMessage(parsed.event)
    state.feeds.receive(room, parsed as Envelope)
  }

  private opened (): Open {
    if (!this.state) throw new Error('RedisBroker: not open')
    return this.state
  }
}

/** A value the scripts wrote as JSON; undefined for anything else (a field no script wrote). */
function parseJson (text: string): unknown {
  try {
    return JSON.parse(text)
  } catch {
    return undefined
  }
}

/** A user's state as `users` keeps it (UserState JSON); what is not, reads as none. */
function parseUserState (stored: string | null | undefined): UserState {
  const state = stored == null ? undefined : parseJson(stored) as UserState | undefined
  return typeof state?.read === 'number' ? state : NO_USER_STATE
}

/** What is wrong with where the options put the rooms, if anything. */
function placeProblem ({ url, shards, registryShard, cluster }: RedisBrokerOptions): string | undefined {
  const named = (['url', 'shards', 'cluster'] as const).filter((key) => ({ url, shards, cluster })[key] !== undefined)
  if (named.length > 1) return `set at most one of url, shards and cluster (got ${named.join(' and ')})`
  if (shards !== undefined) {
    if (!Array.isArray(shards) || shards.length === 0) return 'shards must be a non-empty list of Redis URLs'
    const repeated = shards.find((shard, index) => shards.indexOf(shard) !== index)
    if (repeated !== undefined) return `shards lists ${repeated} twice; each shard once`
  }
  if (registryShard !== undefined && !(shards ?? []).includes(registryShard)) return `registryShard ${registryShard} must be one of shards`
  if (cluster !== undefined && (!Array.isArray(cluster) || cluster.length === 0)) return 'cluster must be a non-empty list of Redis URLs (seed nodes)'
  return undefined
}
