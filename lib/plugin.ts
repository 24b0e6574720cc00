/**
 * Fastify wiring only: options, the WebSocket route, the home page, the HTTP
 * API's, health and metrics routes' registration, the `hub` decorator and
 * shutdown. Admission is in admission.ts, the HTTP API in rest.ts, health in
 * health.ts, metrics in metrics.ts.
 */
import { fileURLToPath } from 'node:url'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import websocket from '@fastify/websocket'
import type { WebSocket } from 'ws'
import fastifyStatic from '@fastify/static'
import Type from 'typebox'
import { admission } from './admission.js'
import { ClientMistakes } from './client-mistakes.js'
import { MemoryBroker } from './brokers/memory.js'
import { timedBroker } from './chat-metrics.js'
import { Connection, Heartbeat } from './connection.js'
import { CloseCodes } from './errors.js'
import { Drain } from './drain.js'
import { healthRoutes } from './health.js'
import { Hub } from './hub.js'
import { Moderation } from './moderation.js'
import { REDACTED_REQUEST_LOG } from './log-redaction.js'
import { PromMetrics } from './metrics.js'
import { hubApi, type Hub as PublicHub } from './hub-api.js'
import { resolveOptions, type ChatRoomsOptions } from './options.js'
import { createDecoder, MAX_RAW_NAME_LENGTH } from './protocol.js'
import { restApi } from './rest.js'
import { coalesceHandshakes, endAnsweredUpgrades, isInjected, releaseUpgrade, transportOf } from './upgrade.js'
import { Writer } from './writer.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** The chat of this instance: the server API and events of fastify-chat-rooms. */
    hub: PublicHub
  }
}

const PUBLIC_DIR = fileURLToPath(new URL('../../public/', import.meta.url))
const CLIENT_DIR = fileURLToPath(new URL('./client/', import.meta.url))

const NameQuery = Type.Object({ name: Type.Optional(Type.String({ maxLength: MAX_RAW_NAME_LENGTH })) })

