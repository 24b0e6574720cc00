/**
 * Messages that change, over real sockets (PROTOCOL.md, "Messages that
 * change"): edits, deletes and reactions as `update` entries with their own
 * seq, who may make them, resumes that replay them and pages that show
 * state; the server's `editMessage`/`deleteMessage` and the hub's `update`
 * event; the HTTP delete route. What each broker stores is the contract
 * suite's (message-changes-contract.ts).
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import type { FastifyRequest } from 'fastify'
import { ChatError, type PendingMessage, type RestAction } from '../lib/index.js'
import type { Update } from '../lib/protocol.js'
import { RawClient } from './helpers/client.js'
import { startServer } from './helpers/server.js'
import { serveUsers, settled, tab } from './helpers/users.js'

const refusedWith = (code: string) => (error: unknown): boolean => error instanceof ChatError && error.code === code
/** What an entry of `joined.history` is, in short: its type, seq and (for an update) action. */
const shortly = (entry: { type: string, seq: number, action?: string }): string => `${entry.type} ${entry.seq}${entry.action === undefined ? '' : ` ${entry.action}`}`

test('edit, react, unreact and delete reach every member as updates with their seqs, and each is acked with its seq', async (t) => {
  const server = await serveUsers(t)
  const alice = await tab(t, server, 'alice', 'r')
  const bob = await tab(t, server, 'bob', 'r')
  assert.equal((await alice.request('ack', { type: 'send', room: 'r', text: 'helo' })).seq, 1)
  const steps: Array<[RawClient, object, Partial<Update>]> = [
    [alice, { type: 'edit', room: 'r', seq: 1, text: 'hello' }, { seq: 2, action: 'edit', text: 'hello' }],
    [bob, { type: 'react', room: 'r', seq: 1, reaction: '👍', on: true }, { seq: 3, action: 'react', reaction: '👍' }],
    [bob, { type: 'react', room: 'r', seq: 1, reaction: '👍', on: false }, { seq: 4, action: 'unreact', reaction: '👍' }],
    [alice, { type: 'delete', room: 'r', seq: 1 }, { seq: 5, action: 'delete' }],
  ]
  for (const [actor, request, expected] of steps) {
    const ack = await actor.request('ack', request)
    assert.deepEqual([ack.room, ack.seq], ['r', expected.seq])
    for (const member of [alice, bob]) {
      const update = await member.next('update')
      assert.deepEqual({ seq: update.seq, action: update.action, text: update.text, reaction: update.reaction }, { text: undefined, reaction: undefined, ...expected })
      assert.deepEqual([update.room, update.target, update.by.user], ['r', 1, actor === alice ? 'alice' : 'bob'])
    }
  }
  alice.send({ type: 'edit', room: 'r', seq: 1, text: 'no ref' })
  assert.equal((await alice.next('error')).code, 'not_found', 'a refusal without ref is answered too')
})

