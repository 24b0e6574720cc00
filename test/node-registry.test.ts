/**
 * The node registry over its Redis store: each node's record, sweeps that
 * tell each room once, the serial that keeps a returning node's members, and
 * reconciling after an outage. Needs the Redis at REDIS_URL (default
 * 127.0.0.1:6379).
 */
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { once } from 'node:events'
import { hostname } from 'node:os'
import { describe, it, type TestContext } from 'node:test'
import { Redis } from 'ioredis'
import { NodeRegistry, type RegisteredNode } from '../lib/brokers/node-registry.js'
import { RedisRegistryStore } from '../lib/brokers/redis-registry.js'
import { RedisKeys } from '../lib/brokers/redis-keys.js'
import { RedisShards } from '../lib/brokers/redis-shards.js'
import type { Member, Presence } from '../lib/protocol.js'
import { RecordingNode } from './helpers/recording-node.js'
import { REDIS_URL, deleteKeys, skipUnlessRedis, uniquePrefix } from './helpers/redis.js'

const skip = await skipUnlessRedis()

/** Long enough that a loaded machine does not let a renewing node's lease lapse during a test. */
const LONG_LEASE_MS = 5000
/** A sweeper with this lease looks for lapsed nodes every 100 ms. */
const SWEEPER_LEASE_MS = 300
/** How long a test waits for a sweep or a reconcile to show. */
const WAIT_MS = 10_000

const m1: Member = { id: 'm1', user: 'm1', name: 'one' }
const m2: Member = { id: 'm2', user: 'm2', name: 'two' }
const m3: Member = { id: 'm3', user: 'm3', name: 'three' }

interface Node {
  registry: NodeRegistry
  store: RedisRegistryStore
  redis: Redis
  logs: RecordingNode['logs']
}

/** A registry on its own Redis connection, with the store RedisBroker gives it; stopped after the test. */
async function node (t: TestContext, prefix: string, leaseMs = LONG_LEASE_MS): Promise<Node> {
  const recording = new RecordingNode()
  const shards = RedisShards.open({ url: REDIS_URL }, { nodeId: randomUUID(), commandTimeout: 2000, redis: undefined }, {
    message: () => {}, subscriber: () => {}, commands: () => {}, lost: () => {}, log: () => recording.log,
  })
  await shards.ready()
  const redis = shards.registry.commands as Redis
  const store = new RedisRegistryStore({ shards, keys: new RedisKeys(prefix), idleRoomTtl: 60_000 })
  const registry = new NodeRegistry(store, { nodeId: randomUUID(), leaseMs, connections: () => recording.connections(), log: recording.log })
  t.after(async () => {
    await registry.stop()
    await shards.close()
  })
  await registry.start()
  return { registry, store, redis, logs: recording.logs }
}

/** A prefix of its own, its keys deleted after the test. */
function prefixFor (t: TestContext): string {
  const prefix = uniquePrefix()
  t.after(() => deleteKeys(prefix))
  return prefix
}

/** Records the presence events published on a room's channel. */
async function listen (t: TestContext, prefix: string, room: string): Promise<Presence[]> {
  const subscriber = new Redis(REDIS_URL)
  t.after(() => subscriber.disconnect())
  const events: Presence[] = []
  subscriber.on('message', (_channel: string, payload: string) => events.push((JSON.parse(payload) as { event: Presence }).event))
  await subscriber.subscribe(new RedisKeys(prefix).channel(room))
  return events
}

const join = (room: string, member: Member): Presence => ({ type: 'presence', room, action: 'join', member })
const leave = (room: string, member: Member): Presence => ({ type: 'presence', room, action: 'leave', member })
const told = (events: Presence[]): string[] => events.map((event) => `${event.action} ${event.member.id}`)

