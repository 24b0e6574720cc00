/** The hub without sockets: fake members, the memory broker, assertions on frames. */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { MemoryBroker, resolveOptions, ChatError, type ServerFrame, type ChatRoomsOptions, type Message, type ReadRange, type ReadResult } from '../lib/index.js'
import { Hub, MAX_EVENTS_HELD_WHILE_JOINING, type MemberLink } from '../lib/hub.js'
import { hubApi } from '../lib/hub-api.js'
import { Moderation } from '../lib/moderation.js'

const silent = { info () {}, warn () {}, error () {} }

class FakeMember implements MemberLink {
  readonly frames: ServerFrame[] = []
  readonly raw: Buffer[] = []
  closedWith: number | undefined
  readonly user: string
  constructor (readonly id: string, public name: string, readonly authenticated = false, user?: string) {
    this.user = user ?? id
  }
  deliver (frame: Buffer): void {
    this.raw.push(frame)
    this.frames.push(JSON.parse(frame.toString()) as ServerFrame)
  }

  close (code: number): void {
    this.closedWith = code
  }

  of<T extends ServerFrame['type']> (type: T): Array<Extract<ServerFrame, { type: T }>> {
    return this.frames.filter((frame) => frame.type === type) as Array<Extract<ServerFrame, { type: T }>>
  }
}

async function makeHub (t: import('node:test').TestContext, options: ChatRoomsOptions = {}): Promise<Hub> {
  const hub = new Hub(new MemoryBroker(), resolveOptions(options), silent)
  await hub.open()
  t.after(() => hub.close())
  return hub
}

async function member (hub: Hub, id: string, ...rooms: string[]): Promise<FakeMember> {
  const link = new FakeMember(id, id)
  hub.attach(link)
  for (const room of rooms) await hub.join(link, { type: 'join', room })
  return link
}

test('a fan-out encodes each event once and hands the same bytes to every member', async (t) => {
  const hub = await makeHub(t)
  const members = await Promise.all(['a', 'b', 'c'].map((id) => member(hub, id, 'r')))
  await hub.broadcast('r', 'hello')
  const frames = members.map((m) => m.raw.at(-1))
  assert.ok(frames.every((frame) => frame === frames[0]), 'one Buffer shared by all recipients')
  assert.equal(members[0]?.of('message')[0]?.from.id, 'server')
})

test('members of other rooms receive nothing', async (t) => {
  const hub = await makeHub(t)
  const inside = await member(hub, 'in', 'r')
  const outside = await member(hub, 'out', 'other')
  await hub.send(inside, { type: 'send', room: 'r', text: 'x' })
  assert.equal(inside.of('message').length, 1)
  assert.equal(outside.of('message').length, 0)
})

test('room and member maps are not confused by __proto__ or constructor', async (t) => {
  const hub = await makeHub(t, { roomPattern: '^.{1,64}$' })
  const proto = await member(hub, '__proto__', '__proto__', 'constructor', 'hasOwnProperty')
  const other = await member(hub, 'constructor', '__proto__')
  await hub.send(proto, { type: 'send', room: '__proto__', text: 'x' })
  assert.equal(other.of('message').length, 1)
  assert.deepEqual((await hub.members('__proto__')).map((m) => m.id).sort(), ['__proto__', 'constructor'])
  assert.deepEqual((await hub.rooms()).map((r) => r.room).sort(), ['__proto__', 'constructor', 'hasOwnProperty'])
  assert.equal(({} as Record<string, unknown>).x, undefined)
})

test('detach leaves every room, tells the others, and forgets empty rooms', async (t) => {
  const hub = await makeHub(t)
  const a = await member(hub, 'a', 'r1', 'r2')
  const b = await member(hub, 'b', 'r1')
  await hub.detach(a)
  assert.deepEqual(b.of('presence').map((p) => `${p.action}:${p.member.id}`), ['leave:a'])
  assert.equal(hub.stats().rooms, 1, 'r2 had only a')
  assert.deepEqual(await hub.rooms(), [{ room: 'r1', members: 1, seq: 0 }])
  assert.equal(hub.stats().connections, 1)
})

