/**
 * Fastify wiring only: options, the WebSocket route and its admission checks,
 * the home page, the HTTP API, the `hub` decorator and shutdown.
 */
import { randomBytes } from 'node:crypto'
import { STATUS_CODES, type ServerResponse } from 'node:http'
import { fileURLToPath } from 'node:url'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import websocket from '@fastify/websocket'
import type { WebSocket } from 'ws'
import fastifyStatic from '@fastify/static'
import Type from 'typebox'
import { MemoryBroker } from './brokers/memory.js'
import { Connection, Heartbeat } from './connection.js'
import { CloseCodes, ChatError } from './errors.js'
import { Hub } from './hub.js'
import { hubApi, type Hub as PublicHub } from './hub-api.js'
import { resolveOptions, type ChatRoomsOptions, type ResolvedOptions } from './options.js'
import { createDecoder, normalizeName, MessageSchema, MAX_HISTORY_LIMIT } from './protocol.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** The chat of this instance: the server API and events of fastify-chat-rooms. */
    hub: PublicHub
  }
}

/** How long `fastify.close()` waits for connections to finish their 1001 close before destroying them. */
const SHUTDOWN_WAIT_MS = 3000

const PUBLIC_DIR = fileURLToPath(new URL('../../public/', import.meta.url))
const CLIENT_DIR = fileURLToPath(new URL('./client/', import.meta.url))

interface Admitted {
  id: string
  name: string
}

/** What the route handler needs of an admitted upgrade. */
interface Upgrade {
  identity: Admitted
  /** The response Fastify made for the upgrade request; unused once upgraded. */
  response: ServerResponse
}

function randomId (bytes: number): string {
  return randomBytes(bytes).toString('base64url')
}

/** Replies before the upgrade, in Fastify's error shape. */
function refuse (reply: FastifyReply, statusCode: number, message: string): FastifyReply {
  return reply.code(statusCode).send({ statusCode, error: STATUS_CODES[statusCode], message })
}

function originAllowed (origin: string | undefined, host: string | undefined, allowed: ResolvedOptions['allowedOrigins']): boolean {
  // Browsers always send Origin on a WebSocket handshake; other clients are not subject to same-origin rules.
  if (origin === undefined || allowed === '*') return true
  let sameOrigin: boolean
  try {
    sameOrigin = new URL(origin).host === host
  } catch {
    return false
  }
  return sameOrigin || (allowed !== 'same-origin' && allowed.includes(origin))
}

/** Counts connections from admission until their TCP socket closes, in total and per IP. */
class ConnectionSlots {
  private total = 0
  private readonly perIp = new Map<string, number>()

  constructor (private readonly options: Pick<ResolvedOptions, 'maxConnections' | 'maxConnectionsPerIp'>) {}

  /** Reserves a slot or says which limit is reached. */
  reserve (ip: string): { release: () => void } | { statusCode: 503 | 429, message: string } {
    const { maxConnections, maxConnectionsPerIp } = this.options
    if (maxConnections > 0 && this.total >= maxConnections) return { statusCode: 503, message: 'the server is at its connection limit' }
    const fromIp = this.perIp.get(ip) ?? 0
    if (maxConnectionsPerIp > 0 && fromIp >= maxConnectionsPerIp) return { statusCode: 429, message: 'too many connections from this address' }
    this.total++
    this.perIp.set(ip, fromIp + 1)
    let released = false
    return {
      release: () => {
        if (released) return
        released = true
        this.total--
        const left = (this.perIp.get(ip) ?? 1) - 1
        if (left === 0) this.perIp.delete(ip)
        else this.perIp.set(ip, left)
      },
    }
  }
}

const NameQuery = Type.Object({ name: Type.Optional(Type.String({ maxLength: 256 })) })
const MessagesQuery = Type.Object({
  before: Type.Optional(Type.Integer({ minimum: 0 })),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_HISTORY_LIMIT })),
}, { additionalProperties: false })
const RoomsReply = Type.Object({
  rooms: Type.Array(Type.Object({ room: Type.String(), members: Type.Integer(), seq: Type.Integer() })),
})
const MessagesReply = Type.Object({ room: Type.String(), messages: Type.Array(MessageSchema), more: Type.Boolean() })

