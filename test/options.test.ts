/** Options and the example's config file are validated up front, with errors that name the field. */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, writeFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Fastify from 'fastify'
import chatRooms, { resolveOptions, defaults, type ChatRoomsOptions } from '../lib/index.js'
import { loadConfig } from '../example/config.js'

test('defaults match the documented table', () => {
  const resolved = resolveOptions()
  assert.equal(resolved.path, '/ws')
  assert.deepEqual(resolved.home, { prefix: '/' })
  assert.equal(resolved.rest, false)
  assert.equal(resolved.allowedOrigins, 'same-origin')
  assert.equal(resolved.maxPayload, 16384)
  assert.equal(resolved.maxTextLength, 2000)
  assert.equal(resolved.maxRoomsPerConnection, 20)
  assert.deepEqual([resolved.maxMembersPerRoom, resolved.maxConnections, resolved.maxConnectionsPerIp], [0, 0, 0])
  assert.deepEqual(resolved.rateLimit, { perSecond: 20, burst: 40 })
  assert.deepEqual(resolved.errorLimit, { count: 50, windowMs: 60000 })
  assert.equal(resolved.maxBufferedBytes, 1048576)
  assert.equal(resolved.heartbeatInterval, 30000)
  assert.equal(resolved.authenticateTimeout, 10000)
  assert.equal(resolved.historySize, 1000)
  assert.equal(resolved.historyOnJoin, 50)
  assert.equal(resolved.roomPattern.source, defaults.roomPattern)
  assert.ok(Object.isFrozen(resolved) && Object.isFrozen(resolved.rateLimit))
})

test('the caller\'s options object is never written', () => {
  const options: ChatRoomsOptions = Object.freeze({ rateLimit: Object.freeze({ perSecond: 5, burst: 5 }), home: false })
  const resolved = resolveOptions(options)
  assert.deepEqual(resolved.rateLimit, { perSecond: 5, burst: 5 })
  assert.notEqual(resolved.rateLimit, options.rateLimit)
})

test('a bad option throws an error that names it', () => {
  const cases: Array<[unknown, RegExp]> = [
    [{ maxPayload: 0 }, /option maxPayload:/],
    [{ maxPayload: 'big' }, /option maxPayload:/],
    [{ path: 'ws' }, /option path:/],
    [{ rateLimit: { perSecond: 1 } }, /option rateLimit/],
    [{ rateLimit: { perSecond: 1, burst: 1, extra: 1 } }, /option rateLimit\.extra: unknown field/],
    [{ allowedOrigins: ['not a url'] }, /option allowedOrigins\.0:/],
    [{ maxRoomz: 3 }, /option maxRoomz: unknown field/],
    [{ roomPattern: '(' }, /option roomPattern: not a valid regular expression/],
    [{ authenticate: 'yes' }, /option authenticate: must be a function/],
    [{ broker: {} }, /option broker: must implement the Broker interface/],
    [{ heartbeatInterval: 5 }, /option heartbeatInterval:/],
  ]
  for (const [options, pattern] of cases) {
    assert.throws(() => resolveOptions(options as ChatRoomsOptions), pattern, JSON.stringify(options))
  }
})

test('registering with a bad option fails the start with that message', async () => {
  const app = Fastify()
  void app.register(chatRooms, { maxTextLength: -1 })
  await assert.rejects(async () => { await app.ready() }, /option maxTextLength:/)
  await app.close()
})

test('roomPattern widens or narrows the room rule', async () => {
  const resolved = resolveOptions({ roomPattern: '^[a-z]{1,8}$' })
  assert.ok(resolved.roomPattern.test('general'))
  assert.ok(!resolved.roomPattern.test('General'))
})

test('the example config is validated, names a bad field, and HOST/PORT override it', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'chat-config-'))
  t.after(() => rm(dir, { recursive: true, force: true }))
  const file = join(dir, 'config.json')
  const good = { host: '127.0.0.1', port: 9999, logLevel: 'info', chat: { historySize: 10 } }
  await writeFile(file, JSON.stringify(good))
  assert.deepEqual(await loadConfig(file, {}), good)
  assert.equal((await loadConfig(file, { PORT: '1234', HOST: '0.0.0.0' })).port, 1234)
  await assert.rejects(loadConfig(file, { PORT: 'abc' }), /port/)

  await writeFile(file, JSON.stringify({ ...good, chat: { historySize: -1 } }))
  await assert.rejects(loadConfig(file, {}), /chat\.historySize:/)
  await writeFile(file, JSON.stringify({ ...good, prot: 1 }))
  await assert.rejects(loadConfig(file, {}), /prot: unknown field/)
  await writeFile(file, JSON.stringify({ ...good, redis: 'http://nope' }))
  await assert.rejects(loadConfig(file, {}), /redis:/)
  await writeFile(file, '{ not json')
  await assert.rejects(loadConfig(file, {}), /cannot be read as JSON/)
})

test('the shipped example configs are valid', async () => {
  const config = await loadConfig(new URL('../../example/config.json', import.meta.url), {})
  assert.equal(config.port, 9999)
  const redis = await loadConfig(new URL('../../example/config.redis.json', import.meta.url), {})
  assert.equal(redis.redis, 'redis://127.0.0.1:6379')
})
