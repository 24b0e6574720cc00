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

const alice = { id: 'a', name: 'a' }
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