async function chatRooms (fastify: FastifyInstance, options: ChatRoomsOptions): Promise<void> {
  const resolved = resolveOptions(options)
  const hub = new Hub(resolved.broker ?? new MemoryBroker(), resolved, fastify.log)
  await hub.open()
  fastify.decorate('hub', hubApi(hub))

  const connections = new Set<Connection>()
  const heartbeat = new Heartbeat(resolved.heartbeatInterval)
  const slots = new ConnectionSlots(resolved)
  const admitted = new WeakMap<FastifyRequest, Upgrade>()
  let shuttingDown = false
  let allClosed: (() => void) | undefined
  const forget = (connection: Connection): void => {
    connections.delete(connection)
    heartbeat.delete(connection)
    if (connections.size === 0) allClosed?.()
  }
  const context = { hub, options: resolved, decode: createDecoder(resolved), log: fastify.log, closed: forget }

  // When an application registered @fastify/websocket itself, its errorHandler stays in charge of its sockets.
  const ownsWebsocket = !fastify.hasDecorator('websocketServer')
  if (ownsWebsocket) {
    // Our own preClose closes our connections with 1001; the plugin's default would close them without a code.
    await fastify.register(websocket, { options: { maxPayload: resolved.maxPayload }, preClose: (done) => done() })
  }
  /** What @fastify/websocket's default error handler does, without holding the request. */
  function onSocketError (this: WebSocket, error: Error): void {
    fastify.log.error({ err: error }, 'chat socket error')
    this.terminate()
  }

  /**
   * Nothing reads the upgrade's request or writes its response once upgraded, yet @fastify/websocket keeps
   * both for the socket's life: its per-socket 'error' listener closes over them, and the response stays
   * attached to the TCP socket. Letting them go saves about 2.5 KB per connection.
   */
  function releaseUpgrade (socket: WebSocket, response: ServerResponse): void {
    socket.removeAllListeners('error')
    socket.on('error', onSocketError)
    if (response.socket) response.detachSocket(response.socket)
  }

  async function authenticate (request: FastifyRequest, reply: FastifyReply): Promise<Admitted | undefined> {
    if (!resolved.authenticate) return undefined
    let identity
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<'timeout'>((resolve) => { timer = setTimeout(resolve, resolved.authenticateTimeout, 'timeout') })
    try {
      identity = await Promise.race([resolved.authenticate(request), timeout])
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
    const id = typeof identity.id === 'string' && identity.id !== '' ? `${identity.id}.${randomId(4)}` : randomId(9)
    return { id, name: normalizeName(identity.name) }
  }

  async function admit (request: FastifyRequest<{ Querystring: { name?: unknown } }>, reply: FastifyReply): Promise<void> {
    // A plain GET of the route is answered 404 by @fastify/websocket; only upgrades are admitted.
    if (!request.ws) return
    if (!originAllowed(request.headers.origin, request.headers.host, resolved.allowedOrigins)) {
      return void refuse(reply, 403, 'origin not allowed')
    }
    if (shuttingDown) return void refuse(reply, 503, 'the server is shutting down')
    const slot = slots.reserve(request.ip)
    if ('statusCode' in slot) return void refuse(reply, slot.statusCode, slot.message)
    request.raw.socket.once('close', slot.release)

    let name: string | undefined
    const rawName = request.query.name
    if (typeof rawName === 'string') {
      try {
        name = normalizeName(rawName)
      } catch (error) {
        return void refuse(reply, 400, (error as ChatError).message)
      }
    }
    if (resolved.authenticate) {
      const identity = await authenticate(request, reply)
      if (identity) admitted.set(request, { identity, response: reply.raw })
      return
    }
    const identity = { id: randomId(9), name: name ?? `guest-${randomBytes(2).toString('hex')}` }
    admitted.set(request, { identity, response: reply.raw })
  }

  fastify.get(resolved.path, {
    websocket: true,
    schema: { querystring: NameQuery },
    preValidation: admit,
  }, (socket, request) => {
    const upgrade = admitted.get(request)
    if (!upgrade) return socket.close(CloseCodes.internalError, 'not admitted')
    admitted.delete(request)
    if (ownsWebsocket) releaseUpgrade(socket, upgrade.response)
    const { identity } = upgrade
    const connection = new Connection(socket, identity.id, identity.name, context)
    connections.add(connection)
    heartbeat.add(connection)
    if (shuttingDown) connection.close(CloseCodes.goingAway, 'server shutting down')
  })

  if (resolved.home) {
    const prefix = resolved.home.prefix.endsWith('/') ? resolved.home.prefix : `${resolved.home.prefix}/`
    // A child context with decorateReply: false leaves the application's own @fastify/static untouched.
    await fastify.register(async (child) => {
      await child.register(fastifyStatic, { root: PUBLIC_DIR, prefix, decorateReply: false, index: 'index.html' })
      await child.register(fastifyStatic, { root: CLIENT_DIR, prefix: `${prefix}client/`, decorateReply: false, allowedPath: (path) => /\.js$/.test(path) })
      // What the page needs to know of this server's options.
      child.get(`${prefix}chat-config.json`, async () => ({ path: resolved.path, maxTextLength: resolved.maxTextLength }))
    })
  }

  if (resolved.rest) {
    const restPrefix = resolved.rest.prefix.replace(/\/$/, '')
    await fastify.register(async (api) => {
      if (resolved.authenticate) {
        api.addHook('preHandler', async (request, reply) => {
          if (!(await authenticate(request, reply))) return reply
          return undefined
        })
      }
      api.get('/rooms', { schema: { response: { 200: RoomsReply } } }, async () => ({ rooms: await hub.rooms() }))
      api.get<{ Params: { room: string }, Querystring: { before?: number, limit?: number } }>('/rooms/:room/messages', {
        schema: { querystring: MessagesQuery, response: { 200: MessagesReply } },
      }, async (request, reply) => {
        const { room } = request.params
        if (!resolved.roomPattern.test(room)) return refuse(reply, 400, `room: must match ${resolved.roomPattern.source}`)
        try {
          return { room, ...(await hub.history(room, request.query)) }
        } catch (error) {
          if (error instanceof ChatError && error.code === 'unavailable') return refuse(reply, 503, error.message)
          throw error
        }
      })
    }, { prefix: restPrefix })
  }

  fastify.addHook('preClose', async () => {
    shuttingDown = true
    heartbeat.stop()
    if (connections.size === 0) return
    const closed = new Promise<void>((resolve) => { allClosed = resolve })
    for (const connection of connections) connection.close(CloseCodes.goingAway, 'server shutting down')
    let timer: NodeJS.Timeout | undefined
    await Promise.race([closed, new Promise((resolve) => { timer = setTimeout(resolve, SHUTDOWN_WAIT_MS) })])
    clearTimeout(timer)
  })
  fastify.addHook('onClose', async () => {
    await hub.close()
  })
}

/** The fastify-chat-rooms plugin: `fastify.register(chatRooms, options)`. */
export default fp(chatRooms, { fastify: '5.x', name: 'fastify-chat-rooms' })

