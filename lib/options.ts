/**
 * The plugin's options: one TypeBox schema (the example's config file embeds
 * it), frozen defaults, the rules between options that the schema cannot
 * state, and errors that name the offending option and say what is allowed.
 */
import Type, { type Static } from 'typebox'
import { Compile } from 'typebox/compile'
import type { FastifyRequest } from 'fastify'
import { BROKER_METHODS, type Broker, type ReactionLimits } from './broker.js'
import { DEFAULT_DRAIN, MAX_DRAIN_MS, type DrainOptions } from './drain.js'
import { originOf } from './origin.js'
import type { Member } from './protocol.js'
import { DEFAULT_MAX_REACTIONS_PER_MESSAGE, DEFAULT_MAX_TEXT_LENGTH, DEFAULT_ROOM_PATTERN, MAX_RAW_STRING, MEMBER_REPLY_BYTES } from './protocol.js'
import { schemaErrors } from './schema-errors.js'

/** Node's timers take at most this many ms; a longer delay overflows and fires after 1 ms. */
const MAX_TIMER_MS = 2 ** 31 - 1

const Prefix = Type.String({ pattern: '^/', description: "a path starting with '/'" })
const Count = Type.Integer({ minimum: 0 })
const Positive = Type.Integer({ minimum: 1 })
const Origin = Type.String({ pattern: '^https?://[^/]+$', description: "an origin like 'https://example.com' (scheme and host, nothing after)" })

/** The options that are plain data, as they may appear in a JSON config file. */
export const OptionsSchema = Type.Object({
  path: Type.Optional(Prefix),
  home: Type.Optional(Type.Union([Type.Boolean(), Type.Object({ prefix: Prefix }, { additionalProperties: false })])),
  rest: Type.Optional(Type.Union([Type.Literal(false), Type.Object({ prefix: Prefix }, { additionalProperties: false })])),
  health: Type.Optional(Type.Union([Type.Literal(false), Type.Object({ prefix: Prefix }, { additionalProperties: false })])),
  metrics: Type.Optional(Type.Boolean({ description: 'true (serve GET /metrics; needs prom-client) or false' })),
  allowedOrigins: Type.Optional(Type.Union([
    Type.Literal('same-origin'),
    Type.Literal('*'),
    Type.Array(Origin, { description: "a list of origins like 'https://example.com'" }),
  ])),
  maxPayload: Type.Optional(Positive),
  // A longer text would be refused by the wire schema before maxTextLength is looked at.
  maxTextLength: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_RAW_STRING })),
  maxRoomsPerConnection: Type.Optional(Positive),
  maxMembersPerRoom: Type.Optional(Count),
  maxMembersInReply: Type.Optional(Positive),
  maxConnections: Type.Optional(Count),
  maxConnectionsPerIp: Type.Optional(Count),
  rateLimit: Type.Optional(Type.Object({ perSecond: Type.Number({ exclusiveMinimum: 0 }), burst: Positive }, { additionalProperties: false })),
  errorLimit: Type.Optional(Type.Object({ count: Positive, windowMs: Positive }, { additionalProperties: false })),
  maxBufferedBytes: Type.Optional(Positive),
  heartbeatInterval: Type.Optional(Type.Integer({ minimum: 100, maximum: MAX_TIMER_MS })),
  authenticateTimeout: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_TIMER_MS })),
  historySize: Type.Optional(Count),
  historyOnJoin: Type.Optional(Count),
  maxReactionsPerMessage: Type.Optional(Positive),
  // An interval past MAX_DRAIN_MS could never be kept: the whole drain is bounded by it.
  drain: Type.Optional(Type.Object({
    batchSize: Type.Optional(Positive),
    intervalMs: Type.Optional(Type.Integer({ minimum: 0, maximum: MAX_DRAIN_MS })),
  }, { additionalProperties: false })),
  roomPattern: Type.Optional(Type.String({ minLength: 1, description: "a regular expression's source, like '^[a-z]{1,32}$'" })),
}, { additionalProperties: false, description: "an object of the plugin's options" })

const Hook = Type.Function([], Type.Unknown())

