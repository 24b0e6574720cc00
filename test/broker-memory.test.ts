import { test } from 'node:test'
import assert from 'node:assert/strict'
import { NO_STREAM_YET } from '../lib/broker.js'
import { MemoryBroker } from '../lib/brokers/memory.js'
import { ChatError } from '../lib/errors.js'
import type { Presence } from '../lib/protocol.js'
import { brokerContract } from './broker-contract.js'
import { RecordingNode } from './helpers/recording-node.js'

brokerContract('MemoryBroker', (t) => {
  const broker = new MemoryBroker()
  t.after(() => broker.close())
  return broker
})

const alice = { id: 'a', user: 'a', name: 'a' }
const join = (room: string): Presence => ({ type: 'presence', room, action: 'join', member: alice })
const leave = (room: string): Presence => ({ type: 'presence', room, action: 'leave', member: alice })

test('at maxRooms, the memory broker forgets the least recently active room without members or messages, never one with history', async (t) => {
  const broker = new MemoryBroker({ maxRooms: 4 })
  await broker.open(new RecordingNode(10))
  t.after(() => broker.close())
  await broker.publish('busy', join('busy'))
  await broker.append('kept', { from: alice, text: 'x' })
  for (const room of ['empty-old', 'empty-new']) {
    await broker.publish(room, join(room))
    await broker.publish(room, leave(room))
  }
  const before = await broker.read('empty-new', { limit: 1 })
  await broker.append('newest', { from: alice, text: 'x' })
  assert.deepEqual((await broker.read('kept', { limit: 10 })).messages.map((m) => m.text), ['x'], 'the oldest room holds history: kept')
  assert.equal((await broker.read('empty-old', { limit: 1 })).epoch, NO_STREAM_YET, 'the least recently active empty room was forgotten')
  assert.equal((await broker.read('empty-new', { limit: 1 })).epoch, before.epoch)
  assert.equal((await broker.read('newest', { limit: 10 })).seq, 1)
  assert.deepEqual((await broker.members('busy')).map((m) => m.id), ['a'], 'a room with members is never forgotten')
})

test('when every room at maxRooms holds members or messages, a new room is refused with unavailable and no history is lost', async (t) => {
  const broker = new MemoryBroker({ maxRooms: 3 })
  await broker.open(new RecordingNode(10))
  t.after(() => broker.close())
  await broker.publish('busy', join('busy'))
  for (const room of ['one', 'two']) await broker.append(room, { from: alice, text: room })
  await assert.rejects(broker.publish('fresh', join('fresh')), (error: unknown) => error instanceof ChatError && error.code === 'unavailable')
  await assert.rejects(broker.append('fresh', { from: alice, text: 'x' }), (error: unknown) => error instanceof ChatError && error.code === 'unavailable')
  for (const room of ['one', 'two']) assert.deepEqual((await broker.read(room, { limit: 10 })).messages.map((m) => m.text), [room])
  assert.deepEqual(await broker.members('fresh'), [], 'the refused join changed no roster')
  // Rooms that exist still take joins and messages.
  await broker.publish('one', join('one'))
  assert.equal((await broker.append('two', { from: alice, text: 'more' })).message.seq, 2)
})

/** 2000 emoji: 4000 UTF-16 units, so at least 8000 bytes of memory for the text alone. */
const LONG_TEXT = '😀'.repeat(2000)
const LONG_TEXT_BYTES = 8000

/** Every room's kept messages, by room. */
async function kept (broker: MemoryBroker, rooms: string[]): Promise<Map<string, number[]>> {
  const result = new Map<string, number[]>()
  for (const room of rooms) result.set(room, (await broker.read(room, { limit: 1000 })).messages.map((m) => m.seq))
  return result
}

test('the memory broker keeps at most maxBytes of messages: the least recently active rooms lose their oldest first, never their newest', async (t) => {
  const options = { maxBytes: 1 << 20 }
  const broker = new MemoryBroker(options)
  await broker.open(new RecordingNode(1000))
  t.after(() => broker.close())
  const rooms = Array.from({ length: 20 }, (_, i) => `room-${i}`)
  // 400 messages of 2000 emoji: more than 3 MB of text.
  for (const room of rooms) {
    for (let i = 0; i < 20; i++) await broker.append(room, { from: alice, text: LONG_TEXT })
  }
  const byRoom = await kept(broker, rooms)
  const total = [...byRoom.values()].reduce((sum, seqs) => sum + seqs.length, 0)
  assert.ok(total * LONG_TEXT_BYTES <= options.maxBytes, `${total} messages of 2000 emoji kept within ${options.maxBytes} bytes`)
  for (const [room, seqs] of byRoom) assert.equal(seqs.at(-1), 20, `${room} keeps its newest message`)
  assert.deepEqual(byRoom.get('room-19'), Array.from({ length: 20 }, (_, i) => i + 1), 'the most recently active room keeps all of its')
  assert.deepEqual(byRoom.get('room-0'), [20], 'the least recently active room keeps only its newest')
})

test('at maxBytes, a room with no message left to drop cannot take its first one: unavailable, and nothing kept is lost', async (t) => {
  const options = { maxBytes: 100_000 }
  const broker = new MemoryBroker(options)
  await broker.open(new RecordingNode(1000))
  t.after(() => broker.close())
  const outcomes: string[] = []
  for (let i = 0; i < 20; i++) {
    try {
      await broker.append(`room-${i}`, { from: alice, text: LONG_TEXT })
      outcomes.push('stored')
    } catch (error) {
      outcomes.push(error instanceof ChatError ? error.code : String(error))
    }
  }
  const stored = outcomes.filter((outcome) => outcome === 'stored').length
  assert.ok(stored > 0 && stored * LONG_TEXT_BYTES <= options.maxBytes, outcomes.join(' '))
  assert.deepEqual(outcomes, [...Array(stored).fill('stored'), ...Array(20 - stored).fill('unavailable')])
  for (let i = 0; i < stored; i++) assert.equal((await broker.read(`room-${i}`, { limit: 10 })).messages.length, 1)
  // A room that has a message can still take one: its new message replaces its own older one.
  assert.equal((await broker.append('room-0', { from: alice, text: LONG_TEXT })).message.seq, 2)
  assert.deepEqual((await broker.read('room-0', { limit: 10 })).messages.map((m) => m.seq), [2])
})

test('the bytes of a forgotten idle room are free again', async (t) => {
  const options = { maxBytes: 50_000, idleRoomTtl: 20 }
  const broker = new MemoryBroker(options)
  await broker.open(new RecordingNode(1000))
  t.after(() => broker.close())
  let filled = 0
  while (filled < 20) {
    try {
      await broker.append(`old-${filled}`, { from: alice, text: LONG_TEXT })
      filled++
    } catch (error) {
      assert.ok(error instanceof ChatError && error.code === 'unavailable')
      break
    }
  }
  assert.ok(filled > 0 && filled < 20, `${filled} rooms filled the bytes`)
  const deadline = Date.now() + 10_000
  // The most recently active one: once it is swept, every older one is too.
  while ((await broker.read(`old-${filled - 1}`, { limit: 1 })).epoch !== NO_STREAM_YET) {
    assert.ok(Date.now() < deadline, 'the idle rooms were not swept within 10 s')
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  for (let i = 0; i < filled; i++) await broker.append(`new-${i}`, { from: alice, text: LONG_TEXT })
})
