/**
 * The broker contract for messages that change (lib/broker.ts, `update`):
 * edits, deletes and reactions are entries of the room's stream, and stored
 * messages show their current state. `brokerContract` runs it for every broker.
 */
import assert from 'node:assert/strict'
import { describe, it, type TestContext } from 'node:test'
import type { Broker, ReactionLimits, UpdateDraft } from '../lib/broker.js'
import { pageMessages } from '../lib/broker.js'
import { ChatError } from '../lib/errors.js'
import type { Member, Message, Update } from '../lib/protocol.js'
import { RecordingNode } from './helpers/recording-node.js'
import type { BrokerFactory } from './broker-contract.js'

const alice: Member = { id: 'a1.t1', user: 'a1', name: 'alice' }
const aliceTab2: Member = { id: 'a1.t2', user: 'a1', name: 'alice' }
const bob: Member = { id: 'b1', user: 'b1', name: 'bob' }
const server: Member = { id: 'server', user: 'server', name: 'server' }

/** Rejects with a ChatError of `code`. */
async function refused (call: Promise<unknown>, code: string, what: string): Promise<void> {
  await assert.rejects(call, (error: unknown) => error instanceof ChatError && error.code === code, what)
}

export function messageChangesContract (name: string, makeBroker: BrokerFactory): void {
  async function open (t: TestContext, historySize = 100, limits?: ReactionLimits): Promise<{ broker: Broker, node: RecordingNode }> {
    const broker = makeBroker(t)
    const node = new RecordingNode(historySize, limits)
    await broker.open(node)
    return { broker, node }
  }

  async function messages (broker: Broker, room: string, count: number, from = alice): Promise<Message[]> {
    const stored: Message[] = []
    for (let i = 1; i <= count; i++) stored.push((await broker.append(room, { from, text: `m${i}` })).message)
    return stored
  }

  describe(`${name} keeps the contract of messages that change`, () => {
    it('stores edits, deletes and reactions as update entries with the next seq; reads show each message in its current state', async (t) => {
      const { broker, node } = await open(t)
      await broker.subscribe('r')
      const [first, second] = [(await broker.append('r', { from: alice, text: 'helo' })).message, (await broker.append('r', { from: bob, text: 'hi' })).message]
      const edit = await broker.update('r', { by: aliceTab2, target: 1, action: 'edit', text: 'hello "world" 🎉' })
      assert.equal(edit.seq, 3)
      assert.equal(edit.duplicate, false)
      const update = edit.update as Update
      assert.deepEqual({ ...update, ts: 0 }, { type: 'update', room: 'r', seq: 3, target: 1, action: 'edit', by: aliceTab2, ts: 0, text: 'hello "world" 🎉' })
      assert.ok(Math.abs(update.ts - Date.now()) < 60_000)
      const steps: UpdateDraft[] = [
        { by: alice, target: 2, action: 'react', reaction: '👍' },
        { by: bob, target: 2, action: 'react', reaction: '👍' },
        { by: alice, target: 2, action: 'react', reaction: '👍🏽' },
        { by: bob, target: 2, action: 'unreact', reaction: '👍' },
        { by: alice, target: 1, action: 'delete' },
      ]
      const seqs: number[] = []
      for (const step of steps) seqs.push((await broker.update('r', step)).seq)
      assert.deepEqual(seqs, [4, 5, 6, 7, 8])
      const page = await broker.read('r', { limit: 10 })
      assert.deepEqual([page.seq, page.more], [8, false])
      assert.deepEqual(page.messages, [
        { type: 'message', room: 'r', seq: 1, id: first.id, from: alice, ts: first.ts, text: '', deleted: true },
        { ...second, reactions: { '👍': ['a1'], '👍🏽': ['a1'] } },
      ], 'a page holds the messages only, in their current state: a deleted one keeps seq, id, from and ts')
      const after = await broker.read('r', { after: 2, limit: 10 })
      assert.deepEqual(after.messages.map((entry) => [entry.type, entry.seq, entry.type === 'update' ? entry.action : '']), [
        ['update', 3, 'edit'], ['update', 4, 'react'], ['update', 5, 'react'], ['update', 6, 'react'], ['update', 7, 'unreact'], ['update', 8, 'delete'],
      ], 'a read after a seq holds every entry after it, updates included')
      assert.deepEqual(after.messages.at(-1), { type: 'update', room: 'r', seq: 8, target: 1, action: 'delete', by: alice, ts: (after.messages.at(-1) as Update).ts })
      assert.deepEqual((after.messages[3] as Update).reaction, '👍🏽')
      await node.until('every entry delivered', () => node.entries('r').length === 8)
      assert.deepEqual(node.entries('r').map((entry) => entry.seq), [1, 2, 3, 4, 5, 6, 7, 8], 'updates are delivered like messages, in seq order')
      assert.deepEqual(node.entries('r').slice(2), after.messages, 'what is delivered is what a resume replays')
    })

    it('shows an edited message with its new text and the edit\'s time', async (t) => {
      const { broker } = await open(t)
      await broker.append('r', { from: alice, text: 'first' })
      const { update } = await broker.update('r', { by: alice, target: 1, action: 'edit', text: '"},{"seq":99 \\ \u2028 ünï' })
      const [message] = pageMessages((await broker.read('r', { limit: 1 })).messages)
      assert.equal(message?.text, '"},{"seq":99 \\ \u2028 ünï')
      assert.equal(message?.edited, update?.ts)
      const resumed = (await broker.read('r', { after: 0, limit: 10 })).messages
      assert.deepEqual(resumed.map((entry) => entry.type), ['message', 'update'], 'a resume gets the message in its current state, then the update')
      assert.deepEqual(resumed[0], message)
    })

    it('lets only the author edit or delete, any member react, and the server edit or delete any message', async (t) => {
      const { broker } = await open(t)
      await messages(broker, 'r', 2)
      await refused(broker.update('r', { by: bob, target: 1, action: 'edit', text: 'mine now' }), 'forbidden', "bob may not edit alice's message")
      await refused(broker.update('r', { by: bob, target: 1, action: 'delete' }), 'forbidden', "bob may not delete alice's message")
      assert.equal((await broker.read('r', { limit: 1 })).seq, 2, 'a refused change stores nothing')
      assert.equal((await broker.update('r', { by: aliceTab2, target: 1, action: 'edit', text: 'from my other tab' })).seq, 3, "the author's other connection may edit")
      assert.equal((await broker.update('r', { by: bob, target: 1, action: 'react', reaction: '+1' })).seq, 4, 'any member may react')
      assert.equal((await broker.update('r', { by: server, target: 2, action: 'edit', text: 'moderated', asServer: true })).seq, 5)
      assert.equal((await broker.update('r', { by: server, target: 1, action: 'delete', asServer: true })).seq, 6)
      const page = pageMessages((await broker.read('r', { limit: 2 })).messages)
      assert.deepEqual(page.map((m) => [m.text, m.deleted ?? false, m.reactions]), [['', true, undefined], ['moderated', false, undefined]])
    })

    it('answers not_found for a message that was deleted, is not kept, or is no message; nothing is stored', async (t) => {
      const { broker } = await open(t, 3)
      await messages(broker, 'r', 2)
      await broker.update('r', { by: alice, target: 2, action: 'delete' })
      await refused(broker.update('r', { by: alice, target: 2, action: 'edit', text: 'back' }), 'not_found', 'a deleted message cannot be edited')
      await refused(broker.update('r', { by: alice, target: 2, action: 'delete' }), 'not_found', 'nor deleted again')
      await refused(broker.update('r', { by: bob, target: 2, action: 'react', reaction: 'x' }), 'not_found', 'nor reacted to')
      await refused(broker.update('r', { by: alice, target: 3, action: 'react', reaction: 'x' }), 'not_found', 'an update is not a message')
      await refused(broker.update('r', { by: alice, target: 99, action: 'react', reaction: 'x' }), 'not_found', 'a seq never used')
      await refused(broker.update('nowhere', { by: alice, target: 1, action: 'react', reaction: 'x' }), 'not_found', 'a room never used')
      await messages(broker, 'r', 3)
      await refused(broker.update('r', { by: alice, target: 1, action: 'edit', text: 'gone' }), 'not_found', 'a message trimmed from the kept history (historySize 3)')
      assert.equal((await broker.read('r', { limit: 1 })).seq, 6, 'refusals stored nothing')
    })

    it('acknowledges a reaction that changes nothing with the room\'s current seq, storing and delivering nothing', async (t) => {
      const { broker, node } = await open(t)
      await broker.subscribe('r')
      await messages(broker, 'r', 2)
      await broker.update('r', { by: alice, target: 1, action: 'react', reaction: '👍' })
      assert.deepEqual(await broker.update('r', { by: aliceTab2, target: 1, action: 'react', reaction: '👍' }), { seq: 3, duplicate: false }, 'the user already gave it (from another tab)')
      assert.deepEqual(await broker.update('r', { by: bob, target: 1, action: 'unreact', reaction: '👍' }), { seq: 3, duplicate: false }, 'bob never gave it')
      assert.deepEqual(await broker.update('r', { by: bob, target: 2, action: 'unreact', reaction: '🎉' }), { seq: 3, duplicate: false }, 'nobody gave it')
      await broker.append('r', { from: bob, text: 'last' })
      await node.until('the last message', () => node.entries('r').length === 4)
      assert.deepEqual(node.entries('r').map((entry) => entry.seq), [1, 2, 3, 4])
    })

    it('refuses more than maxReactions distinct reactions, or reactions past maxBytes, with too_many_reactions', async (t) => {
      const { broker } = await open(t, 100, { maxReactions: 3, maxBytes: 200 })
      await messages(broker, 'r', 1)
      for (const reaction of ['a', 'b', 'c']) await broker.update('r', { by: alice, target: 1, action: 'react', reaction })
      await refused(broker.update('r', { by: alice, target: 1, action: 'react', reaction: 'd' }), 'too_many_reactions', 'a fourth distinct reaction')
      assert.equal((await broker.update('r', { by: bob, target: 1, action: 'react', reaction: 'a' })).seq, 5, 'another user may still add to one given')
      // Each long user adds 63 bytes as `reactionBytes` counts them: 3 × 7 + 2 × 4 now, so two more fit in 200 and a third does not.
      const long = (n: number): Member => ({ id: `${n}`.padEnd(60, 'u'), user: `${n}`.padEnd(60, 'u'), name: 'long' })
      for (const n of [1, 2]) await broker.update('r', { by: long(n), target: 1, action: 'react', reaction: 'b' })
      await refused(broker.update('r', { by: long(3), target: 1, action: 'react', reaction: 'b' }), 'too_many_reactions', 'past maxBytes')
      assert.equal((await broker.update('r', { by: long(1), target: 1, action: 'unreact', reaction: 'b' })).seq, 8, 'taking one back always works')
      const [message] = pageMessages((await broker.read('r', { limit: 1 })).messages)
      assert.deepEqual(message?.reactions, { a: ['a1', 'b1'], b: ['a1', long(2).user], c: ['a1'] })
    })

    it('refuses a muted or banned user\'s changes with forbidden, but not the server\'s', async (t) => {
      const { broker } = await open(t)
      await messages(broker, 'r', 2)
      await broker.changeUser('r', 'a1', { kind: 'mute' })
      await refused(broker.update('r', { by: alice, target: 1, action: 'edit', text: 'x' }), 'forbidden', 'a muted author may not edit')
      await refused(broker.update('r', { by: alice, target: 1, action: 'react', reaction: 'x' }), 'forbidden', 'nor react')
      await broker.changeUser('r', 'b1', { kind: 'ban' })
      await refused(broker.update('r', { by: bob, target: 2, action: 'react', reaction: 'x' }), 'forbidden', 'a banned user may not react')
      assert.equal((await broker.update('r', { by: server, target: 1, action: 'delete', asServer: true })).seq, 3)
      await broker.changeUser('r', 'a1', { kind: 'unmute' })
      assert.equal((await broker.update('r', { by: alice, target: 2, action: 'react', reaction: 'x' })).seq, 4, 'lifted')
    })

    it('stores a change retried with the same cid once, answering the first seq', async (t) => {
      const { broker, node } = await open(t)
      await broker.subscribe('r')
      await messages(broker, 'r', 1)
      const first = await broker.update('r', { by: alice, target: 1, action: 'edit', text: 'once', cid: 'e-1' })
      assert.equal(first.update?.cid, 'e-1')
      assert.deepEqual(await broker.update('r', { by: alice, target: 1, action: 'edit', text: 'once', cid: 'e-1' }), { seq: 2, duplicate: true })
      const sentWithIt = await broker.append('r', { from: alice, text: 'once', cid: 'e-1' })
      assert.deepEqual([sentWithIt.duplicate, sentWithIt.message.seq], [true, 2], 'a cid names one entry of the room: a send with a change\'s cid is its retry')
      const reacted = await broker.update('r', { by: alice, target: 1, action: 'react', reaction: 'x', cid: 'r-1' })
      await broker.update('r', { by: alice, target: 1, action: 'unreact', reaction: 'x' })
      assert.deepEqual(await broker.update('r', { by: alice, target: 1, action: 'react', reaction: 'x', cid: 'r-1' }), { seq: reacted.seq, duplicate: true }, 'a retry is not a new reaction')
      assert.equal((await broker.append('r', { from: alice, text: 'next' })).message.seq, 5)
      await node.until('every entry', () => node.entries('r').length === 5)
      assert.deepEqual(node.entries('r').map((entry) => entry.seq), [1, 2, 3, 4, 5])
    })

    it('keeps seq contiguous and applies every change once when appends and changes race', async (t) => {
      const { broker, node } = await open(t, 1000)
      await broker.subscribe('r')
      await messages(broker, 'r', 5)
      const users = Array.from({ length: 15 }, (_, i): Member => ({ id: `u${i}`, user: `u${i}`, name: `u${i}` }))
      const calls: Array<Promise<unknown>> = []
      for (const user of users) {
        calls.push(broker.append('r', { from: user, text: `from ${user.user}` }))
        calls.push(broker.update('r', { by: user, target: 1, action: 'react', reaction: '👍' }))
        calls.push(broker.update('r', { by: user, target: 2, action: 'react', reaction: user.user.endsWith('1') ? 'one' : 'other' }))
        calls.push(broker.update('r', { by: alice, target: 3, action: 'edit', text: `edit by ${user.user}` }))
      }
      await Promise.all(calls)
      const total = 5 + calls.length
      const resumed = await broker.read('r', { after: 0, limit: 1000 })
      assert.equal(resumed.seq, total)
      assert.deepEqual(resumed.messages.map((entry) => entry.seq), Array.from({ length: total }, (_, i) => i + 1), 'no gap, no duplicate')
      const current = new Map(pageMessages((await broker.read('r', { limit: 100 })).messages).map((m) => [m.seq, m]))
      assert.deepEqual(new Set(current.get(1)?.reactions?.['👍']), new Set(users.map((u) => u.user)), 'no reaction lost to a race')
      assert.equal(current.get(2)?.reactions?.one?.length, 2)
      assert.equal(current.get(2)?.reactions?.other?.length, 13)
      const lastEdit = resumed.messages.filter((entry): entry is Update => entry.type === 'update' && entry.action === 'edit').at(-1)
      assert.equal(current.get(3)?.text, lastEdit?.text, 'the edit stored last is the text')
      await node.until('every entry delivered', () => node.entries('r').length === total)
      assert.deepEqual(node.entries('r').map((entry) => entry.seq), resumed.messages.map((entry) => entry.seq))
    })

    it('pages messages only: a page of limit skips updates, and more tells whether older messages are kept', async (t) => {
      const { broker } = await open(t)
      await messages(broker, 'r', 3)
      for (let i = 0; i < 6; i++) await broker.update('r', { by: bob, target: 1 + (i % 3), action: 'react', reaction: `r${i}` })
      await broker.append('r', { from: alice, text: 'm4' })
      const newest = await broker.read('r', { limit: 2 })
      assert.deepEqual([newest.messages.map((m) => m.seq), newest.more, newest.seq], [[3, 10], true, 10])
      const older = await broker.read('r', { before: 3, limit: 5 })
      assert.deepEqual([older.messages.map((m) => m.seq), older.more], [[1, 2], false])
      const between = await broker.read('r', { before: 10, limit: 1 })
      assert.deepEqual([between.messages.map((m) => m.seq), between.more], [[3], true], 'updates between are skipped, not counted')
    })
  })
}
