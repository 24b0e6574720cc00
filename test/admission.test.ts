/** Refusals before the upgrade: plain HTTP statuses with Fastify's error body. */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import type { AddressInfo } from 'node:net'
import Fastify from 'fastify'
import WebSocket from 'ws'
import chatRooms from '../lib/index.js'
import { RawClient } from './helpers/client.js'
import { startServer } from './helpers/server.js'

interface Refusal {
  status: number
  body: { statusCode: number, error: string, message: string }
}

/** Opens a WebSocket and returns the HTTP refusal, or fails when the upgrade succeeds. */
async function refusal (url: string, options: WebSocket.ClientOptions = {}): Promise<Refusal> {
  const socket = new WebSocket(url, options)
  socket.on('error', () => {})
  return new Promise((resolve, reject) => {
    socket.once('open', () => { socket.terminate(); reject(new Error('the upgrade was accepted')) })
    socket.once('unexpected-response', (_request, response) => {
      let body = ''
      response.on('data', (chunk: Buffer) => { body += String(chunk) })
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body: JSON.parse(body) as Refusal['body'] }))
    })
  })
}

test('403: a browser origin other than the server\'s is refused by default; same origin and no origin are allowed', async (t) => {
  const { wsUrl, port } = await startServer(t, { home: false })
  const refused = await refusal(wsUrl, { origin: 'http://evil.example' })
  assert.equal(refused.status, 403)
  assert.deepEqual(refused.body, { statusCode: 403, error: 'Forbidden', message: 'origin not allowed' })
  await RawClient.connect(t, wsUrl, { origin: `http://127.0.0.1:${port}` })
  await RawClient.connect(t, wsUrl)
})

test('403: allowedOrigins admits the listed origins only; "*" admits any', async (t) => {
  const listed = await startServer(t, { home: false, allowedOrigins: ['https://app.example'] })
  await RawClient.connect(t, listed.wsUrl, { origin: 'https://app.example' })
  assert.equal((await refusal(listed.wsUrl, { origin: 'https://other.example' })).status, 403)
  const any = await startServer(t, { home: false, allowedOrigins: '*' })
  await RawClient.connect(t, any.wsUrl, { origin: 'https://other.example' })
})

test('403: behind a trusted proxy that says the page used https, an http page of the same host is refused', async (t) => {
  const app = Fastify({ logger: false, trustProxy: true })
  await app.register(chatRooms, { home: false })
  await app.listen({ host: '127.0.0.1', port: 0 })
  t.after(() => app.close())
  const { port } = app.server.address() as AddressInfo
  const wsUrl = `ws://127.0.0.1:${port}/ws`
  const viaTls = { 'x-forwarded-proto': 'https' }
  assert.equal((await refusal(wsUrl, { origin: `http://127.0.0.1:${port}`, headers: viaTls })).status, 403)
  await RawClient.connect(t, wsUrl, { origin: `https://127.0.0.1:${port}`, headers: viaTls })
  // Untrusted, the header says nothing: a plain connection may come from a page of either scheme.
  const untrusted = await startServer(t, { home: false })
  await RawClient.connect(t, untrusted.wsUrl, { origin: `http://127.0.0.1:${untrusted.port}`, headers: viaTls })
})

test('same origin: a host in other letter case, a default port written out, an IPv6 literal in another form are the same origin', async (t) => {
  const { wsUrl, port } = await startServer(t, { home: false })
  const sameOrigins: Array<[host: string, origin: string]> = [
    [`Chat.Example:${port}`, `http://chat.example:${port}`],
    [`chat.example:${port}`, `http://CHAT.example:${port}`],
    ['chat.example:80', 'http://chat.example'],
    ['chat.example', 'http://chat.example:80'],
    [`[0:0:0:0:0:0:0:1]:${port}`, `http://[::1]:${port}`],
    [`[::1]:${port}`, `http://[0::0:1]:${port}`],
    // Over a plain connection the page may have been served by a TLS proxy that was not declared trusted.
    ['chat.example:443', 'https://chat.example'],
  ]
  for (const [host, origin] of sameOrigins) await RawClient.connect(t, wsUrl, { origin, headers: { host } })
  const otherOrigins: Array<[host: string, origin: string]> = [
    ['chat.example:443', 'http://chat.example'],
    [`chat.example:${port}`, `http://chat.example:${port + 1}`],
    [`[::1]:${port}`, `http://[::2]:${port}`],
  ]
  for (const [host, origin] of otherOrigins) assert.equal((await refusal(wsUrl, { origin, headers: { host } })).status, 403, `${origin} on ${host}`)
})

