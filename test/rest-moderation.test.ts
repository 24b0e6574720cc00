/**
 * The HTTP API's moderation and server-publish routes (`rest.authorize`):
 * absent without it, 403 when refused, 400 naming a bad field, 503 while the
 * broker is down, and what each answers when allowed.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import type { FastifyRequest } from 'fastify'
import { ChatError, MemoryBroker, type RestAction, type UserChange } from '../lib/index.js'
import { RawClient } from './helpers/client.js'
import { startServer } from './helpers/server.js'

const ADMIN = { 'content-type': 'application/json', 'x-admin': 'yes' }

function post (url: string, body: unknown, headers: Record<string, string> = ADMIN): Promise<Response> {
  return fetch(url, { method: 'POST', headers, body: JSON.stringify(body) })
}

test('without rest.authorize the moderation and publish routes do not exist', async (t) => {
  const { httpUrl } = await startServer(t, { home: false, rest: { prefix: '/api' } })
  for (const action of ['messages', 'kick', 'ban', 'unban', 'mute', 'unmute']) {
    assert.equal((await post(`${httpUrl}/api/rooms/r/${action}`, { user: 'a', text: 'x' })).status, 404, action)
  }
  assert.equal((await fetch(`${httpUrl}/api/rooms/r/moderation`)).status, 404)
})

test('rest.authorize decides each call by its action; refused or throwing is 403 in the error shape', async (t) => {
  const asked: RestAction[] = []
  const authorize = (request: FastifyRequest, action: RestAction): boolean => {
    asked.push(action)
    if (request.headers['x-admin'] === 'throw') throw new Error('the session store is down')
    return request.headers['x-admin'] === 'yes'
  }
  const { httpUrl } = await startServer(t, { home: false, rest: { prefix: '/api', authorize } })
  for (const admin of ['no', 'throw']) {
    const response = await post(`${httpUrl}/api/rooms/r/kick`, { user: 'a' }, { 'content-type': 'application/json', 'x-admin': admin })
    assert.equal(response.status, 403, admin)
    assert.deepEqual(await response.json(), { statusCode: 403, error: 'Forbidden', message: 'not allowed to kick' })
  }
  assert.equal((await post(`${httpUrl}/api/rooms/r/kick`, {}, { 'content-type': 'application/json' })).status, 403, 'refused before the body is looked at')
  for (const action of ['kick', 'ban', 'unban', 'mute', 'unmute'] as const) {
    assert.equal((await post(`${httpUrl}/api/rooms/r/${action}`, { user: 'a' })).status, 200, action)
  }
  assert.equal((await post(`${httpUrl}/api/rooms/r/messages`, { text: 'hi' })).status, 200)
  assert.equal((await fetch(`${httpUrl}/api/rooms/r/moderation`, { headers: ADMIN })).status, 200)
  assert.deepEqual(asked, ['kick', 'kick', 'kick', 'kick', 'ban', 'unban', 'mute', 'unmute', 'publish', 'moderation'])
})

test('allowed calls publish as the server and moderate, answering the user\'s bans and mutes', async (t) => {
  const { httpUrl, wsUrl } = await startServer(t, {
    home: false,
    rest: { prefix: '/api', authorize: (request) => request.headers['x-admin'] === 'yes' },
  })
  const member = await RawClient.connect(t, wsUrl)
  await member.request('joined', { type: 'join', room: 'r' })
  const published = await post(`${httpUrl}/api/rooms/r/messages`, { text: 'from the server' })
  const message = await published.json() as { seq: number, text: string, from: { id: string } }
  assert.deepEqual([message.seq, message.text, message.from.id], [1, 'from the server', 'server'])
  assert.equal((await member.next('message')).text, 'from the server')

  const banned = await (await post(`${httpUrl}/api/rooms/r/ban`, { user: 'alice', ms: 60_000 })).json() as { room: string, user: string, ban: { until: number } }
  assert.deepEqual([banned.room, banned.user, Object.keys(banned)], ['r', 'alice', ['room', 'user', 'ban']])
  assert.ok(banned.ban.until > Date.now())
  assert.deepEqual(await (await post(`${httpUrl}/api/rooms/r/mute`, { user: 'alice' })).json(), { room: 'r', user: 'alice', ban: banned.ban, mute: {} })
  const listed = await (await fetch(`${httpUrl}/api/rooms/r/moderation`, { headers: ADMIN })).json()
  assert.deepEqual(listed, { room: 'r', moderation: [{ user: 'alice', ban: banned.ban, mute: {} }] })
  assert.deepEqual(await (await post(`${httpUrl}/api/rooms/r/unban`, { user: 'alice' })).json(), { room: 'r', user: 'alice', mute: {} })
  assert.deepEqual(await (await post(`${httpUrl}/api/rooms/r/unmute`, { user: 'alice' })).json(), { room: 'r', user: 'alice' })
  assert.deepEqual(await (await post(`${httpUrl}/api/rooms/r/kick`, { user: 'alice' })).json(), { room: 'r', user: 'alice' })
})

test('a bad body or room is 400 naming the field', async (t) => {
  const { httpUrl } = await startServer(t, { home: false, maxTextLength: 10, rest: { prefix: '/api', authorize: () => true } })
  const cases: Array<[string, unknown, RegExp]> = [
    ['kick', {}, /user/],
    ['ban', { user: '' }, /user/],
    ['ban', { user: 'a', ms: 0 }, /ms/],
    ['mute', { user: 'a', ms: 'soon' }, /ms/],
    ['kick', { user: 'a', ms: 5 }, /ms: only ban and mute/],
    ['messages', { text: '' }, /text/],
    ['messages', { text: 'x'.repeat(11) }, /text: must be 1 to 10 characters/],
  ]
  for (const [action, body, message] of cases) {
    const response = await post(`${httpUrl}/api/rooms/r/${action}`, body)
    const answer = await response.json() as { statusCode: number, message: string }
    assert.equal(response.status, 400, `${action} ${JSON.stringify(body)}`)
    assert.match(answer.message, message, `${action} ${JSON.stringify(body)}`)
  }
  const badRoom = await post(`${httpUrl}/api/rooms/bad%20room/kick`, { user: 'a' })
  assert.equal(badRoom.status, 400)
  assert.match((await badRoom.json() as { message: string }).message, /^room:/)
})

test('authenticate guards the routes first; rest.authorize is asked only of those it admits', async (t) => {
  let asked = 0
  const { httpUrl } = await startServer(t, {
    home: false,
    authenticate: (request) => (request.headers.authorization === 'Bearer ok' ? { name: 'ok' } : undefined),
    rest: { prefix: '/api', authorize: () => { asked++; return true } },
  })
  assert.equal((await post(`${httpUrl}/api/rooms/r/kick`, { user: 'a' })).status, 401)
  assert.equal(asked, 0)
  assert.equal((await post(`${httpUrl}/api/rooms/r/kick`, { user: 'a' }, { ...ADMIN, authorization: 'Bearer ok' })).status, 200)
  assert.equal(asked, 1)
})

/** A memory broker whose store of user state is down: what a network broker says during an outage. */
class UserStoreDown extends MemoryBroker {
  override async changeUser (_room: string, _user: string, _change: UserChange): Promise<never> {
    throw new ChatError('unavailable', 'the store is down')
  }

  override async moderation (): Promise<never> {
    throw new ChatError('unavailable', 'the store is down')
  }
}

test('the moderation routes answer 503 while the broker is down', async (t) => {
  const { httpUrl } = await startServer(t, { home: false, broker: new UserStoreDown(), rest: { prefix: '/api', authorize: () => true } })
  const kicked = await post(`${httpUrl}/api/rooms/r/kick`, { user: 'a' })
  assert.equal(kicked.status, 503)
  assert.deepEqual(await kicked.json(), { statusCode: 503, error: 'Service Unavailable', message: 'the store is down' })
  assert.equal((await fetch(`${httpUrl}/api/rooms/r/moderation`)).status, 503)
})