test('only the author edits or deletes; a muted user may neither edit nor react; a missing, deleted or foreign target is refused', async (t) => {
  const server = await serveUsers(t)
  const alice = await tab(t, server, 'alice', 'r')
  const bob = await tab(t, server, 'bob', 'r')
  await alice.request('ack', { type: 'send', room: 'r', text: 'mine' })
  await assert.rejects(bob.request('ack', { type: 'edit', room: 'r', seq: 1, text: 'yours now' }), /^Error: forbidden/)
  await assert.rejects(bob.request('ack', { type: 'delete', room: 'r', seq: 1 }), /^Error: forbidden/)
  const other = await tab(t, server, 'alice')
  await assert.rejects(other.request('ack', { type: 'edit', room: 'r', seq: 1, text: 'x' }), /^Error: not_joined/, 'a member of the room only, even its author')

  await server.app.hub.mute('r', 'alice')
  await assert.rejects(alice.request('ack', { type: 'edit', room: 'r', seq: 1, text: 'muted' }), /^Error: forbidden: muted/)
  await assert.rejects(alice.request('ack', { type: 'react', room: 'r', seq: 1, reaction: '+1', on: true }), /^Error: forbidden: muted/)
  await server.app.hub.unmute('r', 'alice')

  await assert.rejects(alice.request('ack', { type: 'edit', room: 'r', seq: 9, text: 'x' }), /^Error: not_found/)
  await assert.rejects(alice.request('ack', { type: 'react', room: 'r', seq: 1, reaction: 'bad reaction', on: true }), /^Error: invalid: reaction/)
  await alice.request('ack', { type: 'delete', room: 'r', seq: 1 })
  await assert.rejects(alice.request('ack', { type: 'delete', room: 'r', seq: 1 }), /^Error: not_found/)
  await assert.rejects(bob.request('ack', { type: 'react', room: 'r', seq: 1, reaction: '+1', on: true }), /^Error: not_found/)
  await assert.rejects(alice.request('ack', { type: 'react', room: 'r', seq: 2, reaction: '+1', on: true }), /^Error: not_found/, 'an update is not a message')
  await settled(bob)
  assert.deepEqual(bob.pending('update').map((u) => u.action), ['delete'], 'nothing refused was delivered')
})

test('maxReactionsPerMessage bounds distinct reactions; a reaction that changes nothing is acked with the latest seq and stores nothing', async (t) => {
  const server = await serveUsers(t, { maxReactionsPerMessage: 2 })
  const alice = await tab(t, server, 'alice', 'r')
  const bob = await tab(t, server, 'bob', 'r')
  await alice.request('ack', { type: 'send', room: 'r', text: 'vote' })
  await alice.request('ack', { type: 'react', room: 'r', seq: 1, reaction: 'a', on: true })
  await bob.request('ack', { type: 'react', room: 'r', seq: 1, reaction: 'b', on: true })
  await assert.rejects(bob.request('ack', { type: 'react', room: 'r', seq: 1, reaction: 'c', on: true }), /^Error: too_many_reactions/)
  assert.equal((await bob.request('ack', { type: 'react', room: 'r', seq: 1, reaction: 'a', on: true })).seq, 4, 'a reaction already given is one more user')
  assert.equal((await bob.request('ack', { type: 'react', room: 'r', seq: 1, reaction: 'a', on: true })).seq, 4, 'the same again changes nothing')
  assert.equal((await alice.request('ack', { type: 'react', room: 'r', seq: 1, reaction: 'c', on: false })).seq, 4)
  const { messages } = await server.app.hub.history('r')
  assert.deepEqual(messages[0]?.reactions, { a: ['alice', 'bob'], b: ['bob'] })
  await settled(alice)
  assert.deepEqual(alice.pending('update').map((u) => u.seq), [2, 3, 4])
})

test('a change retried with its cid is stored and delivered once, and each try is acked with its seq', async (t) => {
  const server = await serveUsers(t)
  const alice = await tab(t, server, 'alice', 'r')
  const bob = await tab(t, server, 'bob', 'r')
  await alice.request('ack', { type: 'send', room: 'r', text: 'draft' })
  const first = await alice.request('ack', { type: 'edit', room: 'r', seq: 1, text: 'final', cid: 'edit-1' })
  await bob.request('ack', { type: 'react', room: 'r', seq: 1, reaction: 'ok', on: true, cid: 'react-1' })
  const retried = await alice.request('ack', { type: 'edit', room: 'r', seq: 1, text: 'final', cid: 'edit-1' })
  assert.deepEqual([first.seq, retried.seq], [2, 2])
  assert.equal((await bob.request('ack', { type: 'react', room: 'r', seq: 1, reaction: 'ok', on: true, cid: 'react-1' })).seq, 3)
  await settled(alice)
  await settled(bob)
  for (const member of [alice, bob]) assert.deepEqual(member.pending('update').map((u) => [u.seq, u.cid]), [[2, 'edit-1'], [3, 'react-1']])
})

