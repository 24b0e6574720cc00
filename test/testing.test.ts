/**
 * The test kit (`fastify-chat-rooms/testing`) itself: connecting through the
 * application's `authenticate`, requests and their replies, expect and refute
 * with the failure messages a test author reads, frames held to the
 * protocol, closes, and nothing left running afterwards.
 */
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import Fastify, { type FastifyInstance } from 'fastify'
import cookie from '@fastify/cookie'
import chatRooms, { type ChatRoomsOptions } from '../lib/index.js'
import { connect, matches, RefusedError } from '../lib/testing.js'

/** Users of the app under test, by the token its `authenticate` reads from a query parameter, a header or a cookie. */
const users: Record<string, { id: string, name: string }> = {
  'alice-token': { id: 'alice', name: 'Alice' },
  'bob-token': { id: 'bob', name: 'Bob' },
}

async function appWith (t: TestContext, options: ChatRoomsOptions = {}): Promise<FastifyInstance> {
  const app = Fastify({ logger: false })
  await app.register(cookie)
  await app.register(chatRooms, {
    home: false,
    authenticate: (request) => {
      const token = (request.query as { token?: string }).token ?? request.headers['x-token'] ?? request.cookies.session
      return typeof token === 'string' ? users[token] : undefined
    },
    ...options,
  })
  t.after(() => app.close())
  return app
}

