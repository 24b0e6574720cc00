/**
 * The broker for many processes: rooms live in Redis, so every node that
 * shares one Redis and key prefix serves the same rooms. Each change (a
 * message, a presence event) is one Lua script that stores it and publishes
 * it (redis-scripts.ts); pub/sub carries events to the nodes subscribed to the
 * room and `RoomFeeds` turns that into ordered, gap-free delivery. Each node
 * holds a lease in Redis; the others remove the members of a node whose lease
 * lapsed (it crashed) and tell their rooms.
 *
 * When Redis is down or hung, every call fails with `unavailable` within
 * `commandTimeout`: nothing waits in a queue for Redis to return.
 */
import { randomUUID } from 'node:crypto'
import { Redis, type RedisOptions } from 'ioredis'
import type { AppendResult, Broker, BrokerNode, MessageDraft, PublishOptions, ReadRange, ReadResult, RoomInfo } from '../broker.js'
import { CID_RETENTION_MS, messageIds, retryOfTrimmed } from '../broker.js'
import { ChatError } from '../errors.js'
import type { Member, Message, Presence, TypingEvent } from '../protocol.js'
import { RoomFeeds, type Envelope } from './room-feeds.js'
import { SCRIPTS } from './redis-scripts.js'

export interface RedisBrokerOptions {
  /** `redis://` or `rediss://` URL. Default: ioredis' default, 127.0.0.1:6379. */
  url?: string
  /**
   * ioredis options for both connections (password, tls, sentinels…). The
   * broker overrides those that decide outage behaviour (offline queue,
   * timeouts, resubscription).
   */
  redis?: RedisOptions
  /** Prefix of every key and channel: nodes sharing a Redis and a prefix form one chat. Default `'chat:'`. */
  prefix?: string
  /** A room with no members is forgotten this long after its last change (a later join starts a new epoch). Default one day. */
  idleRoomTtl?: number
  /**
   * How long a node counts as alive without renewing its lease. A node that
   * dies without closing has its members removed (and `leave` sent) within
   * about 4/3 of this. Default 15000.
   */
  leaseMs?: number
  /** A Redis command that has not answered after this many ms fails with `unavailable`. Default 2000. */
  commandTimeout?: number
}

const DEFAULT_PREFIX = 'chat:'
const DEFAULT_IDLE_ROOM_TTL_MS = 24 * 60 * 60 * 1000
/** Short enough that a crashed node's members vanish within seconds, long enough to ride out a GC pause. */
const DEFAULT_LEASE_MS = 15_000
/** Well above a healthy Redis round trip, well below a client's patience. */
const DEFAULT_COMMAND_TIMEOUT_MS = 2000
/** Reconnect attempts back off to this: a returning Redis is found within two seconds. */
const MAX_RECONNECT_DELAY_MS = 2000

type ScriptedRedis = Redis & { [K in keyof typeof SCRIPTS]: (...args: Array<string | number>) => Promise<unknown> }

interface Open {
  readonly node: BrokerNode
  readonly commands: ScriptedRedis
  readonly subscriber: ScriptedRedis
  readonly feeds: RoomFeeds
}

export class RedisBroker implements Broker {
  /** Random per broker: a restarted process is a new node, and its old members are swept like a crash's. */
  readonly nodeId = randomUUID()
  private readonly nextId = messageIds()
  private readonly prefix: string
  private readonly idleRoomTtl: number
  private readonly leaseMs: number
  private readonly commandTimeout: number
  private state: Open | undefined
  /** Members who joined through this node, by room: what the roster should hold for this node. */
  private readonly local = new Map<string, Map<string, Member>>()
  private available = true
  /** The roster may disagree with `local` (an outage, or a lapsed lease): compare them at the next heartbeat. */
  private rosterStale = false
  /** Lease renewal and the sweep for dead nodes, three times per lease so a lapse is seen in time. */
  private ticker: NodeJS.Timeout | undefined
  /** Background jobs in flight by name: one of each at a time, and a slow sweep never delays a renewal. */
  private readonly jobs = new Map<'renew' | 'sweep', Promise<void>>()

  constructor (private readonly options: RedisBrokerOptions = {}) {
    this.prefix = options.prefix ?? DEFAULT_PREFIX
    this.idleRoomTtl = options.idleRoomTtl ?? DEFAULT_IDLE_ROOM_TTL_MS
    this.leaseMs = options.leaseMs ?? DEFAULT_LEASE_MS
    this.commandTimeout = options.commandTimeout ?? DEFAULT_COMMAND_TIMEOUT_MS
  }

