/**
 * Property-based tests (fast-check): the decoder against an independent model
 * of PROTOCOL.md's client messages, invalid UTF-8 over a real socket, and the
 * hub under random join/leave/send/typing/nick/disconnect against a model.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import fc from 'fast-check'
import { MemoryBroker, resolveOptions, createDecoder, isServerFrame, ChatError, ErrorCodes, type ServerFrame, type Message } from '../lib/index.js'
import { Hub, type MemberLink } from '../lib/hub.js'
import { startServer } from './helpers/server.js'
import { RawClient } from './helpers/client.js'

// ------------------------------------------------------------ the decoder

const MAX_TEXT = 20
const decode = createDecoder(resolveOptions({ maxTextLength: MAX_TEXT }))

/** The schema of PROTOCOL.md written out by hand, counting characters as code points. */
const codePoints = (v: string): number => [...v].length
const str = (min: number, max: number) => (v: unknown) => typeof v === 'string' && codePoints(v) >= min && codePoints(v) <= max
const int = (min: number, max = Infinity) => (v: unknown) => typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max
const ROOM_CHARS = /[A-Za-z0-9_.:-]/
const room = (v: unknown): boolean => typeof v === 'string' && v.length >= 1 && v.length <= 64 && [...v].every((c) => ROOM_CHARS.test(c))
type Field = [required: boolean, check: (v: unknown) => boolean]
const MODEL: Record<string, Record<string, Field>> = {
  join: { room: [true, room], since: [false, int(0)], epoch: [false, str(0, 64)] },
  leave: { room: [true, room] },
  send: { room: [true, room], text: [true, str(1, MAX_TEXT)], cid: [false, str(1, 64)] },
  typing: { room: [true, room] },
  nick: { name: [true, str(0, 256)] },
  history: { room: [true, room], before: [false, int(0)], limit: [false, int(1, 100)] },
  ping: {},
}

function expected (data: string): { ok: true } | { ok: false, code: string } {
  let value: unknown
  try { value = JSON.parse(data) } catch { return { ok: false, code: 'bad_json' } }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return { ok: false, code: 'bad_json' }
  const record = value as Record<string, unknown>
  if (typeof record.type !== 'string') return { ok: false, code: 'invalid' }
  if (!Object.hasOwn(MODEL, record.type)) return { ok: false, code: 'unknown_type' }
  const fields: Record<string, Field> = { type: [true, () => true], ref: [false, str(0, 64)], ...MODEL[record.type] }
  const keysOk = Object.keys(record).every((key) => Object.hasOwn(fields, key))
  const fieldsOk = Object.entries(fields).every(([key, [required, check]]) => Object.hasOwn(record, key) ? check(record[key]) : !required)
  return keysOk && fieldsOk ? { ok: true } : { ok: false, code: 'invalid' }
}

function checkDecoder (data: string): void {
  const got = decode(data)
  const want = expected(data)
  assert.equal(got.ok, want.ok, `ok for ${data.slice(0, 200)}`)
  if (got.ok) {
    assert.deepEqual(got.message, JSON.parse(data), 'a valid message is the frame as sent')
    return
  }
  assert.equal(got.code, (want as { code: string }).code, `code for ${data.slice(0, 200)}`)
  assert.ok((ErrorCodes as readonly string[]).includes(got.code) && typeof got.message === 'string')
  // An error echoes a valid ref. The decoder measures ref in UTF-16 units and the schema in code points,
  // so a ref of 33–64 astral characters is valid but not echoed: only the common ground is asserted.
  const ref = got.code === 'bad_json' ? undefined : (JSON.parse(data) as { ref?: unknown }).ref
  if (typeof ref === 'string' && ref.length <= 64) assert.equal(got.ref, ref)
  else if (!(typeof ref === 'string' && codePoints(ref) <= 64)) assert.equal(got.ref, undefined)
}

