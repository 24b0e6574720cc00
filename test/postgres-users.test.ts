/**
 * PostgresBroker's users across nodes and restarts: one `first` and one
 * `last` per user when its connections on two nodes join or leave at once,
 * markers, moderation and signals heard (and enforced) on every node, state that
 * survives a restart, and a schema of version 1 upgraded with its data.
 * Needs the PostgreSQL at POSTGRES_URL (default 127.0.0.1:5432, database test).
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { pageMessages, type UserEvent } from '../lib/broker.js'
import { migrate } from '../lib/brokers/postgres-schema.js'
import type { Member, Presence } from '../lib/protocol.js'
import type { RecordingNode } from './helpers/recording-node.js'
import { EVERY_SCHEMA_VERSION, appliedVersions, asAdmin, cluster, skipUnlessPostgres, uniqueSchema } from './helpers/postgres.js'

const skip = await skipUnlessPostgres()

const bob: Member = { id: 'b1', user: 'bob', name: 'bob' }
const tab = (user: string, n: number | string): Member => ({ id: `${user}.${n}`, user, name: user })
const presence = (room: string, action: Presence['action'], member: Member): Presence => ({ type: 'presence', room, action, member })
const isForbidden = (error: { code?: string }): boolean => error.code === 'forbidden'

/** The presence events `node` heard in `room` for connections whose id starts with `prefix`. */
function heard (node: RecordingNode, room: string, action: Presence['action'], prefix = ''): Presence[] {
  return node.events(room).filter((e): e is Presence => e.type === 'presence' && e.action === action && e.member.id.startsWith(prefix))
}