  async open (node: BrokerNode): Promise<void> {
    if (this.state) throw new Error('RedisBroker: already open; use one broker per Fastify instance')
    const commands = this.connect('commands')
    const subscriber = this.connect('subscriber')
    const feeds = new RoomFeeds((room, range) => this.read(room, range), (room, event) => node.deliver(room, event), node.log)
    this.state = { node, commands, subscriber, feeds }
    subscriber.on('message', (channel: string, payload: string) => this.receive(channel, payload))
    commands.on('ready', () => {
      this.recovered()
      // Renew at once; sweep only at the next tick, so after an outage other nodes get to renew first.
      void this.exclusive('renew', () => this.renewLease())
    })
    subscriber.on('ready', () => {
      this.recovered()
      void this.resubscribe()
    })
    await Promise.all([whenReady(commands, this.commandTimeout), whenReady(subscriber, this.commandTimeout)])
    // Members count as present only while their node holds its lease: hold it before the first join.
    await this.exclusive('renew', () => this.renewLease())
    this.ticker = setInterval(() => {
      void this.exclusive('renew', () => this.renewLease())
      void this.exclusive('sweep', () => this.sweep())
    }, Math.max(1, Math.floor(this.leaseMs / 3)))
    this.ticker.unref()
  }

  async subscribe (room: string): Promise<void> {
    const { subscriber, feeds } = this.opened()
    const token = feeds.open(room)
    try {
      await this.run(() => subscriber.subscribe(this.channel(room)))
      const { epoch, seq } = await this.read(room, { limit: 0 })
      feeds.begin(room, token, epoch, seq)
    } catch (error) {
      feeds.close(room, token)
      throw error
    }
  }

  async unsubscribe (room: string): Promise<void> {
    const { subscriber, feeds } = this.opened()
    feeds.close(room)
    // Events of a room without a feed are ignored, and a reconnect subscribes
    // only to rooms with one, so a failed UNSUBSCRIBE leaves nothing behind.
    await subscriber.unsubscribe(this.channel(room)).catch(() => {})
  }

  async append (room: string, draft: MessageDraft): Promise<AppendResult> {
    const { node, commands } = this.opened()
    const ts = Date.now()
    const from = { id: draft.from.id, name: draft.from.name }
    const rest = { id: this.nextId(), from, text: draft.text, ts, ...(draft.cid === undefined ? {} : { cid: draft.cid }) }
    // The script splices the seq it takes between these two halves of the message JSON.
    const head = `{"type":"message","room":${JSON.stringify(room)},"seq":`
    const tail = `,${JSON.stringify(rest).slice(1)}`
    const [outcome, stored, forgottenTs] = await this.run(() => commands.chatAppend(
      ...this.roomKeys(room), randomUUID(), head, tail, draft.cid ?? '', node.historySize, ts,
      this.idleRoomTtl, this.channel(room), CID_RETENTION_MS,
    )) as [string, string | number, string?]
    if (outcome === 'new') return { message: JSON.parse(stored as string) as Message, duplicate: false }
    if (outcome === 'stored') return { message: JSON.parse(stored as string) as Message, duplicate: true }
    return retryOfTrimmed(room, draft, Number(stored), Number(forgottenTs))
  }

  async publish (room: string, event: Presence | TypingEvent, options: PublishOptions = {}): Promise<void> {
    const { commands } = this.opened()
    if (event.type === 'typing') {
      await this.run(() => commands.publish(this.channel(room), JSON.stringify({ event })))
      return
    }
    const member = { id: event.member.id, name: event.member.name }
    this.remember(room, event)
    try {
      await this.runPresence(room, event.action, member, options.maxMembers ?? 0)
    } catch (error) {
      if (error instanceof ChatError && error.code === 'room_full') this.remember(room, { ...event, action: 'leave' })
      throw error
    }
  }

  async read (room: string, range: ReadRange): Promise<ReadResult> {
    const { commands } = this.opened()
    const [epoch, seq, more, messages] = await this.run(() => commands.chatRead(
      this.key('meta', room), this.key('log', room), range.after ?? '', range.before ?? '', range.limit,
    )) as [string, number, number, string[]]
    return { epoch, seq, more: more === 1, messages: messages.map((json) => JSON.parse(json) as Message) }
  }

  async members (room: string): Promise<Member[]> {
    const { commands } = this.opened()
    const values = await this.run(() => commands.chatMembers(this.key('members', room), this.prefix)) as string[]
    return values.map((value) => {
      const { id, name } = JSON.parse(value) as Member
      return { id, name }
    })
  }

