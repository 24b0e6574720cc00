/**
 * The plugin's registration and shutdown: the broker is closed once, after the
 * connections' 1001 closes, and also when a registration fails after it opened.
 * The Redis test needs the Redis at REDIS_URL (default 127.0.0.1:6379).
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import Fastify, { type FastifyInstance } from 'fastify'
import { Redis } from 'ioredis'
import chatRooms, { MemoryBroker } from '../lib/index.js'
import { RedisBroker } from '../lib/redis.js'
import { RawClient, sleep } from './helpers/client.js'
import { REDIS_URL, deleteKeys, skipUnlessRedis, uniquePrefix } from './helpers/redis.js'
import { startServer } from './helpers/server.js'

const skip = await skipUnlessRedis()

/** Names of the Redis connections open now whose name contains `nodeId` (RedisBroker names each after its node). */
async function redisConnectionsOf (nodeId: string): Promise<string[]> {
  const admin = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 })
  try {
    const list = await admin.client('LIST') as string
    return list.split('\n').map((line) => /(?:^| )name=(\S*)/.exec(line)?.[1] ?? '').filter((name) => name.includes(nodeId))
  } finally {
    admin.disconnect()
  }
}

/** Redis drops a connection just after answering its QUIT: wait briefly for the list to catch up. */
async function redisConnectionsGone (nodeId: string): Promise<string[]> {
  let left = await redisConnectionsOf(nodeId)
  for (let tries = 0; left.length > 0 && tries < 40; tries++) {
    await sleep(50)
    left = await redisConnectionsOf(nodeId)
  }
  return left
}

test('a registration that fails after the broker opened leaves no Redis connection once closed', { skip }, async (t) => {
  const failures: Array<[string, (app: FastifyInstance) => void, RegExp]> = [
    ['a route conflict on path', (app) => app.get('/ws', async () => 'taken'), /already declared for route '\/ws'/],
    ['@fastify/static failing on the home page\'s routes', (app) => app.get('/*', async () => 'taken'), /already declared for route '\/\*'/],
  ]
  for (const [what, occupy, error] of failures) {
    const prefix = uniquePrefix()
    const broker = new RedisBroker({ url: REDIS_URL, prefix })
    const app = Fastify({ logger: false })
    t.after(async () => {
      await app.close()
      await deleteKeys(prefix)
    })
    occupy(app)
    await assert.rejects(async () => { await app.register(chatRooms, { broker }) }, error, what)
    assert.equal((await redisConnectionsOf(broker.nodeId)).length, 2, `${what}: the broker had opened its two connections`)
    await app.close()
    assert.deepEqual(await redisConnectionsGone(broker.nodeId), [], `${what}: fastify.close() closed the broker`)
  }
})

test('fastify.close() closes the broker once, after every connection\'s 1001 close', async (t) => {
  const order: string[] = []
  let closes = 0
  class CountingBroker extends MemoryBroker {
    override async close (): Promise<void> {
      closes++
      order.push('broker closed')
      await super.close()
    }
  }
  const { wsUrl, app } = await startServer(t, { home: false, broker: new CountingBroker() })
  const clients = await Promise.all([RawClient.connect(t, wsUrl), RawClient.connect(t, wsUrl)])
  for (const client of clients) await client.request('joined', { type: 'join', room: 'r' })
  app.hub.on('leave', ({ member }) => order.push(`left ${member.id}`))
  await app.close()
  await app.close()
  for (const client of clients) assert.equal((await client.closed).code, 1001)
  assert.equal(closes, 1)
  assert.deepEqual(order.slice(-1), ['broker closed'])
  assert.equal(order.length, 3, 'both members left first')
})
