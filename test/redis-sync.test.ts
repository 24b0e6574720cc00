/**
 * Members on Redis never miss a message silently and never see one twice:
 * when Redis loses its data (a new epoch) or pub/sub loses more than the
 * stored history can fill, live members are closed with 4010 and resume; a
 * join on one node while another sends gets no message both in
 * `joined.history` and live. Each test runs a private redis-server.
 */
import assert from 'node:assert/strict'
import { describe, it, type TestContext } from 'node:test'
import Fastify from 'fastify'
import { Redis } from 'ioredis'
import WebSocket from 'ws'
import chatRooms, { type ChatRoomsOptions } from '../lib/index.js'
import { ChatClient, type ChatClientEvents } from '../lib/client/index.js'
import { CloseCodes } from '../lib/errors.js'
import type { ServerFrameOf } from '../lib/protocol.js'
import { RedisBroker, type RedisBrokerOptions } from '../lib/redis.js'
import { RawClient } from './helpers/client.js'
import { uniquePrefix } from './helpers/redis.js'
import { RedisServer, skipUnlessRedisServer } from './helpers/redis-server.js'

/** Bounds every wait: a busy machine delivers through Redis well within it. */
const WAIT_MS = 10_000

const skip = skipUnlessRedisServer()

async function startRedis (t: TestContext): Promise<RedisServer> {
  const server = await RedisServer.start()
  t.after(() => server.kill())
  return server
}

/** A chat node on `server`; closed after the test (before Redis is killed: `t.after` runs in reverse). */
async function startNode (t: TestContext, server: RedisServer, prefix: string, options: ChatRoomsOptions = {}, redis: RedisBrokerOptions['redis'] = {}): Promise<string> {
  const app = Fastify({ logger: false })
  await app.register(chatRooms, { home: false, broker: new RedisBroker({ url: server.url, prefix, redis }), ...options })
  await app.listen({ host: '127.0.0.1', port: 0 })
  t.after(() => app.close())
  const address = app.server.address()
  if (address === null || typeof address === 'string') throw new Error('no port')
  return `ws://127.0.0.1:${address.port}/ws`
}

/** A command connection of the test's own, to break Redis from outside. */
function admin (t: TestContext, server: RedisServer): Redis {
  const redis = new Redis(server.url)
  t.after(() => redis.disconnect())
  return redis
}