  async rooms (): Promise<RoomInfo[]> {
    const { commands } = this.opened()
    const flat = await this.run(() => commands.chatRooms(`${this.prefix}rooms`, this.prefix)) as Array<string | number>
    const rooms: RoomInfo[] = []
    for (let i = 0; i < flat.length; i += 3) {
      rooms.push({ room: String(flat[i]), members: Number(flat[i + 1]), seq: Number(flat[i + 2]) })
    }
    return rooms
  }

  async close (): Promise<void> {
    const state = this.state
    if (!state) return
    this.state = undefined
    clearInterval(this.ticker)
    state.feeds.clear()
    this.local.clear()
    // Give up the lease now: other nodes remove any member still listed here at their next sweep.
    await state.commands.del(this.leaseKey(this.nodeId))
      .then(() => state.commands.chatForgetNode(this.leaseKey(this.nodeId), this.nodeRoomsKey(this.nodeId), `${this.prefix}nodes`, this.nodeId))
      .catch(() => {})
    await Promise.allSettled([state.commands.quit(), state.subscriber.quit()])
    state.commands.disconnect()
    state.subscriber.disconnect()
  }

  // ------------------------------------------------------------ connections and outages

  private connect (name: string): ScriptedRedis {
    const options: RedisOptions = {
      retryStrategy: (attempt) => Math.min(attempt * 100, MAX_RECONNECT_DELAY_MS),
      connectionName: `fastify-chat-rooms-${name}-${this.nodeId}`,
      ...this.options.redis,
      // Fail at once while disconnected, and never resend a command behind its caller's back:
      // the caller got `unavailable` and retries with its cid.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
      commandTimeout: this.commandTimeout,
      // A hung Redis: drop the socket, so unanswered commands do not pile up on it.
      socketTimeout: this.commandTimeout,
      // `resubscribe` does it, then fills what pub/sub lost meanwhile.
      autoResubscribe: false,
      scripts: SCRIPTS,
    }
    const redis = (this.options.url === undefined ? new Redis(options) : new Redis(this.options.url, options)) as ScriptedRedis
    // Connection errors repeat on every reconnect attempt; the outage is logged once.
    redis.on('error', (error: Error) => this.unavailable(error))
    return redis
  }

  /** Runs one Redis call; any failure becomes `unavailable` (PROTOCOL.md: retry with the same cid). */
  private async run<T> (call: () => Promise<T>): Promise<T> {
    try {
      const result = await call()
      this.recovered()
      return result
    } catch (error) {
      if ((error as Error).name === 'ReplyError') this.state?.node.log.error({ err: error }, 'chat: a Redis command failed')
      else this.unavailable(error as Error)
      throw new ChatError('unavailable', 'the chat store (Redis) did not answer in time; retry with the same cid')
    }
  }

  private unavailable (error: Error): void {
    this.rosterStale = true
    if (!this.available || !this.state) return
    this.available = false
    this.state.node.log.warn({ err: error.message }, 'chat: Redis is unavailable; chat calls fail with "unavailable" until it answers again')
  }

  private recovered (): void {
    const state = this.state
    if (this.available || !state || state.commands.status !== 'ready' || state.subscriber.status !== 'ready') return
    this.available = true
    state.node.log.info({}, 'chat: Redis is available again')
  }

  /** After a reconnect: subscribe again to every room with a feed, then fill what was published meanwhile. */
  private async resubscribe (): Promise<void> {
    const state = this.state
    if (!state) return
    const rooms = [...state.feeds.rooms()]
    if (rooms.length === 0) return
    // On failure the connection is dropped (socket timeout) or already down; its next `ready` tries again.
    const subscribed = await state.subscriber.subscribe(...rooms.map((room) => this.channel(room))).then(() => true, () => false)
    if (subscribed) for (const room of rooms) state.feeds.catchUp(room)
  }

  private receive (channel: string, payload: string): void {
    const prefix = `${this.prefix}channel:`
    if (!this.state || !channel.startsWith(prefix)) return
    let envelope: Envelope
    try {
      envelope = JSON.parse(payload) as Envelope
    } catch {
      return // not ours: something else published on our channel
    }
    this.state.feeds.receive(channel.slice(prefix.length), envelope)
  }

  // ------------------------------------------------------------ presence and node leases

  private remember (room: string, { action, member }: Presence): void {
    let members = this.local.get(room)
    if (action !== 'leave') {
      if (!members) this.local.set(room, members = new Map())
      members.set(member.id, { id: member.id, name: member.name })
    } else if (members) {
      members.delete(member.id)
      if (members.size === 0) this.local.delete(room)
    }
  }

