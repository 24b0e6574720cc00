/**
 * RedisBroker: the broker contract, then what only many nodes on one Redis
 * can show. Needs the Redis at REDIS_URL (default 127.0.0.1:6379).
 */
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { describe, it, type TestContext } from 'node:test'
import { fileURLToPath } from 'node:url'
import { Redis } from 'ioredis'
import { RedisKeys } from '../lib/brokers/redis-keys.js'
import { RedisBroker, type RedisBrokerOptions } from '../lib/redis.js'
import { pageMessages, type NodeInfo } from '../lib/broker.js'
import type { Entry, Member, Presence } from '../lib/protocol.js'
import { brokerContract } from './broker-contract.js'
import { RecordingNode } from './helpers/recording-node.js'
import { REDIS_URL, deleteKeys, keysUnder, skipUnlessRedis, uniquePrefix } from './helpers/redis.js'

const skip = await skipUnlessRedis()

brokerContract('RedisBroker', (t) => {
  const prefix = uniquePrefix()
  // A short lease: a renewal (which carries the connection count) every second.
  const broker = new RedisBroker({ url: REDIS_URL, prefix, leaseMs: 3000 })
  t.after(async () => {
    await broker.close()
    await deleteKeys(prefix)
  })
  return broker
}, { skip })

/** Opens `count` nodes sharing one prefix (one chat); all are closed and the keys deleted after the test. */
async function cluster (t: TestContext, count: number, options: RedisBrokerOptions = {}): Promise<Array<{ broker: RedisBroker, node: RecordingNode }>> {
  const prefix = options.prefix ?? uniquePrefix()
  const nodes = Array.from({ length: count }, () => ({ broker: new RedisBroker({ url: REDIS_URL, ...options, prefix }), node: new RecordingNode(1000) }))
  t.after(async () => {
    await Promise.all(nodes.map(({ broker }) => broker.close()))
    await deleteKeys(prefix)
  })
  await Promise.all(nodes.map(({ broker, node }) => broker.open(node)))
  return nodes
}

