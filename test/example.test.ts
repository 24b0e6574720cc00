/** The example server as a newcomer runs it: its own process, a config file, signals. */
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { RawClient } from './helpers/client.js'
import { homePage, signUp, startExample, tempDir } from './helpers/example-server.js'
import { freePort } from './helpers/free-port.js'
import { POSTGRES_URL, asAdmin, skipUnlessPostgres } from './helpers/postgres.js'
import { REDIS_URL, deleteKeys, keysUnder, skipUnlessRedis, uniquePrefix } from './helpers/redis.js'

test('the example server serves the chat from a config file and drains on SIGTERM as its config says', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'chat-example-'))
  t.after(() => rm(dir, { recursive: true, force: true }))
  const config = join(dir, 'config.json')
  const drain = { batchSize: 1, intervalMs: 500 }
  await writeFile(config, JSON.stringify({ host: '127.0.0.1', port: 1, logLevel: 'warn', chat: { rest: { prefix: '/api' }, drain } }))
  const port = await freePort()
  const server = startExample({ CHAT_CONFIG: config, PORT: String(port) })
  t.after(() => server.child.kill('SIGKILL'))
  assert.equal((await homePage(port))?.status, 200, server.output())
  assert.deepEqual(await (await fetch(`http://127.0.0.1:${port}/api/rooms`)).json(), { rooms: [], more: false })
  const client = await RawClient.connect(t, `ws://127.0.0.1:${port}/ws?name=newcomer`)
  await client.request('joined', { type: 'join', room: 'lobby' })
  const later = await RawClient.connect(t, `ws://127.0.0.1:${port}/ws?name=later`)
  server.child.kill('SIGTERM')
  assert.equal((await client.closed).code, 1001)
  const firstClosedAt = Date.now()
  assert.equal((await later.closed).code, 1001)
  const gap = Date.now() - firstClosedAt
  assert.ok(gap >= drain.intervalMs / 2, `the second batch came ${gap} ms after the first`)
  const [code] = await server.exited
  assert.equal(code, 0)
})

test('the shipped config answers readiness at /health/ready and lists its one node at /api/nodes', async (t) => {
  const port = await freePort()
  const server = startExample({ CHAT_CONFIG: undefined, PORT: String(port) }, await tempDir(t))
  t.after(() => server.child.kill('SIGKILL'))
  assert.equal((await homePage(port))?.status, 200, server.output())
  const ready = await fetch(`http://127.0.0.1:${port}/health/ready`)
  assert.deepEqual([ready.status, await ready.json()], [200, { status: 'ok' }])
  // The shipped config has accounts on: the HTTP API is for those signed in.
  assert.equal((await fetch(`http://127.0.0.1:${port}/api/nodes`)).status, 401)
  const { cookie } = await signUp(`http://127.0.0.1:${port}`, 'operator', 'a long enough password')
  const { nodes } = await (await fetch(`http://127.0.0.1:${port}/api/nodes`, { headers: { cookie } })).json() as { nodes: Array<{ pid: number, connections: number }> }
  assert.deepEqual(nodes.map(({ pid, connections }) => ({ pid, connections })), [{ pid: server.child.pid, connections: 0 }])
})

test('a bad config stops the example server with a message naming the field', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'chat-example-'))
  t.after(() => rm(dir, { recursive: true, force: true }))
  const config = join(dir, 'config.json')
  await writeFile(config, JSON.stringify({ host: '127.0.0.1', port: 9999, logLevel: 'info', chat: { maxPayload: 0 } }))
  const server = startExample({ CHAT_CONFIG: config })
  t.after(() => server.child.kill('SIGKILL'))
  const [code] = await server.exited
  assert.equal(code, 1)
  assert.match(server.output(), /chat\.maxPayload:/)
})

/**
 * Sends a message through a first server, restarts it, and checks a second
 * one has it in the same epoch. With `accounts`, the writer signs up first and
 * the reader comes back with the writer's session.
 */
async function keepsItsChatAcrossARestart (t: TestContext, env: NodeJS.ProcessEnv, cwd?: string, { accounts = false } = {}): Promise<void> {
  const port = await freePort()
  const first = startExample({ ...env, PORT: String(port) }, cwd)
  t.after(() => first.child.kill('SIGKILL'))
  assert.equal((await homePage(port))?.status, 200, first.output())
  const headers: Record<string, string> = accounts ? { cookie: (await signUp(`http://127.0.0.1:${port}`, 'writer', 'a long enough password')).cookie } : {}
  const writer = await RawClient.connect(t, `ws://127.0.0.1:${port}/ws?name=writer`, { headers })
  const joined = await writer.request('joined', { type: 'join', room: 'lobby' })
  const ack = await writer.request('ack', { type: 'send', room: 'lobby', text: 'still here?' })
  first.child.kill('SIGTERM')
  assert.equal((await first.exited)[0], 0, first.output())

  const second = startExample({ ...env, PORT: String(port) }, cwd)
  t.after(() => second.child.kill('SIGKILL'))
  assert.equal((await homePage(port))?.status, 200, second.output())
  const reader = await RawClient.connect(t, `ws://127.0.0.1:${port}/ws?name=reader`, { headers })
  const again = await reader.request('joined', { type: 'join', room: 'lobby' })
  assert.equal(again.epoch, joined.epoch)
  assert.deepEqual(again.history.map((m) => [m.seq, m.text]), [[ack.seq, 'still here?']])
}