async function until (what: string, condition: () => Promise<boolean> | boolean): Promise<void> {
  const deadline = Date.now() + WAIT_MS
  while (!(await condition())) {
    assert.ok(Date.now() < deadline, `timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

/** The registry's record of `node`, read by `reader`. */
async function recordOf (reader: Node, node: Node): Promise<RegisteredNode | undefined> {
  return (await reader.registry.nodes()).find((record) => record.id === node.registry.nodeId)
}

/** Cuts `node` off from Redis (its renewals and presence calls fail); `reconnect` ends the outage. */
async function cutOff (node: Node): Promise<void> {
  const ended = once(node.redis, 'end')
  node.redis.disconnect()
  await ended
}

describe('NodeRegistry with the Redis store', { skip }, () => {
  it('records each node with its host, pid and start time, live while it renews', async (t) => {
    const before = Date.now()
    const a = await node(t, prefixFor(t))
    const record = await recordOf(a, a)
    assert.ok(record, 'the node is registered')
    const { id, host, pid, live, startedAt, lastSeen, serial } = record
    assert.deepEqual({ id, host, pid, live }, { id: a.registry.nodeId, host: hostname(), pid: process.pid, live: true })
    assert.ok(startedAt >= before - 1000 && startedAt <= Date.now(), 'started when it opened')
    assert.ok(Math.abs(lastSeen - Date.now()) < 60_000, 'last seen now (by Redis\' clock)')
    assert.ok(Number.isInteger(serial) && serial > 0)
  })

  it('sweeps a node that stops renewing once, with one leave per member, and takes its members back when it returns', async (t) => {
    const prefix = prefixFor(t)
    const a = await node(t, prefix, SWEEPER_LEASE_MS * 2)
    const [inR, inS] = await Promise.all([listen(t, prefix, 'r'), listen(t, prefix, 's')])
    await a.registry.announce('r', join('r', m1))
    await a.registry.announce('r', join('r', m2))
    await a.registry.announce('s', join('s', m3))
    const firstSerial = (await recordOf(a, a))!.serial

    await cutOff(a)
    // Two sweepers: both see the lapse, the rooms are told once.
    const [b, c] = await Promise.all([node(t, prefix, SWEEPER_LEASE_MS), node(t, prefix, SWEEPER_LEASE_MS)])
    await until('A forgotten', async () => (await recordOf(b, a)) === undefined)
    assert.deepEqual(await b.store.roster('r'), [])
    assert.deepEqual(await c.store.roster('s'), [])
    await new Promise((resolve) => setTimeout(resolve, SWEEPER_LEASE_MS))
    // One leave per member; a sweep promises no order among them.
    assert.deepEqual([...told(inR).slice(0, 2), ...told(inR).slice(2).sort()], ['join m1', 'join m2', 'leave m1', 'leave m2'])
    assert.deepEqual(told(inS), ['join m3', 'leave m3'])

    await a.redis.connect()
    await a.registry.renewNow()
    assert.ok(a.logs.some((entry) => entry.level === 'warn' && entry.msg?.includes('lease had lapsed')))
    const serial = (await recordOf(b, a))?.serial
    assert.ok(serial !== undefined && serial > firstSerial, 'it registers again, under a new serial')
    const roster = await b.store.roster('r')
    assert.deepEqual(roster.map((entry) => [entry.member.id, entry.node, entry.serial]).sort(),
      [['m1', a.registry.nodeId, serial], ['m2', a.registry.nodeId, serial]])
    await until('the joins again', () => inR.length === 6 && inS.length === 3)
    assert.deepEqual(told(inR).slice(4).sort(), ['join m1', 'join m2'])
    assert.deepEqual(told(inS).slice(2), ['join m3'])
  })

  it('keeps the members a returning node announced again, whatever a sweep of its lapsed registration does after', async (t) => {
    const prefix = prefixFor(t)
    const keys = new RedisKeys(prefix)
    const [a, b] = await Promise.all([node(t, prefix), node(t, prefix)])
    const events = await listen(t, prefix, 'r')
    await a.registry.announce('r', join('r', m1))
    const lapsed = (await recordOf(b, a))!.serial

    // A's lease lapses; A renews first and stamps its member with its new serial.
    await b.redis.zrem(keys.registry.leases, a.registry.nodeId)
    await a.registry.renewNow()
    const serial = (await recordOf(b, a))!.serial
    assert.ok(serial > lapsed)
    assert.deepEqual(await b.store.roster('r'), [{ member: m1, node: a.registry.nodeId, serial }])

    // Then B, which saw the lapsed registration, sweeps it: nothing of A's goes.
    assert.equal(await b.store.evict('r', a.registry.nodeId, lapsed), 0)
    await b.store.forget(a.registry.nodeId, lapsed)
    assert.deepEqual(await b.store.roster('r'), [{ member: m1, node: a.registry.nodeId, serial }])
    assert.equal((await recordOf(b, a))?.live, true, 'A stays registered')
    await new Promise((resolve) => setTimeout(resolve, 100))
    assert.deepEqual(told(events), ['join m1'], 'the member was re-stamped quietly: no leave, no second join')
  })

  it('reconciles after an outage: a leave that failed is removed, a join that failed is stored, each told once', async (t) => {
    const prefix = prefixFor(t)
    const a = await node(t, prefix)
    const [inR, inS] = await Promise.all([listen(t, prefix, 'r'), listen(t, prefix, 's')])
    await a.registry.announce('r', join('r', m1))
    await a.registry.announce('s', join('s', m3))

    await cutOff(a)
    await assert.rejects(a.registry.announce('r', leave('r', m1)))
    await assert.rejects(a.registry.announce('r', join('r', m2)))
    await assert.rejects(a.registry.announce('s', leave('s', m3)))
    await a.redis.connect()
    await a.registry.renewNow()

    assert.deepEqual((await a.store.roster('r')).map((entry) => entry.member), [m2])
    assert.deepEqual(await a.store.roster('s'), [])
    assert.deepEqual(await a.store.roomsOf([a.registry.nodeId]), ['r'], 'a room without members here is no longer listed')
    await until('the reconciled events', () => inR.length === 3 && inS.length === 2)
    assert.deepEqual(told(inR), ['join m1', 'leave m1', 'join m2'])
    assert.deepEqual(told(inS), ['join m3', 'leave m3'])
  })

  it('refuses a join over maxMembers without keeping the room listed', async (t) => {
    const prefix = prefixFor(t)
    const [a, b] = await Promise.all([node(t, prefix), node(t, prefix)])
    await a.registry.announce('r', join('r', m1))
    await assert.rejects(b.registry.announce('r', join('r', m2), { maxMembers: 1 }), { code: 'room_full' })
    await until('B\'s listing undone', async () => (await b.store.roomsOf([b.registry.nodeId])).length === 0)
    assert.deepEqual(await a.store.roomsOf([a.registry.nodeId]), ['r'])
  })

  it('lets a closing node leave the registry at once, unless it still lists members (then they are swept)', async (t) => {
    const prefix = prefixFor(t)
    const sweeper = await node(t, prefix, SWEEPER_LEASE_MS)
    const events = await listen(t, prefix, 'r')
    const quiet = await node(t, prefix)
    await quiet.registry.stop()
    assert.equal(await recordOf(sweeper, quiet), undefined, 'a node without members is gone at once')

    const busy = await node(t, prefix)
    await busy.registry.announce('r', join('r', m1))
    await busy.registry.stop()
    await until('the swept member\'s leave', () => events.length === 2)
    assert.deepEqual(told(events), ['join m1', 'leave m1'])
    await until('the closed node forgotten', async () => (await recordOf(sweeper, busy)) === undefined)
  })
})
