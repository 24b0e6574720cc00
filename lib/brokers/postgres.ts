/**
 * The durable broker for many processes: rooms live in PostgreSQL, so every
 * node that shares a database and schema serves the same rooms, and history
 * outlives every node. Each change is one call of a function of
 * postgres-schema.ts that takes the room's row lock, stores the change and
 * NOTIFYs it in one transaction; one LISTEN connection per node receives the
 * events in commit order and `RoomFeeds` turns them into ordered, gap-free
 * delivery (a message too large for NOTIFY is read from the table); node
 * signals take the same channel. An edit, a delete or a reaction is one
 * transaction of `PostgresUpdates` under the same row lock. Nodes hold
 * leases in the `NodeRegistry`, timed by the database's clock; users'
 * per-room state is `PostgresUsers`'.
 *
 * When PostgreSQL is down or hung, every call fails with `unavailable` within
 * `commandTimeout`; the broker reconnects by itself and catches its feeds up.
 * That holds from `open` on: a node whose database is down when it starts
 * opens all the same, and prepares its schema once the database answers.
 */
import { randomUUID } from 'node:crypto'
import pg from 'pg'
import type { AppendResult, Broker, BrokerNode, MessageDraft, ModerationEntry, NodeInfo, NodeSignal, PublishOptions, ReadRange, ReadResult, RetentionOptions, RoomInfo, RoomsPage, SharedStoreOptions, UserChange, UserState, UpdateDraft, UpdateResult } from '../broker.js'
import { DEFAULT_COMMAND_TIMEOUT_MS, DEFAULT_LEASE_MS, RECONNECT_STEP_MS, keptPerRoom, messageIds, messageJsonAroundSeq, reconnectDelay, restrictionError, retryOfTrimmed, storedEntry, storedMessage } from '../broker.js'
import type { Entry, Member, Message, Presence, TypingEvent, Update } from '../protocol.js'
import { Availability } from './availability.js'
import { GroupCommit, type Pending } from './group-commit.js'
import { NodeRegistry } from './node-registry.js'
import { PostgresRegistryStore, type Query } from './postgres-registry.js'
import { NewerSchemaError, SCHEMA_PATTERN, channelOf, migrate } from './postgres-schema.js'
import { PostgresRetention, checkRetention } from './postgres-retention.js'
import { PostgresUpdates } from './postgres-updates.js'
import { PostgresUsers } from './postgres-users.js'
import { RoomFeeds, type Envelope } from './room-feeds.js'
import { ChatError } from '../errors.js'

export interface PostgresBrokerOptions extends SharedStoreOptions {
  /** `postgres://` URL of the database. Default: pg's default (the `PG*` environment variables, then localhost). */
  connectionString?: string
  /**
   * A `pg.Pool` of your own, instead of `connectionString`: the broker uses it
   * and leaves it open on close. It holds one of its connections for LISTEN.
   */
  pool?: pg.Pool
  /** The PostgreSQL schema of the chat's tables, created if missing: nodes sharing a database and a schema form one chat. Default `'chat'`. */
  schema?: string
  /** A room without members is deleted, with its history, this many ms after its last change. Default: never. */
  idleRoomTtl?: number
  /** What history to delete, and when (`RetentionOptions`). Default: none; history is kept without a bound. */
  retention?: RetentionOptions
}

const DEFAULT_SCHEMA = 'chat'
/** How often the LISTEN connection is checked: a hung connection delivers nothing and raises no error by itself. */
const LISTEN_CHECK_MS = 5000
/** SQLSTATE classes of errors that say the database is unreachable, shutting down or overloaded (not a bug of ours). */
const OUTAGE_STATES = /^(08|53|57)/

interface Open {
  readonly node: BrokerNode
  readonly pool: pg.Pool
  readonly store: PostgresRegistryStore
  readonly users: PostgresUsers
  readonly updates: PostgresUpdates
  readonly registry: NodeRegistry
  readonly feeds: RoomFeeds
  readonly retention: PostgresRetention
  /** The newest messages kept per room (`retention.messages`); reads reach no further. Undefined: all. */
  readonly keep: number | undefined
  readonly onPoolError: (error: Error) => void
  /** The schema is migrated and the registry started; until then every call fails with `unavailable`. */
  prepared: boolean
  /** The (re)connection under way, which `close` waits for. */
  connecting: Promise<void> | undefined
  listener: pg.PoolClient | undefined
  reconnects: number
  timer: NodeJS.Timeout | undefined
}