test('a resume with since replays exactly the entries missed; a join without since shows current state only', async (t) => {
  const server = await serveUsers(t)
  const alice = await tab(t, server, 'alice', 'r')
  const bob = await tab(t, server, 'bob')
  const first = await bob.request('joined', { type: 'join', room: 'r' })
  await alice.request('ack', { type: 'send', room: 'r', text: 'one' })
  assert.equal((await bob.next('message')).seq, 1)
  await bob.request('left', { type: 'leave', room: 'r' })

  await alice.request('ack', { type: 'send', room: 'r', text: 'two' })
  await alice.request('ack', { type: 'edit', room: 'r', seq: 1, text: 'one!' })
  await alice.request('ack', { type: 'react', room: 'r', seq: 2, reaction: '👍', on: true })
  await alice.request('ack', { type: 'send', room: 'r', text: 'three' })
  await alice.request('ack', { type: 'delete', room: 'r', seq: 5 })

  const resumed = await bob.request('joined', { type: 'join', room: 'r', since: 1, epoch: first.epoch })
  assert.deepEqual([resumed.recovered, resumed.seq], [true, 6])
  assert.deepEqual(resumed.history.map(shortly), ['message 2', 'update 3 edit', 'update 4 react', 'message 5', 'update 6 delete'])
  const [two, , , three] = resumed.history
  assert.deepEqual(two?.type === 'message' && two.reactions, { '👍': ['alice'] }, 'messages in their current state')
  assert.deepEqual(three?.type === 'message' && [three.text, three.deleted], ['', true])

  const carol = await tab(t, server, 'carol')
  const fresh = await carol.request('joined', { type: 'join', room: 'r' })
  assert.equal(fresh.recovered, undefined)
  assert.deepEqual(fresh.history.map(shortly), ['message 1', 'message 2', 'message 5'], 'messages only, in their current state')
  const [one] = fresh.history
  assert.deepEqual(one?.type === 'message' && [one.text, typeof one.edited], ['one!', 'number'])

  await alice.request('ack', { type: 'edit', room: 'r', seq: 2, text: 'two!' })
  for (const member of [bob, carol]) assert.equal((await member.next('update')).seq, 7, 'live updates follow, without a gap or a duplicate')
  await settled(bob)
  assert.equal(bob.pending('update').length, 0)
})

test('the onMessage hook sees an edit\'s new text with the seq it edits, and may refuse or replace it', async (t) => {
  const seen: PendingMessage[] = []
  const server = await serveUsers(t, {
    onMessage: (message) => {
      seen.push(message)
      return message.text.includes('spam') ? false : message.text.replace('darn', '****')
    },
  })
  const alice = await tab(t, server, 'alice', 'r')
  await alice.request('ack', { type: 'send', room: 'r', text: 'hello' })
  await assert.rejects(alice.request('ack', { type: 'edit', room: 'r', seq: 1, text: 'buy spam' }), /^Error: forbidden: the edit was refused/)
  await alice.request('ack', { type: 'edit', room: 'r', seq: 1, text: 'oh darn' })
  assert.equal((await alice.next('update')).text, 'oh ****')
  assert.equal((await server.app.hub.history('r')).messages[0]?.text, 'oh ****')
  assert.deepEqual(seen, [{ room: 'r', text: 'hello' }, { room: 'r', text: 'buy spam', edit: 1 }, { room: 'r', text: 'oh darn', edit: 1 }])
})