test('events: message, join and leave are emitted for this node', async (t) => {
  const hub = await makeHub(t)
  const seen: string[] = []
  hub.on('join', ({ room, member }) => seen.push(`join ${room} ${member.id}`))
  hub.on('leave', ({ room, member }) => seen.push(`leave ${room} ${member.id}`))
  hub.on('message', (message) => seen.push(`message ${message.room} ${message.seq}`))
  const a = await member(hub, 'a', 'r')
  await hub.send(a, { type: 'send', room: 'r', text: 'x' })
  await hub.leave(a, 'r')
  assert.deepEqual(seen, ['join r a', 'message r 1', 'leave r a'])
})

test('a join works with historySize: 0, while other members send and type during it', async (t) => {
  const hub = await makeHub(t, { historySize: 0, historyOnJoin: 0 })
  const a = await member(hub, 'a', 'r')
  const b = await member(hub, 'b', 'r')
  const joiner = new FakeMember('c', 'c')
  hub.attach(joiner)
  const joining = hub.join(joiner, { type: 'join', room: 'r' })
  // From here the joiner's events are held until `joined`: each step lets the join move on by one microtask.
  const requests: Array<Promise<unknown>> = []
  for (let i = 1; i <= 30; i++) {
    requests.push(hub.typing(a, 'r'), hub.send(i % 2 === 0 ? a : b, { type: 'send', room: 'r', text: `m${i}` }))
    await Promise.resolve()
  }
  await joining
  await Promise.all(requests)
  assert.equal(joiner.closedWith, undefined, 'not closed as too far behind')
  const [joined] = joiner.of('joined')
  assert.equal(joiner.frames[0], joined, 'joined comes first')
  assert.deepEqual(joined?.history, [], 'nothing is stored')
  assert.ok(joiner.of('typing').length > 0, 'typing held during the join was delivered after it')
  const after = Array.from({ length: 30 - (joined?.seq ?? 0) }, (_, i) => (joined?.seq ?? 0) + i + 1)
  assert.deepEqual(joiner.of('message').map((m) => m.seq), after, 'every message after the snapshot, once, in order')
})

test('an update made while a member joins is in its joined or delivered after it, never both', async (t) => {
  /** Makes an update just before the join's snapshot is read: the joiner is held it, and the snapshot holds it too. */
  class UpdateBeforeRead extends MemoryBroker {
    updateNext = false
    override async read (room: string, range: ReadRange): Promise<ReadResult> {
      if (this.updateNext) {
        this.updateNext = false
        await this.update(room, { by: { id: 'a', user: 'a', name: 'a' }, target: 1, action: 'edit', text: 'edited' })
      }
      return await super.read(room, range)
    }
  }
  const broker = new UpdateBeforeRead()
  const hub = new Hub(broker, resolveOptions({}), silent)
  await hub.open()
  t.after(() => hub.close())
  const a = await member(hub, 'a', 'r')
  await hub.send(a, { type: 'send', room: 'r', text: 'first' })
  const joiner = new FakeMember('c', 'c')
  hub.attach(joiner)
  broker.updateNext = true
  await hub.join(joiner, { type: 'join', room: 'r', since: 0 })
  assert.deepEqual(joiner.of('joined')[0]?.history.map((entry) => entry.seq), [1, 2])
  assert.equal(joiner.of('update').length, 0, 'the held copy is not delivered again')
  assert.deepEqual(a.of('update').map((update) => update.seq), [2], 'and the others get it live, encoded once')
})

test(`a joiner is held up to ${MAX_EVENTS_HELD_WHILE_JOINING} events behind; one more closes it with 4008`, async (t) => {
  const hub = await makeHub(t)
  await member(hub, 'a', 'r')
  for (const [id, behind] of [['c', MAX_EVENTS_HELD_WHILE_JOINING], ['d', MAX_EVENTS_HELD_WHILE_JOINING + 1]] as const) {
    const joiner = new FakeMember(id, id)
    hub.attach(joiner)
    const joining = hub.join(joiner, { type: 'join', room: 'r' })
    // The memory broker delivers within append, so all of these arrive while the join waits.
    await Promise.all(Array.from({ length: behind }, (_, i) => hub.broadcast('r', `${id}${i}`)))
    await joining
    assert.equal(joiner.closedWith, behind > MAX_EVENTS_HELD_WHILE_JOINING ? 4008 : undefined, `${behind} behind`)
  }
})