  private async runPresence (room: string, action: Presence['action'], member: Member, maxMembers = 0): Promise<void> {
    const { commands } = this.opened()
    const event: Presence = { type: 'presence', room, action, member }
    const published = await this.run(() => commands.chatPresence(
      ...this.roomKeys(room), this.nodeRoomsKey(this.nodeId), `${this.prefix}rooms`,
      action, member.id, JSON.stringify({ ...member, node: this.nodeId }), room, this.channel(room),
      JSON.stringify({ event }), this.idleRoomTtl, randomUUID(), maxMembers,
    ))
    if (published === -1) throw new ChatError('room_full', `${room} is full (${maxMembers} members)`)
  }

  /** Runs `job` unless one of that name is in flight (then waits for that one); never rejects. */
  private async exclusive (name: 'renew' | 'sweep', job: () => Promise<void>): Promise<void> {
    let running = this.jobs.get(name)
    if (!running) {
      // A failure is already logged as an outage; the next tick tries again.
      running = job().catch(() => {}).finally(() => this.jobs.delete(name))
      this.jobs.set(name, running)
    }
    await running
  }

  private async renewLease (): Promise<void> {
    const { commands } = this.opened()
    const held = await this.run(() => commands.chatHeartbeat(this.leaseKey(this.nodeId), `${this.prefix}nodes`, this.nodeId, this.leaseMs))
    if (held === 0 && this.local.size > 0) {
      this.opened().node.log.warn({ node: this.nodeId }, 'chat: this node\'s lease had lapsed; announcing its members again')
      this.rosterStale = true
    }
    if (!this.rosterStale) return
    this.rosterStale = false
    try {
      await this.reconcile()
    } catch (error) {
      this.rosterStale = true
      throw error
    }
  }

  /**
   * Makes the roster say what this node knows: members who left during an
   * outage are removed, members removed while the lease had lapsed are added.
   */
  private async reconcile (): Promise<void> {
    const { commands } = this.opened()
    const listed = await this.run(() => commands.hkeys(this.nodeRoomsKey(this.nodeId)))
    for (const room of new Set([...this.local.keys(), ...listed])) {
      const roster = await this.run(() => commands.hgetall(this.key('members', room)))
      const here = this.local.get(room) ?? new Map<string, Member>()
      for (const [id, value] of Object.entries(roster)) {
        const { name, node } = JSON.parse(value) as Member & { node: string }
        if (node === this.nodeId && !here.has(id)) await this.runPresence(room, 'leave', { id, name })
      }
      for (const member of here.values()) {
        if (roster[member.id] === undefined) await this.runPresence(room, 'join', member)
      }
    }
  }

  /** Removes the members of nodes whose lease lapsed; each is told once, whichever node sweeps. */
  private async sweep (): Promise<void> {
    const { commands } = this.opened()
    const nodes = `${this.prefix}nodes`
    const dead = await this.run(() => commands.chatDeadNodes(nodes, this.prefix)) as string[]
    for (const node of dead) {
      if (node === this.nodeId) continue
      const lease = this.leaseKey(node)
      const nodeRooms = this.nodeRoomsKey(node)
      for (const room of await this.run(() => commands.hkeys(nodeRooms))) {
        await this.run(() => commands.chatEvict(
          ...this.roomKeys(room), lease, nodeRooms, `${this.prefix}rooms`, node, room, this.channel(room), this.idleRoomTtl,
        ))
      }
      await this.run(() => commands.chatForgetNode(lease, nodeRooms, nodes, node))
    }
  }

  // ------------------------------------------------------------ names

  private opened (): Open {
    if (!this.state) throw new Error('RedisBroker: not open')
    return this.state
  }

  private key (kind: string, room: string): string {
    return `${this.prefix}${kind}:${room}`
  }

  /** The order every room script expects (redis-scripts.ts). */
  private roomKeys (room: string): string[] {
    return ['members', 'meta', 'log', 'cids', 'cidq'].map((kind) => this.key(kind, room))
  }

  private channel (room: string): string {
    return this.key('channel', room)
  }

  private leaseKey (node: string): string {
    return `${this.prefix}node:${node}`
  }

  private nodeRoomsKey (node: string): string {
    return `${this.prefix}node-rooms:${node}`
  }
}

/** Resolves once `redis` is ready, or after `ms` (then calls fail with `unavailable` until it is). */
async function whenReady (redis: Redis, ms: number): Promise<void> {
  if (redis.status === 'ready') return
  await new Promise<void>((resolve) => {
    const done = (): void => {
      clearTimeout(timer)
      redis.off('ready', done)
      resolve()
    }
    const timer = setTimeout(done, ms)
    redis.once('ready', done)
  })
}