/** Waits until `condition` holds of frames received and not taken, without taking any. */
async function received (condition: () => boolean): Promise<void> {
  for (let waited = 0; !condition(); waited += 10) {
    if (waited >= 2000) throw new Error('the frames did not arrive')
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

test('connects as a user through the app\'s authenticate, from a query parameter, a header or a cookie; a refused upgrade rejects', async (t) => {
  const app = await appWith(t)
  const byQuery = await connect(app, { t, query: { token: 'alice-token' } })
  const byHeader = await connect(app, { t, headers: { 'x-token': 'bob-token' } })
  const byCookie = await connect(app, { t, cookies: { session: 'alice-token' } })
  assert.deepEqual([byQuery, byHeader, byCookie].map(({ welcome }) => [welcome.user, welcome.name]), [['alice', 'Alice'], ['bob', 'Bob'], ['alice', 'Alice']])
  assert.match(byQuery.welcome.id, /^alice\./)
  await assert.rejects(connect(app, { t, query: { token: 'stolen' } }), /the upgrade of \/ws was refused: .*401/)
})

test('join returns joined, send returns the ack\'s seq, and both members get the message', async (t) => {
  const app = await appWith(t)
  const alice = await connect(app, { t, query: { token: 'alice-token' } })
  const bob = await connect(app, { t, query: { token: 'bob-token' } })
  const joined = await alice.join('lobby')
  assert.equal(joined.room, 'lobby')
  assert.deepEqual(joined.members.map((member) => member.user), ['alice'])
  await bob.join('lobby')
  await alice.expect({ type: 'presence', action: 'join', member: { user: 'bob' }, first: true })
  const seq = await bob.send('lobby', 'hello', { cid: 'c1' })
  for (const client of [alice, bob]) {
    const message = await client.expect({ type: 'message', room: 'lobby', seq, from: { name: 'Bob' }, text: /^hel/ })
    assert.equal(message.cid, 'c1')
  }
  await alice.refute({ type: 'message' }, { timeout: 0 })
  const history = await alice.request({ type: 'history', room: 'lobby' })
  assert.deepEqual(history.messages.map((message) => message.text), ['hello'])
  await alice.leave('lobby')
  await bob.expect({ type: 'presence', action: 'leave', member: { user: 'alice' }, last: true })
})

test('a refused request rejects with the error frame', async (t) => {
  const app = await appWith(t)
  const alice = await connect(app, { t, query: { token: 'alice-token' } })
  const refused = await alice.send('lobby', 'not joined').then(() => undefined, (error: unknown) => error)
  assert.ok(refused instanceof RefusedError)
  assert.equal(refused.frame.code, 'not_joined')
  assert.match(refused.message, /^send was refused: not_joined: /)
})

test('expect fails after its timeout with a message that lists the frames that did arrive', async (t) => {
  const app = await appWith(t)
  const alice = await connect(app, { t, query: { token: 'alice-token' } })
  const bob = await connect(app, { t, query: { token: 'bob-token' } })
  await alice.join('lobby')
  await bob.join('lobby')
  await bob.send('lobby', 'hi')
  await received(() => alice.frames.some((frame) => frame.type === 'message'))
  const failure = await alice.expect({ type: 'message', text: 'bye' }, { timeout: 50 }).then(() => undefined, (error: unknown) => error)
  assert.ok(failure instanceof assert.AssertionError)
  assert.match(failure.message, /^no frame matching \{"type":"message","text":"bye"\} within 50 ms; 2 frames received and not taken:\n/)
  assert.match(failure.message, /\n {2}\{"type":"presence","room":"lobby","action":"join"/)
  assert.match(failure.message, /\n {2}\{"type":"message","room":"lobby","seq":1,.*"text":"hi"/)
  assert.match(failure.stack ?? '', /testing\.test\.js/, 'the stack points at the test, not at the kit\'s timer')
  await assert.rejects(alice.expect('typing', (typing) => typing.member.user === 'bob', { timeout: 50 }), /^AssertionError.*no typing frame passing the predicate within 50 ms/)
})

test('refute passes when no matching frame comes, and fails naming the one that did, received before or during the wait', async (t) => {
  const app = await appWith(t)
  const alice = await connect(app, { t, query: { token: 'alice-token' } })
  const bob = await connect(app, { t, query: { token: 'bob-token' } })
  await alice.join('lobby')
  await bob.join('lobby')
  bob.push({ type: 'typing', room: 'lobby' })
  await alice.refute({ type: 'message' })
  await received(() => alice.frames.some((frame) => frame.type === 'typing'))
  await assert.rejects(alice.refute({ type: 'typing', member: { user: 'bob' } }), /expected no frame matching .* within 100 ms, but got \{"type":"typing","room":"lobby","member":\{.*"user":"bob"/)
  const during = alice.refute('message', (message) => message.text === 'late', { timeout: 1000 })
  await bob.send('lobby', 'late')
  await assert.rejects(during, /expected no message frame passing the predicate within 1000 ms, but got .*"text":"late"/)
})

test('close waits for the server\'s close; expectClose checks the code the server closed with', async (t) => {
  const app = await appWith(t)
  const alice = await connect(app, { t, query: { token: 'alice-token' } })
  const bob = await connect(app, { t, query: { token: 'bob-token' } })
  await alice.join('lobby')
  await bob.join('lobby')
  assert.deepEqual(await bob.close(), { code: 1000, reason: '' })
  await alice.expect({ type: 'presence', action: 'leave', member: { user: 'bob' }, last: true })
  app.hub.disconnect(alice.welcome.id, 4001, 'go away')
  await assert.rejects(alice.expectClose(4002), /expected the connection to close with code 4002, but it closed with code 4001, "go away"/)
  assert.deepEqual(await alice.expectClose(4001), { code: 4001, reason: 'go away' })
  await assert.rejects(alice.expect({ type: 'message' }), /the connection closed \(code 4001, "go away"\) with no frame matching \{"type":"message"\}/)
})

test('a frame outside the protocol fails the wait with what is wrong with it', async (t) => {
  const app = await appWith(t)
  // An application route beside the chat's, sending what the chat never would.
  app.get('/not-chat', { websocket: true }, (socket) => socket.send(JSON.stringify({ type: 'welcome', protocol: 2, id: 7 })))
  await assert.rejects(connect(app, { t, path: '/not-chat' }), /the server sent a frame outside the protocol \(.*id.*\): \{"type":"welcome","protocol":2,"id":7\}/)
})

test('nothing is left running: no timer after a wait is answered, no socket once closed', async (t) => {
  const app = await appWith(t)
  await app.ready()
  const before = process.getActiveResourcesInfo().filter((resource) => resource === 'Timeout').length
  // Waits of a minute: a timer not cleared once its wait is answered would still be counted below.
  const alice = await connect(app, { query: { token: 'alice-token' }, timeout: 60_000 })
  await alice.join('lobby')
  await alice.send('lobby', 'hi')
  await alice.expect({ type: 'message', text: 'hi' })
  assert.equal(process.getActiveResourcesInfo().filter((resource) => resource === 'Timeout').length, before, 'answered waits cleared their timers')
  await alice.close()
  assert.equal(app.hub.stats().connections, 0, 'the server let go of the closed connection')
})

test('patterns match any subset of fields, arrays element by element, strings by RegExp', () => {
  const frame = { type: 'joined', room: 'lobby', members: [{ id: 'a.1', user: 'a', name: 'A' }], seq: 0, cid: undefined }
  assert.ok(matches({ type: 'joined', members: [{ user: 'a' }] }, frame))
  assert.ok(matches({ room: /^lob/, cid: undefined }, frame))
  assert.ok(!matches({ members: [] }, frame), 'an array pattern has the array\'s length')
  assert.ok(!matches({ seq: 1 }, frame))
  assert.ok(!matches({ room: 'lobby', extra: 'x' }, frame), 'a field the frame lacks matches only undefined')
  assert.ok(!matches({ members: { user: 'a' } }, frame), 'an object pattern does not match an array')
})
