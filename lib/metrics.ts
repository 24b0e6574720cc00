/**
 * The `metrics` option: the chat's `chat_*` series in prom-client, which is
 * an optional peer dependency loaded here and only when the option is on.
 * Events (closes, errors, resumes, broker calls) are counted as they happen,
 * through the seam of chat-metrics.ts; what the hub already keeps
 * (connections, rooms, messages, drops) and what the broker lists (live
 * nodes) is read when scraped, so it costs nothing between scrapes. Labels
 * are bounded sets (close codes, error codes, broker methods), never rooms or
 * users.
 */
import type { FastifyInstance } from 'fastify'
import type * as PromClient from 'prom-client'
import { BROKER_METHODS, type BrokerOperation } from './broker.js'
import type { BrokerCallObserver, ChatMetrics } from './chat-metrics.js'
import { ChatError, CloseCodes, type ErrorCode } from './errors.js'
import { nodesWithin } from './health.js'
import type { Hub } from './hub.js'
import { OptionsError, type MetricsRegistry } from './options.js'

/**
 * Buckets of broker call latency, in seconds: from half a millisecond (the
 * memory broker, a Redis round trip on a LAN) to 2.5 s, past the 2 s by which
 * a broker on a shared server gives up on a call (DEFAULT_COMMAND_TIMEOUT_MS).
 */
const BROKER_SECONDS_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5]

/**
 * Close codes counted under their own label: those the server sends, and
 * what `ws` reports for a close frame without a code (1005) or no close frame
 * at all (1006). A peer may send any code from 1000 to 4999; the others are
 * counted as `other`, which keeps the label's values bounded.
 */
const LABELLED_CLOSE_CODES = new Set<number>([...Object.values(CloseCodes), 1005, 1006])

type Metric = PromClient.Metric<string>

/** Loads prom-client; its absence is a startup error that names the option. */
async function loadPromClient (): Promise<typeof PromClient> {
  try {
    return await import('prom-client')
  } catch (error) {
    if ((error as { code?: string }).code !== 'ERR_MODULE_NOT_FOUND') throw error
    throw new OptionsError('fastify-chat-rooms: option metrics: needs prom-client, an optional peer dependency that is not installed; run `npm install prom-client`, or leave metrics off')
  }
}

/** The chat's series in one registry: counted as events come, and read from the hub when scraped. */
export class PromMetrics implements ChatMetrics, BrokerCallObserver {
  /** Every series of ours, registered together once the hub exists and removed on close. */
  private readonly series: Array<{ name: string, metric: Metric }> = []
  private readonly closes: PromClient.Counter<'code'>
  private readonly errors: PromClient.Counter<'code'>
  private readonly resumes: PromClient.Counter<'recovered'>
  private readonly brokerSeconds: Record<BrokerOperation, PromClient.Histogram.Internal<'operation'>>
  private readonly brokerOutages: PromClient.Counter
  /** Whether the last broker call answered: an outage is counted when one fails after one answered. */
  private brokerAnswered = true
  /** The broker's list of nodes being read for this scrape, shared by the series that need it. */
  private nodesRead: Promise<number | undefined> | undefined

  /** Loads prom-client and makes the series, in the application's `registry` or one of the plugin's own. */
  static async load (registry: MetricsRegistry | undefined): Promise<PromMetrics> {
    const prom = await loadPromClient()
    // A registry of our own, not prom-client's global one: two instances in one process must not clash.
    return new PromMetrics(prom, (registry as PromClient.Registry | undefined) ?? new prom.Registry())
  }

  private constructor (private readonly prom: typeof PromClient, readonly registry: PromClient.Registry) {
    this.closes = this.counter('chat_closes_total', 'Connections closed, by close code (the server\'s when it closed, else the peer\'s; 1006: no close frame; other: a code the server never sends)', ['code'])
    this.errors = this.counter('chat_errors_total', 'error frames sent to clients, by error code', ['code'])
    this.resumes = this.counter('chat_resumes_total', 'Joins with since answered, by whether the joined reply recovered every missed entry', ['recovered'])
    this.brokerOutages = this.counter('chat_broker_outages_total', 'Times a broker call failed with unavailable after the last call had answered', [])
    const histogramName = 'chat_broker_call_duration_seconds'
    const histogram = this.add(histogramName, new prom.Histogram({
      name: histogramName,
      help: 'Broker calls from the moment they are made until they settle (answered or failed), by broker method',
      labelNames: ['operation'],
      buckets: BROKER_SECONDS_BUCKETS,
      registers: [],
    }))
    this.brokerSeconds = Object.fromEntries(BROKER_METHODS.map((operation) => [operation, histogram.labels({ operation })])) as Record<BrokerOperation, PromClient.Histogram.Internal<'operation'>>
  }

