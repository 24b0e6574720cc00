/**
 * PostgresBroker's messages that change, where only a shared database can
 * show it: reactions racing on one message from two nodes, an edit too large
 * for NOTIFY, history trimmed by retention, and a schema of version 2
 * upgraded with its messages. The contract suite (broker-postgres.test.ts)
 * holds the broker to the rest.
 * Needs the PostgreSQL at POSTGRES_URL (default 127.0.0.1:5432, database test).
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { pageMessages } from '../lib/broker.js'
import { migrate } from '../lib/brokers/postgres-schema.js'
import type { Member, Message, Update } from '../lib/protocol.js'
import { EVERY_SCHEMA_VERSION, appliedVersions, asAdmin, cluster, skipUnlessPostgres, uniqueSchema } from './helpers/postgres.js'

const skip = await skipUnlessPostgres()

const alice: Member = { id: 'a1.t1', user: 'a1', name: 'alice' }
const seqs = (count: number): number[] => Array.from({ length: count }, (_, i) => i + 1)

describe('PostgresBroker messages that change', { skip }, () => {
  it('loses no reaction when many users on two nodes react to one message at once, and keeps seq contiguous on both nodes', async (t) => {
    const nodes = await cluster(t, 2)
    await Promise.all(nodes.map(({ broker }) => broker.subscribe('r')))
    await nodes[0]!.broker.append('r', { from: alice, text: 'react to me' })
    const users = Array.from({ length: 40 }, (_, i): Member => ({ id: `u${i}.t`, user: `u${i}`, name: `u${i}` }))
    // Each user reacts on both nodes at once (a retry elsewhere, or two tabs): one of the two changes nothing.
    const results = await Promise.all(users.flatMap((by, i) => nodes.map(({ broker }) =>
      broker.update('r', { by, target: 1, action: 'react', reaction: i % 2 === 0 ? '👍' : '🎉' }))))
    const stored = results.filter((result) => result.update !== undefined)
    assert.equal(stored.length, users.length, 'one stored reaction per user')
    const total = 1 + users.length
    const resumed = await nodes[1]!.broker.read('r', { after: 0, limit: 1000 })
    assert.deepEqual(resumed.messages.map((entry) => entry.seq), seqs(total), 'no gap, no duplicate')
    const [message] = pageMessages((await nodes[1]!.broker.read('r', { limit: 10 })).messages)
    const reacted = [...message?.reactions?.['👍'] ?? [], ...message?.reactions?.['🎉'] ?? []]
    assert.deepEqual(new Set(reacted), new Set(users.map((user) => user.user)), 'every reaction kept')
    assert.equal(reacted.length, users.length)
    for (const { node } of nodes) {
      await node.until('every entry', () => node.entries('r').length === total)
      assert.deepEqual(node.entries('r').slice(1), resumed.messages.slice(1), 'every node delivers the updates a resume replays, in seq order')
    }
  })

  it('delivers an edit too large for NOTIFY to the other node, in order with the messages', async (t) => {
    const [sender, receiver] = await cluster(t, 2)
    await receiver!.broker.subscribe('r')
    await sender!.broker.append('r', { from: alice, text: 'short' })
    const big = '🎉'.repeat(2000) // 8,000 bytes of UTF-8
    await sender!.broker.update('r', { by: alice, target: 1, action: 'edit', text: big })
    await sender!.broker.append('r', { from: alice, text: 'after' })
    await receiver!.node.until('three entries', () => receiver!.node.entries('r').length >= 3)
    const entries = receiver!.node.entries('r')
    assert.deepEqual(entries.map((entry) => [entry.seq, entry.type]), [[1, 'message'], [2, 'update'], [3, 'message']])
    assert.equal((entries[1] as Update).text, big)
  })

  it('deletes updates beyond retention with the messages, and refuses to change a message no longer kept', async (t) => {
    const schema = uniqueSchema()
    const { broker } = (await cluster(t, 1, { schema, retention: { messages: 3 } }))[0]!
    await broker.append('r', { from: alice, text: 'm1' })
    for (const reaction of ['a', 'b', 'c']) await broker.update('r', { by: alice, target: 1, action: 'react', reaction })
    await broker.append('r', { from: alice, text: 'm5' })
    await assert.rejects(broker.update('r', { by: alice, target: 1, action: 'delete' }), { code: 'not_found' })
    await asAdmin(async (client) => {
      for (const table of ['messages', 'updates']) await client.query(`UPDATE "${schema}".${table} SET created_at = now() - interval '1 hour'`)
    })
    assert.equal(await broker.enforceRetention(), 2, 'message 1 and update 2 went; updates 3 and 4 and message 5 are the newest 3')
    const resumed = await broker.read('r', { after: 0, limit: 10 })
    assert.deepEqual([resumed.messages.map((entry) => entry.seq), resumed.more], [[3, 4, 5], false])
  })

  it('migrates a schema of version 2 in place: its messages read as they were and can be changed', async (t) => {
    const schema = uniqueSchema()
    // A message stored before members had users (protocol 1), and one after.
    const old: Message = { type: 'message', room: 'r', seq: 1, id: 'm1', from: { id: 'c1', name: 'carol' } as Member, text: 'old 1', ts: 1 }
    const stored: Message = { type: 'message', room: 'r', seq: 2, id: 'm2', from: alice, text: 'old 2', ts: 2, cid: 'c-2' }
    await asAdmin(async (client) => {
      await migrate(client, schema, 2)
      await client.query(`INSERT INTO "${schema}".rooms (room, epoch, seq) VALUES ('r', 'e1', 2)`)
      await client.query(`INSERT INTO "${schema}".messages (room, seq, cid, body) VALUES ('r', 1, NULL, $1), ('r', 2, 'c-2', $2)`,
        [JSON.stringify(old), JSON.stringify(stored)])
    })
    const { broker } = (await cluster(t, 1, { schema }))[0]!
    assert.deepEqual(await appliedVersions(schema), EVERY_SCHEMA_VERSION)
    const carol: Member = { id: 'c1', user: 'c1', name: 'carol' }
    const page = await broker.read('r', { limit: 10 })
    assert.deepEqual([page.epoch, page.seq, page.more], ['e1', 2, false])
    assert.deepEqual(page.messages, [{ ...old, from: carol }, stored], 'old messages read unchanged')
    assert.deepEqual(await broker.update('r', { by: alice, target: 2, action: 'edit', text: 'new 2', cid: 'c-2' }), { seq: 2, duplicate: true }, 'an old cid is a retry')
    const edit = await broker.update('r', { by: alice, target: 2, action: 'edit', text: 'new 2' })
    assert.equal(edit.seq, 3)
    assert.equal((await broker.update('r', { by: carol, target: 1, action: 'delete' })).seq, 4, 'the old message\'s author, by its connection id, may delete it')
    assert.equal((await broker.append('r', { from: alice, text: 'm5' })).message.seq, 5)
    const after = await broker.read('r', { after: 0, limit: 10 })
    assert.deepEqual(after.messages.map((entry) => [entry.seq, entry.type]), [[1, 'message'], [2, 'message'], [3, 'update'], [4, 'update'], [5, 'message']])
    assert.deepEqual(after.messages.slice(0, 2), [
      { type: 'message', room: 'r', seq: 1, id: 'm1', from: carol, text: '', ts: 1, deleted: true },
      { ...stored, text: 'new 2', edited: edit.update?.ts },
    ])
  })
})
