/**
 * Users across RedisBroker nodes on one Redis: presence `first`/`last` per
 * user whichever node each connection is on (a dead node's sweep included),
 * read markers and moderation enforced and told on every node. Needs the
 * Redis at REDIS_URL (default 127.0.0.1:6379).
 */
import assert from 'node:assert/strict'
import { describe, it, type TestContext } from 'node:test'
import { Redis } from 'ioredis'
import { RedisKeys } from '../lib/brokers/redis-keys.js'
import { RedisBroker, type RedisBrokerOptions } from '../lib/redis.js'
import type { Member, Presence } from '../lib/protocol.js'
import { RecordingNode } from './helpers/recording-node.js'
import { REDIS_URL, deleteKeys, skipUnlessRedis, uniquePrefix } from './helpers/redis.js'

const skip = await skipUnlessRedis()

interface Node { broker: RedisBroker, node: RecordingNode }

/** Opens one node per options on one prefix (`prefix`, or a new one), each subscribed to room `r`; all closed and the keys deleted after the test. */
async function nodes (t: TestContext, options: RedisBrokerOptions[], prefix = uniquePrefix()): Promise<Node[]> {
  const opened = options.map((extra) => ({ broker: new RedisBroker({ url: REDIS_URL, ...extra, prefix }), node: new RecordingNode() }))
  t.after(async () => {
    await Promise.all(opened.map(({ broker }) => broker.close()))
    await deleteKeys(prefix)
  })
  for (const { broker, node } of opened) {
    await broker.open(node)
    await broker.subscribe('r')
  }
  return opened
}

/** Two tabs of carol, and bob. */
const tab1: Member = { id: 'c.1', user: 'carol', name: 'carol' }
const tab2: Member = { id: 'c.2', user: 'carol', name: 'carol' }
const bob: Member = { id: 'b.1', user: 'bob', name: 'bob' }
const presence = (action: Presence['action'], member: Member): Presence => ({ type: 'presence', room: 'r', action, member })
const forbidden = (error: { code?: string }): boolean => error.code === 'forbidden'

/** The presence events of `action` a node was told for room `r`. */
function told (node: RecordingNode, action: Presence['action']): Presence[] {
  return node.events('r').filter((event): event is Presence => event.type === 'presence' && event.action === action)
}

