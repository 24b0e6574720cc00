/** The HTTP side: the HTTP API of PROTOCOL.md and the home page. The outage test runs a private redis-server. */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import Fastify from 'fastify'
import fastifyStatic from '@fastify/static'
import { hostname } from 'node:os'
import { fileURLToPath } from 'node:url'
import { RedisBroker } from '../lib/redis.js'
import { RawClient } from './helpers/client.js'
import { uniquePrefix } from './helpers/redis.js'
import { RedisServer, skipUnlessRedisServer } from './helpers/redis-server.js'
import { startServer } from './helpers/server.js'

test('GET {prefix}/rooms lists rooms with members and seq; messages pages like history', async (t) => {
  const { wsUrl, httpUrl, app } = await startServer(t, { home: false, rest: { prefix: '/api' } })
  const alice = await RawClient.connect(t, wsUrl)
  await alice.request('joined', { type: 'join', room: 'lobby' })
  for (let i = 1; i <= 3; i++) await app.hub.broadcast('lobby', `m${i}`)
  const rooms = await (await fetch(`${httpUrl}/api/rooms`)).json()
  assert.deepEqual(rooms, { rooms: [{ room: 'lobby', members: 1, seq: 3 }], more: false })
  const page = await (await fetch(`${httpUrl}/api/rooms/lobby/messages?before=3&limit=1`)).json() as { room: string, messages: Array<{ seq: number }>, more: boolean }
  assert.equal(page.room, 'lobby')
  assert.deepEqual(page.messages.map((m) => m.seq), [2])
  assert.equal(page.more, true)
  assert.equal((await fetch(`${httpUrl}/api/rooms/bad%20room/messages`)).status, 400)
  assert.equal((await fetch(`${httpUrl}/api/rooms/lobby/messages?limit=1000`)).status, 400)
})

test('GET {prefix}/rooms pages by after and limit, saying whether more rooms follow', async (t) => {
  const { wsUrl, httpUrl } = await startServer(t, { home: false, rest: { prefix: '/api' } })
  const alice = await RawClient.connect(t, wsUrl)
  for (const room of ['c', 'a', 'b']) await alice.request('joined', { type: 'join', room })
  const get = async (query: string): Promise<unknown> => await (await fetch(`${httpUrl}/api/rooms${query}`)).json()
  const names = (rooms: Array<{ room: string }>): string[] => rooms.map((info) => info.room)
  const first = await get('?limit=2') as { rooms: Array<{ room: string }>, more: boolean }
  assert.deepEqual([names(first.rooms), first.more], [['a', 'b'], true])
  const second = await get('?after=b&limit=2') as { rooms: Array<{ room: string }>, more: boolean }
  assert.deepEqual([names(second.rooms), second.more], [['c'], false])
  assert.deepEqual(await get(''), { rooms: [{ room: 'a', members: 1, seq: 0 }, { room: 'b', members: 1, seq: 0 }, { room: 'c', members: 1, seq: 0 }], more: false })
  assert.equal((await fetch(`${httpUrl}/api/rooms?limit=0`)).status, 400)
  assert.equal((await fetch(`${httpUrl}/api/rooms?limit=1001`)).status, 400)
})

test('GET {prefix}/nodes lists this node with its connections', async (t) => {
  const { wsUrl, httpUrl } = await startServer(t, { home: false, rest: { prefix: '/api' } })
  await RawClient.connect(t, wsUrl)
  await RawClient.connect(t, wsUrl)
  const { nodes } = await (await fetch(`${httpUrl}/api/nodes`)).json() as { nodes: Array<Record<string, unknown>> }
  assert.equal(nodes.length, 1)
  const [node] = nodes as [Record<string, unknown>]
  assert.deepEqual(Object.keys(node).sort(), ['connections', 'host', 'id', 'lastSeen', 'pid', 'startedAt'])
  assert.deepEqual([node.pid, node.host, node.connections], [process.pid, hostname(), 2])
})

test('the HTTP API answers 503 in the error shape while the broker is down', { skip: skipUnlessRedisServer() }, async (t) => {
  const redis = await RedisServer.start()
  t.after(() => redis.kill())
  const broker = new RedisBroker({ url: redis.url, prefix: uniquePrefix(), commandTimeout: 500 })
  const { httpUrl } = await startServer(t, { home: false, rest: { prefix: '/api' }, broker })
  assert.equal((await fetch(`${httpUrl}/api/nodes`)).status, 200)
  await redis.kill()
  for (const path of ['/api/nodes', '/api/rooms', '/api/rooms/lobby/messages']) {
    const response = await fetch(`${httpUrl}${path}`)
    assert.equal(response.status, 503, path)
    const body = await response.json() as { statusCode: number, error: string, message: string }
    assert.deepEqual([body.statusCode, body.error], [503, 'Service Unavailable'], path)
    assert.match(body.message, /Redis/, path)
  }
})

