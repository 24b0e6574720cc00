/**
 * What we rely on of ws and @fastify/websocket beyond their documented APIs,
 * in one place; test/upgrade.test.ts fails loudly when an upgrade of either
 * breaks it, and each function here falls back to the public path when what
 * it relies on is not there.
 * - The TCP socket of the upgrade request is the one ws writes its frames to,
 *   and ws holds nothing back of its own when frames are not compressed: a
 *   frame written to that socket lands whole, in order, between ws's frames.
 *   Writing a turn's frames there in one call is what makes batching pay.
 * - ws emits 'headers' just before it writes the 101 response to that socket,
 *   and hands over the upgraded socket in the same tick, so a frame written
 *   by the route handler can join the response in one system call.
 * - @fastify/websocket routes an upgrade synchronously in its 'upgrade'
 *   listener, so a later listener sees whether Fastify already answered it.
 * - @fastify/websocket gives each socket one 'error' listener that closes over
 *   the upgrade's request and reply, holding them (about 2.5 KB) for the
 *   socket's life, although nothing uses them once upgraded.
 * - Its `injectWS` makes an upgrade request with no socket at all (so no peer
 *   address, and Fastify's `request.ip` throws behind `trustProxy`), and
 *   assigns the in-memory stream it serves the upgrade over to the reply
 *   (test/inject-ws.test.ts holds the plugin to working under it).
 */
import type { EventEmitter } from 'node:events'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { FastifyReply, FastifyRequest } from 'fastify'

/** ws's `readyState` of an open socket (WebSocket.OPEN). */
export const OPEN = 1

/** Where the writer puts frames it framed itself. */
export interface Transport {
  write(data: Buffer): boolean
}

/**
 * The TCP socket under `socket`, to write frames to past ws; undefined when
 * ws does not write to the request's socket (an injected socket, or a ws that
 * changed), and then frames go through `socket.send`.
 */
export function transportOf (socket: object, request: IncomingMessage): Transport | undefined {
  const tcp = request.socket as IncomingMessage['socket'] | undefined
  return tcp !== undefined && (socket as { _socket?: unknown })._socket === tcp ? tcp : undefined
}

/** Whether the upgrade was injected by `injectWS`: it has no TCP socket. */
export function isInjected (request: FastifyRequest): boolean {
  // Typed as always present, as it is for a request from the HTTP server.
  return (request.raw.socket as IncomingMessage['socket'] | undefined) === undefined
}

/** The peer's address; undefined for an injected upgrade, which has no peer. */
export function peerAddress (request: FastifyRequest): string | undefined {
  return isInjected(request) ? undefined : request.ip
}

/**
 * Calls `onClose` once the stream the upgrade is served over has closed: the
 * TCP socket, or the in-memory stream of an injected upgrade. Unlike a TCP
 * socket, that stream does not close when both its sides have ended, and ws
 * would report the close only when its close timeout (30 s) destroys it:
 * here it is closed as soon as both sides have ended, as a TCP socket is.
 */
export function whenUpgradeClosed (request: FastifyRequest, reply: FastifyReply, onClose: () => void): void {
  if (!isInjected(request)) {
    request.raw.socket.once('close', onClose)
    return
  }
  const stream = reply.raw.socket
  if (stream === null) throw new Error('an injected upgrade without its stream: @fastify/websocket no longer assigns it to the reply')
  stream.once('close', onClose)
  let sidesEnded = 0
  const sideEnded = (): void => {
    if (++sidesEnded === 2) stream.destroy()
  }
  stream.once('end', sideEnded)
  stream.once('finish', sideEnded)
}

/**
 * Holds the 101 response in the request's socket until the end of the tick,
 * as Node's http holds its own responses (cork, then uncork on the next
 * tick): what the route handler writes synchronously, the `welcome`, then
 * goes out with it in one system call rather than two. `server` is the ws
 * server, which emits 'headers' just before it writes the response.
 */
export function coalesceHandshakes (server: EventEmitter): void {
  server.on('headers', (_headers: string[], request: IncomingMessage) => {
    // Typed as always present; an injected upgrade has none.
    const socket = request.socket as Socket | undefined
    if (socket === undefined) return
    socket.cork()
    process.nextTick(uncork, socket)
  })
}

function uncork (socket: Socket): void {
  socket.uncork()
}

/** How many 'error' listeners @fastify/websocket gives an upgraded socket. */
const UPGRADE_ERROR_LISTENERS = 1

/**
 * Lets go of the upgrade's request and response, which nothing reads or
 * writes once upgraded: the response is detached from the TCP socket, and
 * @fastify/websocket's 'error' listener (which holds both) is replaced by
 * `onError`. Only for sockets of a @fastify/websocket we registered, so no
 * listener of the application's is touched.
 */
export function releaseUpgrade (socket: EventEmitter, response: ServerResponse, onError: (error: Error) => void): void {
  if (socket.listenerCount('error') === UPGRADE_ERROR_LISTENERS) {
    socket.removeAllListeners('error')
    socket.on('error', onError)
  }
  if (response.socket) response.detachSocket(response.socket)
}

/**
 * While Fastify closes, it answers every request with its own 503 before any
 * hook runs (`return503OnClosing`), upgrades too, so @fastify/websocket's
 * onResponse hook, which destroys the socket of a refused upgrade, never runs,
 * and Node leaves an upgrade's socket to its handler: it stayed open after
 * the 503 and held `server.close()`, so `fastify.close()` never finished. Such
 * a socket is ended once its 503 is written, as Node ends an HTTP socket
 * after a `Connection: close` reply. `server` is the one @fastify/websocket
 * listens on, with its listener added before this one.
 */
export function endAnsweredUpgrades (server: EventEmitter): void {
  server.on('upgrade', (_request: IncomingMessage, socket: Socket) => {
    // Nothing else writes to an upgrade's socket before this listener: ws and our admission answer later.
    if (socket.bytesWritten > 0) socket.end()
  })
}