test('a join that the broker fails leaves no membership behind', async (t) => {
  class FailingRead extends MemoryBroker {
    override async read (): Promise<never> { throw new ChatError('unavailable', 'down') }
  }
  const hub = new Hub(new FailingRead(), resolveOptions({}), silent)
  await hub.open()
  t.after(() => hub.close())
  const a = new FakeMember('a', 'a')
  hub.attach(a)
  await assert.rejects(hub.join(a, { type: 'join', room: 'r' }), /down/)
  assert.equal(hub.isMember(a, 'r'), false)
  assert.equal(hub.stats().rooms, 0)
  assert.deepEqual(await hub.members('r'), [], 'the announced join was taken back')
})

test('the public API\'s on, once and off reach the hub\'s events', async (t) => {
  const hub = await makeHub(t)
  // Only the events are used here: the moderation calls' broker is never asked.
  const api = hubApi(hub, new Moderation(new MemoryBroker(), resolveOptions({}).roomPattern))
  const seen: string[] = []
  const listener = (message: Message): void => { seen.push(`on ${message.text}`) }
  api.on('message', listener).once('message', (message) => { seen.push(`once ${message.text}`) })
  await api.broadcast('r', '1')
  api.off('message', listener)
  await api.broadcast('r', '2')
  assert.deepEqual(seen, ['on 1', 'once 1'])
})

test('stats count connections, rooms and messages', async (t) => {
  const hub = await makeHub(t)
  await member(hub, 'a', 'r1', 'r2')
  await member(hub, 'b', 'r1')
  await hub.broadcast('r1', 'x')
  const stats = hub.stats()
  assert.deepEqual({ connections: stats.connections, rooms: stats.rooms }, { connections: 2, rooms: 2 })
})

test('broadcast validates the room and text like a member message', async (t) => {
  const hub = await makeHub(t, { maxTextLength: 5 })
  await assert.rejects(hub.broadcast('bad room', 'x'), /room: must match/)
  await assert.rejects(hub.broadcast('r', '123456'), /text/)
  await assert.rejects(hub.broadcast('r', 'a\ud800'), /text: must be well-formed Unicode/)
  await assert.rejects(hub.broadcast('r', 'a', { id: 'bot', user: 'bot', name: '\udfff' }), /from: must be well-formed Unicode/)
  const message = await hub.broadcast('r', 'hi', { id: 'bot', user: 'bot', name: 'Bot' })
  assert.deepEqual([message.seq, message.from.name], [1, 'Bot'])
  assert.deepEqual((await hub.history('r')).messages.map((m) => m.text), ['hi'])
})

test('an event listener that throws or rejects is logged and never fails the member\'s request', async (t) => {
  const logged: string[] = []
  const log = { info () {}, warn () {}, error (_obj: object, msg?: string) { logged.push(msg ?? '') } }
  const hub = new Hub(new MemoryBroker(), resolveOptions({}), log)
  await hub.open()
  t.after(() => hub.close())
  hub.on('message', () => { throw new Error('listener bug') })
  hub.on('join', async () => { throw new Error('async listener bug') })
  const a = await member(hub, 'a', 'r')
  const stored = await hub.send(a, { type: 'send', room: 'r', text: 'still stored' })
  assert.equal(stored.seq, 1)
  assert.equal(a.of('message').length, 1)
  await new Promise((resolve) => setImmediate(resolve))
  assert.deepEqual(logged.sort(), ['a chat hub listener failed', 'a chat hub listener threw'])
})

