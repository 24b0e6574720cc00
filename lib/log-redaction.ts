/**
 * What the plugin's routes log of a request: Fastify's default fields, with
 * the query string's values hidden. An application may pass a token in the
 * query (a browser cannot set headers on a WebSocket), and a log must never
 * hold one.
 */
import type { FastifyRequest } from 'fastify'
import { peerAddress } from './upgrade.js'

export function requestWithoutQueryValues (request: FastifyRequest): Record<string, unknown> {
  return {
    method: request.method,
    url: withoutQueryValues(request.url),
    host: request.host,
    remoteAddress: peerAddress(request),
    remotePort: request.socket?.remotePort,
  }
}

/** `/ws?token=abc&name=bob` → `/ws?token=…&name=…`: which parameters came, not what they said. */
export function withoutQueryValues (url: string): string {
  const queryAt = url.indexOf('?')
  if (queryAt === -1) return url
  const names = url.slice(queryAt + 1).split('&').filter(Boolean).map((pair) => `${pair.split('=', 1)[0]!.slice(0, 64)}=…`)
  return `${url.slice(0, queryAt)}?${names.join('&')}`
}

/** Route and plugin options that log requests this way. */
export const REDACTED_REQUEST_LOG = { logSerializers: { req: requestWithoutQueryValues } }
