/**
 * RedisBroker when Redis hangs or dies: calls fail with `unavailable` within
 * `commandTimeout` and never queue, the broker recovers by itself, a retried
 * cid is stored once, and delivery resumes without a gap. Each test runs a
 * private redis-server that it pauses or kills.
 */
import assert from 'node:assert/strict'
import { describe, it, type TestContext } from 'node:test'
import { Redis } from 'ioredis'
import { ChatError } from '../lib/errors.js'
import type { Member } from '../lib/protocol.js'
import { RedisBroker } from '../lib/redis.js'
import { RecordingNode } from './helpers/recording-node.js'
import { uniquePrefix } from './helpers/redis.js'
import { RedisServer, skipUnlessRedisServer } from './helpers/redis-server.js'

const COMMAND_TIMEOUT_MS = 500
/** Timers and a busy machine: how late a rejection may come beyond the timeout. */
const SLACK_MS = 400
const alice: Member = { id: 'a1', user: 'a1', name: 'alice' }

const skip = skipUnlessRedisServer()

interface Setup {
  server: RedisServer
  prefix: string
  sender: RedisBroker
  senderNode: RecordingNode
  receiver: RedisBroker
  receiverNode: RecordingNode
}

async function setup (t: TestContext): Promise<Setup> {
  const server = await RedisServer.start()
  const prefix = uniquePrefix()
  const options = { url: server.url, prefix, commandTimeout: COMMAND_TIMEOUT_MS, leaseMs: 3000 }
  const sender = new RedisBroker(options)
  const receiver = new RedisBroker(options)
  const senderNode = new RecordingNode()
  const receiverNode = new RecordingNode()
  t.after(async () => {
    await server.kill()
    await Promise.all([sender.close(), receiver.close()])
  })
  await sender.open(senderNode)
  await receiver.open(receiverNode)
  await receiver.subscribe('r')
  return { server, prefix, sender, senderNode, receiver, receiverNode }
}

/** Runs `call` and checks it fails with `unavailable` in bounded time. */
async function assertUnavailable (what: string, call: () => Promise<unknown>): Promise<void> {
  const started = Date.now()
  await assert.rejects(call(), (error: unknown) => error instanceof ChatError && error.code === 'unavailable', what)
  const elapsed = Date.now() - started
  assert.ok(elapsed <= COMMAND_TIMEOUT_MS + SLACK_MS, `${what}: rejected after ${elapsed} ms`)
}