describe('PostgresBroker users across nodes', { skip }, () => {
  it('says first once when a user\'s connections on two nodes join at once, and last once when they leave at once, every time', async (t) => {
    const nodes = await cluster(t, 2)
    await Promise.all(nodes.map(({ broker }) => broker.subscribe('r')))
    for (let round = 0; round < 20; round++) {
      const tabs = nodes.map((_, n) => tab('carol', `${round}.${n}`))
      await Promise.all(nodes.map(({ broker }, n) => broker.publish('r', presence('r', 'join', tabs[n]!))))
      await Promise.all(nodes.map(({ broker }, n) => broker.publish('r', presence('r', 'leave', tabs[n]!))))
      for (const { node } of nodes) {
        await node.until(`round ${round}'s leaves`, () => heard(node, 'r', 'leave', `carol.${round}.`).length === 2)
        assert.deepEqual(heard(node, 'r', 'join', `carol.${round}.`).map((e) => e.first).sort(), [false, true], `round ${round}: one first`)
        assert.deepEqual(heard(node, 'r', 'leave', `carol.${round}.`).map((e) => e.last).sort(), [false, true], `round ${round}: one last`)
      }
    }
    assert.deepEqual(await nodes[0]!.broker.members('r'), [])
  })

  it('sweeps a closed node\'s members with last only where its user has no connection left', async (t) => {
    const [stays, goes] = await cluster(t, 2)
    await stays!.broker.subscribe('r')
    await stays!.broker.publish('r', presence('r', 'join', tab('carol', 0)))
    for (const member of [tab('carol', 1), tab('carol', 2), tab('erin', 1)]) await goes!.broker.publish('r', presence('r', 'join', member))
    // Closing gives up the lease without a leave: the other node sweeps its members as a crashed node's.
    await goes!.broker.close()
    await stays!.node.until('three swept leaves', () => heard(stays!.node, 'r', 'leave').length === 3)
    assert.deepEqual(heard(stays!.node, 'r', 'leave').map((e) => [e.member, e.last]), [
      [tab('carol', 1), false], [tab('carol', 2), false], [tab('erin', 1), true],
    ])
    await stays!.broker.publish('r', presence('r', 'leave', tab('carol', 0)))
    await stays!.node.until('carol\'s last leave', () => heard(stays!.node, 'r', 'leave').length === 4)
    assert.equal(heard(stays!.node, 'r', 'leave').at(-1)!.last, true)
  })

  it('tells every node of a marker moved on one, after the messages it covers', async (t) => {
    const [a, b] = await cluster(t, 2)
    await Promise.all([a, b].map((n) => n!.broker.subscribe('r')))
    for (let i = 1; i <= 3; i++) await a!.broker.append('r', { from: bob, text: `m${i}` })
    assert.deepEqual(await b!.broker.changeUser('r', 'carol', { kind: 'read', seq: 2 }, 'carol.1'), { state: { read: 2 }, changed: true })
    const read: UserEvent = { type: 'user', room: 'r', user: 'carol', change: { kind: 'read', seq: 2 }, connection: 'carol.1' }
    for (const { node } of [a!, b!]) {
      await node.until('the marker', () => node.userEvents('r').length === 1)
      assert.deepEqual(node.delivered.filter((d) => d.room === 'r').map(({ event }) => event.type === 'message' ? event.seq : event), [1, 2, 3, read])
    }
    assert.deepEqual(await a!.broker.userState('r', 'carol'), { read: 2 })
  })

  it('enforces a ban and a mute set on one node on every node', async (t) => {
    const [a, b] = await cluster(t, 2)
    await Promise.all([a, b].map((n) => n!.broker.subscribe('r')))
    await a!.broker.changeUser('r', 'bob', { kind: 'ban' })
    for (const { broker } of [a!, b!]) await assert.rejects(broker.publish('r', presence('r', 'join', bob)), isForbidden)
    assert.deepEqual(await a!.broker.members('r'), [])
    await b!.broker.changeUser('r', 'carol', { kind: 'mute' })
    for (const { broker } of [a!, b!]) await assert.rejects(broker.append('r', { from: tab('carol', 1), text: 'x' }), isForbidden)
    assert.deepEqual(await a!.broker.moderation('r'), [{ user: 'bob', ban: {} }, { user: 'carol', mute: {} }])
    await b!.broker.changeUser('r', 'bob', { kind: 'unban' })
    await a!.broker.publish('r', presence('r', 'join', bob))
    for (const { node } of [a!, b!]) {
      await node.until('three user events', () => node.userEvents('r').length === 3)
      assert.deepEqual(node.userEvents('r').map(({ user, change }) => [user, change.kind]), [['bob', 'ban'], ['carol', 'mute'], ['bob', 'unban']])
    }
  })

  it('delivers a node signal to every node, the sender included', async (t) => {
    const nodes = await cluster(t, 2)
    await nodes[1]!.broker.signal({ type: 'disconnect-user', user: 'bob' })
    for (const { node } of nodes) {
      await node.until('the signal', () => node.signals.length === 1)
      assert.deepEqual(node.signals, [{ type: 'disconnect-user', user: 'bob' }])
    }
  })

  it('refuses a muted sender\'s append alone: the rest of its batch is stored', async (t) => {
    const [a, b] = await cluster(t, 2)
    await b!.broker.subscribe('r')
    await b!.broker.changeUser('r', 'carol', { kind: 'mute' })
    // Appends made in one turn go to PostgreSQL as one batch.
    const outcomes = await Promise.allSettled([
      a!.broker.append('r', { from: bob, text: 'one' }),
      a!.broker.append('r', { from: tab('carol', 1), text: 'muted' }),
      a!.broker.append('other', { from: tab('carol', 1), text: 'elsewhere' }),
      a!.broker.append('r', { from: bob, text: 'two' }),
    ])
    assert.deepEqual(outcomes.map((o) => o.status === 'fulfilled' ? [o.value.message.room, o.value.message.seq] : (o.reason as { code?: string }).code),
      [['r', 1], 'forbidden', ['other', 1], ['r', 2]])
    await b!.node.until('two messages', () => b!.node.messages('r').length === 2)
    assert.deepEqual(b!.node.messages('r').map((m) => m.text), ['one', 'two'])
  })

  it('ends a ban with until on every node on time', async (t) => {
    const [a, b] = await cluster(t, 2)
    const until = Date.now() + 1000
    await a!.broker.changeUser('r', 'bob', { kind: 'ban', until })
    await assert.rejects(b!.broker.publish('r', presence('r', 'join', bob)), isForbidden)
    assert.deepEqual(await b!.broker.moderation('r'), [{ user: 'bob', ban: { until } }])
    await new Promise((resolve) => setTimeout(resolve, until - Date.now() + 50))
    assert.deepEqual(await b!.broker.moderation('r'), [])
    await b!.broker.publish('r', presence('r', 'join', bob))
    assert.deepEqual(await a!.broker.members('r'), [bob])
  })

  it('keeps markers, bans and mutes when the broker closes and opens again', async (t) => {
    const schema = uniqueSchema()
    const [first] = await cluster(t, 1, { schema })
    for (let i = 1; i <= 3; i++) await first!.broker.append('r', { from: bob, text: `m${i}` })
    const until = Date.now() + 3_600_000
    await first!.broker.changeUser('r', 'carol', { kind: 'read', seq: 2 })
    await first!.broker.changeUser('r', 'bob', { kind: 'ban' })
    await first!.broker.changeUser('r', 'carol', { kind: 'mute', until })
    await first!.broker.close()
    const [again] = await cluster(t, 1, { schema })
    assert.deepEqual(await again!.broker.userState('r', 'carol'), { read: 2, mute: { until } })
    assert.deepEqual(await again!.broker.moderation('r'), [{ user: 'bob', ban: {} }, { user: 'carol', mute: { until } }])
    await assert.rejects(again!.broker.publish('r', presence('r', 'join', bob)), isForbidden)
    await assert.rejects(again!.broker.append('r', { from: tab('carol', 1), text: 'x' }), isForbidden)
  })

  it('migrates a schema of version 1 in place: its messages and members get their users', async (t) => {
    const schema = uniqueSchema()
    const old = (seq: number): string => JSON.stringify({ type: 'message', room: 'r', seq, id: `m${seq}`, from: { id: 'c1', name: 'alice' }, text: `old ${seq}`, ts: 1 })
    await asAdmin(async (client) => {
      await migrate(client, schema, 1)
      await client.query(`INSERT INTO "${schema}".rooms (room, epoch, seq) VALUES ('r', 'e1', 2)`)
      await client.query(`INSERT INTO "${schema}".messages (room, seq, body) VALUES ('r', 1, $1), ('r', 2, $2)`, [old(1), old(2)])
      // A member of a node of the old release whose lease lapses soon after the upgrade: the new node sweeps it.
      await client.query(`INSERT INTO "${schema}".nodes (id, serial, record, last_seen, lease_until)
        VALUES ('old-node', 1, $1, now(), now() + interval '3 seconds')`, [{ id: 'old-node', host: 'old', pid: 1, startedAt: 0, connections: 1 }])
      await client.query(`INSERT INTO "${schema}".members (room, id, name, node, serial) VALUES ('r', 'c1', 'alice', 'old-node', 1)`)
    })
    const { broker, node } = (await cluster(t, 1, { schema }))[0]!
    assert.deepEqual(await appliedVersions(schema), EVERY_SCHEMA_VERSION)
    const { messages, epoch } = await broker.read('r', { limit: 10 })
    assert.equal(epoch, 'e1')
    assert.deepEqual(pageMessages(messages).map((m) => [m.seq, m.from]), [[1, { id: 'c1', user: 'c1', name: 'alice' }], [2, { id: 'c1', user: 'c1', name: 'alice' }]])
    await broker.subscribe('r')
    await node.until('the old member\'s leave', () => heard(node, 'r', 'leave').length === 1)
    assert.deepEqual(heard(node, 'r', 'leave').map((e) => [e.member, e.last]), [[{ id: 'c1', user: 'c1', name: 'alice' }, true]])
    assert.equal((await broker.append('r', { from: bob, text: 'new' })).message.seq, 3)
    assert.deepEqual(await broker.changeUser('r', 'c1', { kind: 'read', seq: 3 }), { state: { read: 3 }, changed: true })
  })
})