/** Every option of `register`: the data ones, the hooks, and the broker (whose shape `isBroker` checks). */
const PluginOptionsSchema = Type.Object({
  ...OptionsSchema.properties,
  // In code, `rest` may also name the hook that guards the moderation and server-publish routes.
  rest: Type.Optional(Type.Union([Type.Literal(false), Type.Object({ prefix: Prefix, authorize: Type.Optional(Hook) }, { additionalProperties: false })])),
  // In code, `metrics` may also name the application's prom-client registry (whose shape `isRegistry` checks).
  metrics: Type.Optional(Type.Union([Type.Boolean(), Type.Object({ registry: Type.Unknown({ description: 'a prom-client Registry' }) }, { additionalProperties: false, description: '{ registry: a prom-client Registry }' })])),
  authenticate: Type.Optional(Hook),
  onJoin: Type.Optional(Hook),
  onMessage: Type.Optional(Hook),
  onRename: Type.Optional(Hook),
  broker: Type.Optional(Type.Unknown()),
}, { additionalProperties: false })

export type DataOptions = Static<typeof OptionsSchema>

/** Who a connection is, as `authenticate` decides. */
export interface Identity {
  /** The user: the same in each of a person's tabs and devices; without it, the connection is its own user. */
  id?: string
  name: string
  /**
   * Anything the application wants its hooks to see of the connection (a
   * role, an account): on the member `onJoin`, `onMessage` and `onRename`
   * get; never sent on the wire nor given to the broker.
   */
  data?: unknown
}

/** A member as the hooks see it: the wire's member object and the `data` its `authenticate` returned. */
export type HookMember = Member & { data?: unknown }

/** What `rest.authorize` is asked to allow: publishing or deleting a message as the server, or one moderation call. */
export type RestAction = 'publish' | 'delete' | 'kick' | 'ban' | 'unban' | 'mute' | 'unmute' | 'moderation'

/**
 * Guards the moderation and server-publish routes: only `true` allows the
 * request; anything else, or a throw, answers 403. Runs after `authenticate`.
 */
export type Authorize = (request: FastifyRequest, action: RestAction) => boolean | Promise<boolean>

/** `rest` as code may give it: `authorize` adds the moderation and server-publish routes. */
export interface RestOptions {
  prefix: string
  authorize?: Authorize
}

/** What `onMessage` sees of a message (or of an edit's new text) before it is stored. */
export interface PendingMessage {
  room: string
  text: string
  /** Present for an edit: the seq of the message whose text `text` replaces. */
  edit?: number
}

/**
 * What the plugin uses of a prom-client `Registry`, so that these types do
 * not need prom-client installed. Pass the `Registry` itself.
 */
export interface MetricsRegistry {
  registerMetric(metric: never): void
  getSingleMetric(name: string): unknown
  removeSingleMetric(name: string): void
  metrics(): Promise<string>
  readonly contentType: string
}

/** Options of `fastify.register(chatRooms, options)`. Every field is optional. */
export interface ChatRoomsOptions extends Omit<DataOptions, 'rest' | 'metrics'> {
  /**
   * `GET /metrics` in the Prometheus text format, `chat_*` series (needs
   * prom-client): `true` keeps them in a registry of the plugin's own;
   * `{ registry }` puts them in the application's, and the route serves all of it.
   */
  metrics?: boolean | { registry: MetricsRegistry }
  /** The HTTP API under `prefix`; with `authorize`, also its moderation and server-publish routes. */
  rest?: false | RestOptions
  /** Decides who a connection is before the upgrade; returning nothing (or throwing) refuses it with 401. */
  authenticate?: (request: FastifyRequest) => Identity | undefined | Promise<Identity | undefined>
  /** May refuse a join (`false`, answered `forbidden`). */
  onJoin?: (room: string, member: HookMember) => boolean | undefined | Promise<boolean | undefined>
  /** May refuse a message or an edit (`false` → `forbidden`) or rewrite its text (return a string). */
  onMessage?: (message: PendingMessage, member: HookMember) => string | boolean | undefined | Promise<string | boolean | undefined>
  /**
   * May allow (`true`) or refuse (`false`, answered `forbidden`) a `nick`.
   * Left to the default (`undefined`, or no hook): guests may rename
   * themselves; a connection named by `authenticate` may not, so nobody takes
   * another user's name.
   */
  onRename?: (member: HookMember, name: string) => boolean | undefined | Promise<boolean | undefined>
  /** Where rooms are stored and shared between nodes; an in-process memory broker by default. */
  broker?: Broker
}