async function until (condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + WAIT_MS
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

function record (client: ChatClient): { status: Array<ChatClientEvents['status']>, gap: Array<ChatClientEvents['gap']>, texts: string[] } {
  const seen = { status: [] as Array<ChatClientEvents['status']>, gap: [] as Array<ChatClientEvents['gap']>, texts: [] as string[] }
  client.on('status', (change) => { seen.status.push(change) })
  client.on('gap', (gap) => { seen.gap.push(gap) })
  client.on('message', (message) => { seen.texts.push(message.text) })
  return seen
}

/** Joins `r`, then names each message delivered after `joined` whose seq `joined.history` or an earlier one already carried. */
async function repeatedLive (client: RawClient, what: string): Promise<string[]> {
  client.frames.splice(0)
  const ref = `${what} join`
  client.send({ type: 'join', room: 'r', ref })
  await until(() => client.frames.some((frame) => frame.type === 'joined' && frame.ref === ref), `${what}: joined`)
  const joined = client.frames.find((frame) => frame.type === 'joined' && frame.ref === ref) as ServerFrameOf<'joined'>
  // Once a message newer than the snapshot arrived, any late copy of an older one came before it.
  await until(() => client.frames.some((frame) => frame.type === 'message' && frame.seq > joined.seq), `${what}: a message after joined`)
  const seen = new Set(joined.history.map((message) => message.seq))
  const repeated: string[] = []
  for (const frame of client.frames.slice(client.frames.indexOf(joined))) {
    if (frame.type !== 'message') continue
    if (seen.has(frame.seq)) repeated.push(`${what}: seq ${frame.seq}`)
    seen.add(frame.seq)
  }
  return repeated
}

describe('members over Redis stay in sync', { skip }, () => {
  it('closes live members with 4010 when Redis loses the room (a new epoch); the client resumes, raises gap and sees the new messages', async (t) => {
    const server = await startRedis(t)
    const url = await startNode(t, server, uniquePrefix())
    const clients = ['alice', 'bob'].map((name) => {
      const client = new ChatClient(url, { name, WebSocket, reconnect: { minDelay: 60_000, maxDelay: 60_000 }, requestTimeout: 5000 })
      t.after(() => client.close())
      return client
    })
    const seen = clients.map(record)
    for (const client of clients) await client.join('r')
    await clients[0]!.send('r', 'before')
    await until(() => seen.every((s) => s.texts.includes('before')), 'both see the first message')

    await admin(t, server).flushall()
    assert.equal(await clients[0]!.send('r', 'after'), 1, 'the new stream starts at seq 1')

    await until(() => seen.every((s) => s.texts.includes('after') && s.gap.length > 0), 'both resume, raise gap and see the new message')
    for (const s of seen) {
      // The reconnect delay is a minute: only a close the client resumes at once from lets it see the message in time.
      assert.ok(s.status.some((change) => change.status === 'reconnecting' && change.code === CloseCodes.outOfSync && change.retryIn === 0), 'closed with 4010, reconnected at once')
      assert.equal(s.gap[0]!.room, 'r')
      assert.notEqual(s.gap[0]!.epoch, s.gap[0]!.previousEpoch, 'the gap names the new epoch')
      assert.deepEqual(s.texts, ['before', 'after'])
    }
  })

  it('closes live members with 4010 when pub/sub lost more messages than the history keeps', async (t) => {
    const server = await startRedis(t)
    const prefix = uniquePrefix()
    const historySize = 5
    // The listening node resubscribes half a second after its pub/sub link is cut: the sends below all fall in that window.
    const listening = await startNode(t, server, prefix, { historySize }, { retryStrategy: () => 500 })
    const sending = await startNode(t, server, prefix, { historySize })
    const member = await RawClient.connect(t, `${listening}?name=member`)
    await member.request('joined', { type: 'join', room: 'r' })
    const sender = await RawClient.connect(t, `${sending}?name=sender`)
    await sender.request('joined', { type: 'join', room: 'r' })

    const killed = await admin(t, server).call('CLIENT', 'KILL', 'TYPE', 'pubsub')
    assert.ok(Number(killed) >= 2, 'both nodes lost their pub/sub link')
    const count = historySize * 3
    for (let i = 1; i <= count; i++) await sender.request('ack', { type: 'send', room: 'r', text: `m${i}` })

    const closed = await Promise.race([member.closed, new Promise((resolve) => setTimeout(resolve, WAIT_MS, undefined))])
    assert.deepEqual(closed, { code: CloseCodes.outOfSync, reason: 'out of sync: resume with since' }, 'the member that missed messages was told to resume')
  })

  it('never delivers live a message that the joined of a member on another node already carried', async (t) => {
    const server = await startRedis(t)
    const prefix = uniquePrefix()
    // Joins, leaves and sends as fast as they are answered: no rate limit stands in the way.
    const unlimited = { rateLimit: { perSecond: 100_000, burst: 100_000 } }
    const sending = await startNode(t, server, prefix, unlimited)
    const joining = await startNode(t, server, prefix, unlimited)
    const sender = await RawClient.connect(t, `${sending}?name=sender`)
    await sender.request('joined', { type: 'join', room: 'r' })

    let keepSending = true
    const sends = (async () => {
      // Ten in flight at a time, so that pub/sub always carries some while a join reads.
      for (let i = 0; keepSending && i < 10_000; i++) {
        await Promise.all(Array.from({ length: 10 }, (_, j) => sender.request('ack', { type: 'send', room: 'r', text: `m${i}.${j}` })))
      }
    })()
    const joins = 150
    const repeated: string[] = []
    for (let i = 0; i < joins; i++) {
      // A connection of its own for each join: the room opens and closes on this node as in real use.
      const joiner = await RawClient.connect(t, `${joining}?name=joiner${i}`)
      repeated.push(...await repeatedLive(joiner, `join ${i}`))
      // Joined again while a member (a resume does this): its snapshot too must not be repeated live.
      repeated.push(...await repeatedLive(joiner, `rejoin ${i}`))
      joiner.socket.close()
    }
    keepSending = false
    await sends
    assert.deepEqual(repeated, [], 'no seq was delivered twice to one membership')
  })
})