/**
 * Durable rooms shared by many nodes. `historySize` (`BrokerNode`) is not a
 * cap on storage here: every message is kept until `retention` deletes it,
 * and reads reach every message kept.
 */
export class PostgresBroker implements Broker {
  /** Random per broker: a restarted process is a new node, and its old members are swept like a crash's. */
  readonly nodeId = randomUUID()
  private readonly nextId = messageIds()
  /** Appends go to PostgreSQL in batches: each commit waits for a disk flush, and NOTIFY serializes commits database-wide. */
  private readonly appends = new GroupCommit<{ room: string, draft: MessageDraft }, AppendResult>((batch) => this.appendBatch(batch))
  private readonly schema: string
  private readonly table: string
  private readonly channel: string
  private readonly leaseMs: number
  private readonly commandTimeout: number
  private state: Open | undefined
  private readonly availability = new Availability({
    store: 'PostgreSQL',
    log: () => this.state?.node.log,
    connected: () => this.state?.listener !== undefined,
    onLoss: () => this.state?.registry.markStale(),
  })

  constructor (private readonly options: PostgresBrokerOptions = {}) {
    this.schema = options.schema ?? DEFAULT_SCHEMA
    if (!SCHEMA_PATTERN.test(this.schema)) {
      throw new Error(`PostgresBroker: schema must be 1 to 50 lower-case letters, digits or _, not starting with a digit; got ${JSON.stringify(this.schema)}`)
    }
    if (options.pool !== undefined && options.connectionString !== undefined) throw new Error('PostgresBroker: give connectionString or pool, not both')
    for (const name of ['leaseMs', 'commandTimeout', 'idleRoomTtl'] as const) {
      const value = options[name]
      if (value !== undefined && !(Number.isInteger(value) && value > 0)) throw new Error(`PostgresBroker: ${name} must be a positive integer (ms), not ${String(value)}`)
    }
    checkRetention(options.retention ?? {})
    this.table = `"${this.schema}"`
    this.channel = channelOf(this.schema)
    this.leaseMs = options.leaseMs ?? DEFAULT_LEASE_MS
    this.commandTimeout = options.commandTimeout ?? DEFAULT_COMMAND_TIMEOUT_MS
  }

  async open (node: BrokerNode): Promise<void> {
    if (this.state) throw new Error('PostgresBroker: already open; use one broker per Fastify instance')
    const pool = this.options.pool ?? new pg.Pool({
      connectionString: this.options.connectionString,
      application_name: `fastify-chat-rooms-${this.nodeId}`,
      connectionTimeoutMillis: this.commandTimeout,
      query_timeout: this.commandTimeout,
      statement_timeout: this.commandTimeout,
      keepAlive: true,
    })
    // An idle connection that breaks: the outage shows in the next call; this keeps it from crashing the process.
    const onPoolError = (error: Error): void => this.availability.lost(error)
    pool.on('error', onPoolError)
    const query: Query = (text, values) => this.run(async () => (await pool.query(text, values)).rows)
    const store = new PostgresRegistryStore(query, this.table, this.channel)
    const users = new PostgresUsers(query, this.table, this.channel)
    const registry = new NodeRegistry(store, { nodeId: this.nodeId, leaseMs: this.leaseMs, connections: () => node.connections(), log: node.log })
    const feeds = new RoomFeeds((room, range) => this.read(room, range), (room, event) => node.deliver(room, event), (room, epoch) => node.outOfSync(room, epoch), node.log)
    const keep = keptPerRoom(this.options.retention, node)
    const retention = new PostgresRetention(query, this.table, keep, this.options.retention?.age, this.options.idleRoomTtl, node.log)
    const updates = new PostgresUpdates(pool, this.table, this.channel, keep, node.reactionLimits)
    const state: Open = { node, pool, store, users, updates, registry, feeds, retention, keep, onPoolError, prepared: false, connecting: undefined, listener: undefined, reconnects: 0, timer: undefined }
    this.state = state
    try {
      await this.attempt(state)
    } catch (error) {
      if (isOutage(error)) {
        // Down now, maybe back soon: open as the Redis broker does, and answer `unavailable` meanwhile.
        this.retryLater(state, error as Error)
        return
      }
      // Waiting would not help (a newer schema, no permission): say so now.
      await this.close()
      throw new Error(`PostgresBroker: cannot prepare schema "${this.schema}": ${(error as Error).message}`, { cause: error })
    }
  }