const TYPES = [...Object.keys(MODEL), '__proto__', 'constructor', 'toString', 'hasOwnProperty', 'JOIN', '']
const KEYS = ['type', 'ref', 'room', 'since', 'epoch', 'text', 'cid', 'name', 'before', 'limit', '__proto__', 'constructor', 'prototype', 'extra']
const roomish = fc.string({ unit: fc.constantFrom(...'aZ09_-.:/ é\n'), maxLength: 70 })
const sized = fc.oneof(fc.integer({ min: 0, max: 70 }), fc.constantFrom(63, 64, 65, MAX_TEXT, MAX_TEXT + 1, 256, 257))
  .chain((n) => fc.constantFrom('x', '😀', '\u0000', 'é').map((c) => c.repeat(n)))
/** Literal JSON for numbers JSON.stringify cannot write or that sit on a boundary. */
const rawNumber = fc.constantFrom('1e400', '-1e400', '1E2', '1.0', '-0', '0.5', '9007199254740993', '123456789012345678901234567890', '100', '101')
const deep = fc.integer({ min: 1, max: 4000 }).map((n) => '['.repeat(n) + ']'.repeat(n))
const fieldJson = fc.oneof(
  fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)),
  fc.oneof(roomish, sized, fc.string({ unit: 'binary', maxLength: 80 })).map((s) => JSON.stringify(s)),
  fc.integer({ min: -5, max: 200 }).map(String), rawNumber, deep,
  fc.constantFrom('null', 'true', '{}', '[]', '{"__proto__":{"polluted":1}}'),
)
/** Objects shaped like client messages: a type, then random known, unknown and dangerous keys. */
const messageLike = fc.tuple(
  fc.oneof(fc.constantFrom(...TYPES).map((t) => JSON.stringify(t)), fieldJson),
  fc.array(fc.tuple(fc.constantFrom(...KEYS.slice(1)), fieldJson), { maxLength: 5 }),
).map(([type, fields]) => `{"type":${type}${fields.map(([k, v]) => `,${JSON.stringify(k)}:${v}`).join('')}}`)

test('the decoder never throws and answers exactly what the schema says, for any frame', () => {
  const frame = fc.oneof(
    { arbitrary: messageLike, weight: 6 },
    fc.string({ unit: 'binary', maxLength: 200 }),
    fc.json({ maxDepth: 8 }),
    deep,
    deep.map((d) => `{"type":"join","room":"r","since":${d}}`),
    fc.integer({ min: 1, max: 3000 }).map((n) => `${'{"a":'.repeat(n)}1${'}'.repeat(n)}`),
  )
  fc.assert(fc.property(frame, checkDecoder), { numRuns: 4000 })
  assert.equal(({} as Record<string, unknown>).polluted, undefined, 'no prototype was polluted')
})

test('valid messages of every type decode to themselves', () => {
  const valid = fc.oneof(
    fc.record({ type: fc.constant('join'), room: fc.constantFrom('a', 'b.c', 'x'.repeat(64)), since: fc.nat(), epoch: fc.string({ maxLength: 64 }), ref: fc.string({ maxLength: 64 }) }, { requiredKeys: ['type', 'room'] }),
    fc.record({ type: fc.constant('send'), room: fc.constant('r'), text: fc.string({ unit: 'grapheme', minLength: 1, maxLength: MAX_TEXT }).filter((s) => codePoints(s) <= MAX_TEXT), cid: fc.string({ minLength: 1, maxLength: 64 }) }, { requiredKeys: ['type', 'room', 'text'] }),
    fc.record({ type: fc.constant('history'), room: fc.constant('r'), before: fc.nat(), limit: fc.integer({ min: 1, max: 100 }) }, { requiredKeys: ['type', 'room'] }),
    fc.record({ type: fc.constantFrom('leave', 'typing'), room: fc.constant('r') }),
    fc.record({ type: fc.constant('nick'), name: fc.string({ maxLength: 256 }) }),
    fc.constant({ type: 'ping' }),
  )
  fc.assert(fc.property(valid, (message) => {
    const data = JSON.stringify(message)
    checkDecoder(data)
    assert.ok(decode(data).ok, data)
  }), { numRuns: 1000 })
})

