/**
 * The node registry: which nodes share a store, and which members each one
 * announced. A node registers when it opens and renews a lease; whichever
 * node first sees a lease lapse (its node crashed or hung) sweeps it: its
 * members are removed from every room, each with one `leave`. A node that was
 * cut off (an outage, a lapsed lease) reconciles the rosters with what it
 * knows once it can. The registry holds that logic; a `RegistryStore` holds
 * the data (Redis scripts today; SQL tables for the SQLite and PostgreSQL
 * brokers).
 *
 * Each registration of a node has a serial, written with every member it
 * announces. A sweep removes only members of the registration it saw lapse,
 * so a node that comes back meanwhile (and announces its members again under
 * a new serial) keeps them, whatever order the two nodes' steps take.
 */
import { hostname } from 'node:os'
import type { BrokerLogger, NodeInfo, PublishOptions } from '../broker.js'
import { ChatError } from '../errors.js'
import type { Member, Presence } from '../protocol.js'

/**
 * A registered node as the store answers it: what `hub.nodes()` lists (its
 * `lastSeen` by the store's clock, its `connections` as sent with its last
 * renewal), and its registration.
 */
export interface RegisteredNode extends NodeInfo {
  /** Its current registration; a node whose lease lapsed gets a new one when it renews. */
  serial: number
  /** Whether it holds its lease now. */
  live: boolean
}

/** One member in a room's roster, with the node (and registration) that announced it. */
export interface RosterEntry {
  member: Member
  node: string
  serial: number
}

/** Who announces a presence change; the store keeps it with the member. */
export interface Stamp {
  node: string
  serial: number
}

export interface PresenceOptions extends PublishOptions {
  /** Announce a join only if the member was not in the roster; an entry already there is rewritten quietly. */
  onlyIfNew?: boolean
}

/** What the registry needs from a broker's store. */
export interface RegistryStore {
  /**
   * Takes or renews `node`'s lease for `leaseMs` and stores its record.
   * `held` is false when it held no lease (new, or lapsed): then `serial` is new.
   */
  renew(node: Omit<NodeInfo, 'lastSeen'>, leaseMs: number): Promise<{ held: boolean, serial: number }>
  /** Every registered node, live or lapsed. */
  nodes(): Promise<RegisteredNode[]>
  /** Gives up `node`'s lease (it closes); members it still lists are swept like a crashed node's. */
  release(node: string): Promise<void>
  /** Drops a swept node, unless it came back (holds a lease, or a newer serial). */
  forget(node: string, serial: number): Promise<void>
  /** Rooms whose rosters may hold members of any of `nodes` (a superset is fine). */
  roomsOf(nodes: string[]): Promise<string[]>
  /**
   * `node` may have members in `room` from now on (called before its first
   * join there) / has none any more (after its last leave). A store that finds
   * a node's rooms from its rosters need do nothing.
   */
  listRoom(node: string, room: string): Promise<void>
  unlistRoom(node: string, room: string): Promise<void>
  roster(room: string): Promise<RosterEntry[]>
  /**
   * Changes the roster and tells the room's nodes, atomically (the `Broker`
   * contract for presence); rejects with `ChatError('room_full')` over
   * `maxMembers`, and `ChatError('forbidden')` for a join of a banned user.
   */
  presence(room: string, action: Presence['action'], member: Member, stamp: Stamp, options: PresenceOptions): Promise<void>
  /** Removes from `room` the members `node` announced in registration `serial` or before, telling the room once; answers how many. */
  evict(room: string, node: string, serial: number): Promise<number>
}

export interface NodeRegistryOptions {
  nodeId: string
  /** How long a node counts as alive without renewing. */
  leaseMs: number
  /** This node's connection count, stored with every renewal. */
  connections: () => number
  log: BrokerLogger
}

/**
 * Renewals (and sweeps) per lease: a lapse is seen within a third of a lease
 * after it happens, and two renewals in a row may fail (a GC pause, a slow
 * store) before a live node's lease lapses.
 */