  async subscribe (room: string): Promise<void> {
    const { feeds } = this.opened()
    // Every node listens to one channel for all rooms: a feed holds what arrives until `begin`.
    const token = feeds.open(room)
    try {
      const { epoch, seq } = await this.read(room, { limit: 0 })
      feeds.begin(room, token, epoch, seq)
    } catch (error) {
      feeds.close(room, token)
      throw error
    }
  }

  async unsubscribe (room: string): Promise<void> {
    this.opened().feeds.close(room)
  }

  async update (room: string, draft: UpdateDraft): Promise<UpdateResult> {
    const { updates } = this.opened()
    const outcome = await this.run(() => updates.apply(room, draft))
    if (outcome instanceof ChatError) throw outcome
    return outcome
  }

  async append (room: string, draft: MessageDraft): Promise<AppendResult> {
    this.opened()
    return await this.appends.add({ room, draft })
  }

  /**
   * One transaction for a batch of appends. Rooms are locked in name order,
   * so concurrent batches of other nodes cannot deadlock with this one; each
   * room's appends keep the order they were made in.
   */
  private async appendBatch (batch: Array<Pending<{ room: string, draft: MessageDraft }, AppendResult>>): Promise<void> {
    const { pool } = this.opened()
    const ordered = [...batch].sort((a, b) => a.call.room < b.call.room ? -1 : a.call.room > b.call.room ? 1 : 0)
    const now = Date.now()
    const columns = { rooms: [] as string[], epochs: [] as string[], cids: [] as Array<string | null>, users: [] as string[], heads: [] as string[], tails: [] as string[] }
    for (const { call: { room, draft } } of ordered) {
      // The function splices the seq it takes between these two halves of the message JSON.
      const { head, tail } = messageJsonAroundSeq(room, this.nextId(), draft, now)
      columns.rooms.push(room)
      columns.epochs.push(randomUUID())
      columns.cids.push(draft.cid ?? null)
      columns.users.push(draft.from.user)
      columns.heads.push(head)
      columns.tails.push(tail)
    }
    const { rows } = await this.run(() => pool.query<{ r_index: number, r_outcome: string, r_body: string }>(
      `SELECT * FROM ${this.table}.chat_append_batch($1, $2, $3, $4, $5, $6, $7)`,
      [columns.rooms, columns.epochs, columns.cids, columns.users, columns.heads, columns.tails, this.channel]))
    for (const row of rows) {
      const pending = ordered[row.r_index - 1]!
      // A banned or muted sender's append is refused alone: the rest of the batch is stored.
      if (row.r_outcome === 'banned' || row.r_outcome === 'muted') pending.reject(restrictionError(pending.call.room, row.r_outcome))
      else if (row.r_outcome === 'change') {
        // A cid a change took makes a retry of that change, as on every broker: its seq and time, nothing stored.
        const change = JSON.parse(row.r_body) as Update
        pending.resolve(retryOfTrimmed(pending.call.room, pending.call.draft, change.seq, change.ts))
      } else pending.resolve({ message: storedMessage(JSON.parse(row.r_body) as Message), duplicate: row.r_outcome === 'stored' })
    }
    // Only if the function broke its promise of a row per append; a settled call ignores this.
    for (const pending of ordered) pending.reject(new Error('PostgresBroker: chat_append_batch returned no row for this append'))
  }

  async publish (room: string, event: Presence | TypingEvent, options: PublishOptions = {}): Promise<void> {
    const { pool, registry } = this.opened()
    if (event.type === 'typing') {
      await this.run(() => pool.query('SELECT pg_notify($1, $2)', [this.channel, JSON.stringify({ room, event })]))
      return
    }
    await registry.announce(room, event, options)
  }

  /** Reads every message kept; with `retention.messages`, never one beyond it, even before it is deleted. */
  async read (room: string, range: ReadRange): Promise<ReadResult> {
    const { pool, keep } = this.opened()
    const { rows } = await this.run(() => pool.query<{ r_epoch: string, r_seq: string, r_more: boolean, r_messages: string[] }>(
      `SELECT * FROM ${this.table}.chat_read($1, $2, $3, $4, $5)`, [room, range.after ?? null, range.before ?? null, range.limit, keep ?? null]))
    const [row] = rows
    return { epoch: row!.r_epoch, seq: Number(row!.r_seq), more: row!.r_more, messages: row!.r_messages.map((json) => storedEntry(JSON.parse(json) as Entry)) }
  }