describe('users across RedisBroker nodes', { skip }, () => {
  it('says first for one of two tabs of a user on two nodes, and last for exactly one when both leave at once', async (t) => {
    for (let round = 0; round < 5; round++) {
      const [a, b] = await nodes(t, [{}, {}])
      await Promise.all([a!.broker.publish('r', presence('join', tab1)), b!.broker.publish('r', presence('join', tab2))])
      for (const { node } of [a!, b!]) {
        await node.until('both joins', () => told(node, 'join').length === 2)
        assert.deepEqual(told(node, 'join').map((e) => e.first).sort(), [false, true], 'one first join of two tabs')
      }
      await Promise.all([a!.broker.publish('r', presence('leave', tab1)), b!.broker.publish('r', presence('leave', tab2))])
      for (const { node } of [a!, b!]) {
        await node.until('both leaves', () => told(node, 'leave').length === 2)
        assert.deepEqual(told(node, 'leave').map((e) => e.last).sort(), [false, true], 'one last leave of two tabs')
      }
    }
  })

  it('gives the leaves of a dead node\'s members the right last, a member stored before users existed included', async (t) => {
    // The sweeper renews and sweeps every 100 ms.
    const prefix = uniquePrefix()
    const [live, dying] = await nodes(t, [{ leaseMs: 300 }, { leaseMs: 3000 }], prefix)
    await live!.broker.publish('r', presence('join', tab1))
    await dying!.broker.publish('r', presence('join', tab2))
    await dying!.broker.publish('r', presence('join', bob))
    // An entry as a node of the previous version wrote it: no `user`, and no count of it.
    const { members } = new RedisKeys(prefix).room('r')
    const admin = new Redis(REDIS_URL)
    t.after(() => admin.disconnect())
    const bobsEntry = JSON.parse((await admin.hget(members, bob.id))!) as { node: string, serial: number }
    await admin.hset(members, 'old', JSON.stringify({ id: 'old', name: 'olden', node: bobsEntry.node, serial: bobsEntry.serial }))
    assert.deepEqual((await live!.broker.members('r')).find((member) => member.id === 'old'), { id: 'old', user: 'old', name: 'olden' })

    // Closed without its members' leaves: the live node sweeps them as a crashed node's.
    await dying!.broker.close()
    await live!.node.until('three leaves', () => told(live!.node, 'leave').length === 3)
    const last = Object.fromEntries(told(live!.node, 'leave').map((e) => [e.member.id, [e.member.user, e.last]]))
    assert.deepEqual(last, { [tab2.id]: ['carol', false], [bob.id]: ['bob', true], old: ['old', true] })
    await live!.broker.publish('r', presence('leave', tab1))
    await live!.node.until('carol\'s last leave', () => told(live!.node, 'leave').length === 4)
    assert.equal(told(live!.node, 'leave').at(-1)!.last, true)
  })

  it('moves a read marker on one node and tells every node', async (t) => {
    const [a, b] = await nodes(t, [{}, {}])
    for (let i = 0; i < 3; i++) await a!.broker.append('r', { from: bob, text: `m${i}` })
    assert.deepEqual(await b!.broker.changeUser('r', 'carol', { kind: 'read', seq: 2 }, tab2.id), { state: { read: 2 }, changed: true })
    assert.deepEqual(await a!.broker.userState('r', 'carol'), { read: 2 })
    for (const { node } of [a!, b!]) {
      await node.until('the marker', () => node.userEvents('r').length === 1)
      assert.deepEqual(node.userEvents('r'), [{ type: 'user', room: 'r', user: 'carol', change: { kind: 'read', seq: 2 }, connection: tab2.id }])
      assert.deepEqual(node.events('r').filter((e) => e.type === 'message').length, 3, 'after the messages it follows')
    }
  })

  it('refuses a banned user\'s join on every node and tells every node of the ban', async (t) => {
    const [a, b] = await nodes(t, [{}, {}])
    await a!.broker.changeUser('r', 'carol', { kind: 'ban' })
    for (const { broker, node } of [a!, b!]) {
      await assert.rejects(broker.publish('r', presence('join', tab1)), forbidden)
      await node.until('the ban', () => node.userEvents('r').length === 1)
      assert.deepEqual(node.userEvents('r'), [{ type: 'user', room: 'r', user: 'carol', change: { kind: 'ban' } }])
    }
    assert.deepEqual(await b!.broker.members('r'), [])
    assert.deepEqual(await b!.broker.moderation('r'), [{ user: 'carol', ban: {} }])
    await b!.broker.publish('r', presence('join', bob))
  })

  it('refuses a muted user\'s appends from every node, storing nothing', async (t) => {
    const [a, b] = await nodes(t, [{}, {}])
    await b!.broker.changeUser('r', 'carol', { kind: 'mute' })
    for (const [{ broker }, member] of [[a!, tab1], [b!, tab2]] as const) {
      await assert.rejects(broker.append('r', { from: member, text: 'hush' }), forbidden)
    }
    assert.equal((await a!.broker.read('r', { limit: 10 })).seq, 0, 'nothing stored')
    assert.equal((await b!.broker.append('r', { from: bob, text: 'free' })).message.seq, 1)
  })

  it('ends a ban with until on time, on every node', async (t) => {
    const [a, b] = await nodes(t, [{}, {}])
    const until = Date.now() + 700
    await a!.broker.changeUser('r', 'carol', { kind: 'ban', until })
    await assert.rejects(b!.broker.publish('r', presence('join', tab2)), forbidden)
    await new Promise((resolve) => setTimeout(resolve, until - Date.now() + 50))
    assert.deepEqual(await b!.broker.moderation('r'), [], 'the ended ban is not listed')
    await b!.broker.publish('r', presence('join', tab2))
    await a!.broker.publish('r', presence('join', tab1))
    await a!.node.until('both joins', () => told(a!.node, 'join').length === 2)
    assert.deepEqual(told(a!.node, 'join').map((e) => e.first), [true, false])
  })
})
