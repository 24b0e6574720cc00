/**
 * Moderation (PROTOCOL.md, "Moderation"): kick, ban, mute and disconnectUser
 * through `fastify.hub`, as an application's tests would check them with the
 * test kit, and their checks of arguments. The HTTP routes are in
 * rest-moderation.test.ts.
 */
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import Fastify, { type FastifyInstance } from 'fastify'
import chatRooms, { ChatError } from '../lib/index.js'
import { connect, type ChatTestClient } from '../lib/testing.js'
import { sleep } from './helpers/client.js'
import { startServer } from './helpers/server.js'
import { byQuery } from './helpers/users.js'

const refusedWith = (code: string) => (error: unknown): boolean => error instanceof ChatError && error.code === code

/** An app whose connections sign in as the user their `?user=` names. */
async function usersApp (t: TestContext): Promise<FastifyInstance> {
  const app = Fastify({ logger: false })
  await app.register(chatRooms, { home: false, authenticate: byQuery })
  t.after(() => app.close())
  return app
}

/** A new tab of `user`, in `room` when one is named. */
async function tab (t: TestContext, app: FastifyInstance, user: string, room?: string): Promise<ChatTestClient> {
  const client = await connect(app, { t, query: { user } })
  if (room !== undefined) await client.join(room)
  return client
}

test('kick: every tab of the user leaves with reason kicked, the others see its leaves, and it may join again', async (t) => {
  const app = await usersApp(t)
  const bob = await tab(t, app, 'bob', 'r')
  const one = await tab(t, app, 'alice', 'r')
  const two = await tab(t, app, 'alice', 'r')
  await bob.expect({ type: 'presence', action: 'join', member: { user: 'alice' }, first: true })
  await bob.expect({ type: 'presence', action: 'join', member: { user: 'alice' }, first: false })
  assert.deepEqual(await app.hub.kick('r', 'alice'), { user: 'alice' })
  for (const alice of [one, two]) await alice.expect({ type: 'left', ref: undefined, room: 'r', reason: 'kicked' })
  const leaves = [await bob.expect({ type: 'presence', action: 'leave' }), await bob.expect({ type: 'presence', action: 'leave' })]
  assert.deepEqual(leaves.map((leave) => leave.last).sort(), [false, true], 'exactly one last leave')
  assert.deepEqual((await app.hub.members('r')).map((m) => m.user), ['bob'])
  await assert.rejects(one.send('r', 'still here?'), /^RefusedError: send was refused: not_joined/)
  await one.join('r')
  await bob.expect({ type: 'presence', action: 'join', member: { user: 'alice' }, first: true })
})

test('ban: the user is removed with reason banned and refused forbidden until the ban ends; unban lifts one', async (t) => {
  const app = await usersApp(t)
  const bob = await tab(t, app, 'bob', 'r')
  const alice = await tab(t, app, 'alice', 'r')
  await bob.expect({ type: 'presence', action: 'join', member: { user: 'alice' } })
  const banned = await app.hub.ban('r', 'alice', { ms: 400 })
  const until = banned.ban?.until ?? 0
  assert.ok(until > Date.now() && until <= Date.now() + 400)
  await alice.expect({ type: 'left', ref: undefined, room: 'r', reason: 'banned' })
  await bob.expect({ type: 'presence', action: 'leave', member: { user: 'alice' }, last: true })
  assert.deepEqual(await app.hub.moderation('r'), [{ user: 'alice', ban: { until } }])
  await assert.rejects(alice.join('r'), /^RefusedError: join was refused: forbidden/)
  const other = await tab(t, app, 'alice')
  await assert.rejects(other.join('r'), /^RefusedError: join was refused: forbidden/, 'a new connection of the user too')
  await bob.refute({ type: 'presence', action: 'join' })
  assert.deepEqual((await app.hub.members('r')).map((m) => m.user), ['bob'])
  await alice.join('elsewhere')

  await sleep(until - Date.now() + 20)
  await alice.join('r')
  assert.deepEqual(await app.hub.moderation('r'), [], 'an ended ban is not listed')

  assert.deepEqual(await app.hub.ban('r', 'alice'), { user: 'alice', ban: {} })
  await alice.expect({ type: 'left', room: 'r', reason: 'banned' })
  await assert.rejects(alice.join('r'), /^RefusedError: join was refused: forbidden/)
  assert.deepEqual(await app.hub.unban('r', 'alice'), { user: 'alice' })
  await alice.join('r')
})

test('mute: sends are refused forbidden, typing is dropped (a mute known at join or heard of later), until unmute or its end', async (t) => {
  const app = await usersApp(t)
  const bob = await tab(t, app, 'bob', 'r')
  await app.hub.mute('r', 'alice')
  const alice = await tab(t, app, 'alice', 'r')
  await assert.rejects(alice.send('r', 'hello'), /^RefusedError: send was refused: forbidden: muted/)
  alice.push({ type: 'typing', room: 'r' })
  // Not delivered, nor refused: dropped.
  await Promise.all([bob.refute({ type: 'typing' }), alice.refute({ type: 'error' })])
  assert.deepEqual(await app.hub.moderation('r'), [{ user: 'alice', mute: {} }])

  await app.hub.unmute('r', 'alice')
  alice.push({ type: 'typing', room: 'r' })
  await bob.expect({ type: 'typing', member: { user: 'alice' } })
  await alice.send('r', 'back')

  const { mute } = await app.hub.mute('r', 'alice', { ms: 300 })
  alice.push({ type: 'typing', room: 'r' })
  await bob.refute({ type: 'typing' })
  await sleep((mute?.until ?? 0) - Date.now() + 20)
  alice.push({ type: 'typing', room: 'r' })
  // A mute ends at its until on every node without an event.
  await bob.expect({ type: 'typing', member: { user: 'alice' } })
  await alice.send('r', 'free again')
})

test('disconnectUser closes every connection of the user with 1000, and only those', async (t) => {
  const app = await usersApp(t)
  const bob = await tab(t, app, 'bob', 'r')
  const tabs = [await tab(t, app, 'alice', 'r'), await tab(t, app, 'alice')]
  await app.hub.disconnectUser('alice')
  for (const alice of tabs) assert.deepEqual(await alice.expectClose(1000), { code: 1000, reason: 'disconnected by the server' })
  await bob.expect({ type: 'presence', action: 'leave', member: { user: 'alice' }, last: true })
  await bob.request({ type: 'ping' })
  assert.equal(app.hub.stats().connections, 1)
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