  /** Members on live nodes (`NodeRegistry.live`): a crashed node's members are gone before they are swept. */
  async members (room: string): Promise<Member[]> {
    const { store, registry } = this.opened()
    const roster = await store.roster(room)
    const live = await registry.live(roster.map(({ node }) => node))
    return roster.filter(({ node }) => live.has(node)).map(({ member }) => member)
  }

  async rooms (page: RoomsPage = {}): Promise<RoomInfo[]> {
    const { pool, registry } = this.opened()
    const live = (await registry.nodes()).filter((node) => node.live).map((node) => node.id)
    // COLLATE "C": code point order, the order of the contract.
    const { rows } = await this.run(() => pool.query<{ room: string, members: number, seq: string }>(
      `SELECT m.room, count(*)::int AS members, coalesce(max(r.seq), 0) AS seq FROM ${this.table}.members m
        LEFT JOIN ${this.table}.rooms r ON r.room = m.room WHERE m.node = ANY($1::text[]) AND ($2::text IS NULL OR m.room COLLATE "C" > $2::text)
        GROUP BY m.room ORDER BY m.room COLLATE "C" LIMIT $3`, [live, page.after ?? null, page.limit ?? null]))
    return rows.map(({ room, members, seq }) => ({ room, members, seq: Number(seq) }))
  }

  async changeUser (room: string, user: string, change: UserChange, connection?: string): Promise<{ state: UserState, changed: boolean }> {
    return await this.opened().users.change(room, user, change, connection)
  }

  async userState (room: string, user: string): Promise<UserState> {
    return await this.opened().users.state(room, user)
  }

  async moderation (room: string): Promise<ModerationEntry[]> {
    return await this.opened().users.moderation(room)
  }

  /** On the channel every node listens to, so it reaches every node, this one included. */
  async signal (event: NodeSignal): Promise<void> {
    const { pool } = this.opened()
    await this.run(() => pool.query('SELECT pg_notify($1, $2)', [this.channel, JSON.stringify({ signal: event })]))
  }

  /** Nodes holding their lease: one that stops renewing drops out within `leaseMs`. */
  async nodes (): Promise<NodeInfo[]> {
    const { registry } = this.opened()
    return (await registry.nodes()).filter((node) => node.live)
      .map(({ id, host, pid, startedAt, lastSeen, connections }) => ({ id, host, pid, startedAt, lastSeen, connections }))
  }

  /**
   * Deletes the history `retention` and `idleRoomTtl` say to delete, now, in
   * small batches; answers how many entries (messages and updates) and rooms went. Every node also
   * does it at open and once a minute.
   */
  async enforceRetention (): Promise<number> {
    return await this.opened().retention.enforce()
  }

  async close (): Promise<void> {
    const state = this.state
    if (!state) return
    // Appends and changes already made are committed (or refused) before the pool closes.
    await Promise.all([this.appends.settled(), state.updates.settled()])
    this.state = undefined
    // It stops at its next step, seeing the broker closed; what it opened meanwhile is closed below.
    await state.connecting
    state.feeds.clear()
    state.retention.stop()
    clearTimeout(state.timer)
    // Give up the lease now: other nodes remove any member still listed here at their next sweep.
    if (state.prepared) await state.registry.stop()
    const listener = state.listener
    state.listener = undefined
    listener?.release(true)
    if (this.options.pool) state.pool.off('error', state.onPoolError)
    else await state.pool.end().catch(() => {})
  }

  // ------------------------------------------------------------ connections and outages

  /** Runs one call; any failure becomes `unavailable` within `commandTimeout`, and a statement that failed is logged as an error. */
  private async run<T> (call: () => Promise<T>): Promise<T> {
    // Opened while the database was down: nothing can be answered before the schema is prepared.
    const answer = this.state?.prepared === false ? Promise.reject(new Error('the schema is not prepared yet')) : within(call(), this.commandTimeout)
    return await this.availability.run(answer, isOutage)
  }

  /** A (re)connection that `close` can wait for; rejects with why it failed. */
  private async attempt (state: Open): Promise<void> {
    const connecting = this.connect(state)
    state.connecting = connecting.then(() => {}, () => {})
    try {
      await connecting
    } finally {
      state.connecting = undefined
    }
  }