export interface ResolvedOptions {
  readonly path: string
  readonly home: false | { readonly prefix: string }
  readonly rest: false | Readonly<RestOptions>
  readonly health: false | { readonly prefix: string }
  /** On, with the application's registry if it gave one. */
  readonly metrics: false | { readonly registry: MetricsRegistry | undefined }
  readonly allowedOrigins: 'same-origin' | '*' | readonly string[]
  readonly authenticate: ChatRoomsOptions['authenticate']
  readonly onJoin: ChatRoomsOptions['onJoin']
  readonly onMessage: ChatRoomsOptions['onMessage']
  readonly onRename: ChatRoomsOptions['onRename']
  readonly broker: Broker | undefined
  readonly maxPayload: number
  readonly maxTextLength: number
  readonly maxRoomsPerConnection: number
  readonly maxMembersPerRoom: number
  readonly maxMembersInReply: number
  readonly maxConnections: number
  readonly maxConnectionsPerIp: number
  readonly rateLimit: { readonly perSecond: number, readonly burst: number }
  readonly errorLimit: { readonly count: number, readonly windowMs: number }
  readonly maxBufferedBytes: number
  readonly heartbeatInterval: number
  readonly authenticateTimeout: number
  readonly historySize: number
  readonly historyOnJoin: number
  readonly maxReactionsPerMessage: number
  readonly drain: DrainOptions
  /** What bounds one message's reactions: `maxReactionsPerMessage`, and bytes so that a message always fits one reply. */
  readonly reactionLimits: ReactionLimits
  readonly roomPattern: RegExp
}

export const defaults = Object.freeze({
  path: '/ws',
  home: Object.freeze({ prefix: '/' }),
  rest: false as const,
  health: false as const,
  metrics: false as const,
  allowedOrigins: 'same-origin' as const,
  maxPayload: 16384,
  maxTextLength: DEFAULT_MAX_TEXT_LENGTH,
  maxRoomsPerConnection: 20,
  maxMembersPerRoom: 0,
  maxMembersInReply: 100,
  maxConnections: 0,
  maxConnectionsPerIp: 0,
  rateLimit: Object.freeze({ perSecond: 20, burst: 40 }),
  errorLimit: Object.freeze({ count: 50, windowMs: 60000 }),
  maxBufferedBytes: 1048576,
  heartbeatInterval: 30000,
  // An upgrade waiting on `authenticate` holds a socket: a hook that never answers must not hold it forever.
  authenticateTimeout: 10000,
  historySize: 1000,
  historyOnJoin: 50,
  maxReactionsPerMessage: DEFAULT_MAX_REACTIONS_PER_MESSAGE,
  drain: DEFAULT_DRAIN,
  roomPattern: DEFAULT_ROOM_PATTERN,
})

const pluginValidator = Compile(PluginOptionsSchema)

/**
 * Bytes a character of message text may take in a frame as JSON.stringify
 * writes it: a code point beyond the BMP takes 4 in UTF-8, and a control
 * character or a lone surrogate takes 6, escaped as \uXXXX. (A client that
 * escaped every character by hand could spend 12 on an emoji; no JSON encoder
 * does that by default.)
 */
const MAX_BYTES_PER_CHARACTER = 6

/**
 * Bytes a `send` or a `message` frame takes besides its text. A send's keys
 * (53 bytes), its room (at most 64 bytes under the default roomPattern) and an
 * ASCII ref and cid (at most 64 each) take 245; a message's keys with the
 * largest seq and ts (125), its id, room and cid, and a sender of 32
 * characters take about 450. 512 bounds both, with room for a longer user id.
 */
const FRAME_OVERHEAD = 512

/** The largest `send` a client writes, and `message` a reader gets, for a text of `characters`. */
function fullFrameBytes (characters: number): number {
  return MAX_BYTES_PER_CHARACTER * characters + FRAME_OVERHEAD
}

/**
 * Bytes of reactions (as `reactionBytes` counts them) one message holds at
 * most: about 2,000 reactions by users with 30-byte ids, and a small share of
 * what a room's history may hold.
 */
const MAX_REACTION_BYTES = 64 * 1024

/**
 * The bounds of one message's reactions: a message of full size with all its
 * reactions must fit in a reply (half of `maxBufferedBytes`), like any message.
 */
