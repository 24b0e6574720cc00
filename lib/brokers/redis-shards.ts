/**
 * Where `RedisBroker`'s rooms live, and its connections there. A room lives
 * on one `RedisShard`: the one Redis; with `shards`, the standalone server
 * that a jump consistent hash of its name picks (jump-hash.ts); with
 * `cluster`, the Redis Cluster, whose slots ioredis follows as they move.
 * Each shard has its own connections, pub/sub and availability, so a shard
 * that is down fails only the calls for its own rooms.
 */
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis'
import { reconnectDelay, type BrokerLogger } from '../broker.js'
import { Availability } from './availability.js'
import { shardOf } from './jump-hash.js'
import { scriptCalls, scriptCommands, type ScriptCalls } from './redis-scripts.js'

/** What the broker learns from its shards. */
export interface ShardEvents {
  /** A message on one of a shard's subscribed channels. */
  message (channel: string, payload: string): void
  /**
   * A shard's subscriptions were lost and are back (or made for the first
   * time): the broker subscribes again where the shard does not keep them,
   * and reads from history what was published meanwhile.
   */
  subscriber (shard: RedisShard): void
  /** A shard's command connection (re)connected. */
  commands (shard: RedisShard): void
  /** A shard stopped answering: rosters may now disagree with it. */
  lost (): void
  log (): BrokerLogger | undefined
}

/** The settings every connection shares: outages fail calls at once, nothing is queued or resent. */
export interface ShardSettings {
  /** For connection names, so that CLIENT LIST tells the nodes apart. */
  nodeId: string
  commandTimeout: number
  /** The user's ioredis options; the broker's own outage settings win. */
  redis: RedisOptions | undefined
}

export interface RedisShard {
  /** How logs and errors name it. */
  readonly name: string
  readonly scripts: ScriptCalls
  readonly commands: Redis | Cluster
  /**
   * Whether the shard subscribes again by itself after a reconnect (ioredis
   * does so for a Cluster's sharded subscriptions) rather than the broker.
   */
  readonly keepsSubscriptions: boolean
  /** Runs one call on this shard; any failure becomes `unavailable`, and a script that failed is logged as an error. (Bound: it may be passed on.) */
  readonly run: <T>(call: () => Promise<T>) => Promise<T>
  publish (channel: string, payload: string): Promise<void>
  subscribe (channels: string[]): Promise<void>
  unsubscribe (channel: string): Promise<void>
  /** Resolves once connected, or after `commandTimeout` (then calls fail with `unavailable` until it is). */
  ready (): Promise<void>
  close (): Promise<void>
}

/** Outage settings that override the user's: fail at once while disconnected, and never resend a command behind its caller's back (the caller got `unavailable` and retries with its cid). */
function outageSettings (commandTimeout: number): RedisOptions {
  return {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
    commandTimeout,
    // A hung Redis: drop the socket, so unanswered commands do not pile up on it.
    socketTimeout: commandTimeout,
  }
}

/** A reply that tells of an outage rather than of a script that failed: the cluster cannot serve the slot now. */
const OUTAGE_REPLY = /^(CLUSTERDOWN|TRYAGAIN|MASTERDOWN|LOADING)\b/

function isOutage (error: unknown): boolean {
  return (error as Error).name !== 'ReplyError' || OUTAGE_REPLY.test((error as Error).message)
}

/** A URL without its password, for logs. */
function shardName (url: string): string {
  try {
    const parsed = new URL(url)
    parsed.password = ''
    return parsed.toString().replace(/\/$/, '')
  } catch {
    return url
  }
}

/** One standalone Redis: a command connection and a subscriber. */
class StandaloneShard implements RedisShard {
  readonly keepsSubscriptions = false
  readonly commands: Redis
  readonly scripts: ScriptCalls
  private readonly subscriber: Redis
  private readonly availability: Availability

  constructor (readonly name: string, private readonly url: string | undefined, private readonly settings: ShardSettings, events: ShardEvents) {
    this.availability = new Availability({
      store: name,
      log: events.log,
      connected: () => this.commands.status === 'ready' && this.subscriber.status === 'ready',
      onLoss: events.lost,
    })
    this.commands = this.connect('commands')
    this.subscriber = this.connect('subscriber')
    this.scripts = scriptCalls(this.commands)
    this.subscriber.on('message', (channel: string, payload: string) => events.message(channel, payload))
    this.commands.on('ready', () => {
      this.availability.answered()
      events.commands(this)
    })
    this.subscriber.on('ready', () => {
      this.availability.answered()
      events.subscriber(this)
    })
  }

  readonly run = async <T>(call: () => Promise<T>): Promise<T> => await this.availability.run(call(), isOutage)

  async publish (channel: string, payload: string): Promise<void> {
    await this.run(() => this.commands.publish(channel, payload))
  }

  async subscribe (channels: string[]): Promise<void> {
    await this.run(() => this.subscriber.subscribe(...channels))
  }

  async unsubscribe (channel: string): Promise<void> {
    await this.subscriber.unsubscribe(channel)
  }

  async ready (): Promise<void> {
    await Promise.all([whenReady(this.commands, this.settings.commandTimeout), whenReady(this.subscriber, this.settings.commandTimeout)])
  }

  async close (): Promise<void> {
    await Promise.allSettled([this.commands.quit(), this.subscriber.quit()])
    this.commands.disconnect()
    this.subscriber.disconnect()
  }