const RENEWALS_PER_LEASE = 3

export class NodeRegistry {
  private readonly record: Omit<NodeInfo, 'lastSeen' | 'connections'>
  /** This node's registration, stamped on every member it announces. */
  private serial = 0
  /** Members who joined through this node, by room: what the rosters should hold for this node. */
  private readonly local = new Map<string, Map<string, Member>>()
  /** The rosters may disagree with `local` (an outage, or a lapsed lease): compare them at the next renewal. */
  private stale = false
  private ticker: NodeJS.Timeout | undefined
  private stopped = false
  /** Background jobs in flight by name: one of each at a time, and a slow sweep never delays a renewal. */
  private readonly jobs = new Map<'renew' | 'sweep', Promise<void>>()
  /** Nodes holding a lease as last seen: at every sweep, and whenever a roster names a node not in it. */
  private readonly liveNodes = new Set<string>()
  private looking: Promise<RegisteredNode[]> | undefined

  constructor (private readonly store: RegistryStore, private readonly options: NodeRegistryOptions) {
    this.record = { id: options.nodeId, host: hostname(), pid: process.pid, startedAt: Date.now() }
  }

  get nodeId (): string {
    return this.options.nodeId
  }

  /** Registers this node, then renews and sweeps every third of a lease. */
  async start (): Promise<void> {
    // Members count as present only while their node holds its lease: hold it before the first join.
    await this.renewNow()
    this.ticker = setInterval(() => {
      void this.renewNow()
      void this.exclusive('sweep', () => this.sweep())
    }, Math.max(1, Math.floor(this.options.leaseMs / RENEWALS_PER_LEASE)))
    this.ticker.unref()
  }

  /** Renews the lease now (and reconciles if needed); never rejects. */
  renewNow (): Promise<void> {
    return this.exclusive('renew', () => this.renew())
  }

  /** The store failed: what it holds for this node may disagree with `local`. */
  markStale (): void {
    this.stale = true
  }

  /** Stops renewing and gives up the lease. */
  async stop (): Promise<void> {
    if (this.stopped) return
    this.stopped = true
    clearInterval(this.ticker)
    this.local.clear()
    await this.store.release(this.nodeId).catch(() => {})
  }

  /** A presence change of a member of this node: remembered here, then stored and told to the room. */
  async announce (room: string, event: Presence, options: PublishOptions = {}): Promise<void> {
    const member = { id: event.member.id, user: event.member.user, name: event.member.name }
    const firstOrLast = this.remember(room, event.action, member)
    // Listed before the join is stored, so a sweep after a crash finds it.
    if (firstOrLast && event.action !== 'leave') void this.list(room)
    try {
      await this.store.presence(room, event.action, member, this.stamp(), options)
    } catch (error) {
      // A refused join changed nothing: forget it, or the next reconcile would announce it again.
      if (error instanceof ChatError && (error.code === 'room_full' || error.code === 'forbidden')) this.remember(room, 'leave', member)
      else this.stale = true
      throw error
    } finally {
      // After the last leave, or a refused first join.
      if (!this.local.has(room) && (firstOrLast || event.action !== 'leave')) void this.unlist(room)
    }
  }

  /**
   * The live nodes, for deciding which of `nodes` are live. A node not live
   * when last seen is looked up again (it may be new, or back); one that was
   * live counts as live until the next sweep looks (at most a third of a lease).
   */
  async live (nodes: Iterable<string>): Promise<ReadonlySet<string>> {
    for (const node of nodes) {
      if (!this.liveNodes.has(node)) {
        await this.nodes()
        break
      }
    }
    return this.liveNodes
  }

