/**
 * The hub's side of users without sockets: what reaches a member still
 * joining (a removal, a marker moved by another tab), and the hub's events.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { MemoryBroker, resolveOptions, type Presence, type ReadRange, type ReadResult, type ServerFrame, type TypingEvent } from '../lib/index.js'
import type { PublishOptions } from '../lib/broker.js'
import { Hub, type MemberLink } from '../lib/hub.js'
import { LEAVE_ECHO_MS } from '../lib/leave-echoes.js'
import { Moderation } from '../lib/moderation.js'

const silent = { info () {}, warn () {}, error () {} }

class Tab implements MemberLink {
  readonly frames: ServerFrame[] = []
  readonly authenticated = true
  constructor (readonly id: string, readonly user: string, public name = user) {}
  deliver (frame: Buffer): void { this.frames.push(JSON.parse(frame.toString()) as ServerFrame) }
  close (): void {}
  types (): string[] { return this.frames.map((frame) => frame.type) }
}

/** A memory broker whose reads wait until `release`: a join stays between its presence and its `joined`. */
class SlowReads extends MemoryBroker {
  private gate: Promise<void> | undefined
  release: () => void = () => {}
  hold (): void { this.gate = new Promise((resolve) => { this.release = resolve }) }
  override async read (room: string, range: ReadRange): Promise<ReadResult> {
    await this.gate
    return await super.read(room, range)
  }
}

async function setUp (t: import('node:test').TestContext): Promise<{ hub: Hub, broker: SlowReads, moderation: Moderation }> {
  const broker = new SlowReads()
  const options = resolveOptions({})
  const hub = new Hub(broker, options, silent)
  await hub.open()
  t.after(() => hub.close())
  return { hub, broker, moderation: new Moderation(broker, options.roomPattern) }
}

test('a kick reaches a connection still joining: it gets left with the reason, no joined, and is no member', async (t) => {
  const { hub, broker, moderation } = await setUp(t)
  const bob = new Tab('bob.1', 'bob')
  const alice = new Tab('alice.1', 'alice')
  hub.attach(bob)
  hub.attach(alice)
  await hub.join(bob, { type: 'join', room: 'r' })
  broker.hold()
  const joining = hub.join(alice, { type: 'join', room: 'r' })
  while (!bob.frames.some((frame) => frame.type === 'presence')) await new Promise((resolve) => setImmediate(resolve))
  await moderation.kick('r', 'alice')
  broker.release()
  await joining
  assert.deepEqual(alice.frames, [{ type: 'left', room: 'r', reason: 'kicked' }])
  assert.equal(hub.isMember(alice, 'r'), false)
  assert.deepEqual((await hub.members('r')).map((m) => m.id), ['bob.1'])
  assert.deepEqual(bob.frames.filter((frame) => frame.type === 'presence').map((frame) => frame.type === 'presence' && [frame.action, frame.first ?? frame.last]), [['join', true], ['leave', true]])
})

test('a marker moved while another tab joins reaches that tab after its joined', async (t) => {
  const { hub, broker } = await setUp(t)
  const one = new Tab('alice.1', 'alice')
  const two = new Tab('alice.2', 'alice')
  hub.attach(one)
  hub.attach(two)
  await hub.join(one, { type: 'join', room: 'r' })
  for (const text of ['a', 'b']) await hub.broadcast('r', text)
  broker.hold()
  const joining = hub.join(two, { type: 'join', room: 'r' })
  while (!one.frames.some((frame) => frame.type === 'presence')) await new Promise((resolve) => setImmediate(resolve))
  assert.equal(await hub.read(one, { type: 'read', room: 'r', seq: 1 }), 1)
  broker.release()
  await joining
  assert.equal(await hub.read(one, { type: 'read', room: 'r', seq: 2 }), 2)
  const joined = two.frames.find((frame) => frame.type === 'joined')
  assert.equal(joined?.type === 'joined' && joined.read, 0, 'the marker was read before it moved')
  assert.deepEqual(two.types().slice(two.types().indexOf('joined')), ['joined', 'read', 'read'])
  assert.deepEqual(two.frames.filter((frame) => frame.type === 'read'), [{ type: 'read', room: 'r', seq: 1 }, { type: 'read', room: 'r', seq: 2 }], 'each move, in order')
})

test('the hub\'s join and leave events say first and last, as the broker decided them', async (t) => {
  const { hub } = await setUp(t)
  const events: unknown[] = []
  hub.on('join', ({ member, first }) => events.push(['join', member.id, first]))
  hub.on('leave', ({ member, last }) => events.push(['leave', member.id, last]))
  const tabs = [new Tab('alice.1', 'alice'), new Tab('alice.2', 'alice')]
  for (const tab of tabs) {
    hub.attach(tab)
    await hub.join(tab, { type: 'join', room: 'r' })
  }
  await Promise.all(tabs.map((tab) => hub.detach(tab)))
  assert.deepEqual(events, [['join', 'alice.1', true], ['join', 'alice.2', false], ['leave', 'alice.1', false], ['leave', 'alice.2', true]])
  assert.equal(hub.stats().rooms, 0, 'the room is let go once its leaves came back')
})

test(`a leave the broker never delivers back is told without last after ${LEAVE_ECHO_MS} ms, and the room is let go`, async (t) => {
  /** Takes leaves without delivering them, as a broker in trouble may. */
  class LostLeaves extends MemoryBroker {
    override async publish (room: string, event: Presence | TypingEvent, options?: PublishOptions): Promise<void> {
      if (event.type === 'presence' && event.action === 'leave') return
      await super.publish(room, event, options)
    }
  }
  const hub = new Hub(new LostLeaves(), resolveOptions({}), silent)
  await hub.open()
  t.after(() => hub.close())
  const events: unknown[] = []
  hub.on('leave', (event) => events.push(event))
  const tab = new Tab('alice.1', 'alice')
  hub.attach(tab)
  await hub.join(tab, { type: 'join', room: 'r' })
  const started = Date.now()
  await hub.detach(tab)
  assert.ok(Date.now() - started >= LEAVE_ECHO_MS - 10, 'the leave was awaited')
  assert.deepEqual(events, [{ room: 'r', member: { id: 'alice.1', user: 'alice', name: 'alice' } }])
  assert.equal(hub.stats().rooms, 0)
})