  private connect (role: string): Redis {
    const options: RedisOptions = {
      retryStrategy: reconnectDelay,
      connectionName: `fastify-chat-rooms-${role}-${this.settings.nodeId}`,
      ...this.settings.redis,
      ...outageSettings(this.settings.commandTimeout),
      // The broker subscribes again itself, then fills what pub/sub lost meanwhile.
      autoResubscribe: false,
      scripts: scriptCommands('PUBLISH'),
    }
    const redis = this.url === undefined ? new Redis(options) : new Redis(this.url, options)
    // Connection errors repeat on every reconnect attempt; the outage is logged once.
    redis.on('error', (error: Error) => this.availability.lost(error))
    return redis
  }
}

/**
 * After ioredis reports its sharded subscribers ready, it sends their
 * SSUBSCRIBEs without waiting for them: reading the history once more after
 * this long catches what was published before they took effect.
 */
const CLUSTER_RESUBSCRIBE_SETTLE_MS = 1000

/**
 * A Redis Cluster through ioredis: one Cluster for commands and sharded
 * pub/sub (ioredis keeps one subscriber per master and follows slot moves).
 */
class ClusterShard implements RedisShard {
  readonly keepsSubscriptions = true
  readonly commands: Cluster
  readonly scripts: ScriptCalls
  private readonly availability: Availability
  private readonly settleTimers = new Set<NodeJS.Timeout>()
  private lastLoss = 0

  constructor (readonly name: string, seeds: string[], private readonly settings: ShardSettings, events: ShardEvents) {
    this.availability = new Availability({
      store: name,
      log: events.log,
      // One master down fails only its rooms' calls while the others answer: the outage ends once
      // calls have answered for a while with none failing, not at the first call that answers.
      connected: () => this.commands.status === 'ready' && Date.now() - this.lastLoss > 2 * settings.commandTimeout,
      onLoss: () => {
        this.lastLoss = Date.now()
        events.lost()
      },
    })
    const options: ClusterOptions = {
      clusterRetryStrategy: reconnectDelay,
      enableOfflineQueue: false,
      shardedSubscribers: true,
      scripts: scriptCommands('SPUBLISH'),
      redisOptions: {
        connectionName: `fastify-chat-rooms-cluster-${settings.nodeId}`,
        ...settings.redis,
        ...outageSettings(settings.commandTimeout),
      },
    }
    this.commands = new Cluster(seeds, options)
    this.scripts = scriptCalls(this.commands)
    this.commands.on('error', (error: Error) => this.availability.lost(error))
    this.commands.on('node error', (error: Error) => this.availability.lost(error))
    this.commands.on('ready', () => {
      this.availability.answered()
      events.commands(this)
    })
    this.commands.on('smessage', (channel: string, payload: string) => events.message(channel, payload))
    this.commands.on('subscribersReady', () => {
      events.subscriber(this)
      const timer = setTimeout(() => {
        this.settleTimers.delete(timer)
        events.subscriber(this)
      }, CLUSTER_RESUBSCRIBE_SETTLE_MS)
      this.settleTimers.add(timer)
    })
  }

  readonly run = async <T>(call: () => Promise<T>): Promise<T> => await this.availability.run(call(), isOutage)

  async publish (channel: string, payload: string): Promise<void> {
    await this.run(() => this.commands.spublish(channel, payload))
  }

  /** One SSUBSCRIBE per channel: each names a slot of its own. */
  async subscribe (channels: string[]): Promise<void> {
    await this.run(() => Promise.all(channels.map((channel) => this.commands.ssubscribe(channel))))
  }

  async unsubscribe (channel: string): Promise<void> {
    await this.commands.sunsubscribe(channel)
  }

  async ready (): Promise<void> {
    await whenReady(this.commands, this.settings.commandTimeout)
  }

  async close (): Promise<void> {
    for (const timer of this.settleTimers) clearTimeout(timer)
    await this.commands.quit().catch(() => {})
    this.commands.disconnect()
  }
}


/** The rooms' places, and which holds the node registry and node-wide signals. */
export class RedisShards {
  readonly all: readonly RedisShard[]
  readonly registry: RedisShard

  private constructor (all: RedisShard[], registry: RedisShard) {
    this.all = all
    this.registry = registry
  }

  /** The shards the broker's options name: `shards`, `cluster`, or the one Redis of `url`. */
  static open (options: { url?: string, shards?: string[], registryShard?: string, cluster?: string[] }, settings: ShardSettings, events: ShardEvents): RedisShards {
    if (options.cluster !== undefined) {
      const cluster = new ClusterShard(`Redis Cluster (${options.cluster.map(shardName).join(', ')})`, options.cluster, settings, events)
      return new RedisShards([cluster], cluster)
    }
    if (options.shards !== undefined) {
      const urls = options.shards
      const shards = urls.map((url) => new StandaloneShard(`Redis shard ${shardName(url)}`, url, settings, events))
      return new RedisShards(shards, shards[urls.indexOf(options.registryShard ?? urls[0]!)]!)
    }
    const one = new StandaloneShard('Redis', options.url, settings, events)
    return new RedisShards([one], one)
  }

  /** The shard of a room's keys and channel. */
  of (room: string): RedisShard {
    return this.all[shardOf(room, this.all.length)]!
  }

  async ready (): Promise<void> {
    await Promise.all(this.all.map((shard) => shard.ready()))
  }

  async close (): Promise<void> {
    await Promise.allSettled(this.all.map((shard) => shard.close()))
  }
}

/** Resolves once `redis` is ready, or after `ms`. */
async function whenReady (redis: Redis | Cluster, ms: number): Promise<void> {
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