test('a text frame with invalid UTF-8 closes with 1007 and the server keeps serving', async (t) => {
  const { wsUrl, app } = await startServer(t, { home: false })
  const fatal = new TextDecoder('utf-8', { fatal: true })
  const isUtf8 = (bytes: Uint8Array): boolean => { try { fatal.decode(bytes); return true } catch { return false } }
  const broken = fc.constantFrom([0xff], [0xc0, 0x80], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xe2, 0x82], [0x80])
  const bytes = fc.tuple(fc.uint8Array({ maxLength: 40 }), broken, fc.uint8Array({ maxLength: 40 }))
    .map(([head, bad, tail]) => Buffer.concat([Buffer.from('{"type":"ping","ref":"'), head, Buffer.from(bad), tail]))
    .filter((frame) => !isUtf8(frame))
  await fc.assert(fc.asyncProperty(bytes, async (frame) => {
    const client = await RawClient.connect(t, wsUrl)
    client.socket.send(frame, { binary: false })
    assert.equal((await client.closed).code, 1007)
  }), { numRuns: 25 })
  const survivor = await RawClient.connect(t, wsUrl)
  assert.equal((await survivor.request('pong', { type: 'ping' })).type, 'pong')
  assert.equal(app.hub.stats().connections, 1)
})

// ------------------------------------------------------------ the hub against a model

const SLOTS = 5
const ROOMS = ['a', 'b', '__proto__', 'constructor']
const LIMITS = { maxRoomsPerConnection: 2, maxMembersPerRoom: 3, historySize: 4, historyOnJoin: 2 }
const silent = { info () {}, warn () {}, error () {} }

/** A fake connection that checks, as each frame arrives, that every room's messages come in seq order without gap or duplicate. */
class Link implements MemberLink {
  frames: ServerFrame[] = []
  /** room → next expected seq, while a member. */
  readonly next = new Map<string, number>()
  readonly authenticated = false
  /** Its own user unless given one: a tab of that user. */
  readonly user: string
  constructor (readonly id: string, public name: string, user?: string) {
    this.user = user ?? id
  }
  deliver (raw: Buffer): void {
    const frame: unknown = JSON.parse(raw.toString())
    assert.ok(isServerFrame(frame), raw.toString())
    if (frame.type === 'joined' && !this.next.has(frame.room)) {
      assert.ok(frame.history.every((m, i) => m.seq === frame.seq - frame.history.length + 1 + i), 'history ends at joined.seq')
      this.next.set(frame.room, frame.seq + 1)
    }
    if (frame.type === 'message') {
      assert.equal(frame.seq, this.next.get(frame.room), `${this.id} got ${frame.room}#${frame.seq} out of turn`)
      this.next.set(frame.room, frame.seq + 1)
    }
    this.frames.push(frame)
  }

  close (): void {}
}

/** `back` asks to resume that many messages before the room's latest seq (past it when negative). */
type Op = { kind: 'join', slot: number, room: string, back: number | undefined }
  | { kind: 'leave' | 'typing', slot: number, room: string }
  | { kind: 'send', slot: number, room: string, text: string }
  | { kind: 'nick', slot: number, name: string }
  | { kind: 'read', slot: number, room: string, seq: number }
  | { kind: 'disconnect', slot: number }

const slot = fc.nat(SLOTS - 1)
const inRoom = fc.constantFrom(...ROOMS)
const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ kind: fc.constant('join'), slot, room: inRoom, back: fc.option(fc.integer({ min: -2, max: 6 }), { nil: undefined }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constantFrom('leave', 'typing'), slot, room: inRoom }) },
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('send'), slot, room: inRoom, text: fc.string({ minLength: 1, maxLength: 6 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('nick'), slot, name: fc.constantFrom('ann', 'bob', '<b>x</b>') }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('disconnect'), slot }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('read'), slot, room: inRoom, seq: fc.nat(8) }) },
) as fc.Arbitrary<Op>

interface RoomModel {
  seq: number
  messages: Array<{ seq: number, from: { id: string, user: string, name: string }, text: string }>
  members: Map<string, { user: string, name: string }>
  /** user → read marker */
  read: Map<string, number>
}