  /** Every registered node, read now (calls at the same time share one read). */
  async nodes (): Promise<RegisteredNode[]> {
    this.looking ??= this.store.nodes().then((nodes) => {
      this.liveNodes.clear()
      for (const node of nodes) if (node.live) this.liveNodes.add(node.id)
      return nodes
    }).finally(() => { this.looking = undefined })
    return await this.looking
  }

  // ------------------------------------------------------------ this node's members

  /** Updates `local`; true when the room gained its first local member or lost its last. */
  private remember (room: string, action: Presence['action'], member: Member): boolean {
    const members = this.local.get(room)
    if (action !== 'leave') {
      if (members) members.set(member.id, member)
      else this.local.set(room, new Map([[member.id, member]]))
      return !members
    }
    if (!members?.delete(member.id) || members.size > 0) return false
    this.local.delete(room)
    return true
  }

  private stamp (): Stamp {
    return { node: this.nodeId, serial: this.serial }
  }

  /** Never rejects: a failure leaves the rosters stale, and the next renewal lists the room again. */
  private async list (room: string): Promise<void> {
    await this.store.listRoom(this.nodeId, room).catch(() => { this.stale = true })
  }

  private async unlist (room: string): Promise<void> {
    await this.store.unlistRoom(this.nodeId, room).catch(() => { this.stale = true })
  }

  // ------------------------------------------------------------ lease, sweep, reconcile

  /** Runs `job` unless one of that name is in flight (then waits for that one); never rejects. */
  private async exclusive (name: 'renew' | 'sweep', job: () => Promise<void>): Promise<void> {
    if (this.stopped) return
    let running = this.jobs.get(name)
    if (!running) {
      // A failure is already logged as an outage; the next tick tries again.
      running = job().catch(() => {}).finally(() => this.jobs.delete(name))
      this.jobs.set(name, running)
    }
    await running
  }

  private async renew (): Promise<void> {
    const { held, serial } = await this.store.renew({ ...this.record, connections: this.options.connections() }, this.options.leaseMs)
    this.serial = serial
    this.liveNodes.add(this.nodeId)
    if (!held && this.local.size > 0) {
      this.options.log.warn({ node: this.nodeId }, 'chat: this node\'s lease had lapsed; announcing its members again')
      this.stale = true
    }
    if (!this.stale) return
    this.stale = false
    try {
      await this.reconcile()
    } catch (error) {
      this.stale = true
      throw error
    }
  }

  /**
   * Makes the rosters say what this node knows: members who left during an
   * outage are removed, members removed while the lease had lapsed are added,
   * members announced under an older registration are stamped with this one.
   */
  private async reconcile (): Promise<void> {
    const listed = new Set(await this.store.roomsOf([this.nodeId]))
    for (const room of new Set([...this.local.keys(), ...listed])) {
      if (this.local.has(room) && !listed.has(room)) await this.store.listRoom(this.nodeId, room)
      const roster = new Map((await this.store.roster(room)).map((entry) => [entry.member.id, entry]))
      const here = this.local.get(room) ?? new Map<string, Member>()
      for (const { member, node } of roster.values()) {
        if (node === this.nodeId && !here.has(member.id)) await this.store.presence(room, 'leave', member, this.stamp(), {})
      }
      for (const member of here.values()) {
        const entry = roster.get(member.id)
        if (entry === undefined || (entry.node === this.nodeId && entry.serial !== this.serial)) {
          await this.store.presence(room, 'join', member, this.stamp(), { onlyIfNew: true })
        }
      }
      if (!this.local.has(room)) await this.store.unlistRoom(this.nodeId, room)
    }
  }

  /** Removes the members of nodes whose lease lapsed; each is told once, whichever node sweeps. */
  private async sweep (): Promise<void> {
    for (const node of await this.nodes()) {
      // This node's own lapse is for its next renewal to notice and mend.
      if (node.live || node.id === this.nodeId) continue
      for (const room of await this.store.roomsOf([node.id])) await this.store.evict(room, node.id, node.serial)
      await this.store.forget(node.id, node.serial)
    }
  }
}
