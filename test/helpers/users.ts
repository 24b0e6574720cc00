/**
 * People for tests: `?user=NAME` signs a connection in as user NAME, so every
 * connection with one name is one tab of one person.
 */
import type { TestContext } from 'node:test'
import type { FastifyRequest } from 'fastify'
import type { ChatRoomsOptions, Identity } from '../../lib/index.js'
import { RawClient } from './client.js'
import { startServer, type TestServer } from './server.js'

/** `authenticate` by the `user` query parameter; `data` is what the hooks see of it. */
export function byQuery (request: FastifyRequest): Identity | undefined {
  const { user } = request.query as { user?: string }
  return user === undefined ? undefined : { id: user, name: user, data: { secret: `data-of-${user}` } }
}

/** A server whose connections sign in with `?user=`. */
export async function serveUsers (t: TestContext, options: ChatRoomsOptions = {}): Promise<TestServer> {
  return await startServer(t, { home: false, authenticate: byQuery, ...options })
}

/** A new tab of `user` on `server`, in `room` when one is named. */
export async function tab (t: TestContext, server: TestServer, user: string, room?: string): Promise<RawClient> {
  const client = await RawClient.connect(t, `${server.wsUrl}?user=${user}`)
  if (room !== undefined) await client.request('joined', { type: 'join', room })
  return client
}

/** Everything sent to `client` before this returns has reached it (replies keep the order of requests). */
export async function settled (client: RawClient): Promise<void> {
  await client.request('pong', { type: 'ping' })
}
