/**
 * The README's example of the test kit ("Testing your app"), word for word
 * but for the imports (here from the sources, there from the package), so
 * that the example is known to run. Change both together.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import Fastify from 'fastify'
import chatRooms from '../lib/index.js'
import { connect } from '../lib/testing.js'

// app.ts ---------------------------------------------------------------------
const users: Record<string, { id: string, name: string }> = {
  'alice-token': { id: 'alice', name: 'Alice' },
  'bob-token': { id: 'bob', name: 'Bob' },
}

export async function buildApp () {
  const app = Fastify()
  await app.register(chatRooms, {
    // A browser cannot set headers on a WebSocket: the token comes in the query.
    authenticate: (request) => users[(request.query as { token?: string }).token ?? ''],
    onMessage: ({ text }) => text.replaceAll('darn', '****'),
  })
  return app
}

// app.test.ts ----------------------------------------------------------------
test('members of a room get each other\'s messages, censored', async (t) => {
  const app = await buildApp()
  t.after(() => app.close())
  // `t` closes the connections when the test ends.
  const alice = await connect(app, { t, query: { token: 'alice-token' } })
  const bob = await connect(app, { t, query: { token: 'bob-token' } })
  assert.equal(alice.welcome.name, 'Alice')
  await assert.rejects(connect(app, { query: { token: 'stolen' } }), /401/)

  await alice.join('lobby')
  const joined = await bob.join('lobby')
  assert.deepEqual(joined.members.map((member) => member.user).sort(), ['alice', 'bob'])
  await alice.expect({ type: 'presence', action: 'join', member: { user: 'bob' }, first: true })

  const seq = await bob.send('lobby', 'darn, hello')
  await alice.expect({ type: 'message', room: 'lobby', seq, from: { name: 'Bob' }, text: '****, hello' })
  await bob.expect('message', (message) => message.seq === seq)

  alice.push({ type: 'typing', room: 'lobby' })
  await bob.expect({ type: 'typing', member: { user: 'alice' } })
  await alice.refute({ type: 'typing' })

  await bob.close()
  await alice.expect({ type: 'presence', action: 'leave', member: { user: 'bob' }, last: true })
  await app.hub.disconnectUser('alice')
  await alice.expectClose(1000)
})