/** Retries `call` until Redis is back; fails after `ms`. */
async function untilAvailable<T> (call: () => Promise<T>, ms = 15_000): Promise<T> {
  const deadline = Date.now() + ms
  for (;;) {
    try {
      return await call()
    } catch (error) {
      if (!(error instanceof ChatError) || Date.now() > deadline) throw error
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
  }
}

function outageLogs (node: RecordingNode): { warn: number, info: number } {
  return {
    warn: node.logs.filter((entry) => entry.level === 'warn' && entry.msg?.includes('unavailable')).length,
    info: node.logs.filter((entry) => entry.level === 'info' && entry.msg?.includes('available again')).length,
  }
}

describe('RedisBroker when Redis fails', { skip }, () => {
  it('answers unavailable in bounded time while Redis hangs, then stores each retried cid once and delivers without a gap', async (t) => {
    const { server, sender, senderNode, receiverNode } = await setup(t)
    for (let i = 0; i < 5; i++) await sender.append('r', { from: alice, text: `before ${i}` })

    server.pause()
    const cids = Array.from({ length: 10 }, (_, i) => `hung-${i}`)
    // Everything sent at once while Redis hangs: all fail within the bound, none waits for Redis.
    await Promise.all(cids.map((cid) => assertUnavailable(`append ${cid}`, () => sender.append('r', { from: alice, text: cid, cid }))))
    await assertUnavailable('read', () => sender.read('r', { limit: 10 }))
    await assertUnavailable('members', () => sender.members('r'))
    await assertUnavailable('changeUser', () => sender.changeUser('r', alice.user, { kind: 'ban' }))
    await assertUnavailable('userState', () => sender.userState('r', alice.user))
    await assertUnavailable('moderation', () => sender.moderation('r'))
    await assertUnavailable('signal', () => sender.signal({ type: 'disconnect-user', user: alice.user }))
    await assertUnavailable('append during the hang', () => sender.append('r', { from: alice, text: 'later', cid: 'hung-0' }))

    server.resume()
    for (const cid of cids) await untilAvailable(() => sender.append('r', { from: alice, text: cid, cid }))

    const stored = (await sender.read('r', { limit: 100 })).messages
    assert.deepEqual(stored.map((m) => m.seq), Array.from({ length: stored.length }, (_, i) => i + 1))
    for (const cid of cids) assert.equal(stored.filter((m) => m.cid === cid).length, 1, `${cid} is stored once`)
    await receiverNode.until('every stored message', () => receiverNode.messages('r').length >= stored.length)
    assert.deepEqual(receiverNode.messages('r'), stored)
    await senderNode.until('the recovery log', () => outageLogs(senderNode).info === 1)
    assert.deepEqual(outageLogs(senderNode), { warn: 1, info: 1 }, 'the outage and the recovery are logged once each')
  })

  it('answers unavailable for an update while Redis hangs, then stores its retry (same cid) once and delivers it without a gap', async (t) => {
    const { server, sender, receiverNode } = await setup(t)
    await sender.append('r', { from: alice, text: 'typo' })
    const edit = { by: alice, target: 1, action: 'edit', text: 'fixed', cid: 'e-1' } as const
    server.pause()
    await assertUnavailable('update during the hang', () => sender.update('r', edit))
    server.resume()
    // The hung call may have reached Redis after all: then the retry is recognised by its cid.
    assert.equal((await untilAvailable(() => sender.update('r', edit))).seq, 2)
    const { messages: entries } = await sender.read('r', { after: 0, limit: 10 })
    assert.deepEqual(entries.map((entry) => [entry.seq, entry.type, entry.text]), [[1, 'message', 'fixed'], [2, 'update', 'fixed']])
    await receiverNode.until('the update', () => receiverNode.entries('r').length === 2)
    assert.deepEqual(receiverNode.entries('r')[1], entries[1])
  })

  it('answers unavailable while Redis is down, then reconnects, resubscribes and delivers its new stream', async (t) => {
    const { server, prefix, sender, senderNode, receiver, receiverNode } = await setup(t)
    for (let i = 0; i < 3; i++) await sender.append('r', { from: alice, text: `before ${i}` })
    const { epoch } = await sender.read('r', { limit: 0 })
    await receiverNode.until('the first messages', () => receiverNode.messages('r').length === 3)

    await server.kill()
    for (let i = 0; i < 5; i++) await assertUnavailable('append while down', () => sender.append('r', { from: alice, text: 'lost', cid: `down-${i}` }))
    await assertUnavailable('presence while down', () => sender.publish('r', { type: 'presence', room: 'r', action: 'join', member: alice }))
    await assertUnavailable('subscribe while down', () => receiver.subscribe('other'))
    await assertUnavailable('update while down', () => sender.update('r', { by: alice, target: 1, action: 'edit', text: 'lost' }))

    await server.start()
    const { message } = await untilAvailable(() => sender.append('r', { from: alice, text: 'after', cid: 'down-0' }))
    assert.equal(message.seq, 1, 'the restarted Redis lost the room: its stream starts again')
    assert.notEqual((await sender.read('r', { limit: 0 })).epoch, epoch)
    await receiverNode.until('the message after the restart', () => receiverNode.messages('r').length === 4)
    assert.deepEqual(receiverNode.messages('r').map((m) => m.text), ['before 0', 'before 1', 'before 2', 'after'])
    // Subscribed again to signals with its rooms.
    await sender.signal({ type: 'disconnect-user', user: alice.user })
    await receiverNode.until('the signal after the restart', () => receiverNode.signals.length === 1)
    await senderNode.until('the recovery log', () => outageLogs(senderNode).info === 1)
    assert.deepEqual(outageLogs(senderNode), { warn: 1, info: 1 })

    const admin = new Redis(server.url)
    t.after(() => admin.disconnect())
    const outside = (await admin.keys('*')).filter((key) => !key.startsWith(prefix))
    assert.deepEqual(outside, [], 'every key is under the prefix')
  })

  it('removes from the roster, once Redis answers again, a member who left during the outage', async (t) => {
    const { server, sender, receiver, receiverNode } = await setup(t)
    await sender.publish('r', { type: 'presence', room: 'r', action: 'join', member: alice })
    assert.deepEqual(await receiver.members('r'), [alice])

    server.pause()
    await assertUnavailable('leave during the hang', () => sender.publish('r', { type: 'presence', room: 'r', action: 'leave', member: alice }))
    server.resume()

    await receiverNode.until('the leave', () => receiverNode.events('r').some((e) => e.type === 'presence' && e.action === 'leave'))
    assert.deepEqual(await untilAvailable(() => receiver.members('r')), [])
  })
})