function reactionLimitsFor (maxReactions: number, maxBufferedBytes: number, maxTextLength: number): ReactionLimits {
  return Object.freeze({ maxReactions, maxBytes: Math.max(0, Math.min(MAX_REACTION_BYTES, Math.floor(maxBufferedBytes / 2) - fullFrameBytes(maxTextLength))) })
}

/**
 * How many members a reply may carry within a quarter of `maxBufferedBytes`
 * (the messages of a reply fill at most half), and at least 1: the smallest
 * allowed `maxBufferedBytes` (1036) holds half of it in messages and one member.
 */
function membersThatFit (maxBufferedBytes: number): number {
  return Math.max(1, Math.floor(maxBufferedBytes / 4 / MEMBER_REPLY_BYTES))
}

/** An option or config field that cannot be used; the message names it. */
export class OptionsError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'OptionsError'
  }
}

/** The one place the room pattern's flags are chosen: `u`, so that it sees characters rather than UTF-16 halves. */
function compileRoomPattern (source: string): RegExp {
  return new RegExp(source, 'u')
}

/**
 * What the schema cannot say: a `roomPattern` that does not compile, and
 * options that are valid one by one but not together. One line per problem,
 * naming every field involved; `root` prefixes the names (the example's config
 * file passes `chat.`). `data` must already match `OptionsSchema`.
 */
export function optionRuleProblems (data: DataOptions, root = ''): string[] {
  const problems: string[] = []
  const named = (field: keyof DataOptions): string => `${root}${field}`
  type Limit = 'historySize' | 'maxPayload' | 'maxTextLength' | 'maxBufferedBytes'
  const value = (field: Limit): number => data[field] ?? defaults[field]
  const shown = (field: Limit): string => `${value(field)}${data[field] === undefined ? ' (the default)' : ''}`

  try {
    compileRoomPattern(data.roomPattern ?? defaults.roomPattern)
  } catch (error) {
    problems.push(`${named('roomPattern')}: must be a valid regular expression (${(error as Error).message})`)
  }

  // The schema's pattern lets through what URL parsing refuses as an origin (`https://a b`, `https://user@host`).
  const listed = Array.isArray(data.allowedOrigins) ? data.allowedOrigins : []
  listed.forEach((origin, index) => {
    if (originOf(origin) === undefined) problems.push(`${named('allowedOrigins')}.${index}: ${JSON.stringify(origin)} is not an origin like 'https://example.com'`)
  })

  // A join sends the newest historyOnJoin messages of those a room keeps: it can never send more.
  const historySize = value('historySize')
  if (data.historyOnJoin !== undefined && data.historyOnJoin > historySize) {
    problems.push(`${named('historyOnJoin')}: must be at most ${named('historySize')}, which is ${shown('historySize')}, not ${data.historyOnJoin}: a join cannot send more messages than a room keeps`)
  }

  // A send of maxTextLength characters must fit in one frame, or a text the limit allows closes the connection with 1009.
  const maxTextLength = value('maxTextLength')
  const maxPayload = value('maxPayload')
  const fullFrame = fullFrameBytes(maxTextLength)
  if (fullFrame > maxPayload) {
    const fits = Math.floor((maxPayload - FRAME_OVERHEAD) / MAX_BYTES_PER_CHARACTER)
    problems.push(`${named('maxTextLength')}: ${shown('maxTextLength')} does not fit in ${named('maxPayload')}, which is ${shown('maxPayload')}: ` +
      `a send of ${maxTextLength} characters may take ${fullFrame} bytes (${MAX_BYTES_PER_CHARACTER} a character, escaped, plus ${FRAME_OVERHEAD} for the frame's other fields); ` +
      `raise ${named('maxPayload')} to ${fullFrame}${fits >= 1 ? ` or lower ${named('maxTextLength')} to ${fits}` : ''}`)
  }

  // A joined or history reply may fill half of maxBufferedBytes (so that it never makes its own reader a slow
  // consumer) and must hold at least one message of full size; below that, such a message could never be replied
  // with, and one delivered behind anything else would close its reader with 4008.
  const maxBufferedBytes = value('maxBufferedBytes')
  if (maxBufferedBytes < 2 * fullFrame) {
    problems.push(`${named('maxBufferedBytes')}: must be at least ${2 * fullFrame}, twice the largest message frame for ${named('maxTextLength')} ${shown('maxTextLength')}, not ${maxBufferedBytes}: ` +
      'a joined or history reply may fill half of it and must hold one message of full size')
  }

  // The members of a reply come on top of its messages: together they must leave room for frames queued before it.
  const membersFit = membersThatFit(maxBufferedBytes)
  if (data.maxMembersInReply !== undefined && data.maxMembersInReply > membersFit) {
    problems.push(`${named('maxMembersInReply')}: must be at most ${membersFit} for ${named('maxBufferedBytes')} ${shown('maxBufferedBytes')}, not ${data.maxMembersInReply}: ` +
      `the members of a reply (up to ${MEMBER_REPLY_BYTES} bytes each) may fill a quarter of it`)
  }
  return problems
}

