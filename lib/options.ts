/**
 * The plugin's options: one TypeBox schema (the example's config file embeds
 * it), frozen defaults, and errors that name the offending option.
 */
import Type, { type Static } from 'typebox'
import { Compile } from 'typebox/compile'
import type { FastifyRequest } from 'fastify'
import type { Broker } from './broker.js'
import type { Member } from './protocol.js'
import { DEFAULT_MAX_TEXT_LENGTH, DEFAULT_ROOM_PATTERN } from './protocol.js'

const Prefix = Type.String({ pattern: '^/' })
const Count = Type.Integer({ minimum: 0 })
const Positive = Type.Integer({ minimum: 1 })

/** The options that are plain data, as they may appear in a JSON config file. */
export const OptionsSchema = Type.Object({
  path: Type.Optional(Type.String({ pattern: '^/' })),
  home: Type.Optional(Type.Union([Type.Boolean(), Type.Object({ prefix: Prefix }, { additionalProperties: false })])),
  rest: Type.Optional(Type.Union([Type.Literal(false), Type.Object({ prefix: Prefix }, { additionalProperties: false })])),
  allowedOrigins: Type.Optional(Type.Union([
    Type.Literal('same-origin'),
    Type.Literal('*'),
    Type.Array(Type.String({ pattern: '^https?://[^/]+$' })),
  ])),
  maxPayload: Type.Optional(Positive),
  maxTextLength: Type.Optional(Positive),
  maxRoomsPerConnection: Type.Optional(Positive),
  maxMembersPerRoom: Type.Optional(Count),
  maxConnections: Type.Optional(Count),
  maxConnectionsPerIp: Type.Optional(Count),
  rateLimit: Type.Optional(Type.Object({ perSecond: Type.Number({ exclusiveMinimum: 0 }), burst: Positive }, { additionalProperties: false })),
  errorLimit: Type.Optional(Type.Object({ count: Positive, windowMs: Positive }, { additionalProperties: false })),
  maxBufferedBytes: Type.Optional(Positive),
  heartbeatInterval: Type.Optional(Type.Integer({ minimum: 100 })),
  authenticateTimeout: Type.Optional(Positive),
  historySize: Type.Optional(Count),
  historyOnJoin: Type.Optional(Count),
  roomPattern: Type.Optional(Type.String({ minLength: 1 })),
}, { additionalProperties: false })

export type DataOptions = Static<typeof OptionsSchema>

/** Who a connection is, as `authenticate` decides. */
export interface Identity {
  id?: string
  name: string
}

/** What `onMessage` sees of a message before it is stored. */
export interface PendingMessage {
  room: string
  text: string
}

/** Options of `fastify.register(chatRooms, options)`. Every field is optional. */
export interface ChatRoomsOptions extends DataOptions {
  /** Decides who a connection is before the upgrade; returning nothing (or throwing) refuses it with 401. */
  authenticate?: (request: FastifyRequest) => Identity | undefined | Promise<Identity | undefined>
  /** May refuse a join (`false`, answered `forbidden`). */
  onJoin?: (room: string, member: Member) => boolean | undefined | Promise<boolean | undefined>
  /** May refuse a message (`false` → `forbidden`) or rewrite its text (return a string). */
  onMessage?: (message: PendingMessage, member: Member) => string | boolean | undefined | Promise<string | boolean | undefined>
  /** Where rooms are stored and shared between nodes; an in-process memory broker by default. */
  broker?: Broker
}

export interface ResolvedOptions {
  readonly path: string
  readonly home: false | { readonly prefix: string }
  readonly rest: false | { readonly prefix: string }
  readonly allowedOrigins: 'same-origin' | '*' | readonly string[]
  readonly authenticate: ChatRoomsOptions['authenticate']
  readonly onJoin: ChatRoomsOptions['onJoin']
  readonly onMessage: ChatRoomsOptions['onMessage']
  readonly broker: Broker | undefined
  readonly maxPayload: number
  readonly maxTextLength: number
  readonly maxRoomsPerConnection: number
  readonly maxMembersPerRoom: number
  readonly maxConnections: number
  readonly maxConnectionsPerIp: number
  readonly rateLimit: { readonly perSecond: number, readonly burst: number }
  readonly errorLimit: { readonly count: number, readonly windowMs: number }
  readonly maxBufferedBytes: number
  readonly heartbeatInterval: number
  readonly authenticateTimeout: number
  readonly historySize: number
  readonly historyOnJoin: number
  readonly roomPattern: RegExp
}

