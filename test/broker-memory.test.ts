import { test } from 'node:test'
import assert from 'node:assert/strict'
import { MemoryBroker } from '../lib/brokers/memory.js'
import { brokerContract } from './broker-contract.js'
import { RecordingNode } from './helpers/recording-node.js'

brokerContract('MemoryBroker', (t) => {
  const broker = new MemoryBroker()
  t.after(() => broker.close())
  return broker
})

test('the memory broker keeps at most maxRooms rooms, forgetting the least recently active one without members', async (t) => {
  const broker = new MemoryBroker({ maxRooms: 3 })
  await broker.open(new RecordingNode(10))
  t.after(() => broker.close())
  await broker.publish('busy', { type: 'presence', room: 'busy', action: 'join', member: { id: 'a', name: 'a' } })
  for (const room of ['old', 'newer']) await broker.append(room, { from: { id: 'a', name: 'a' }, text: 'x' })
  await broker.append('newest', { from: { id: 'a', name: 'a' }, text: 'x' })
  assert.equal((await broker.read('old', { limit: 10 })).seq, 0, 'the least recently active empty room was forgotten')
  assert.equal((await broker.read('newer', { limit: 10 })).seq, 1)
  assert.equal((await broker.read('newest', { limit: 10 })).seq, 1)
  assert.deepEqual((await broker.members('busy')).map((m) => m.id), ['a'], 'a room with members is never forgotten')
})