test('the shipped config keeps its chat in data/chat.db across a restart', async (t) => {
  const cwd = await tempDir(t)
  await keepsItsChatAcrossARestart(t, { CHAT_CONFIG: undefined }, cwd, { accounts: true })
  assert.ok((await stat(join(cwd, 'data', 'chat.db'))).isFile(), 'the database is data/chat.db in the working directory')
})

test('a config with postgres keeps its chat in PostgreSQL across a restart', { skip: await skipUnlessPostgres() }, async (t) => {
  const database = `chat_example_${randomBytes(6).toString('hex')}`
  await asAdmin((admin) => admin.query(`CREATE DATABASE ${database}`))
  t.after(() => asAdmin((admin) => admin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`)))
  const url = new URL(POSTGRES_URL)
  url.pathname = `/${database}`
  const dir = await tempDir(t)
  const config = join(dir, 'config.json')
  await writeFile(config, JSON.stringify({ host: '127.0.0.1', port: 1, logLevel: 'warn', postgres: url.href, chat: {} }))
  await keepsItsChatAcrossARestart(t, { CHAT_CONFIG: config })
})

test('a config with redis { url, prefix } keeps its rooms and node registry under that prefix, not chat:', { skip: await skipUnlessRedis() }, async (t) => {
  const prefix = uniquePrefix()
  const room = `prefixed-${randomBytes(6).toString('hex')}`
  const dir = await tempDir(t)
  const config = join(dir, 'config.json')
  await writeFile(config, JSON.stringify({ host: '127.0.0.1', port: 1, logLevel: 'warn', redis: { url: REDIS_URL, prefix }, chat: {} }))
  const port = await freePort()
  const server = startExample({ CHAT_CONFIG: config, PORT: String(port) })
  t.after(async () => {
    // Stopped before its keys are deleted, so that no lease renewal writes them again.
    server.child.kill('SIGKILL')
    await server.exited
    await Promise.all([deleteKeys(prefix), deleteKeys(`chat:{${room}}`)])
  })
  assert.equal((await homePage(port))?.status, 200, server.output())
  const client = await RawClient.connect(t, `ws://127.0.0.1:${port}/ws?name=prefixed`)
  await client.request('joined', { type: 'join', room })
  await client.request('ack', { type: 'send', room, text: 'under my prefix' })

  const keys = await keysUnder(prefix)
  for (const key of [`${prefix}{${room}}:meta`, `${prefix}{${room}}:log`, `${prefix}{${room}}:members`]) {
    assert.ok(keys.includes(key), `${key} is among ${JSON.stringify(keys)}`)
  }
  assert.ok(keys.some((key) => key.startsWith(`${prefix}registry{nodes}:`)), `the node registry is under the prefix: ${JSON.stringify(keys)}`)
  assert.deepEqual(await keysUnder(`chat:{${room}}`), [], 'nothing of the room under the default prefix')
})

test('a config naming two brokers stops the example server with a message naming both', async (t) => {
  const dir = await tempDir(t)
  const config = join(dir, 'config.json')
  await writeFile(config, JSON.stringify({ host: '127.0.0.1', port: 9999, logLevel: 'info', redis: 'redis://127.0.0.1:6379', sqlite: join(dir, 'chat.db'), chat: {} }))
  const server = startExample({ CHAT_CONFIG: config }, dir)
  t.after(() => server.child.kill('SIGKILL'))
  const [code] = await server.exited
  assert.equal(code, 1)
  assert.match(server.output(), /redis and sqlite: a config names at most one broker/)
})

/** The example config's `connectionTimeout` for the test: short, so that the test takes a few seconds. */
const CONNECTION_TIMEOUT_MS = 1000

test('a connection that sends nothing is closed after connectionTimeout; an open WebSocket silent for longer is kept', async (t) => {
  const dir = await tempDir(t)
  const config = join(dir, 'config.json')
  await writeFile(config, JSON.stringify({ host: '127.0.0.1', port: 1, logLevel: 'warn', connectionTimeout: CONNECTION_TIMEOUT_MS, chat: {} }))
  const port = await freePort()
  const server = startExample({ CHAT_CONFIG: config, PORT: String(port) })
  t.after(() => server.child.kill('SIGKILL'))
  assert.equal((await homePage(port))?.status, 200, server.output())
  const member = await RawClient.connect(t, `ws://127.0.0.1:${port}/ws`)
  await member.request('joined', { type: 'join', room: 'lobby' })
  const quietSince = Date.now()

  const silent = connect(port, '127.0.0.1')
  t.after(() => silent.destroy())
  await once(silent, 'connect')
  const closed = once(silent, 'close').then(() => 'closed')
  const outcome = await Promise.race([closed, sleep(3 * CONNECTION_TIMEOUT_MS).then(() => 'still open')])
  assert.equal(outcome, 'closed', 'a connection that never sent a byte is closed within the timeout (with slack)')

  // Nothing went either way on the WebSocket since its join (the heartbeat is 30 s): it has been silent past the timeout.
  await sleep(Math.max(0, quietSince + 2 * CONNECTION_TIMEOUT_MS - Date.now()))
  assert.equal(member.frames.length, 0, 'nothing was sent to the member meanwhile')
  assert.equal((await member.request('pong', { type: 'ping' })).type, 'pong', 'the silent WebSocket is still open')
})