export const defaults = Object.freeze({
  path: '/ws',
  home: Object.freeze({ prefix: '/' }),
  rest: false as const,
  allowedOrigins: 'same-origin' as const,
  maxPayload: 16384,
  maxTextLength: DEFAULT_MAX_TEXT_LENGTH,
  maxRoomsPerConnection: 20,
  maxMembersPerRoom: 0,
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
  roomPattern: DEFAULT_ROOM_PATTERN,
})

const HOOKS = ['authenticate', 'onJoin', 'onMessage'] as const
const dataValidator = Compile(OptionsSchema)

/** An option or config field that cannot be used; the message names it. */
export class OptionsError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'OptionsError'
  }
}

/**
 * Turns TypeBox errors into one readable line naming the field, e.g.
 * `maxPayload: must be greater or equal to 1`. `root` prefixes the path.
 */
export function describeErrors (errors: ReadonlyArray<{ keyword: string, instancePath: string, message: string, params: unknown }>, root: string): string {
  const unknown = errors.find((error) => error.keyword === 'additionalProperties')
  if (unknown) {
    const names = (unknown.params as { additionalProperties?: string[] }).additionalProperties ?? []
    const at = unknown.instancePath ? `${root}${unknown.instancePath.slice(1).replaceAll('/', '.')}.` : root
    return names.map((name) => `${at}${name}: unknown field`).join('; ')
  }
  // The deepest error is the most specific one; a union reports its branches' errors as well.
  const deepest = [...errors].sort((a, b) => b.instancePath.length - a.instancePath.length)[0]
  if (!deepest) return `${root || 'options'}: invalid`
  const field = `${root}${deepest.instancePath.slice(1).replaceAll('/', '.')}`
  return `${field || 'options'}: ${deepest.message}`
}

function compileRoomPattern (source: string): RegExp {
  try {
    return new RegExp(source, 'u')
  } catch (error) {
    throw new OptionsError(`fastify-chat-rooms: option roomPattern: not a valid regular expression (${(error as Error).message})`)
  }
}

function isBroker (value: unknown): value is Broker {
  if (typeof value !== 'object' || value === null) return false
  const candidate = value as Record<string, unknown>
  return ['open', 'subscribe', 'unsubscribe', 'append', 'publish', 'read', 'members', 'rooms', 'close']
    .every((method) => typeof candidate[method] === 'function')
}

/** Validates the caller's options and resolves them into a new frozen object; the caller's object is never written. */
export function resolveOptions (options: ChatRoomsOptions = {}): ResolvedOptions {
  if (typeof options !== 'object' || options === null) throw new OptionsError('fastify-chat-rooms: options must be an object')
  const { authenticate, onJoin, onMessage, broker, ...data } = options
  for (const hook of HOOKS) {
    if (options[hook] !== undefined && typeof options[hook] !== 'function') {
      throw new OptionsError(`fastify-chat-rooms: option ${hook}: must be a function`)
    }
  }
  if (broker !== undefined && !isBroker(broker)) {
    throw new OptionsError('fastify-chat-rooms: option broker: must implement the Broker interface (open, subscribe, unsubscribe, append, publish, read, members, rooms, close)')
  }
  if (!dataValidator.Check(data)) {
    throw new OptionsError(`fastify-chat-rooms: option ${describeErrors(dataValidator.Errors(data), '')}`)
  }
  const home = data.home === undefined || data.home === true ? defaults.home : data.home
  const allowedOrigins = data.allowedOrigins
  return Object.freeze({
    ...defaults,
    ...data,
    path: data.path ?? defaults.path,
    home: home === false ? false : Object.freeze({ ...home }),
    rest: data.rest ? Object.freeze({ ...data.rest }) : false,
    allowedOrigins: Array.isArray(allowedOrigins) ? Object.freeze([...allowedOrigins]) : (allowedOrigins ?? defaults.allowedOrigins),
    rateLimit: Object.freeze({ ...(data.rateLimit ?? defaults.rateLimit) }),
    errorLimit: Object.freeze({ ...(data.errorLimit ?? defaults.errorLimit) }),
    roomPattern: compileRoomPattern(data.roomPattern ?? defaults.roomPattern),
    authenticate,
    onJoin,
    onMessage,
    broker,
  })
}