test('allowedOrigins are compared as origins: letter case, default ports and IPv6 forms do not matter, the scheme does', async (t) => {
  const { wsUrl } = await startServer(t, { home: false, allowedOrigins: ['https://App.Example:443', 'http://[0:0::1]:8080'] })
  await RawClient.connect(t, wsUrl, { origin: 'https://app.example' })
  await RawClient.connect(t, wsUrl, { origin: 'http://[::1]:8080' })
  assert.equal((await refusal(wsUrl, { origin: 'http://app.example' })).status, 403)
  assert.equal((await refusal(wsUrl, { origin: 'http://app.example:443' })).status, 403)
})

test('401: authenticate returning nothing or throwing refuses; its identity is who the connection is', async (t) => {
  const { wsUrl } = await startServer(t, {
    home: false,
    authenticate: (request) => {
      const token = request.headers.authorization
      if (token === 'Bearer boom') throw new Error('token store down')
      return token === 'Bearer alice' ? { id: 'u1', user: 'u1', name: 'Alice' } : undefined
    },
  })
  const attempts: Array<Record<string, string>> = [{}, { authorization: 'Bearer nobody' }, { authorization: 'Bearer boom' }]
  for (const headers of attempts) {
    const refused = await refusal(wsUrl, { headers })
    assert.equal(refused.status, 401)
    assert.equal(refused.body.error, 'Unauthorized')
  }
  const socket = new WebSocket(`${wsUrl}?name=mallory`, { headers: { authorization: 'Bearer alice' } })
  t.after(() => socket.terminate())
  const welcome = await new Promise<{ id: string, user: string, name: string }>((resolve) => socket.once('message', (data) => resolve(JSON.parse(String(data)) as { id: string, user: string, name: string })))
  assert.equal(welcome.name, 'Alice', 'the authenticated name wins over ?name')
  assert.match(welcome.id, /^u1\./, 'the application id, made unique per connection')
})

test('400: a name that breaks the name rules', async (t) => {
  const { wsUrl } = await startServer(t, { home: false })
  for (const name of ['%20%20', encodeURIComponent('a\u0000b'), 'x'.repeat(33), 'y'.repeat(300)]) {
    const refused = await refusal(`${wsUrl}?name=${name}`)
    assert.equal(refused.status, 400, name.slice(0, 10))
    assert.equal(refused.body.statusCode, 400)
  }
})

test('400 and a log line naming the cause: a name from authenticate that breaks the name rules (a lone surrogate, empty, too long)', async (t) => {
  const lines: string[] = []
  const names = ['\ud800x', '  ', 'z'.repeat(33)]
  let next = 0
  const app = Fastify({ logger: { level: 'warn', stream: { write: (line: string) => { lines.push(line) } } } })
  await app.register(chatRooms, { home: false, authenticate: () => ({ id: 'u1', user: 'u1', name: names[next++]! }) })
  await app.listen({ host: '127.0.0.1', port: 0 })
  t.after(() => app.close())
  const wsUrl = `ws://127.0.0.1:${(app.server.address() as AddressInfo).port}/ws`
  const refused = await refusal(wsUrl)
  assert.equal(refused.status, 400)
  assert.match(refused.body.message, /^name: must be well-formed Unicode/)
  for (let i = 1; i < names.length; i++) assert.equal((await refusal(wsUrl)).status, 400, JSON.stringify(names[i]))
  assert.equal(lines.filter((line) => line.includes('authenticate returned a name that breaks the name rules')).length, names.length)
})

test('503 at maxConnections and 429 at maxConnectionsPerIp; a closed connection frees its place', async (t) => {
  const total = await startServer(t, { home: false, maxConnections: 2 })
  const first = await RawClient.connect(t, total.wsUrl)
  await RawClient.connect(t, total.wsUrl)
  assert.equal((await refusal(total.wsUrl)).status, 503)
  first.socket.close()
  await first.closed
  await new Promise((resolve) => setTimeout(resolve, 50))
  await RawClient.connect(t, total.wsUrl)

  const perIp = await startServer(t, { home: false, maxConnectionsPerIp: 1 })
  await RawClient.connect(t, perIp.wsUrl)
  const refused = await refusal(perIp.wsUrl)
  assert.equal(refused.status, 429)
  assert.equal(refused.body.message, 'too many connections from this address')
})