function isBroker (value: unknown): value is Broker {
  if (typeof value !== 'object' || value === null) return false
  const candidate = value as Record<string, unknown>
  return BROKER_METHODS
    .every((method) => typeof candidate[method] === 'function')
}

/** The methods of a prom-client `Registry` the plugin calls. */
const REGISTRY_METHODS = ['registerMetric', 'getSingleMetric', 'removeSingleMetric', 'metrics'] as const

function isRegistry (value: unknown): value is MetricsRegistry {
  if (typeof value !== 'object' || value === null) return false
  const candidate = value as Record<string, unknown>
  return REGISTRY_METHODS.every((method) => typeof candidate[method] === 'function')
}

/** Validates the caller's options and resolves them into a new frozen object; the caller's object is never written. */
export function resolveOptions (options: ChatRoomsOptions = {}): ResolvedOptions {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new OptionsError('fastify-chat-rooms: options must be an object')
  }
  const { authenticate, onJoin, onMessage, onRename, broker, metrics, ...data } = options
  const problems = pluginValidator.Check(options) ? optionRuleProblems(data) : schemaErrors(pluginValidator, options, 'options')
  if (broker !== undefined && !isBroker(broker)) {
    problems.push(`broker: must implement the Broker interface (${BROKER_METHODS.join(', ')})`)
  }
  if (typeof metrics === 'object' && metrics !== null && 'registry' in metrics && !isRegistry(metrics.registry)) {
    problems.push(`metrics.registry: must be a prom-client Registry (with ${REGISTRY_METHODS.join(', ')})`)
  }
  if (problems.length > 0) throw new OptionsError(`fastify-chat-rooms: ${problems.map((problem) => `option ${problem}`).join('; ')}`)

  const home = data.home === undefined || data.home === true ? defaults.home : data.home
  const allowedOrigins = data.allowedOrigins
  const historySize = data.historySize ?? defaults.historySize
  return Object.freeze({
    ...defaults,
    ...data,
    path: data.path ?? defaults.path,
    home: home === false ? false : Object.freeze({ ...home }),
    rest: data.rest ? Object.freeze({ ...data.rest }) : false,
    health: data.health ? Object.freeze({ ...data.health }) : false,
    metrics: metrics ? Object.freeze({ registry: metrics === true ? undefined : metrics.registry }) : false,
    allowedOrigins: Array.isArray(allowedOrigins) ? Object.freeze([...allowedOrigins]) : (allowedOrigins ?? defaults.allowedOrigins),
    rateLimit: Object.freeze({ ...(data.rateLimit ?? defaults.rateLimit) }),
    errorLimit: Object.freeze({ ...(data.errorLimit ?? defaults.errorLimit) }),
    drain: Object.freeze({ ...defaults.drain, ...data.drain }),
    // Unset, it is the default but never more than a room keeps, so that `historySize` alone may be lowered.
    historyOnJoin: data.historyOnJoin ?? Math.min(defaults.historyOnJoin, historySize),
    // Likewise never more than a small maxBufferedBytes holds, so that it alone may be lowered.
    maxMembersInReply: data.maxMembersInReply ?? Math.min(defaults.maxMembersInReply, membersThatFit(data.maxBufferedBytes ?? defaults.maxBufferedBytes)),
    reactionLimits: reactionLimitsFor(data.maxReactionsPerMessage ?? defaults.maxReactionsPerMessage, data.maxBufferedBytes ?? defaults.maxBufferedBytes, data.maxTextLength ?? defaults.maxTextLength),
    roomPattern: compileRoomPattern(data.roomPattern ?? defaults.roomPattern),
    authenticate,
    onJoin,
    onMessage,
    onRename,
    broker,
  })
}