test('hub.editMessage and hub.deleteMessage act as the server on any message; hub.on(\'update\') reports every change made here', async (t) => {
  const server = await serveUsers(t)
  const { hub } = server.app
  const told: Update[] = []
  hub.on('update', (update) => { told.push(update) })
  const alice = await tab(t, server, 'alice', 'r')
  await alice.request('ack', { type: 'send', room: 'r', text: 'rude' })
  await alice.request('ack', { type: 'react', room: 'r', seq: 1, reaction: 'x', on: true })
  await alice.request('ack', { type: 'react', room: 'r', seq: 1, reaction: 'x', on: true })
  assert.equal(await hub.editMessage('r', 1, 'moderated'), 3)
  const edit = await alice.next('update', (u) => u.seq === 3)
  assert.deepEqual([edit.action, edit.text, edit.by], ['edit', 'moderated', { id: 'server', user: 'server', name: 'server' }])
  assert.equal(await hub.deleteMessage('r', 1), 4)
  assert.equal((await alice.next('update', (u) => u.seq === 4)).action, 'delete')
  assert.deepEqual(told.map((u) => [u.seq, u.action, u.by.user]), [[2, 'react', 'alice'], [3, 'edit', 'server'], [4, 'delete', 'server']], 'a change that changed nothing is not told')

  await assert.rejects(hub.deleteMessage('r', 1), refusedWith('not_found'))
  await assert.rejects(hub.editMessage('r', 1, 'again'), refusedWith('not_found'))
  await assert.rejects(hub.editMessage('nobody-here', 1, 'x'), refusedWith('not_found'))
  await assert.rejects(hub.editMessage('r', 0, 'x'), refusedWith('invalid'))
  await assert.rejects(hub.deleteMessage('r', 1.5), refusedWith('invalid'))
  await assert.rejects(hub.editMessage('r', 1, ''), refusedWith('invalid'))
  await assert.rejects(hub.deleteMessage('no spaces', 1), refusedWith('invalid'))
  assert.equal(told.length, 3)
})

test('DELETE {prefix}/rooms/:room/messages/:seq with rest.authorize deletes as the server: 200 with the seq, 403, 404, 400; absent without authorize', async (t) => {
  const asked: RestAction[] = []
  const authorize = (request: FastifyRequest, action: RestAction): boolean => {
    asked.push(action)
    return request.headers['x-admin'] === 'yes'
  }
  const { app, httpUrl, wsUrl } = await startServer(t, { home: false, rest: { prefix: '/api', authorize } })
  const member = await RawClient.connect(t, wsUrl)
  await member.request('joined', { type: 'join', room: 'r' })
  await app.hub.broadcast('r', 'oops')
  const remove = (path: string, admin = 'yes'): Promise<Response> => fetch(`${httpUrl}/api/rooms/r/messages/${path}`, { method: 'DELETE', headers: { 'x-admin': admin } })

  const refused = await remove('1', 'no')
  assert.equal(refused.status, 403)
  assert.deepEqual(await refused.json(), { statusCode: 403, error: 'Forbidden', message: 'not allowed to delete' })
  const deleted = await remove('1')
  assert.deepEqual([deleted.status, await deleted.json()], [200, { seq: 2 }])
  const update = await member.next('update')
  assert.deepEqual([update.seq, update.action, update.target, update.by.user], [2, 'delete', 1, 'server'])
  const again = await remove('1')
  assert.equal(again.status, 404)
  assert.match((await again.json() as { message: string }).message, /no message 1 in r/)
  for (const bad of ['0', 'one', '1.5']) assert.equal((await remove(bad)).status, 400, bad)
  assert.ok(asked.every((action) => action === 'delete'))

  const plain = await startServer(t, { home: false, rest: { prefix: '/api' } })
  await plain.app.hub.broadcast('r', 'stays')
  const absent = await fetch(`${plain.httpUrl}/api/rooms/r/messages/1`, { method: 'DELETE' })
  assert.equal(absent.status, 404)
  assert.match((await absent.json() as { message: string }).message, /^Route DELETE/)
  assert.equal((await plain.app.hub.history('r')).messages[0]?.text, 'stays')
})

