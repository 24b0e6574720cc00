/**
 * Moderation over real sockets (PROTOCOL.md, "Moderation"): kick, ban, mute
 * and disconnectUser through `fastify.hub`, and their checks of arguments.
 * The HTTP routes are in rest-moderation.test.ts.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { ChatError } from '../lib/index.js'
import { sleep } from './helpers/client.js'
import { startServer } from './helpers/server.js'
import { serveUsers, settled, tab } from './helpers/users.js'

const refusedWith = (code: string) => (error: unknown): boolean => error instanceof ChatError && error.code === code

test('kick: every tab of the user leaves with reason kicked, the others see its leaves, and it may join again', async (t) => {
  const server = await serveUsers(t)
  const bob = await tab(t, server, 'bob', 'r')
  const one = await tab(t, server, 'alice', 'r')
  const two = await tab(t, server, 'alice', 'r')
  const entry = await server.app.hub.kick('r', 'alice')
  assert.deepEqual(entry, { user: 'alice' })
  for (const alice of [one, two]) assert.deepEqual(await alice.next('left'), { type: 'left', room: 'r', reason: 'kicked' })
  const leaves = [await bob.next('presence', (p) => p.action === 'leave'), await bob.next('presence', (p) => p.action === 'leave')]
  assert.deepEqual(leaves.map((leave) => leave.last).sort(), [false, true], 'exactly one last leave')
  assert.deepEqual((await server.app.hub.members('r')).map((m) => m.user), ['bob'])
  await assert.rejects(one.request('ack', { type: 'send', room: 'r', text: 'still here?' }), /^Error: not_joined/)
  await one.request('joined', { type: 'join', room: 'r' })
  assert.equal((await bob.next('presence')).first, true)
})

test('ban: the user is removed with reason banned and refused forbidden until the ban ends; unban lifts one', async (t) => {
  const server = await serveUsers(t)
  const bob = await tab(t, server, 'bob', 'r')
  const alice = await tab(t, server, 'alice', 'r')
  assert.equal((await bob.next('presence')).action, 'join')
  const banned = await server.app.hub.ban('r', 'alice', { ms: 400 })
  const until = banned.ban?.until ?? 0
  assert.ok(until > Date.now() && until <= Date.now() + 400)
  assert.deepEqual(await alice.next('left'), { type: 'left', room: 'r', reason: 'banned' })
  assert.equal((await bob.next('presence', (p) => p.action === 'leave')).last, true)
  assert.deepEqual(await server.app.hub.moderation('r'), [{ user: 'alice', ban: { until } }])
  await assert.rejects(alice.request('joined', { type: 'join', room: 'r' }), /^Error: forbidden/)
  const other = await tab(t, server, 'alice')
  await assert.rejects(other.request('joined', { type: 'join', room: 'r' }), /^Error: forbidden/, 'a new connection of the user too')
  await settled(bob)
  assert.equal(bob.pending('presence').filter((p) => p.action === 'join').length, 0, 'a refused join is not seen')
  assert.deepEqual((await server.app.hub.members('r')).map((m) => m.user), ['bob'])
  await alice.request('joined', { type: 'join', room: 'elsewhere' })

  await sleep(until - Date.now() + 20)
  await alice.request('joined', { type: 'join', room: 'r' })
  assert.deepEqual(await server.app.hub.moderation('r'), [], 'an ended ban is not listed')

  assert.deepEqual(await server.app.hub.ban('r', 'alice'), { user: 'alice', ban: {} })
  await alice.next('left')
  await assert.rejects(alice.request('joined', { type: 'join', room: 'r' }), /^Error: forbidden/)
  assert.deepEqual(await server.app.hub.unban('r', 'alice'), { user: 'alice' })
  await alice.request('joined', { type: 'join', room: 'r' })
})

test('mute: sends are refused forbidden, typing is dropped (a mute known at join or heard of later), until unmute or its end', async (t) => {
  const server = await serveUsers(t)
  const bob = await tab(t, server, 'bob', 'r')
  await server.app.hub.mute('r', 'alice')
  const alice = await tab(t, server, 'alice', 'r')
  await assert.rejects(alice.request('ack', { type: 'send', room: 'r', text: 'hello' }), /^Error: forbidden: muted/)
  alice.send({ type: 'typing', room: 'r' })
  await settled(alice)
  await settled(bob)
  assert.equal(bob.pending('typing').length, 0, 'a muted user\'s typing is not delivered')
  assert.equal(alice.pending('error').length, 0, 'nor refused: it is dropped')
  assert.deepEqual(await server.app.hub.moderation('r'), [{ user: 'alice', mute: {} }])

  await server.app.hub.unmute('r', 'alice')
  alice.send({ type: 'typing', room: 'r' })
  assert.equal((await bob.next('typing')).member.user, 'alice')
  await alice.request('ack', { type: 'send', room: 'r', text: 'back' })

  const { mute } = await server.app.hub.mute('r', 'alice', { ms: 300 })
  alice.send({ type: 'typing', room: 'r' })
  await settled(alice)
  await settled(bob)
  assert.equal(bob.pending('typing').length, 0)
  await sleep((mute?.until ?? 0) - Date.now() + 20)
  alice.send({ type: 'typing', room: 'r' })
  assert.equal((await bob.next('typing')).member.user, 'alice', 'a mute ends at its until on every node without an event')
  await alice.request('ack', { type: 'send', room: 'r', text: 'free again' })
})

test('disconnectUser closes every connection of the user with 1000, and only those', async (t) => {
  const server = await serveUsers(t)
  const bob = await tab(t, server, 'bob', 'r')
  const tabs = [await tab(t, server, 'alice', 'r'), await tab(t, server, 'alice')]
  await server.app.hub.disconnectUser('alice')
  for (const alice of tabs) assert.deepEqual(await alice.closed, { code: 1000, reason: 'disconnected by the server' })
  assert.equal((await bob.next('presence', (p) => p.action === 'leave')).last, true)
  await settled(bob)
  assert.equal(server.app.hub.stats().connections, 1)
})

test('the moderation calls refuse bad arguments with invalid, naming them', async (t) => {
  const { app } = await startServer(t, { home: false })
  const { hub } = app
  const cases: Array<[Promise<unknown>, RegExp]> = [
    [hub.kick('bad room', 'a'), /^room:/],
    [hub.ban('r', '', {}), /^user:/],
    [hub.mute('r', 'x'.repeat(257)), /^user:/],
    [hub.unban('r', 42 as unknown as string), /^user:/],
    [hub.ban('r', 'a', { ms: 0 }), /^ms:/],
    [hub.mute('r', 'a', { ms: 1.5 }), /^ms:/],
    [hub.moderation('no/slash'), /^room:/],
    [hub.disconnectUser(''), /^user:/],
    [hub.unmute('r', '\ud800'), /^user: must be well-formed/],
  ]
  for (const [call, message] of cases) {
    await assert.rejects(call, (error: unknown) => refusedWith('invalid')(error) && message.test((error as Error).message))
  }
})