async function chatRooms (fastify: FastifyInstance, options: ChatRoomsOptions): Promise<void> {
  const resolved = resolveOptions(options)
  // Without the option, prom-client is never loaded and the broker's calls are not wrapped.
  const metrics = resolved.metrics ? await PromMetrics.load(resolved.metrics.registry) : undefined
  const givenBroker = resolved.broker ?? new MemoryBroker()
  const broker = metrics ? timedBroker(givenBroker, metrics) : givenBroker
  const hub = new Hub(broker, resolved, fastify.log, metrics)
  // Before the broker opens: a second registration on this instance fails here, holding nothing.
  fastify.decorate('hub', hubApi(hub, new Moderation(broker, resolved.roomPattern)))
  if (metrics) {
    metrics.register(hub)
    fastify.addHook('onClose', async () => metrics.unregister())
  }

  const connections = new Drain<Connection>(resolved.drain)
  let shuttingDown = false
  await hub.open()
  // Shutdown is wired first thing after the broker opens, so that a registration that fails
  // from here on (a route conflict, @fastify/static) still closes the broker on fastify.close().
  const heartbeat = new Heartbeat(resolved.heartbeatInterval)
  fastify.addHook('preClose', async () => {
    // Fastify answers new requests, upgrades included, with 503 from here on (or, with its
    // return503OnClosing off, admission does); the broker stays open while the drain runs.
    shuttingDown = true
    await connections.close()
    heartbeat.stop()
  })
  const mistakes = new ClientMistakes(fastify.log, Date.now())
  fastify.addHook('onClose', async () => {
    mistakes.flush()
    await hub.close()
  })

  const { admit, admitted, authenticate } = admission(resolved, () => shuttingDown)
  const forget = (connection: Connection): void => {
    connections.delete(connection)
    heartbeat.delete(connection)
  }
  const context = { hub, writer: new Writer(hub.count), options: resolved, decode: createDecoder(resolved), log: fastify.log, closed: forget }

  // When an application registered @fastify/websocket itself, its errorHandler stays in charge of its sockets.
  const ownsWebsocket = !fastify.hasDecorator('websocketServer')
  if (ownsWebsocket) {
    // Our own preClose closes our connections with 1001; the plugin's default would close them without a code.
    await fastify.register(websocket, { options: { maxPayload: resolved.maxPayload }, preClose: (done) => done() })
    coalesceHandshakes(fastify.websocketServer)
  }
  endAnsweredUpgrades(fastify.server)
  /**
   * What @fastify/websocket's default error handler does, without holding the
   * request. ws reports only what the peer sent wrong (a malformed frame, one
   * past maxPayload, invalid UTF-8): a client's mistake, logged as one.
   */
  function onSocketError (this: WebSocket, error: Error & { code?: string }): void {
    mistakes.record({ code: error.code, reason: error.message }, 'chat client sent a malformed frame; closed', Date.now())
    this.terminate()
  }

  fastify.get(resolved.path, {
    websocket: true,
    schema: { querystring: NameQuery },
    preValidation: admit,
    ...REDACTED_REQUEST_LOG,
  }, (socket, request) => {
    const upgrade = admitted.get(request)
    if (!upgrade) return socket.close(CloseCodes.internalError, 'not admitted')
    admitted.delete(request)
    if (ownsWebsocket) releaseUpgrade(socket, upgrade.response, onSocketError)
    const { identity } = upgrade
    const connection = new Connection(socket, transportOf(socket, request.raw), identity, context)
    // An injected connection has no network to go half-open in, and @fastify/websocket's injected client does not answer pings.
    if (!isInjected(request)) heartbeat.add(connection)
    connections.add(connection)
  })

  if (resolved.home) {
    const prefix = resolved.home.prefix.endsWith('/') ? resolved.home.prefix : `${resolved.home.prefix}/`
    // A child context with decorateReply: false leaves the application's own @fastify/static untouched.
    await fastify.register(async (child) => {
      await child.register(fastifyStatic, { root: PUBLIC_DIR, prefix, decorateReply: false, index: 'index.html' })
      await child.register(fastifyStatic, { root: CLIENT_DIR, prefix: `${prefix}client/`, decorateReply: false, allowedPath: (path) => /\.js$/.test(path) })
      // What the page needs to know of this server's options (`rest`: where its HTTP API is, for the rooms list and moderation).
      child.get(`${prefix}chat-config.json`, async () => ({ path: resolved.path, maxTextLength: resolved.maxTextLength, rest: resolved.rest ? resolved.rest.prefix : false }))
      // The page's URLs are relative, so it must be loaded from `/chat/`: `/chat` redirects there, keeping its query.
      // 301, as @fastify/static's own directory redirects: the routes are GET and HEAD only, which a 301 never changes.
      if (prefix !== '/') {
        child.get(prefix.slice(0, -1), async (request, reply) => {
          const queryAt = request.url.indexOf('?')
          const path = queryAt === -1 ? request.url : request.url.slice(0, queryAt)
          // With the router's ignoreTrailingSlash, `/chat/` lands here too: redirecting it to itself would loop.
          if (path.endsWith('/')) return reply.callNotFound()
          return reply.redirect(queryAt === -1 ? prefix : `${prefix}${request.url.slice(queryAt)}`, 301)
        })
      }
    })
  }

  if (resolved.rest) {
    await fastify.register(restApi, { prefix: resolved.rest.prefix.replace(/\/$/, ''), hub: fastify.hub, options: resolved, authenticate, authorize: resolved.rest.authorize })
  }
  if (resolved.health) {
    await fastify.register(healthRoutes, { prefix: resolved.health.prefix.replace(/\/$/, ''), hub: fastify.hub, shuttingDown: () => shuttingDown })
  }
  metrics?.route(fastify)
}

/** The fastify-chat-rooms plugin: `fastify.register(chatRooms, options)`. */
export default fp(chatRooms, { fastify: '5.x', name: 'fastify-chat-rooms' })

