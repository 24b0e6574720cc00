/**
 * Admission, before the upgrade: the origin check, the connection slots and
 * the `authenticate` hook with its timeout. A refusal is an ordinary Fastify
 * reply; an admitted upgrade is remembered for the route handler.
 */
import { randomFillSync } from 'node:crypto'
import { STATUS_CODES, type ServerResponse } from 'node:http'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { ChatError } from './errors.js'
import type { ResolvedOptions } from './options.js'
import { originOf } from './origin.js'
import { normalizeName } from './protocol.js'
import { peerAddress, whenUpgradeClosed } from './upgrade.js'

export interface Admitted {
  id: string
  /** Who the person is: the application's id, or the connection's own id (a guest). */
  user: string
  name: string
  /** Named by `authenticate`: the name is the application's, and only `onRename` may change it. */
  authenticated: boolean
  /** What `authenticate` returned as `data`: for the hooks only. */
  data?: unknown
}

/** What the route handler needs of an admitted upgrade. */
export interface Upgrade {
  identity: Admitted
  /** The response Fastify made for the upgrade request; unused once upgraded. */
  response: ServerResponse
}

/** Runs the `authenticate` hook: the identity, or undefined once the reply refused (401, or 503 on timeout). */
export type Authenticate = (request: FastifyRequest, reply: FastifyReply) => Promise<Admitted | undefined>

export interface Admission {
  /** The route's `preValidation` hook: refuses, or remembers the upgrade in `admitted`. */
  admit: (request: FastifyRequest<{ Querystring: { name?: unknown } }>, reply: FastifyReply) => Promise<void>
  /** Upgrades admitted and not yet taken by the route handler. */
  admitted: WeakMap<FastifyRequest, Upgrade>
  /** Also guards the HTTP API, so both ask the application the same question. */
  authenticate: Authenticate
}

type AdmissionOptions = Pick<ResolvedOptions,
  'allowedOrigins' | 'authenticate' | 'authenticateTimeout' | 'maxConnections' | 'maxConnectionsPerIp'>

/** A connection id of a guest: 72 random bits, unguessable and unique among the connections of any chat. */
const GUEST_ID_BYTES = 9
/** The suffix that tells apart the connections of one authenticated user: 32 bits, unique among one user's tabs. */
const CONNECTION_SUFFIX_BYTES = 4
/** A guest's default name is `guest-` and 4 hex digits: a label to tell guests apart on screen, not an id. */
const GUEST_NAME_BYTES = 2

/**
 * Ids are cut from a pool of random bytes filled in one call, as Node's
 * `randomUUID` does: a call to the system's random source costs more than the
 * few bytes an id takes, and every connection makes one or two.
 */
const RANDOM_POOL_BYTES = 4096
const randomPool = Buffer.allocUnsafeSlow(RANDOM_POOL_BYTES)
let randomPoolAt = RANDOM_POOL_BYTES

/** `bytes` fresh random bytes, written out in `encoding`; no byte of the pool is used twice. */
function randomText (bytes: number, encoding: 'base64url' | 'hex'): string {
  if (randomPoolAt + bytes > RANDOM_POOL_BYTES) {
    randomFillSync(randomPool)
    randomPoolAt = 0
  }
  const text = randomPool.toString(encoding, randomPoolAt, randomPoolAt + bytes)
  randomPoolAt += bytes
  return text
}

function randomId (bytes: number): string {
  return randomText(bytes, 'base64url')
}

/** Replies before the upgrade (or from the HTTP API), in Fastify's error shape. */
export function refuse (reply: FastifyReply, statusCode: number, message: string): FastifyReply {
  return reply.code(statusCode).send({ statusCode, error: STATUS_CODES[statusCode], message })
}

/** The name to use, or undefined once the upgrade is refused with 400 for breaking the name rules. */
function checkedName (raw: string, reply: FastifyReply): string | undefined {
  try {
    return normalizeName(raw)
  } catch (error) {
    refuse(reply, 400, (error as ChatError).message)
    return undefined
  }
}

/** Compares origins as origins, whatever their letter case, written-out default port or IPv6 form. */
function originCheck (allowed: ResolvedOptions['allowedOrigins']): (request: FastifyRequest) => boolean {
  const listed = new Set(Array.isArray(allowed) ? allowed.map(originOf) : [])
  return (request) => {
    const origin = request.headers.origin
    // Browsers always send Origin on a WebSocket handshake; other clients are not subject to same-origin rules.
    if (origin === undefined || allowed === '*') return true
    const normalized = originOf(origin)
    if (normalized === undefined) return false
    // `protocol` is https over TLS, or when a proxy that Fastify's `trustProxy` trusts says so: then the page's
    // scheme is known. Plain HTTP may still come from a TLS proxy that is not declared, so either scheme may be the page's.
    const schemes = request.protocol === 'https' ? ['https'] : ['http', 'https']
    return schemes.some((scheme) => originOf(`${scheme}://${request.host}`) === normalized) || listed.has(normalized)
  }
}