/** Slots share users, so that a user has several connections: the first and last of them are told. */
const userOf = (slot: number): string => `u${slot % 2}`
/** Whether `user` has a connection in the room's model. */
const present = (model: RoomModel, user: string): boolean => [...model.members.values()].some((m) => m.user === user)

/** A slot's connection; `joinsAsStranger` counts its joins of rooms it was not in, an upper bound on the rooms it opened. */
interface SlotEntry { link: Link, rooms: Set<string>, joinsAsStranger: number }

class World {
  readonly slots: Array<SlotEntry | undefined> = []
  readonly rooms = new Map(ROOMS.map((r): [string, RoomModel] => [r, { seq: 0, messages: [], members: new Map(), read: new Map() }]))
  private generation = 0
  constructor (readonly hub: Hub) {}

  /** The slot's connection, attaching a new one after a disconnect. */
  entry (slot: number): SlotEntry {
    let entry = this.slots[slot]
    if (!entry) {
      entry = { link: new Link(`s${slot}g${++this.generation}`, `s${slot}`, userOf(slot)), rooms: new Set(), joinsAsStranger: 0 }
      this.hub.attach(entry.link)
      this.slots[slot] = entry
    }
    return entry
  }

  live (): SlotEntry[] {
    return this.slots.filter((e) => e !== undefined)
  }

  run (o: Op): Promise<unknown> {
    const { link } = this.entry(o.slot)
    switch (o.kind) {
      case 'join': {
        const since = this.since(o)
        return this.hub.join(link, { type: 'join', room: o.room, ...(since === undefined ? {} : { since }) })
      }
      case 'leave': return this.hub.leave(link, o.room).then(() => link.next.delete(o.room))
      case 'send': return this.hub.send(link, { type: 'send', room: o.room, text: o.text })
      case 'typing': return this.hub.typing(link, o.room)
      case 'read': return this.hub.read(link, { type: 'read', room: o.room, seq: o.seq })
      case 'nick': return this.hub.rename(link, o.name)
      case 'disconnect': return this.hub.detach(link)
    }
  }

  since (o: Op & { kind: 'join' }): number | undefined {
    return o.back === undefined ? undefined : Math.max(0, (this.rooms.get(o.room) as RoomModel).seq - o.back)
  }

