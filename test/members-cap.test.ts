/**
 * `joined.members` is capped at `maxMembersInReply`, with the total in
 * `memberCount`; `members` pages the rest. A roster too big for one reply
 * must never close the joiner as a slow consumer (which it would resume into, forever).
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { MemoryBroker } from '../lib/brokers/memory.js'
import type { Member } from '../lib/protocol.js'
import { RawClient } from './helpers/client.js'
import { startServer } from './helpers/server.js'

/** 32 emoji: the longest name there is, about 130 bytes of JSON. */
const LONG_NAME = '🦄'.repeat(32)

/** Puts `count` members in `room`'s roster at the broker, as if they joined on other connections. */
async function fillRoster (broker: MemoryBroker, room: string, count: number): Promise<Member[]> {
  const members: Member[] = []
  for (let i = 0; i < count; i++) {
    const id = `m${String(i).padStart(5, '0')}`
    const member = { id, user: id, name: LONG_NAME }
    await broker.publish(room, { type: 'presence', room, action: 'join', member })
    members.push(member)
  }
  return members
}

test('a roster larger than maxBufferedBytes: joined carries maxMembersInReply members and the count, and members pages the rest', async (t) => {
  const broker = new MemoryBroker()
  const { wsUrl } = await startServer(t, { home: false, broker, rateLimit: { perSecond: 1000, burst: 1000 } })
  // 9000 members of 32 emoji are about 1.3 MB of JSON: more than the default 1 MiB maxBufferedBytes.
  const roster = await fillRoster(broker, 'big', 9000)
  const alice = await RawClient.connect(t, `${wsUrl}?name=alice`)

  const joined = await alice.request('joined', { type: 'join', room: 'big' })
  assert.equal(joined.members.length, 100, 'the default maxMembersInReply')
  assert.equal(joined.memberCount, 9001)
  // A rejoin is answered the same way, and the connection stays open.
  const again = await alice.request('joined', { type: 'join', room: 'big' })
  assert.equal(again.memberCount, 9001)

  const seen = new Map(joined.members.map((member) => [member.id, member]))
  let after = joined.members.at(-1)?.id
  for (let pages = 0; pages < 200; pages++) {
    const page = await alice.request('members', { type: 'members', room: 'big', after })
    assert.ok(page.members.length <= 100)
    for (const member of page.members) {
      assert.ok(after === undefined || member.id > after, 'paged in member id order')
      seen.set(member.id, member)
    }
    after = page.members.at(-1)?.id
    if (!page.more) break
  }
  assert.equal(seen.size, 9001, 'every member once')
  for (const member of roster) assert.deepEqual(seen.get(member.id), member)
  assert.equal(alice.socket.readyState, alice.socket.OPEN)
})

test('members: limit pages fewer, only a member may ask, and a bad field is invalid', async (t) => {
  const broker = new MemoryBroker()
  const { wsUrl } = await startServer(t, { home: false, broker, maxMembersInReply: 5 })
  await fillRoster(broker, 'r', 12)
  const alice = await RawClient.connect(t, `${wsUrl}?name=alice`)
  await assert.rejects(alice.request('members', { type: 'members', room: 'r' }), /not_joined/)
  const joined = await alice.request('joined', { type: 'join', room: 'r' })
  assert.equal(joined.members.length, 5)
  assert.equal(joined.memberCount, 13)
  const page = await alice.request('members', { type: 'members', room: 'r', after: 'm00009', limit: 1 })
  assert.deepEqual(page.members.map((member) => member.id), ['m00010'])
  assert.equal(page.more, true)
  const large = await alice.request('members', { type: 'members', room: 'r', limit: 50 })
  assert.equal(large.members.length, 5, 'a limit above maxMembersInReply is served as maxMembersInReply')
  assert.equal(large.more, true)
  await assert.rejects(alice.request('members', { type: 'members', room: 'r', limit: 0 }), /invalid/)
})