  closed (code: number): void {
    this.closes.inc({ code: LABELLED_CLOSE_CODES.has(code) ? String(code) : 'other' })
  }

  refused (code: ErrorCode): void {
    this.errors.inc({ code })
  }

  resumed (recovered: boolean): void {
    this.resumes.inc({ recovered: String(recovered) })
  }

  brokerCall (operation: BrokerOperation, seconds: number, error: unknown): void {
    this.brokerSeconds[operation].observe(seconds)
    const unavailable = error instanceof ChatError && error.code === 'unavailable'
    if (unavailable && this.brokerAnswered) this.brokerOutages.inc()
    this.brokerAnswered = !unavailable
  }

  /**
   * Adds the series read from `hub` when scraped, then registers every series.
   * Fails, registering none, when the registry already holds one of ours.
   */
  register (hub: Hub): void {
    const stats = (): ReturnType<Hub['stats']> => hub.stats()
    this.gauge('chat_connections', 'Open WebSocket connections on this node', () => stats().connections)
    this.gauge('chat_rooms', 'Rooms with members on this node', () => stats().rooms)
    this.total('chat_messages_in_total', 'WebSocket messages received from clients', () => hub.count.messagesIn)
    this.total('chat_messages_out_total', 'WebSocket messages written to clients', () => hub.count.messagesOut)
    this.total('chat_dropped_frames_total', 'Frames not delivered because their connection was closing or too slow', () => hub.count.dropped)
    this.total('chat_slow_consumer_closes_total', 'Connections closed with 4008 because their reader fell more than maxBufferedBytes behind', () => hub.count.slowConsumerCloses)
    this.gauge('chat_nodes', 'Live nodes sharing the broker, as of the last scrape it answered', () => this.liveNodes(hub))
    this.gauge('chat_broker_up', 'Whether the broker listed the live nodes within 1 s at this scrape, as readiness asks it (1) or not (0)', async () => (await this.liveNodes(hub)) === undefined ? 0 : 1)
    const taken = this.series.filter(({ name }) => this.registry.getSingleMetric(name) !== undefined).map(({ name }) => name)
    if (taken.length > 0) {
      throw new OptionsError(`fastify-chat-rooms: option metrics.registry: already holds ${taken.join(', ')}; give each instance of the plugin a registry of its own`)
    }
    for (const { metric } of this.series) this.registry.registerMetric(metric)
  }

  /** Takes our series out of the registry, so that the application's may outlive this instance. */
  unregister (): void {
    for (const { name } of this.series) this.registry.removeSingleMetric(name)
  }

  /** Serves the registry (the application's whole registry when it gave one) at `GET /metrics`. */
  route (fastify: FastifyInstance): void {
    fastify.get('/metrics', async (_request, reply) => reply.type(this.registry.contentType).send(await this.registry.metrics()))
  }

  private add<M extends Metric> (name: string, metric: M): M {
    this.series.push({ name, metric })
    return metric
  }

  private counter<L extends string> (name: string, help: string, labelNames: L[]): PromClient.Counter<L> {
    return this.add(name, new this.prom.Counter({ name, help, labelNames, registers: [] }))
  }

  /** A counter of what the hub counts itself: each scrape adds what it counted since the last. */
  private total (name: string, help: string, read: () => number): void {
    let reported = 0
    this.add(name, new this.prom.Counter({
      name,
      help,
      registers: [],
      collect () {
        const now = read()
        this.inc(now - reported)
        reported = now
      },
    }))
  }

  /** A gauge set when scraped; one read as undefined keeps its last value. */
  private gauge (name: string, help: string, read: () => number | undefined | Promise<number | undefined>): void {
    this.add(name, new this.prom.Gauge({
      name,
      help,
      registers: [],
      async collect () {
        const value = await read()
        if (value !== undefined) this.set(value)
      },
    }))
  }

  /** How many live nodes the broker lists, undefined when it did not answer within READY_TIMEOUT_MS; one read per scrape. */
  private liveNodes (hub: Hub): Promise<number | undefined> {
    this.nodesRead ??= nodesWithin(hub).then((nodes) => (typeof nodes === 'string' ? undefined : nodes.length)).finally(() => { this.nodesRead = undefined })
    return this.nodesRead
  }
}