  /** Applies an op's outcome to the model; returns the frames each link should have got (sequential steps only). */
  apply (o: Op, outcome: PromiseSettledResult<unknown>, alone: boolean): Map<Link, object[]> {
    const entry = this.entry(o.slot)
    const { link } = entry
    const out = new Map<Link, object[]>(this.live().map((e) => [e.link, []]))
    const others = (r: string, frame: object): void => {
      for (const e of this.live()) if (e.link !== link && e.rooms.has(r)) out.get(e.link)?.push(frame)
    }
    const me = { id: link.id, user: link.user, name: link.name }
    const refused = outcome.status === 'rejected' ? (outcome.reason as ChatError).code : undefined
    if (o.kind === 'nick') {
      link.name = o.name
      for (const r of entry.rooms) {
        this.rooms.get(r)?.members.set(link.id, { user: link.user, name: o.name })
        others(r, { type: 'presence', room: r, action: 'rename', member: { id: link.id, user: link.user, name: o.name } })
      }
      return out
    }
    if (o.kind === 'disconnect') {
      for (const r of entry.rooms) {
        const model = this.rooms.get(r) as RoomModel
        model.members.delete(link.id)
        others(r, { type: 'presence', room: r, action: 'leave', member: me, last: !present(model, link.user) })
      }
      this.slots[o.slot] = undefined
      return out
    }
    const model = this.rooms.get(o.room) as RoomModel
    const member = entry.rooms.has(o.room)
    if (o.kind !== 'join') {
      assert.equal(refused, member ? undefined : 'not_joined', `${o.kind} by ${member ? 'a member' : 'a stranger'}`)
      if (!member) return out
    }
    if (o.kind === 'join') {
      // Past its burst of openings a join may be refused as too fast (whether it opens a room depends on the others' order).
      const mayBeTooFast = !member && entry.joinsAsStranger++ >= LIMITS.maxRoomsPerConnection && refused === 'too_many_rooms'
      if (!member && entry.rooms.size >= LIMITS.maxRoomsPerConnection) assert.equal(refused, 'too_many_rooms')
      else if (mayBeTooFast) return out
      else if (!member && model.members.size >= LIMITS.maxMembersPerRoom) assert.ok(refused === 'room_full' || !alone, `room_full, got ${refused}`)
      else assert.equal(refused, undefined)
      if (refused) return out
      if (!member) {
        entry.rooms.add(o.room)
        const first = !present(model, link.user)
        model.members.set(link.id, { user: link.user, name: link.name })
        others(o.room, { type: 'presence', room: o.room, action: 'join', member: me, first })
      }
      out.get(link)?.push({ type: 'joined', room: o.room, seq: model.seq, members: members(model), memberCount: model.members.size, read: model.read.get(link.user) ?? 0, ...snapshot(model, this.since(o)) })
    } else if (o.kind === 'leave') {
      entry.rooms.delete(o.room)
      model.members.delete(link.id)
      others(o.room, { type: 'presence', room: o.room, action: 'leave', member: me, last: !present(model, link.user) })
    } else if (o.kind === 'read') {
      const before = model.read.get(link.user) ?? 0
      const marker = Math.max(before, Math.min(o.seq, model.seq))
      const answered = (outcome as PromiseFulfilledResult<number>).value
      // Alone, the answer is exactly the model's; beside sends, the cap depends on which went first.
      if (alone) assert.equal(answered, marker, `read ${o.seq} of ${o.room}`)
      const after = alone ? marker : Math.max(before, answered)
      model.read.set(link.user, after)
      for (const e of this.live()) {
        if (after !== before && e.link !== link && e.link.user === link.user && e.rooms.has(o.room)) out.get(e.link)?.push({ type: 'read', room: o.room, seq: after })
      }
    } else if (o.kind === 'typing') {
      others(o.room, { type: 'typing', room: o.room, member: me })
    } else if (o.kind === 'send') {
      const stored = (outcome as PromiseFulfilledResult<Message>).value
      const message = { seq: stored.seq, from: me, text: o.text }
      model.messages.push(message)
      model.messages.sort((x, y) => x.seq - y.seq)
      model.seq = Math.max(model.seq, stored.seq)
      others(o.room, { type: 'message', room: o.room, ...message })
      out.get(link)?.push({ type: 'message', room: o.room, ...message })
    }
    return out
  }

  /** After every step: each member is up to date, and rosters and room counts equal the model. */
  async check (): Promise<void> {
    for (const { link, rooms } of this.live()) {
      for (const r of ROOMS) assert.equal(link.next.get(r), rooms.has(r) ? (this.rooms.get(r) as RoomModel).seq + 1 : undefined, `${link.id} in ${r}`)
      for (const r of ROOMS) assert.equal(this.hub.isMember(link, r), rooms.has(r))
    }
    const occupied = [...this.rooms].filter(([, m]) => m.members.size > 0)
    for (const [r, model] of this.rooms) assert.deepEqual(sortById(await this.hub.members(r)), members(model), `members of ${r}`)
    const listed = (await this.hub.rooms()).sort((x, y) => x.room.localeCompare(y.room))
    assert.deepEqual(listed, occupied.map(([r, m]) => ({ room: r, members: m.members.size, seq: m.seq })).sort((x, y) => x.room.localeCompare(y.room)))
    assert.deepEqual({ rooms: this.hub.stats().rooms, connections: this.hub.stats().connections }, { rooms: occupied.length, connections: this.live().length })
  }
}

/** In a single step a link gets at most one frame per type and room. */
const key = (frame: object): string => { const { type, room } = frame as { type: string, room?: string }; return `${type}:${room}` }
const sortById = <T extends { id: string }>(list: T[]): T[] => [...list].sort((x, y) => x.id.localeCompare(y.id))
const members = (model: RoomModel): Array<{ id: string, user: string, name: string }> => sortById([...model.members].map(([id, { user, name }]) => ({ id, user, name })))