test('the HTTP API runs the same authenticate hook as /ws', async (t) => {
  const { httpUrl } = await startServer(t, {
    home: false,
    rest: { prefix: '/api' },
    authenticate: (request) => (request.headers.authorization === 'Bearer ok' ? { name: 'ok' } : undefined),
  })
  assert.equal((await fetch(`${httpUrl}/api/rooms`)).status, 401)
  assert.equal((await fetch(`${httpUrl}/api/rooms`, { headers: { authorization: 'Bearer ok' } })).status, 200)
})

test('without rest there is no HTTP API', async (t) => {
  const { httpUrl } = await startServer(t, { home: false })
  assert.equal((await fetch(`${httpUrl}/rooms`)).status, 404)
})

test('the home page is served at / (or its prefix) with the client library, and not with home: false', async (t) => {
  const served = await startServer(t)
  const { httpUrl } = served
  const page = await fetch(`${served.httpUrl}/`)
  assert.equal(page.status, 200)
  assert.match(page.headers.get('content-type') ?? '', /text\/html/)
  assert.match(await page.text(), /<html/i)
  const client = await fetch(`${httpUrl}/client/index.js`)
  assert.equal(client.status, 200)
  assert.match(client.headers.get('content-type') ?? '', /javascript/)
  // What the library imports, and what that imports, is served beside it, so a browser loads it as is.
  const modules = ['index.js']
  for (const module of modules) {
    const response = module === 'index.js' ? client : await fetch(`${httpUrl}/client/${module}`)
    assert.equal(response.status, 200, module)
    for (const [, imported] of (await response.text()).matchAll(/from '\.\/([\w-]+\.js)'/g)) if (!modules.includes(imported as string)) modules.push(imported as string)
  }
  assert.ok(modules.length > 1, 'the client imports its siblings')

  const prefixed = await startServer(t, { home: { prefix: '/chat' } })
  assert.equal((await fetch(`${prefixed.httpUrl}/chat/`)).status, 200)
  assert.equal((await fetch(`${prefixed.httpUrl}/`)).status, 404)

  const none = await startServer(t, { home: false })
  assert.equal((await fetch(`${none.httpUrl}/`)).status, 404)
})

test('under a prefix, the home page\'s address without its slash redirects (301) to it, keeping the query', async (t) => {
  const { httpUrl } = await startServer(t, { home: { prefix: '/chat' } })
  for (const [from, to] of [['/chat', '/chat/'], ['/chat?room=lobby', '/chat/?room=lobby']]) {
    const response = await fetch(`${httpUrl}${from}`, { redirect: 'manual' })
    assert.equal(response.status, 301, from)
    assert.equal(response.headers.get('location'), to, from)
  }
  const followed = await fetch(`${httpUrl}/chat`)
  assert.equal(followed.status, 200)
  assert.equal(followed.url, `${httpUrl}/chat/`)
  assert.match(await followed.text(), /<html/i)
  assert.equal((await fetch(`${httpUrl}/chat/`, { redirect: 'manual' })).status, 200, 'the page itself is not redirected')
})

test('the home page leaves the application\'s own @fastify/static untouched', async (t) => {
  const root = fileURLToPath(new URL('../../example/', import.meta.url))
  const { httpUrl, app } = await startServer(t, { home: { prefix: '/chat' } }, async (instance) => {
    await instance.register(fastifyStatic, { root, prefix: '/files/' })
    instance.get('/send-file', (_request, reply) => reply.sendFile('config.json'))
  })
  assert.equal((await fetch(`${httpUrl}/files/config.json`)).status, 200)
  assert.equal((await fetch(`${httpUrl}/send-file`)).status, 200, 'reply.sendFile is still the application\'s')
  assert.equal((await fetch(`${httpUrl}/chat/`)).status, 200)
  assert.ok(app.hasReplyDecorator('sendFile'))
})

test('two instances in one process each have their own hub', async () => {
  const one = Fastify()
  const two = Fastify()
  await one.register((await import('../lib/index.js')).default, { home: false })
  await two.register((await import('../lib/index.js')).default, { home: false })
  await one.ready()
  await two.ready()
  assert.notEqual(one.hub, two.hub)
  await one.close()
  await two.close()
})