test('503: an authenticate hook that does not answer in time refuses the upgrade and frees its place', async (t) => {
  const { wsUrl } = await startServer(t, {
    home: false,
    maxConnections: 1,
    authenticateTimeout: 200,
    authenticate: (request) => (request.headers.authorization === 'hang' ? new Promise(() => {}) : { name: 'ok' }),
  })
  const refused = await refusal(wsUrl, { headers: { authorization: 'hang' } })
  assert.equal(refused.status, 503)
  assert.equal(refused.body.message, 'authentication did not answer in time')
  await new Promise((resolve) => setTimeout(resolve, 50))
  await RawClient.connect(t, wsUrl)
})

test('a token in the query string is never written to the logs, whether the upgrade or an HTTP API call is admitted or refused', async (t) => {
  const lines: string[] = []
  const app = Fastify({ logger: { level: 'trace', stream: { write: (line: string) => { lines.push(line) } } } })
  const token = 'S3CRET-token-value'
  await app.register(chatRooms, {
    home: false,
    rest: { prefix: '/api' },
    authenticate: (request) => (request.query as { token?: string }).token === token ? { id: 'u1', user: 'u1', name: 'alice' } : undefined,
  })
  await app.listen({ host: '127.0.0.1', port: 0 })
  t.after(() => app.close())
  const base = `127.0.0.1:${(app.server.address() as AddressInfo).port}`

  const admitted = await RawClient.connect(t, `ws://${base}/ws?token=${token}&name=bob`)
  admitted.socket.close()
  await admitted.closed
  assert.equal((await refusal(`ws://${base}/ws?token=${token}-wrong`)).status, 401)
  assert.equal((await fetch(`http://${base}/api/rooms?token=${token}`)).status, 200)
  assert.equal((await fetch(`http://${base}/api/rooms?token=${token}-wrong`)).status, 401)

  const logged = lines.join('')
  assert.ok(logged.includes('"url":"/ws?token=…&name=…"'), 'the upgrade is logged, with which parameters came')
  assert.ok(logged.includes('"url":"/api/rooms?token=…"'), 'the HTTP API call is logged too')
  assert.ok(!logged.includes(token), 'no line holds the token')
})

test('a plain GET of the WebSocket route runs authenticate, so a browser can learn its upgrade was refused: 401 when refused, else 404', async (t) => {
  const { httpUrl } = await startServer(t, {
    home: false,
    authenticate: (request) => (request.query as { token?: string }).token === 'good' ? { name: 'alice' } : undefined,
  })
  assert.equal((await fetch(`${httpUrl}/ws?token=bad`)).status, 401)
  assert.equal((await fetch(`${httpUrl}/ws?token=good`)).status, 404, 'only upgrades are served there')
  const open = await startServer(t, { home: false })
  assert.equal((await fetch(`${open.httpUrl}/ws`)).status, 404, 'without authenticate, nothing to tell')
})

test('every connection gets an id of its own, across more connections than one fill of the pool of random bytes their ids are cut from serves', async (t) => {
  const app = Fastify({ logger: false })
  await app.register(chatRooms, { home: false, authenticate: (request) => (request.query as { as?: string }).as === 'u1' ? { id: 'u1', name: 'alice' } : { name: 'guest' } })
  await app.ready()
  t.after(() => app.close())
  // The pool holds 4096 bytes: 9 per guest id, 4 per suffix of a user's connection, so it refills once or twice.
  const connections = 1000
  const welcomes: Array<{ id: string, user: string, name: string }> = []
  const open = async (query: string): Promise<void> => {
    let welcomed!: (frame: { id: string, user: string, name: string }) => void
    const welcome = new Promise<{ id: string, user: string, name: string }>((resolve) => { welcomed = resolve })
    const socket = await app.injectWS(`/ws${query}`, {}, { onInit: (ws) => ws.once('message', (data) => welcomed(JSON.parse(String(data)) as { id: string, user: string, name: string })) })
    welcomes.push(await welcome)
    socket.terminate()
  }
  for (let i = 0; i < connections; i++) await open(i % 2 ? '?as=u1' : '')
  const guests = welcomes.filter((w) => w.user !== 'u1')
  const tabs = welcomes.filter((w) => w.user === 'u1')
  assert.equal(new Set(welcomes.map((w) => w.id)).size, connections, 'no two connections share an id')
  for (const guest of guests) assert.match(guest.id, /^[A-Za-z0-9_-]{12}$/, 'a guest id: 9 random bytes in base64url')
  for (const tab of tabs) assert.match(tab.id, /^u1\.[A-Za-z0-9_-]{6}$/, 'a user\'s connection: its id and 4 random bytes')
})