test('a connection opens new rooms at a bounded rate: a burst of 20, then too_many_rooms; rooms with members here do not count', async (t) => {
  const hub = await makeHub(t)
  const host = await member(hub, 'host', 'popular')
  const opener = await member(hub, 'opener')
  const outcomes: string[] = []
  // 40 fresh rooms, each joined and left at once: without a bound, this makes rooms as fast as the rate limit allows.
  for (let i = 0; i < 40; i++) {
    try {
      await hub.join(opener, { type: 'join', room: `fresh-${i}` })
      await hub.leave(opener, `fresh-${i}`)
      outcomes.push('joined')
    } catch (error) {
      outcomes.push(error instanceof ChatError ? error.code : String(error))
    }
  }
  assert.deepEqual(outcomes.slice(0, 20), Array(20).fill('joined'), 'a burst of 20, as many as maxRoomsPerConnection')
  // One room every 5 s refills the bucket; however slow the machine, 20 more cannot all have come back in this loop.
  assert.ok(outcomes.slice(20).includes('too_many_rooms'), outcomes.join(' '))
  assert.ok(outcomes.slice(20).every((outcome) => outcome === 'joined' || outcome === 'too_many_rooms'), outcomes.join(' '))
  // Joining a room that already has members on this node creates nothing.
  await hub.join(opener, { type: 'join', room: 'popular' })
  assert.equal(host.of('presence').at(-1)?.member.id, 'opener')
})

test('a join the memory broker cannot make a room for is refused with unavailable, and leaves nothing behind', async (t) => {
  const hub = new Hub(new MemoryBroker({ maxRooms: 2 }), resolveOptions({}), silent)
  await hub.open()
  t.after(() => hub.close())
  for (const room of ['a', 'b']) await hub.broadcast(room, 'kept')
  const link = await member(hub, 'x')
  await assert.rejects(hub.join(link, { type: 'join', room: 'c' }), (error: unknown) => error instanceof ChatError && error.code === 'unavailable')
  assert.equal(hub.isMember(link, 'c'), false)
  assert.deepEqual(await hub.rooms(), [])
  await hub.join(link, { type: 'join', room: 'a' })
  assert.deepEqual(link.of('joined').at(-1)?.history.map((m) => m.text), ['kept'])
})

test('nick: a guest may rename itself; a connection named by authenticate may not, unless onRename allows it; onRename may refuse anyone', async (t) => {
  const rename = async (hub: Hub, link: FakeMember, name: string): Promise<string> => {
    try {
      await hub.rename(link, name)
      return `renamed ${link.name}`
    } catch (error) {
      return (error as ChatError).code
    }
  }
  const plain = await makeHub(t)
  const guest = new FakeMember('g', 'guest')
  const signedIn = new FakeMember('u1.x', 'alice', true)
  for (const link of [guest, signedIn]) plain.attach(link)
  assert.equal(await rename(plain, guest, 'bob'), 'renamed bob')
  assert.equal(await rename(plain, signedIn, 'bob'), 'forbidden', 'nobody takes another user\'s name')
  assert.equal(signedIn.name, 'alice')

  const asked: Array<[string, string]> = []
  const hooked = await makeHub(t, { onRename: ({ name }, to) => { asked.push([name, to]); return to.startsWith('alice') ? true : to === 'root' ? false : undefined } })
  const guest2 = new FakeMember('g2', 'guest')
  const signedIn2 = new FakeMember('u2.x', 'alice', true)
  for (const link of [guest2, signedIn2]) hooked.attach(link)
  assert.equal(await rename(hooked, signedIn2, 'alice (away)'), 'renamed alice (away)', 'allowed by the hook')
  assert.equal(await rename(hooked, signedIn2, 'mallory'), 'forbidden', 'the hook leaves it to the default')
  assert.equal(await rename(hooked, guest2, 'root'), 'forbidden', 'refused by the hook')
  assert.equal(await rename(hooked, guest2, 'carol'), 'renamed carol')
  assert.deepEqual(asked, [['alice', 'alice (away)'], ['alice (away)', 'mallory'], ['guest', 'root'], ['guest', 'carol']])
})
