/**
 * The guarantees every broker keeps (lib/broker.ts). Each broker's test file
 * runs this suite with a factory; a new broker passes it before anything else.
 */
import assert from 'node:assert/strict'
import { hostname } from 'node:os'
import { describe, it, type TestContext } from 'node:test'
import type { Broker } from '../lib/broker.js'
import type { Entry, Member } from '../lib/protocol.js'
import { RecordingNode } from './helpers/recording-node.js'
import { messageChangesContract } from './message-changes-contract.js'

/** Makes a fresh, unopened broker with a store of its own; registers its cleanup on `t`. */
export type BrokerFactory = (t: TestContext) => Broker

const alice: Member = { id: 'a1', user: 'a1', name: 'alice' }
const bob: Member = { id: 'b1', user: 'b1', name: 'bob' }

export function brokerContract (name: string, makeBroker: BrokerFactory, options: { skip?: string | false } = {}): void {
  async function open (t: TestContext, historySize = 100): Promise<{ broker: Broker, node: RecordingNode }> {
    const broker = makeBroker(t)
    const node = new RecordingNode(historySize)
    await broker.open(node)
    return { broker, node }
  }

  describe(`${name} keeps the broker contract`, { skip: options.skip ?? false }, () => {
    messageChangesContract(name, makeBroker)

    it('gives a room seq 1, 2, 3… and stores each message as given', async (t) => {
      const { broker } = await open(t)
      const first = await broker.append('r', { from: alice, text: 'hello' })
      const second = await broker.append('r', { from: bob, text: 'hi', cid: 'c-2' })
      assert.equal(first.duplicate, false)
      assert.equal(first.message.seq, 1)
      assert.equal(second.message.seq, 2)
      assert.deepEqual(second.message.from, bob)
      assert.equal(second.message.text, 'hi')
      assert.equal(second.message.cid, 'c-2')
      assert.equal(second.message.room, 'r')
      assert.notEqual(first.message.id, second.message.id)
      assert.ok(Math.abs(second.message.ts - Date.now()) < 60_000)
      const stored = await broker.read('r', { limit: 10 })
      assert.deepEqual(stored.messages, [first.message, second.message])
      assert.equal((await broker.append('other', { from: alice, text: 'x' })).message.seq, 1, 'each room has its own seq')
    })

    it('stores appends made one after another, without waiting, in the order they were made', async (t) => {
      const { broker } = await open(t)
      const results = await Promise.all(Array.from({ length: 50 }, (_, i) => broker.append('r', { from: alice, text: `m${i}`, cid: `c${i}` })))
      assert.deepEqual(results.map(({ message }) => [message.seq, message.text]), Array.from({ length: 50 }, (_, i) => [i + 1, `m${i}`]))
    })

    it('keeps text of any Unicode and JSON-looking content intact', async (t) => {
      const { broker } = await open(t)
      const text = '"},{"seq":99 ünïcødé 🎉 \\ / \u2028 <b>'
      const { message } = await broker.append('r', { from: { id: 'x', user: 'x', name: 'Zoë "q"' }, text })
      assert.equal(message.text, text)
      assert.deepEqual((await broker.read('r', { limit: 1 })).messages[0], message)
    })

    it('does not store or deliver again a message whose cid the room already stored', async (t) => {
      const { broker, node } = await open(t)
      await broker.subscribe('r')
      const original = await broker.append('r', { from: alice, text: 'once', cid: 'same' })
      const retry = await broker.append('r', { from: alice, text: 'once', cid: 'same' })
      assert.equal(retry.duplicate, true)
      assert.deepEqual(retry.message, original.message)
      const next = await broker.append('r', { from: alice, text: 'two', cid: 'other' })
      assert.equal(next.message.seq, 2)
      assert.equal((await broker.append('elsewhere', { from: alice, text: 'once', cid: 'same' })).duplicate, false, 'cids are per room')
      await node.until('two deliveries', () => node.messages('r').length >= 2)
      assert.deepEqual(node.messages('r').map((m) => m.seq), [1, 2])
    })

    it('recognises a cid whose message was trimmed from the history by its seq', async (t) => {
      const { broker } = await open(t, 3)
      await broker.append('r', { from: alice, text: 'first', cid: 'early' })
      for (let i = 0; i < 5; i++) await broker.append('r', { from: alice, text: `m${i}` })
      const retry = await broker.append('r', { from: alice, text: 'first', cid: 'early' })
      assert.equal(retry.duplicate, true)
      assert.equal(retry.message.seq, 1)
      assert.equal((await broker.read('r', { limit: 10 })).seq, 6)
    })

    it('reads forward after a seq and backward before one, oldest first, telling whether older ones are stored', async (t) => {
      const { broker } = await open(t)
      for (let i = 1; i <= 10; i++) await broker.append('r', { from: alice, text: `m${i}` })
      const seqs = (messages: Entry[]): number[] => messages.map((m) => m.seq)
      const newest = await broker.read('r', { limit: 3 })
      assert.deepEqual([seqs(newest.messages), newest.more, newest.seq], [[8, 9, 10], true, 10])
      const before = await broker.read('r', { before: 8, limit: 3 })
      assert.deepEqual([seqs(before.messages), before.more], [[5, 6, 7], true])
      const oldest = await broker.read('r', { before: 3, limit: 5 })
      assert.deepEqual([seqs(oldest.messages), oldest.more], [[1, 2], false])
      const after = await broker.read('r', { after: 4, limit: 3 })
      assert.deepEqual(seqs(after.messages), [5, 6, 7])
      assert.deepEqual(seqs((await broker.read('r', { after: 8, limit: 50 })).messages), [9, 10])
      assert.deepEqual(seqs((await broker.read('r', { after: 10, limit: 50 })).messages), [])
      const none = await broker.read('r', { limit: 0 })
      assert.deepEqual([none.messages, none.seq], [[], 10])
    })

    it('keeps the newest historySize messages of a room', async (t) => {
      const { broker } = await open(t, 5)
      for (let i = 1; i <= 12; i++) await broker.append('r', { from: alice, text: `m${i}` })
      const all = await broker.read('r', { limit: 100 })
      assert.deepEqual(all.messages.map((m) => m.seq), [8, 9, 10, 11, 12])
      assert.equal(all.more, false)
      assert.deepEqual((await broker.read('r', { after: 2, limit: 2 })).messages.map((m) => m.seq), [8, 9])
    })

    it('gives a room an epoch at its first join or message, and keeps it while its stream lives', async (t) => {
      const { broker } = await open(t)
      const unused = await broker.read('r', { limit: 10 })
      assert.deepEqual([unused.seq, unused.messages, unused.more], [0, [], false])
      await broker.publish('r', { type: 'presence', room: 'r', action: 'join', member: alice })
      const joined = await broker.read('r', { limit: 10 })
      assert.equal(joined.seq, 0)
      assert.ok(joined.epoch.length > 0, 'a join gives the room its epoch')
      await broker.append('r', { from: alice, text: 'x' })
      await broker.append('r', { from: alice, text: 'y' })
      assert.equal((await broker.read('r', { limit: 1 })).epoch, joined.epoch, 'the first message keeps it')
      await broker.append('other', { from: alice, text: 'x' })
      const other = (await broker.read('other', { limit: 1 })).epoch
      assert.ok(other.length > 0, 'a message gives the room its epoch')
      assert.notEqual(other, joined.epoch, 'each room has its own stream')
    })

    it('updates the roster with presence: join adds, rename renames, leave removes; typing changes nothing', async (t) => {
      const { broker } = await open(t)
      assert.deepEqual(await broker.members('r'), [])
      await broker.publish('r', { type: 'presence', room: 'r', action: 'join', member: alice })
      await broker.publish('r', { type: 'presence', room: 'r', action: 'join', member: bob })
      await broker.publish('r', { type: 'typing', room: 'r', member: bob })
      const byId = (members: Member[]): Member[] => [...members].sort((x, y) => x.id.localeCompare(y.id))
      assert.deepEqual(byId(await broker.members('r')), [alice, bob])
      await broker.publish('r', { type: 'presence', room: 'r', action: 'rename', member: { id: alice.id, user: alice.id, name: 'alicia' } })
      assert.deepEqual(byId(await broker.members('r')), [{ id: alice.id, user: alice.id, name: 'alicia' }, bob])
      await broker.append('r', { from: bob, text: 'x' })
      assert.deepEqual(await broker.rooms(), [{ room: 'r', members: 2, seq: 1 }])
      await broker.publish('r', { type: 'presence', room: 'r', action: 'leave', member: bob })
      assert.deepEqual(await broker.members('r'), [{ id: alice.id, user: alice.id, name: 'alicia' }])
      await broker.publish('r', { type: 'presence', room: 'r', action: 'leave', member: alice })
      assert.deepEqual(await broker.members('r'), [])
      assert.deepEqual(await broker.rooms(), [], 'a room without members is not listed')
    })

    it('lists rooms with members in code point order, paged by after and limit: every room once', async (t) => {
      const { broker } = await open(t)
      // Code point order, which UTF-16 order is not for '😀' (a surrogate pair) and '\uffee'.
      const names = ['b', 'a', 'c', 'c:1', 'z', 'é', '\uffee', '😀']
      const ordered = ['a', 'b', 'c', 'c:1', 'z', 'é', '\uffee', '😀']
      for (const room of names) await broker.publish(room, { type: 'presence', room, action: 'join', member: alice })
      await broker.publish('c', { type: 'presence', room: 'c', action: 'join', member: bob })
      await broker.append('c', { from: bob, text: 'x' })
      await broker.publish('gone', { type: 'presence', room: 'gone', action: 'join', member: bob })
      await broker.publish('gone', { type: 'presence', room: 'gone', action: 'leave', member: bob })
      const all = await broker.rooms()
      assert.deepEqual(all.map((info) => info.room), ordered)
      assert.deepEqual(all.find((info) => info.room === 'c'), { room: 'c', members: 2, seq: 1 })
      const paged = []
      let after: string | undefined
      for (let pages = 0; pages < 10; pages++) {
        const page = await broker.rooms({ after, limit: 3 })
        paged.push(...page)
        if (page.length < 3) break
        after = page.at(-1)!.room
      }
      assert.deepEqual(paged, all)
      assert.deepEqual((await broker.rooms({ after: 'c', limit: 2 })).map((info) => info.room), ['c:1', 'z'])
      assert.deepEqual(await broker.rooms({ after: '😀' }), [])
    })

    it('refuses a join over maxMembers atomically, even when joins race, and does not deliver a leave of a non-member', async (t) => {
      const { broker, node } = await open(t)
      await broker.subscribe('r')
      const joins = Array.from({ length: 8 }, (_, i) =>
        broker.publish('r', { type: 'presence', room: 'r', action: 'join', member: { id: `m${i}`, user: `m${i}`, name: `m${i}` } }, { maxMembers: 3 }))
      const outcomes = await Promise.allSettled(joins)
      assert.equal(outcomes.filter((o) => o.status === 'fulfilled').length, 3)
      for (const outcome of outcomes) {
        if (outcome.status === 'rejected') assert.equal((outcome.reason as { code?: string }).code, 'room_full')
      }
      assert.equal((await broker.members('r')).length, 3)
      const inside = (await broker.members('r'))[0] as Member
      await broker.publish('r', { type: 'presence', room: 'r', action: 'rename', member: { ...inside, name: 'renamed' } }, { maxMembers: 3 })
      await broker.publish('r', { type: 'presence', room: 'r', action: 'leave', member: { id: 'm-none', user: 'm-none', name: 'ghost' } })
      await broker.publish('r', { type: 'typing', room: 'r', member: inside })
      await node.until('the typing event', () => node.events('r').some((e) => e.type === 'typing'))
      const presence = node.events('r').filter((e) => e.type === 'presence')
      assert.deepEqual(presence.map((e) => e.type === 'presence' ? e.action : ''), ['join', 'join', 'join', 'rename'], 'no refused join and no ghost leave was delivered')
    })

    it('delivers a room\'s events only while the node is subscribed to it', async (t) => {
      const { broker, node } = await open(t)
      await broker.append('r', { from: alice, text: 'before' })
      await broker.subscribe('r')
      await broker.append('r', { from: alice, text: 'during' })
      await node.until('the message sent while subscribed', () => node.messages('r').length >= 1)
      await broker.unsubscribe('r')
      await broker.append('r', { from: alice, text: 'after' })
      await broker.publish('r', { type: 'typing', room: 'r', member: alice })
      // Events reach a node in the order they were published: once a later
      // one from another room arrived, nothing more from `r` is on its way.
      await broker.subscribe('probe')
      await broker.append('probe', { from: alice, text: 'probe' })
      await node.until('the probe', () => node.messages('probe').length === 1)
      assert.deepEqual(node.events('r').map((event) => event.type === 'message' && event.text), ['during'])
    })

    it('delivers the first stream of a room subscribed before it had one from seq 1, without calling it out of sync', async (t) => {
      const { broker, node } = await open(t)
      await broker.subscribe('new')
      for (const text of ['m1', 'm2', 'm3']) await broker.append('new', { from: alice, text })
      await node.until('three messages', () => node.messages('new').length === 3)
      assert.deepEqual(node.messages('new').map(({ seq, text }) => [seq, text]), [[1, 'm1'], [2, 'm2'], [3, 'm3']])
      assert.deepEqual(node.outOfSyncs, [], 'a stream that begins is not one that began again')
    })

    it('delivers concurrent appends and presence in seq order, with no gap and no duplicate', async (t) => {
      const { broker, node } = await open(t)
      await broker.subscribe('r')
      await broker.publish('r', { type: 'presence', room: 'r', action: 'join', member: alice })
      const sends = Array.from({ length: 60 }, (_, i) => broker.append('r', { from: alice, text: `m${i}`, cid: `c${i % 40}` }))
      const results = await Promise.all(sends)
      assert.equal(results.filter((r) => !r.duplicate).length, 40)
      await broker.publish('r', { type: 'presence', room: 'r', action: 'leave', member: alice })
      await node.until('the leave', () => node.events('r').some((e) => e.type === 'presence' && e.action === 'leave'))
      const events = node.events('r')
      assert.deepEqual(events.map((e) => e.type === 'message' ? e.seq : e.type), [
        'presence', ...Array.from({ length: 40 }, (_, i) => i + 1), 'presence',
      ])
      assert.deepEqual(node.messages('r'), (await broker.read('r', { limit: 100 })).messages)
    })

    it('lists itself as a live node, with its host, pid and a connection count that follows the node\'s', async (t) => {
      const broker = makeBroker(t)
      const node = new RecordingNode()
      node.connectionCount = 2
      const before = Date.now()
      await broker.open(node)
      const listed = await broker.nodes()
      assert.equal(listed.length, 1, 'a store of its own holds this node only')
      const self = listed[0]!
      assert.ok(self.id.length > 0)
      assert.deepEqual({ host: self.host, pid: self.pid, connections: self.connections }, { host: hostname(), pid: process.pid, connections: 2 })
      assert.ok(self.startedAt >= before && self.startedAt <= Date.now(), 'startedAt is when it opened')
      assert.ok(Math.abs(self.lastSeen - Date.now()) < 60_000)
      node.connectionCount = 5
      // Another node may see the count one renewal late; the broker's own listing follows within that.
      const deadline = Date.now() + 10_000
      let now = self
      while (now.connections !== 5) {
        assert.ok(Date.now() < deadline, `connections still ${now.connections}, expected 5`)
        await new Promise((resolve) => setTimeout(resolve, 50))
        now = (await broker.nodes())[0]!
      }
      assert.equal(now.id, self.id)
    })

    it('says first on a user\'s first join and last on its last leave, once each even when tabs race', async (t) => {
      const { broker, node } = await open(t)
      await broker.subscribe('r')
      const tab = (n: number): Member => ({ id: `carol.${n}`, user: 'carol', name: 'carol' })
      await Promise.all([0, 1, 2].map((n) => broker.publish('r', { type: 'presence', room: 'r', action: 'join', member: tab(n) })))
      await broker.publish('r', { type: 'presence', room: 'r', action: 'join', member: alice })
      await broker.publish('r', { type: 'presence', room: 'r', action: 'rename', member: { ...tab(0), name: 'caz' } })
      await Promise.all([0, 1, 2].map((n) => broker.publish('r', { type: 'presence', room: 'r', action: 'leave', member: tab(n) })))
      await node.until('six joins and leaves', () => node.events('r').filter((e) => e.type === 'presence' && e.action !== 'rename').length === 7)
      const presence = node.events('r').filter((e) => e.type === 'presence')
      const joins = presence.filter((e) => e.action === 'join' && e.member.user === 'carol')
      const leaves = presence.filter((e) => e.action === 'leave')
      assert.deepEqual(joins.map((e) => e.first).sort(), [false, false, true], 'one first join of three tabs')
      assert.deepEqual(leaves.map((e) => e.last).sort(), [false, false, true], 'one last leave of three tabs')
      assert.equal(presence.find((e) => e.member.user === 'a1')?.first, true, 'another user is first on its own')
      const rename = presence.find((e) => e.action === 'rename')
      assert.ok(rename && rename.first === undefined && rename.last === undefined, 'a rename carries neither')
      assert.deepEqual(await broker.members('r'), [alice])
      await broker.publish('r', { type: 'presence', room: 'r', action: 'join', member: tab(3) })
      await node.until('a new first join', () => node.events('r').filter((e) => e.type === 'presence' && e.action === 'join').length === 5)
      assert.equal((node.events('r').at(-1) as { first?: boolean }).first, true, 'after the last leave the next join is first again')
    })

    it('moves a read marker forward only, never past the latest seq, and tells the room\'s nodes when it moved', async (t) => {
      const { broker, node } = await open(t)
      await broker.subscribe('r')
      await broker.publish('r', { type: 'presence', room: 'r', action: 'join', member: alice })
      for (let i = 0; i < 5; i++) await broker.append('r', { from: bob, text: `m${i}` })
      assert.deepEqual(await broker.userState('r', 'a1'), { read: 0 }, 'no marker yet')
      assert.deepEqual(await broker.changeUser('r', 'a1', { kind: 'read', seq: 3 }, 'a1.tab'), { state: { read: 3 }, changed: true })
      assert.deepEqual(await broker.changeUser('r', 'a1', { kind: 'read', seq: 2 }), { state: { read: 3 }, changed: false }, 'never back')
      assert.deepEqual(await broker.changeUser('r', 'a1', { kind: 'read', seq: 99 }), { state: { read: 5 }, changed: true }, 'capped at the latest seq')
      assert.deepEqual(await broker.changeUser('r', 'a1', { kind: 'read', seq: 99 }), { state: { read: 5 }, changed: false })
      assert.deepEqual(await broker.userState('r', 'a1'), { read: 5 })
      assert.deepEqual(await broker.userState('r', 'b1'), { read: 0 }, 'markers are per user')
      assert.deepEqual((await broker.changeUser('empty', 'a1', { kind: 'read', seq: 4 })).state, { read: 0 }, 'a room without messages has nothing to read')
      await node.until('two marker events', () => node.userEvents('r').length === 2)
      assert.deepEqual(node.userEvents('r'), [
        { type: 'user', room: 'r', user: 'a1', change: { kind: 'read', seq: 3 }, connection: 'a1.tab' },
        { type: 'user', room: 'r', user: 'a1', change: { kind: 'read', seq: 5 } },
      ])
    })

    it('refuses a banned user\'s join and append and a muted user\'s append until lifted, and tells the room\'s nodes', async (t) => {
      const { broker, node } = await open(t)
      await broker.subscribe('r')
      const join = (member: Member): Promise<void> => broker.publish('r', { type: 'presence', room: 'r', action: 'join', member })
      assert.deepEqual(await broker.changeUser('r', 'b1', { kind: 'ban' }), { state: { read: 0, ban: {} }, changed: true })
      await assert.rejects(join(bob), (error: { code?: string }) => error.code === 'forbidden')
      assert.deepEqual(await broker.members('r'), [], 'a refused join changes no roster')
      // A node that missed the ban's kick (cut off from the store) still has the user as a member: its sends are refused.
      await assert.rejects(broker.append('r', { from: bob, text: 'banned' }), (error: { code?: string, message?: string }) => error.code === 'forbidden' && /banned/.test(error.message ?? ''))
      await join(alice)
      assert.deepEqual(await broker.changeUser('r', 'a1', { kind: 'mute' }), { state: { read: 0, mute: {} }, changed: true })
      await assert.rejects(broker.append('r', { from: alice, text: 'muted' }), (error: { code?: string }) => error.code === 'forbidden')
      assert.equal((await broker.read('r', { limit: 10 })).messages.length, 0, 'a refused append stores nothing')
      assert.equal((await broker.append('r', { from: { id: 'a2', user: 'a2', name: 'alice' }, text: 'other user' })).message.seq, 1)
      const listed = await broker.moderation('r')
      assert.deepEqual(listed.sort((x, y) => x.user.localeCompare(y.user)), [{ user: 'a1', mute: {} }, { user: 'b1', ban: {} }])
      assert.deepEqual(await broker.changeUser('r', 'b1', { kind: 'ban' }), { state: { read: 0, ban: {} }, changed: false }, 'the same ban again changes nothing')
      assert.deepEqual(await broker.changeUser('r', 'b1', { kind: 'unban' }), { state: { read: 0 }, changed: true })
      assert.deepEqual(await broker.changeUser('r', 'a1', { kind: 'unmute' }), { state: { read: 0 }, changed: true })
      assert.deepEqual(await broker.changeUser('r', 'a1', { kind: 'unmute' }), { state: { read: 0 }, changed: false })
      await join(bob)
      assert.equal((await broker.append('r', { from: alice, text: 'free' })).message.seq, 2)
      assert.deepEqual(await broker.moderation('r'), [])
      assert.deepEqual(await broker.changeUser('r', 'b1', { kind: 'kick' }), { state: { read: 0 }, changed: true }, 'a kick stores nothing')
      await node.until('five user events', () => node.userEvents('r').length === 5)
      assert.deepEqual(node.userEvents('r').map(({ user, change }) => [user, change.kind]),
        [['b1', 'ban'], ['a1', 'mute'], ['b1', 'unban'], ['a1', 'unmute'], ['b1', 'kick']])
    })

    it('ends a ban or mute with until by itself, and a later one replaces an earlier one', async (t) => {
      const { broker } = await open(t)
      const until = Date.now() + 600
      assert.deepEqual((await broker.changeUser('r', 'b1', { kind: 'ban', until })).state, { read: 0, ban: { until } })
      assert.deepEqual((await broker.changeUser('r', 'a1', { kind: 'mute', until })).state, { read: 0, mute: { until } })
      assert.deepEqual(await broker.userState('r', 'b1'), { read: 0, ban: { until } })
      await assert.rejects(broker.publish('r', { type: 'presence', room: 'r', action: 'join', member: bob }), (error: { code?: string }) => error.code === 'forbidden')
      await assert.rejects(broker.append('r', { from: alice, text: 'x' }), (error: { code?: string }) => error.code === 'forbidden')
      const forever = await broker.changeUser('r', 'c1', { kind: 'ban', until: Date.now() + 600 })
      assert.deepEqual((await broker.changeUser('r', 'c1', { kind: 'ban' })).state, { read: 0, ban: {} }, 'a ban without until replaces one with')
      assert.ok(forever.changed)
      await new Promise((resolve) => setTimeout(resolve, until - Date.now() + 50))
      assert.deepEqual(await broker.userState('r', 'b1'), { read: 0 }, 'the ban ended')
      await broker.publish('r', { type: 'presence', room: 'r', action: 'join', member: bob })
      assert.equal((await broker.append('r', { from: alice, text: 'after' })).message.seq, 1, 'the mute ended')
      assert.deepEqual(await broker.moderation('r'), [{ user: 'c1', ban: {} }])
    })

    it('signals every node, its own included', async (t) => {
      const { broker, node } = await open(t)
      await broker.signal({ type: 'disconnect-user', user: 'a1' })
      await node.until('the signal', () => node.signals.length === 1)
      assert.deepEqual(node.signals, [{ type: 'disconnect-user', user: 'a1' }])
    })

    it('delivers presence and typing to the subscribed node, its own included', async (t) => {
      const { broker, node } = await open(t)
      await broker.subscribe('r')
      await broker.publish('r', { type: 'presence', room: 'r', action: 'join', member: alice })
      await broker.publish('r', { type: 'typing', room: 'r', member: alice })
      await node.until('the typing event', () => node.events('r').length === 2)
      assert.deepEqual(node.events('r'), [
        { type: 'presence', room: 'r', action: 'join', member: alice, first: true },
        { type: 'typing', room: 'r', member: alice },
      ])
    })
  })
}
