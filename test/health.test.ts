/**
 * The health routes: `live` while the process serves, `ready` only while the
 * broker answers and the server is not shutting down. The Redis test runs a
 * private redis-server that it kills, restarts and pauses.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import type { Socket } from 'node:net'
import Fastify from 'fastify'
import chatRooms from '../lib/index.js'
import { RedisBroker } from '../lib/redis.js'
import { RawClient } from './helpers/client.js'
import { uniquePrefix } from './helpers/redis.js'
import { RedisServer, skipUnlessRedisServer } from './helpers/redis-server.js'
import { startServer } from './helpers/server.js'

const COMMAND_TIMEOUT_MS = 500
/** Timers and a busy machine: how late an answer may come beyond the timeout. */
const SLACK_MS = 400

/** The status and body of `GET url`. */
async function get (url: string): Promise<[number, unknown]> {
  const response = await fetch(url)
  return [response.status, await response.json()]
}

/** Asks `url` until it answers `status`; fails after `ms`, showing the last answer. */
async function until (url: string, status: number, ms = 15_000): Promise<[number, unknown]> {
  const deadline = Date.now() + ms
  let answer = await get(url)
  while (answer[0] !== status) {
    assert.ok(Date.now() < deadline, `${url} still answers ${JSON.stringify(answer)}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
    answer = await get(url)
  }
  return answer
}

test('live and ready answer 200 under the health prefix, without authenticate; nothing without health', async (t) => {
  const { httpUrl } = await startServer(t, {
    home: false,
    rest: { prefix: '/api' },
    health: { prefix: '/health/' },
    authenticate: () => undefined,
  })
  assert.deepEqual(await get(`${httpUrl}/health/live`), [200, { status: 'ok' }])
  assert.deepEqual(await get(`${httpUrl}/health/ready`), [200, { status: 'ok' }])
  assert.equal((await fetch(`${httpUrl}/api/nodes`)).status, 401, 'the HTTP API is behind authenticate, health is not')

  const none = await startServer(t, { home: false })
  assert.equal((await fetch(`${none.httpUrl}/health/ready`)).status, 404)
})

test('ready answers 503 "shutting down" while close() waits for a connection\'s 1001 close; live still answers', async (t) => {
  // Fastify's own 503 for every request during close is off, so the routes are asked.
  const app = Fastify({ logger: false, return503OnClosing: false })
  await app.register(chatRooms, { home: false, health: { prefix: '/health' } })
  await app.listen({ host: '127.0.0.1', port: 0 })
  t.after(() => app.close())
  const { port } = app.server.address() as { port: number }
  const httpUrl = `http://127.0.0.1:${port}`
  const client = await RawClient.connect(t, `ws://127.0.0.1:${port}/ws`)
  // A client that does not read never answers the server's close: shutdown waits for it.
  ;(client.socket as unknown as { _socket: Socket })._socket.pause()

  let closed = false
  const closing = app.close().then(() => { closed = true })
  assert.deepEqual(await until(`${httpUrl}/health/ready`, 503, 2000), [503, { reason: 'shutting down' }])
  assert.deepEqual(await get(`${httpUrl}/health/live`), [200, { status: 'ok' }])
  assert.equal(closed, false, 'close() was still waiting for the connection')
  await closing
})

test('ready answers 503 while Redis is down or hung, naming the broker, and 200 again once it answers', { skip: skipUnlessRedisServer() }, async (t) => {
  const redis = await RedisServer.start()
  const broker = new RedisBroker({ url: redis.url, prefix: uniquePrefix(), commandTimeout: COMMAND_TIMEOUT_MS, leaseMs: 3000 })
  t.after(() => redis.kill())
  const { httpUrl } = await startServer(t, { home: false, broker, health: { prefix: '/health' } })
  const ready = `${httpUrl}/health/ready`
  assert.deepEqual(await get(ready), [200, { status: 'ok' }])

  for (const [what, stop, start] of [
    ['killed', () => redis.kill(), () => redis.start()],
    ['hung', () => redis.pause(), () => redis.resume()],
  ] as const) {
    await stop()
    const started = Date.now()
    const [status, body] = await get(ready)
    const elapsed = Date.now() - started
    assert.equal(status, 503, what)
    assert.match((body as { reason: string }).reason, /^broker unavailable: /, what)
    assert.ok(elapsed <= COMMAND_TIMEOUT_MS + SLACK_MS, `${what}: answered after ${elapsed} ms`)
    assert.deepEqual(await get(`${httpUrl}/health/live`), [200, { status: 'ok' }], `${what}: the process still serves`)
    await start()
    assert.deepEqual(await until(ready, 200), [200, { status: 'ok' }], `${what}: ready again`)
  }
})