/** Where `maxConnectionsPerIp` counts upgrades injected by `injectWS`: they have no address, and all come from the process itself. */
const INJECTED_PEER = 'injected'

/**
 * Counts connections from admission until their TCP socket (or injected stream) closes, in total and, when
 * `maxConnectionsPerIp` limits them, per IP: without that limit the peer's address is never asked for, which
 * costs a system call per connection.
 */
class ConnectionSlots {
  private total = 0
  private readonly perIp = new Map<string, number>()

  constructor (private readonly options: Pick<ResolvedOptions, 'maxConnections' | 'maxConnectionsPerIp'>) {}

  /** Reserves a slot for `request`'s peer or says which limit is reached. */
  reserve (request: FastifyRequest): { release: () => void } | { statusCode: 503 | 429, message: string } {
    const { maxConnections, maxConnectionsPerIp } = this.options
    if (maxConnections > 0 && this.total >= maxConnections) return { statusCode: 503, message: 'the server is at its connection limit' }
    const ip = maxConnectionsPerIp > 0 ? peerAddress(request) ?? INJECTED_PEER : undefined
    const fromIp = ip === undefined ? 0 : this.perIp.get(ip) ?? 0
    if (maxConnectionsPerIp > 0 && fromIp >= maxConnectionsPerIp) return { statusCode: 429, message: 'too many connections from this address' }
    this.total++
    if (ip !== undefined) this.perIp.set(ip, fromIp + 1)
    let released = false
    return {
      release: () => {
        if (released) return
        released = true
        this.total--
        if (ip === undefined) return
        const left = (this.perIp.get(ip) ?? 1) - 1
        if (left === 0) this.perIp.delete(ip)
        else this.perIp.set(ip, left)
      },
    }
  }
}

/** The admission of one plugin instance; `closing` says whether shutdown has begun (then upgrades get 503). */
export function admission (options: AdmissionOptions, closing: () => boolean): Admission {
  const slots = new ConnectionSlots(options)
  const originAllowed = originCheck(options.allowedOrigins)
  const admitted = new WeakMap<FastifyRequest, Upgrade>()

  async function authenticate (request: FastifyRequest, reply: FastifyReply): Promise<Admitted | undefined> {
    if (!options.authenticate) return undefined
    let identity
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<'timeout'>((resolve) => { timer = setTimeout(resolve, options.authenticateTimeout, 'timeout') })
    try {
      identity = await Promise.race([options.authenticate(request), timeout])
    } catch (error) {
      request.log.info({ err: error }, 'chat authenticate hook threw; refusing with 401')
    } finally {
      clearTimeout(timer)
    }
    if (identity === 'timeout') {
      request.log.warn('chat authenticate hook did not answer in time; refusing with 503')
      refuse(reply, 503, 'authentication did not answer in time')
      return undefined
    }
    if (!identity || typeof identity.name !== 'string') {
      refuse(reply, 401, 'authentication required')
      return undefined
    }
    // The application's id names the user; the suffix keeps each connection's id unique.
    const user = typeof identity.id === 'string' && identity.id !== '' ? identity.id : undefined
    const id = user === undefined ? randomId(GUEST_ID_BYTES) : `${user}.${randomId(CONNECTION_SUFFIX_BYTES)}`
    const name = checkedName(identity.name, reply)
    // The application's mistake, not the client's: its log says why the client got 400.
    if (name === undefined) request.log.warn({ name: identity.name.slice(0, 64) }, 'chat authenticate returned a name that breaks the name rules (1 to 32 characters, no control characters, well-formed Unicode); refused with 400')
    if (name === undefined) return undefined
    const admitted: Admitted = { id, user: user ?? id, name, authenticated: true }
    if (identity.data !== undefined) admitted.data = identity.data
    return admitted
  }

  async function admit (request: FastifyRequest<{ Querystring: { name?: unknown } }>, reply: FastifyReply): Promise<void> {
    if (!request.ws) {
      // A plain GET is how a browser's client learns why its upgrade was refused (a browser hides the
      // status): 401 when `authenticate` refuses it; otherwise @fastify/websocket answers 404.
      if (options.authenticate) await authenticate(request, reply)
      return
    }
    if (!originAllowed(request)) {
      return void refuse(reply, 403, 'origin not allowed')
    }
    if (closing()) return void refuse(reply, 503, 'the server is shutting down')
    const slot = slots.reserve(request)
    if ('statusCode' in slot) return void refuse(reply, slot.statusCode, slot.message)
    whenUpgradeClosed(request, reply, slot.release)

    let name: string | undefined
    const rawName = request.query.name
    if (typeof rawName === 'string') {
      name = checkedName(rawName, reply)
      if (name === undefined) return
    }
    if (options.authenticate) {
      const identity = await authenticate(request, reply)
      if (identity) admitted.set(request, { identity, response: reply.raw })
      return
    }
    const id = randomId(GUEST_ID_BYTES)
    const identity = { id, user: id, name: name ?? `guest-${randomText(GUEST_NAME_BYTES, 'hex')}`, authenticated: false }
    admitted.set(request, { identity, response: reply.raw })
  }

  return { admit, admitted, authenticate }
}
