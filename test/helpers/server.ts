/** Starts a real Fastify server with the plugin on 127.0.0.1 and closes it after the test. */
import type { TestContext } from 'node:test'
import Fastify, { type FastifyInstance } from 'fastify'
import chatRooms, { type ChatRoomsOptions } from '../../lib/index.js'

export interface TestServer {
  app: FastifyInstance
  port: number
  /** ws://127.0.0.1:port/ws */
  wsUrl: string
  httpUrl: string
}

export async function startServer (t: TestContext, options: ChatRoomsOptions = {}, before?: (app: FastifyInstance) => Promise<void>): Promise<TestServer> {
  const app = Fastify({ logger: false })
  if (before) await before(app)
  await app.register(chatRooms, options)
  await app.listen({ host: '127.0.0.1', port: 0 })
  t.after(() => app.close())
  const address = app.server.address()
  if (address === null || typeof address === 'string') throw new Error('no port')
  const port = address.port
  return { app, port, wsUrl: `ws://127.0.0.1:${port}${options.path ?? '/ws'}`, httpUrl: `http://127.0.0.1:${port}` }
}