test('history pages, over the socket and HTTP, hold messages only in their current state; updates take no place in them', async (t) => {
  const server = await serveUsers(t, { rest: { prefix: '/api' } })
  const alice = await tab(t, server, 'alice', 'r')
  await alice.request('ack', { type: 'send', room: 'r', text: 'a' })
  await alice.request('ack', { type: 'send', room: 'r', text: 'b' })
  await alice.request('ack', { type: 'edit', room: 'r', seq: 1, text: 'a!' })
  await alice.request('ack', { type: 'react', room: 'r', seq: 2, reaction: '🎉', on: true })
  await alice.request('ack', { type: 'send', room: 'r', text: 'c' })
  await alice.request('ack', { type: 'edit', room: 'r', seq: 5, text: 'c!' })

  const newest = await alice.request('history', { type: 'history', room: 'r', limit: 2 })
  assert.deepEqual([newest.messages.map((m) => [m.seq, m.text]), newest.more], [[[2, 'b'], [5, 'c!']], true])
  assert.deepEqual(newest.messages[0]?.reactions, { '🎉': ['alice'] })
  const older = await alice.request('history', { type: 'history', room: 'r', before: 2, limit: 2 })
  assert.deepEqual([older.messages.map((m) => [m.seq, m.text]), older.more], [[[1, 'a!']], false])

  const page = await (await fetch(`${server.httpUrl}/api/rooms/r/messages?user=alice&limit=2`)).json() as { messages: Array<{ type: string, seq: number }>, more: boolean }
  assert.deepEqual([page.messages.map((m) => [m.type, m.seq]), page.more], [[['message', 2], ['message', 5]], true])
  const all = await (await fetch(`${server.httpUrl}/api/rooms/r/messages?user=alice`)).json() as { messages: Array<{ seq: number }>, more: boolean }
  assert.deepEqual([all.messages.map((m) => m.seq), all.more], [[1, 2, 5], false])
})

test('messages carrying as many reactions as they may still fit the reply budget: joins, resumes and pages never close their reader', async (t) => {
  const maxBufferedBytes = 20_000
  const server = await serveUsers(t, { maxBufferedBytes, maxTextLength: 100, maxReactionsPerMessage: 1000, rateLimit: { perSecond: 10_000, burst: 10_000 }, errorLimit: { count: 1000, windowMs: 60_000 } })
  const alice = await tab(t, server, 'alice', 'r')
  const heavy = 3
  for (let i = 0; i < heavy; i++) await alice.request('ack', { type: 'send', room: 'r', text: 'x'.repeat(100) })
  // Distinct reactions of 32 characters until each message holds all the bytes of reactions it may.
  for (let seq = 1; seq <= heavy; seq++) {
    let refused = false
    for (let n = 0; !refused; n += 50) {
      const tries = Array.from({ length: 50 }, (_, k) => alice.request('ack', { type: 'react', room: 'r', seq, reaction: `${n + k}`.padStart(32, 'r'), on: true }).then(() => false, (error: Error) => {
        assert.match(error.message, /^too_many_reactions/)
        return true
      }))
      refused = (await Promise.all(tries)).includes(true)
    }
  }
  const budget = maxBufferedBytes / 2
  const { messages } = await server.app.hub.history('r')
  assert.equal(messages.length, heavy)
  for (const message of messages) {
    const bytes = Buffer.byteLength(JSON.stringify(message))
    assert.ok(Object.keys(message.reactions ?? {}).length > 100 && bytes <= budget, `message ${message.seq}: ${bytes} bytes`)
  }

  const reader = await tab(t, server, 'bob')
  const joined = await reader.request('joined', { type: 'join', room: 'r' })
  assert.ok(joined.history.length >= 1 && joined.history.length < heavy && Buffer.byteLength(JSON.stringify(joined.history)) <= budget)
  const resumed = await (await tab(t, server, 'carol')).request('joined', { type: 'join', room: 'r', since: 0 })
  assert.equal(resumed.recovered, false, 'what was missed does not fit in one reply')
  assert.ok(resumed.history.length >= 1 && resumed.history.every((entry) => entry.type === 'message'), 'then the newest messages, in their current state')
  const page = await reader.request('history', { type: 'history', room: 'r' })
  assert.ok(page.more && page.messages.length >= 1 && Buffer.byteLength(JSON.stringify(page.messages)) <= budget)
  await settled(reader)
})