  /**
   * Opens the LISTEN connection, first preparing the schema (migrations, then
   * the registry and retention) if it is not yet, then fills what every feed
   * missed meanwhile.
   */
  private async connect (state: Open): Promise<void> {
    const client = await state.pool.connect()
    let lost = false
    const drop = (error: Error): void => {
      if (lost) return
      lost = true
      this.listenerLost(state, client, error)
    }
    client.on('error', drop)
    client.on('end', () => drop(new Error('the LISTEN connection ended')))
    client.on('notification', ({ payload }) => this.receive(payload))
    try {
      if (!state.prepared) await migrate(client, this.schema)
      await within(client.query(`LISTEN "${this.channel}"`), this.commandTimeout)
      if (lost) throw new Error('the LISTEN connection ended as it opened')
    } catch (error) {
      lost = true
      client.release(true)
      throw error
    }
    if (this.state !== state) {
      client.release(true)
      return
    }
    state.listener = client
    state.reconnects = 0
    state.timer = setTimeout(() => void this.check(state, client), LISTEN_CHECK_MS)
    if (!state.prepared) {
      state.prepared = true
      await state.registry.start()
      if (this.state !== state) return
      state.retention.start()
    }
    for (const room of state.feeds.rooms()) state.feeds.catchUp(room)
    this.availability.answered()
  }

  /** After a failed connection: logs it (an outage once) and tries again after the backoff. */
  private retryLater (state: Open, error: Error): void {
    if (this.state !== state) return
    if (isOutage(error)) this.availability.lost(error)
    else state.node.log.error({ err: error }, `chat: cannot prepare the PostgreSQL schema "${this.schema}" or LISTEN; trying again`)
    state.reconnects++
    state.timer = setTimeout(() => void this.reconnect(state), reconnectDelay(state.reconnects))
  }

  private async reconnect (state: Open): Promise<void> {
    await this.attempt(state).catch((error: Error) => this.retryLater(state, error))
  }

  private listenerLost (state: Open, client: pg.PoolClient, error: Error): void {
    if (state.listener === client) {
      state.listener = undefined
      clearTimeout(state.timer)
      client.release(true)
      if (this.state !== state) return
      this.availability.lost(error)
      state.timer = setTimeout(() => void this.reconnect(state), RECONNECT_STEP_MS)
    }
  }

  /** A LISTEN connection that does not answer is dropped, and another one opened. */
  private async check (state: Open, client: pg.PoolClient): Promise<void> {
    try {
      await within(client.query('SELECT 1'), this.commandTimeout)
      if (state.listener === client) state.timer = setTimeout(() => void this.check(state, client), LISTEN_CHECK_MS)
    } catch (error) {
      this.listenerLost(state, client, error as Error)
    }
  }

  private receive (payload: string | undefined): void {
    const state = this.state
    if (!state || payload === undefined) return
    let notice: (Envelope & { room: string, seq?: number }) | { signal: NodeSignal }
    try {
      notice = JSON.parse(payload) as typeof notice
    } catch {
      return // not ours: something else notified on our channel
    }
    if ('signal' in notice) {
      state.node.signal(notice.signal)
      return
    }
    // A message too large for NOTIFY comes as its seq alone: the feed reads it from the table.
    if (notice.event === undefined) state.feeds.catchUp(notice.room)
    else state.feeds.receive(notice.room, notice)
  }

  private opened (): Open {
    if (!this.state) throw new Error('PostgresBroker: not open')
    return this.state
  }
}

/**
 * Whether a failure says PostgreSQL is unreachable, shutting down or
 * overloaded, rather than that a statement (or the schema) is wrong: a lost,
 * refused or timed-out connection (no SQLSTATE, or a system error's code) or
 * SQLSTATE class 08, 53 or 57.
 */
function isOutage (error: unknown): boolean {
  if (error instanceof NewerSchemaError) return false
  const { code, syscall } = error as { code?: unknown, syscall?: unknown }
  return typeof code !== 'string' || syscall !== undefined || OUTAGE_STATES.test(code)
}

/** `pending`, or a rejection after `ms`: a pool without its own timeouts (given by the user) still answers in time. */
async function within<T> (pending: Promise<T>, ms: number): Promise<T> {
  // Settled late, after the caller got its rejection: nothing more to do.
  pending.catch(() => {})
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms)
  })
  try {
    return await Promise.race([pending, timeout])
  } finally {
    clearTimeout(timer)
  }
}