/** Resolves once `done()` answers true, polling; fails naming `what` after 10 s. */
async function until (what: string, done: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 10_000
  while (!(await done())) {
    assert.ok(Date.now() < deadline, `timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

/** Drops `broker`'s subscriber connection from the Redis side: what is published until it reconnects is lost to it. */
async function killSubscriber (t: TestContext, broker: RedisBroker): Promise<void> {
  const admin = new Redis(REDIS_URL)
  t.after(() => admin.disconnect())
  const clients = await admin.client('LIST') as string
  const line = clients.split('\n').find((entry) => entry.includes(`name=fastify-chat-rooms-subscriber-${broker.nodeId}`))
  const id = /\bid=(\d+)/.exec(line ?? '')?.[1]
  assert.ok(id, 'the subscriber connection is listed')
  await admin.client('KILL', 'ID', id)
}

const alice: Member = { id: 'a1', user: 'a1', name: 'alice' }
const ghost: Member = { id: 'g1', user: 'g1', name: 'ghost' }
const isLeaveOf = (member: Member) => (event: { type: string }): boolean =>
  event.type === 'presence' && (event as Presence).action === 'leave' && (event as Presence).member.id === member.id

/**
 * Two nodes subscribed to room `r`, and a third in a child process whose
 * member `ghost` is in `r`: the child is there to be killed or stopped.
 */
async function ghostAmongSurvivors (t: TestContext, leaseMs: number): Promise<{ survivors: Array<{ broker: RedisBroker, node: RecordingNode }>, child: ChildProcess, prefix: string }> {
  const prefix = uniquePrefix()
  const survivors = await cluster(t, 2, { prefix, leaseMs })
  await Promise.all(survivors.map(({ broker }) => broker.subscribe('r')))
  const script = fileURLToPath(new URL('./helpers/redis-broker-process.js', import.meta.url))
  const child = spawn(process.execPath, [script, REDIS_URL, prefix, String(leaseMs), 'r', ghost.id, ghost.name], { stdio: ['ignore', 'pipe', 'inherit'] })
  t.after(() => child.kill('SIGKILL'))
  const [chunk] = await once(child.stdout!, 'data') as [Buffer]
  assert.equal(chunk.toString().trim(), 'ready')
  return { survivors, child, prefix }
}

describe('RedisBroker across nodes', { skip }, () => {
  it('gives one contiguous seq per room across nodes, and every node delivers the identical sequence', async (t) => {
    const nodes = await cluster(t, 3)
    await Promise.all(nodes.map(({ broker }) => broker.subscribe('r')))
    await Promise.all(nodes.flatMap(({ broker }, n) =>
      Array.from({ length: 40 }, (_, i) => broker.append('r', { from: alice, text: `n${n}-${i}` }))))
    const stored = (await nodes[0]!.broker.read('r', { limit: 200 })).messages
    assert.deepEqual(stored.map((m) => m.seq), Array.from({ length: 120 }, (_, i) => i + 1))
    for (const { node } of nodes) {
      await node.until('all 120 messages', () => node.messages('r').length >= 120)
      assert.deepEqual(node.messages('r'), stored)
    }
  })

  it('delivers every node the same edits, deletes and reactions in seq order, and fills from history those a subscriber missed', async (t) => {
    const [a, b] = await cluster(t, 2)
    await Promise.all([a!, b!].map(({ broker }) => broker.subscribe('r')))
    for (const text of ['one', 'two', 'three']) await a!.broker.append('r', { from: alice, text })
    const bob: Member = { id: 'b1', user: 'b1', name: 'bob' }
    // Both nodes change the messages at once: one seq per entry, whichever node stored it.
    await Promise.all([
      ...[alice, bob].flatMap((by, n) => [1, 3].map((target) => [a!, b!][n]!.broker.update('r', { by, target, action: 'react', reaction: '👍' }))),
      a!.broker.update('r', { by: alice, target: 1, action: 'edit', text: 'one, edited' }),
      b!.broker.update('r', { by: alice, target: 2, action: 'delete' }),
      b!.broker.append('r', { from: bob, text: 'four' }),
    ])
    const stored = async (): Promise<Entry[]> => (await a!.broker.read('r', { after: 0, limit: 100 })).messages
    const updates = (entries: Entry[]): Entry[] => entries.filter((entry) => entry.type === 'update')
    let entries = await stored()
    assert.deepEqual(entries.map((entry) => entry.seq), Array.from({ length: 10 }, (_, i) => i + 1))
    for (const { node } of [a!, b!]) {
      await node.until('every entry', () => node.entries('r').length === entries.length)
      assert.deepEqual(updates(node.entries('r')), updates(entries), 'the same updates, in seq order')
    }

    await killSubscriber(t, b!.broker)
    for (const target of [1, 3]) await a!.broker.update('r', { by: bob, target, action: 'unreact', reaction: '👍' })
    await a!.broker.update('r', { by: alice, target: 3, action: 'edit', text: 'three, edited' })
    entries = await stored()
    for (const { node } of [a!, b!]) await node.until('the updates published while B\'s subscriber was down', () => node.entries('r').length === entries.length)
    assert.deepEqual(b!.node.entries('r'), a!.node.entries('r'), 'B filled the gap from history: no entry lost, none twice')
    assert.deepEqual(updates(b!.node.entries('r')), updates(entries))
    assert.deepEqual(b!.node.outOfSyncs.filter(({ epoch }) => epoch === undefined), [], 'nothing was lost')
    const page = pageMessages((await b!.broker.read('r', { limit: 10 })).messages)
    assert.deepEqual(page.map((m) => [m.text, m.deleted ?? false, m.reactions]), [
      ['one, edited', false, { '👍': ['a1'] }], ['', true, undefined], ['three, edited', false, { '👍': ['a1'] }], ['four', false, undefined],
    ])
  })

  it('lists members of every node and tells every node of presence', async (t) => {
    const [a, b] = await cluster(t, 2)
    await b!.broker.subscribe('r')
    await a!.broker.publish('r', { type: 'presence', room: 'r', action: 'join', member: alice })
    assert.deepEqual(await b!.broker.members('r'), [alice])
    assert.deepEqual(await b!.broker.rooms(), [{ room: 'r', members: 1, seq: 0 }])
    await b!.node.until('the join', () => b!.node.events('r').length === 1)
    await a!.broker.publish('r', { type: 'typing', room: 'r', member: alice })
    await b!.node.until('the typing event', () => b!.node.events('r').length === 2)
  })

  it('fills from history what pub/sub lost while a node\'s subscriber reconnected', async (t) => {
    const [sender, receiver] = await cluster(t, 2)
    await receiver!.broker.subscribe('r')
    await sender!.broker.append('r', { from: alice, text: 'before' })
    await receiver!.node.until('the first message', () => receiver!.node.messages('r').length === 1)
    await killSubscriber(t, receiver!.broker)
    for (let i = 0; i < 30; i++) await sender!.broker.append('r', { from: alice, text: `m${i}` })
    await receiver!.node.until('all 31 messages', () => receiver!.node.messages('r').length >= 31)
    assert.deepEqual(receiver!.node.messages('r').map((m) => m.seq), Array.from({ length: 31 }, (_, i) => i + 1))
  })

  it('removes the members of a node killed without closing, with one leave each, within the lease', async (t) => {
    const leaseMs = 1500
    const { survivors, child } = await ghostAmongSurvivors(t, leaseMs)
    assert.deepEqual(await survivors[0]!.broker.members('r'), [ghost])

    const killedAt = Date.now()
    child.kill('SIGKILL')
    for (const { node } of survivors) await node.until('the ghost\'s leave', () => node.events('r').some(isLeaveOf(ghost)))
    const elapsed = Date.now() - killedAt
    assert.ok(elapsed <= leaseMs * 4 / 3 + 500, `leave after ${elapsed} ms, lease ${leaseMs} ms`)
    assert.deepEqual(await survivors[1]!.broker.members('r'), [])
    assert.deepEqual(await survivors[1]!.broker.rooms(), [])
    await new Promise((resolve) => setTimeout(resolve, leaseMs))
    for (const { node } of survivors) assert.equal(node.events('r').filter(isLeaveOf(ghost)).length, 1, 'one leave, whichever node swept')
  })

  it('a roster entry no script can decode stops nothing: joins, the room list and a dead node\'s eviction go on', async (t) => {
    const leaseMs = 1500
    const { survivors: [a, b], child, prefix } = await ghostAmongSurvivors(t, leaseMs)
    const admin = new Redis(REDIS_URL)
    t.after(() => admin.disconnect())
    const { members } = new RedisKeys(prefix).room('r')
    const ghostEntry = JSON.parse((await admin.hget(members, ghost.id))!) as { node: string, serial: number }
    // Written as an older, unchecked server let a client write it: JSON that Lua's cjson refuses (a lone surrogate).
    const lone: Member = { id: 'lone', user: 'lone', name: '\ud800x' }
    await admin.hset(members, lone.id, JSON.stringify({ ...lone, node: ghostEntry.node, serial: ghostEntry.serial }))
    await admin.hset(members, 'junk', 'not json at all')

    await a!.broker.publish('r', { type: 'presence', room: 'r', action: 'join', member: alice })
    assert.deepEqual((await b!.broker.members('r')).map((m) => m.id).sort(), [alice.id, ghost.id, lone.id].sort())
    // The room list counts the stored roster, the junk entry with it.
    assert.deepEqual(await b!.broker.rooms(), [{ room: 'r', members: 4, seq: 0 }])

    child.kill('SIGKILL')
    for (const { node } of [a!, b!]) {
      await node.until('the dead node\'s leaves', () => node.events('r').some(isLeaveOf(ghost)) && node.events('r').some(isLeaveOf(lone)))
    }
    assert.deepEqual(await b!.broker.members('r'), [alice])
    assert.deepEqual(await b!.broker.rooms(), [{ room: 'r', members: 2, seq: 0 }])
  })

  it('a retry record no script wrote stops no append halfway', async (t) => {
    const prefix = uniquePrefix()
    const broker = (await cluster(t, 1, { prefix }))[0]!.broker
    const admin = new Redis(REDIS_URL)
    t.after(() => admin.disconnect())
    const { cids, cidq } = new RedisKeys(prefix).room('r')
    await admin.hset(cids, 'c1', 'junk', 'c0', 'junk')
    await admin.rpush(cidq, 'c0')
    const first = await broker.append('r', { from: alice, text: 'x', cid: 'c1' })
    assert.deepEqual([first.message.seq, first.duplicate], [1, false])
    assert.equal((await broker.append('r', { from: alice, text: 'y', cid: 'c2' })).message.seq, 2, 'the junk at the head of the queue goes')
    assert.equal(await admin.hget(cids, 'c0'), null)
    assert.equal((await broker.append('r', { from: alice, text: 'x', cid: 'c1' })).duplicate, true)
  })

  it('keeps the room list\'s counts through joins, renames, leaves and a dead node\'s eviction', async (t) => {
    const { survivors: [a, b], child } = await ghostAmongSurvivors(t, 1500)
    const bob: Member = { id: 'b1', user: 'b1', name: 'bob' }
    const presence = (room: string, action: Presence['action'], member: Member): Presence => ({ type: 'presence', room, action, member })
    await a!.broker.publish('r', presence('r', 'join', alice))
    await b!.broker.publish('s', presence('s', 'join', bob))
    await b!.broker.publish('r', presence('r', 'join', bob))
    await a!.broker.append('r', { from: alice, text: 'x' })
    assert.deepEqual(await a!.broker.rooms(), [{ room: 'r', members: 3, seq: 1 }, { room: 's', members: 1, seq: 0 }])
    await a!.broker.publish('r', presence('r', 'rename', { id: alice.id, user: alice.id, name: 'alicia' }))
    await b!.broker.publish('r', presence('r', 'leave', bob))
    assert.deepEqual(await b!.broker.rooms(), [{ room: 'r', members: 2, seq: 1 }, { room: 's', members: 1, seq: 0 }])
    child.kill('SIGKILL')
    await a!.node.until('the ghost\'s leave', () => a!.node.events('r').some(isLeaveOf(ghost)))
    assert.deepEqual(await b!.broker.rooms(), [{ room: 'r', members: 1, seq: 1 }, { room: 's', members: 1, seq: 0 }])
    await a!.broker.publish('r', presence('r', 'leave', alice))
    assert.deepEqual(await a!.broker.rooms(), [{ room: 's', members: 1, seq: 0 }])
    assert.deepEqual(await a!.broker.rooms({ after: 'r', limit: 1 }), [{ room: 's', members: 1, seq: 0 }])
  })

  it('lists every live node, and drops one that stops renewing within the lease', async (t) => {
    const leaseMs = 1500
    const { survivors: [a, b], child } = await ghostAmongSurvivors(t, leaseMs)
    a!.node.connectionCount = 3
    const pids = (nodes: NodeInfo[]): number[] => nodes.map((node) => node.pid).sort()
    for (const { broker } of [a!, b!]) {
      const listed = await broker.nodes()
      assert.deepEqual(pids(listed), [child.pid!, process.pid, process.pid].sort(), 'both nodes here and the child')
      assert.deepEqual(listed.filter((node) => node.pid === process.pid).map((node) => node.id).sort(), [a!.broker.nodeId, b!.broker.nodeId].sort())
    }
    // B sees A's new count with A's next renewal, a third of a lease later.
    await until('A\'s count as B lists it', async () => (await b!.broker.nodes()).find((node) => node.id === a!.broker.nodeId)?.connections === 3)

    const stoppedAt = Date.now()
    child.kill('SIGSTOP')
    await until('the stopped node to drop out', async () => !pids(await b!.broker.nodes()).includes(child.pid!))
    const elapsed = Date.now() - stoppedAt
    assert.ok(elapsed <= leaseMs + 500, `dropped out after ${elapsed} ms, lease ${leaseMs} ms`)
    assert.deepEqual(pids(await a!.broker.nodes()), [process.pid, process.pid])
  })

  it('sweeps a node that hung past its lease once, and takes its member back when the node wakes', async (t) => {
    const leaseMs = 1500
    const { survivors, child } = await ghostAmongSurvivors(t, leaseMs)

    child.kill('SIGSTOP')
    for (const { node } of survivors) await node.until('the hung node\'s leave', () => node.events('r').some(isLeaveOf(ghost)))
    assert.deepEqual(await survivors[0]!.broker.members('r'), [])
    child.kill('SIGCONT')
    const presence = (node: RecordingNode): string[] => node.events('r').flatMap((e) => e.type === 'presence' && e.member.id === ghost.id ? [e.action] : [])
    for (const { node } of survivors) await node.until('the woken node\'s join', () => presence(node).length === 3)
    for (const { node } of survivors) assert.deepEqual(presence(node), ['join', 'leave', 'join'], 'one leave, whichever node swept')
    assert.deepEqual(await survivors[1]!.broker.members('r'), [ghost])
  })

  it('announces its members again when its lease lapsed and others removed them', async (t) => {
    const prefix = uniquePrefix()
    // A renews its lease every second; B sweeps every 100 ms, so B finds A's lease gone first.
    const [a] = await cluster(t, 1, { prefix, leaseMs: 3000 })
    const [b] = await cluster(t, 1, { prefix, leaseMs: 300 })
    await b!.broker.subscribe('r')
    await a!.broker.publish('r', { type: 'presence', room: 'r', action: 'join', member: alice })
    const admin = new Redis(REDIS_URL)
    t.after(() => admin.disconnect())
    const actions = (): string => b!.node.events('r').map((e) => e.type === 'presence' && e.action).join()
    for (let tries = 0; !actions().includes('leave'); tries++) {
      assert.ok(tries < 50, 'B removes the members of a node whose lease is gone')
      await admin.zrem(new RedisKeys(prefix).registry.leases, a!.broker.nodeId)
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
    await b!.node.until('the member announced again', () => actions().endsWith('leave,join'))
    assert.deepEqual(await b!.broker.members('r'), [alice])
  })

  it('forgets an idle room without members after idleRoomTtl, keeps one with members, and stores nothing for a read', async (t) => {
    const prefix = uniquePrefix()
    const broker = (await cluster(t, 1, { prefix, idleRoomTtl: 300 }))[0]!.broker
    await broker.append('idle', { from: alice, text: 'x', cid: 'c' })
    const { epoch } = await broker.read('idle', { limit: 1 })
    await broker.publish('busy', { type: 'presence', room: 'busy', action: 'join', member: alice })
    await broker.append('busy', { from: alice, text: 'x' })
    await broker.read('never-used', { limit: 10 })
    await new Promise((resolve) => setTimeout(resolve, 700))
    const roomKeys = (await keysUnder(prefix)).filter((key) => key.startsWith(`${prefix}{`))
    const busy = new RedisKeys(prefix).room('busy')
    assert.deepEqual(roomKeys.sort(), [busy.log, busy.members, busy.meta, busy.present].sort())
    const { message } = await broker.append('idle', { from: alice, text: 'again', cid: 'c' })
    assert.equal(message.seq, 1, 'a forgotten room starts again at seq 1')
    assert.notEqual((await broker.read('idle', { limit: 1 })).epoch, epoch, 'under a new epoch')
  })
})
