/**
 * Users over real sockets (PROTOCOL.md, "Users" and "Read markers"): a person
 * with two tabs is one user; presence says first and last; read markers move
 * forward only and reach the user's other tabs; `authenticate`'s `data` is the
 * hooks' and never the wire's.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import type { HookMember } from '../lib/index.js'
import { startServer } from './helpers/server.js'
import { byQuery, serveUsers, settled, tab } from './helpers/users.js'

test('two tabs of one user are one user: members and presence say user, first and last, and so do the hub\'s events', async (t) => {
  const server = await serveUsers(t)
  const events: string[] = []
  server.app.hub.on('join', ({ member, first }) => events.push(`join ${member.user} first=${first}`))
  server.app.hub.on('leave', ({ member, last }) => events.push(`leave ${member.user} last=${last}`))
  const bob = await tab(t, server, 'bob', 'r')
  const one = await tab(t, server, 'alice', 'r')
  const firstJoin = await bob.next('presence')
  assert.deepEqual([firstJoin.action, firstJoin.member.user, firstJoin.first], ['join', 'alice', true])
  const two = await tab(t, server, 'alice')
  const joined = await two.request('joined', { type: 'join', room: 'r' })
  assert.deepEqual(joined.members.filter((m) => m.user === 'alice').length, 2, 'both tabs listed with their user')
  assert.ok(joined.members.every((m) => m.user === m.name && m.id.startsWith(`${m.user}.`)))
  assert.equal((await bob.next('presence')).first, false, 'a second tab is not a new person')
  assert.equal((await one.next('presence')).first, false)

  await one.request('left', { type: 'leave', room: 'r' })
  const notLast = await bob.next('presence')
  assert.deepEqual([notLast.action, notLast.last], ['leave', false])
  two.socket.close()
  const last = await bob.next('presence')
  assert.deepEqual([last.action, last.member.user, last.last], ['leave', 'alice', true])
  assert.deepEqual(events, ['join bob first=true', 'join alice first=true', 'join alice first=false', 'leave alice last=false', 'leave alice last=true'])
})

test('read markers move forward only, capped at the latest seq, and reach the user\'s other tabs', async (t) => {
  const server = await serveUsers(t)
  const bob = await tab(t, server, 'bob', 'r')
  const one = await tab(t, server, 'alice', 'r')
  const two = await tab(t, server, 'alice', 'r')
  for (const text of ['a', 'b', 'c']) await bob.request('ack', { type: 'send', room: 'r', text })

  assert.equal((await one.request('read', { type: 'read', room: 'r', seq: 2 })).seq, 2)
  assert.equal((await one.request('read', { type: 'read', room: 'r', seq: 1 })).seq, 2, 'a marker never moves back; the reply says where it is')
  assert.equal((await one.request('read', { type: 'read', room: 'r', seq: 99 })).seq, 3, 'capped at the latest seq')
  await settled(two)
  assert.deepEqual(two.pending('read'), [{ type: 'read', room: 'r', seq: 2 }, { type: 'read', room: 'r', seq: 3 }], 'the other tab hears each move once, without ref')
  await settled(one)
  assert.equal(one.pending('read').length, 0, 'the tab that moved it hears only its replies')
  await settled(bob)
  assert.equal(bob.pending('read').length, 0, 'another user hears nothing')

  const three = await tab(t, server, 'alice')
  assert.equal((await three.request('joined', { type: 'join', room: 'r' })).read, 3, 'joined.read is the marker')
  assert.equal((await bob.request('joined', { type: 'join', room: 'r' })).read, 0, 'a re-join says the user\'s own marker')
  await assert.rejects(three.request('read', { type: 'read', room: 'other', seq: 1 }), /^Error: not_joined/)
})

test('authenticate\'s data reaches the hooks on the member, never the wire nor the broker', async (t) => {
  const seen: Array<[string, unknown]> = []
  const saw = (hook: string) => (member: HookMember): void => { seen.push([hook, member.data]) }
  const server = await startServer(t, {
    home: false,
    authenticate: byQuery,
    onJoin: (_room, member) => { saw('onJoin')(member); return true },
    onMessage: (_message, member) => { saw('onMessage')(member); return undefined },
    onRename: (member) => { saw('onRename')(member); return true },
  })
  const bob = await tab(t, server, 'bob', 'r')
  const alice = await tab(t, server, 'alice', 'r')
  await alice.request('ack', { type: 'send', room: 'r', text: 'hi' })
  await alice.request('renamed', { type: 'nick', name: 'Alice' })
  assert.deepEqual(seen, [
    ['onJoin', { secret: 'data-of-bob' }],
    ['onJoin', { secret: 'data-of-alice' }],
    ['onMessage', { secret: 'data-of-alice' }],
    ['onRename', { secret: 'data-of-alice' }],
  ])
  await settled(bob)
  const wire = JSON.stringify([...bob.frames, ...alice.frames])
  assert.ok(wire.includes('Alice') && !wire.includes('data-of-'), 'no frame carries data')
  const stored = JSON.stringify([await server.app.hub.members('r'), await server.app.hub.history('r')])
  assert.ok(stored.includes('alice') && !stored.includes('data-of-'), 'the broker holds no data')
})