/** What `joined` carries per PROTOCOL.md, computed from the model's full log. */
function snapshot (model: RoomModel, since: number | undefined): { history: object[], recovered?: boolean } {
  const stored = model.messages.slice(-LIMITS.historySize)
  const latest = stored.slice(-LIMITS.historyOnJoin)
  if (since === undefined) return { history: latest }
  if (since > model.seq) return { history: latest, recovered: false }
  const after = stored.filter((m) => m.seq > since)
  return { history: after, recovered: since === model.seq || after[0]?.seq === since + 1 }
}

/** A frame as the model predicts it: ids, timestamps and epochs left out, member lists in a fixed order. */
function comparable (frame: ServerFrame): object {
  const message = (m: Message): object => ({ seq: m.seq, from: m.from, text: m.text })
  if (frame.type === 'message') return { type: 'message', room: frame.room, ...message(frame) }
  if (frame.type === 'joined') {
    const { ref: _ref, epoch: _epoch, ...rest } = frame
    return { ...rest, members: sortById(frame.members), history: frame.history.map((entry) => entry.type === 'message' ? message(entry) : entry) }
  }
  return frame
}

test('the hub agrees with a model under random join/leave/send/typing/nick/disconnect, one at a time and concurrently', async () => {
  // A step is one op (its frames are predicted exactly) or a burst of ops by distinct connections run concurrently.
  const step = fc.oneof(op.map((o) => [o]), fc.uniqueArray(op, { minLength: 2, maxLength: SLOTS, selector: (o) => o.slot }))
  await fc.assert(fc.asyncProperty(fc.array(step, { maxLength: 40 }), async (steps) => {
    const hub = new Hub(new MemoryBroker(), resolveOptions(LIMITS), silent)
    await hub.open()
    const world = new World(hub)
    try {
      for (const ops of steps) {
        for (const o of ops) world.entry(o.slot)
        for (const e of world.live()) e.link.frames = []
        const outcomes = await Promise.allSettled(ops.map((o) => world.run(o)))
        for (const outcome of outcomes) {
          if (outcome.status === 'rejected') assert.ok(outcome.reason instanceof ChatError, String(outcome.reason))
        }
        const links = world.live().map((e) => e.link)
        const predicted = ops.map((o, i) => world.apply(o, outcomes[i] as PromiseSettledResult<unknown>, ops.length === 1))
        if (ops.length === 1) {
          for (const link of links) {
            const sorted = (frames: object[]): object[] => frames.sort((x, y) => key(x).localeCompare(key(y)))
            assert.deepEqual(sorted(link.frames.map(comparable)), sorted(predicted[0]?.get(link) ?? []), `frames of ${link.id} after ${JSON.stringify(ops[0])}`)
          }
        }
        await world.check()
      }
    } finally {
      await hub.close()
    }
  }), { numRuns: 150 })
})

test('concurrent joins never take a room past maxMembersPerRoom', async () => {
  const hub = new Hub(new MemoryBroker(), resolveOptions({ maxMembersPerRoom: 2 }), silent)
  await hub.open()
  try {
    const links = Array.from({ length: 5 }, (_, i) => new Link(`m${i}`, `m${i}`))
    for (const link of links) hub.attach(link)
    await Promise.allSettled(links.map((link) => hub.join(link, { type: 'join', room: 'r' })))
    assert.ok((await hub.members('r')).length <= 2, `${(await hub.members('r')).length} members in a room of at most 2`)
  } finally {
    await hub.close()
  }
})

test('a join refused as room_full emits no leave event', async () => {
  const hub = new Hub(new MemoryBroker(), resolveOptions({ maxMembersPerRoom: 1 }), silent)
  await hub.open()
  try {
    const events: string[] = []
    hub.on('leave', ({ member }) => events.push(`leave ${member.id}`))
    const [a, b] = [new Link('a', 'a'), new Link('b', 'b')]
    hub.attach(a)
    hub.attach(b)
    await hub.join(a, { type: 'join', room: 'r' })
    await assert.rejects(hub.join(b, { type: 'join', room: 'r' }), /full/)
    assert.deepEqual(events, [])
  } finally {
    await hub.close()
  }
})
