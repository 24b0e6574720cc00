/** Options and the example's config file are validated up front, with errors that name the field. */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, writeFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Fastify from 'fastify'
import chatRooms, { resolveOptions, defaults, OptionsError, type ChatRoomsOptions } from '../lib/index.js'
import { loadConfig } from '../example/config.js'

test('defaults match the documented table', () => {
  const resolved = resolveOptions()
  assert.equal(resolved.path, '/ws')
  assert.deepEqual(resolved.home, { prefix: '/' })
  assert.equal(resolved.rest, false)
  assert.equal(resolved.health, false)
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
  assert.deepEqual(resolved.drain, { batchSize: 250, intervalMs: 100 })
  assert.equal(resolved.roomPattern.source, defaults.roomPattern)
  assert.ok(Object.isFrozen(resolved) && Object.isFrozen(resolved.rateLimit))
})

test('drain: a field left out keeps its default', () => {
  assert.deepEqual(resolveOptions({ drain: { batchSize: 10 } }).drain, { batchSize: 10, intervalMs: 100 })
  assert.deepEqual(resolveOptions({ drain: { intervalMs: 0 } }).drain, { batchSize: 250, intervalMs: 0 })
})

test('the caller\'s options object is never written', () => {
  const options: ChatRoomsOptions = Object.freeze({ rateLimit: Object.freeze({ perSecond: 5, burst: 5 }), home: false })
  const resolved = resolveOptions(options)
  assert.deepEqual(resolved.rateLimit, { perSecond: 5, burst: 5 })
  assert.notEqual(resolved.rateLimit, options.rateLimit)
})

/** The message of the error `resolveOptions` throws, without the package's name. */
function errorOf (options: unknown): string {
  try {
    resolveOptions(options as ChatRoomsOptions)
  } catch (error) {
    assert.ok(error instanceof OptionsError, JSON.stringify(options))
    return error.message.replace(/^fastify-chat-rooms: /, '')
  }
  assert.fail(`accepted ${JSON.stringify(options)}`)
}

test('a wrong value of each option is refused with a message naming it and saying what is allowed', () => {
  const cases: Array<[object, string]> = [
    [{ path: 'ws' }, "option path: must be a path starting with '/'"],
    [{ home: '/chat' }, 'option home: must be true, false or { prefix: string }'],
    [{ home: { prefix: 'chat' } }, "option home.prefix: must be a path starting with '/'"],
    [{ home: {} }, "option home.prefix: missing, must be a path starting with '/'"],
    [{ rest: true }, 'option rest: must be false or { prefix: string, authorize?: function }'],
    [{ rest: { prefix: 3 } }, "option rest.prefix: must be a path starting with '/'"],
    [{ rest: { prefix: '/api', auth: true } }, 'option rest.auth: unknown field (allowed: prefix, authorize)'],
    [{ rest: { prefix: '/api', authorize: 'admins' } }, 'option rest.authorize: must be a function'],
    [{ health: true }, 'option health: must be false or { prefix: string }'],
    [{ health: { prefix: 'health' } }, "option health.prefix: must be a path starting with '/'"],
    [{ metrics: 'yes' }, 'option metrics: must be true, false or { registry: a prom-client Registry }'],
    [{ metrics: {} }, 'option metrics.registry: missing, must be a prom-client Registry'],
    [{ metrics: { registry: {} } }, 'option metrics.registry: must be a prom-client Registry (with registerMetric, getSingleMetric, removeSingleMetric, metrics)'],
    [{ allowedOrigins: 'http://x' }, "option allowedOrigins: must be 'same-origin', '*' or a list of origins like 'https://example.com'"],
    [{ allowedOrigins: ['https://ok.example', 'not a url'] }, "option allowedOrigins.1: must be an origin like 'https://example.com' (scheme and host, nothing after)"],
    [{ allowedOrigins: ['https://ok.example', 'https://user@host.example'] }, "option allowedOrigins.1: \"https://user@host.example\" is not an origin like 'https://example.com'"],
    [{ allowedOrigins: ['https://a b.example'] }, "option allowedOrigins.0: \"https://a b.example\" is not an origin like 'https://example.com'"],
    [{ maxPayload: 0 }, 'option maxPayload: must be an integer >= 1'],
    [{ maxPayload: 'big' }, 'option maxPayload: must be an integer >= 1'],
    [{ maxTextLength: 0 }, 'option maxTextLength: must be an integer from 1 to 65536'],
    [{ maxTextLength: 65537 }, 'option maxTextLength: must be an integer from 1 to 65536'],
    [{ maxRoomsPerConnection: 0 }, 'option maxRoomsPerConnection: must be an integer >= 1'],
    [{ maxMembersPerRoom: -1 }, 'option maxMembersPerRoom: must be an integer >= 0'],
    [{ maxConnections: 1.5 }, 'option maxConnections: must be an integer >= 0'],
    [{ maxConnectionsPerIp: null }, 'option maxConnectionsPerIp: must be an integer >= 0'],
    [{ rateLimit: 20 }, 'option rateLimit: must be { perSecond: number > 0, burst: integer >= 1 }'],
    [{ rateLimit: { perSecond: 0, burst: 1 } }, 'option rateLimit.perSecond: must be a number > 0'],
    [{ rateLimit: { perSecond: 1, burst: 0 } }, 'option rateLimit.burst: must be an integer >= 1'],
    [{ rateLimit: { perSecond: 1 } }, 'option rateLimit.burst: missing, must be an integer >= 1'],
    [{ rateLimit: { perSecond: 1, burst: 1, extra: 1 } }, 'option rateLimit.extra: unknown field (allowed: perSecond, burst)'],
    [{ errorLimit: { count: 0, windowMs: 60000 } }, 'option errorLimit.count: must be an integer >= 1'],
    [{ errorLimit: { count: 5, windowMs: 0 } }, 'option errorLimit.windowMs: must be an integer >= 1'],
    [{ maxBufferedBytes: -1 }, 'option maxBufferedBytes: must be an integer >= 1'],
    [{ heartbeatInterval: 5 }, 'option heartbeatInterval: must be an integer from 100 to 2147483647'],
    [{ heartbeatInterval: 2 ** 31 }, 'option heartbeatInterval: must be an integer from 100 to 2147483647'],
    [{ authenticateTimeout: 0 }, 'option authenticateTimeout: must be an integer from 1 to 2147483647'],
    [{ historySize: -1 }, 'option historySize: must be an integer >= 0'],
    [{ historyOnJoin: 'all' }, 'option historyOnJoin: must be an integer >= 0'],
    [{ maxReactionsPerMessage: 0 }, 'option maxReactionsPerMessage: must be an integer >= 1'],
    [{ drain: 500 }, 'option drain: must be { batchSize?: integer >= 1, intervalMs?: integer from 0 to 10000 }'],
    [{ drain: { batchSize: 0 } }, 'option drain.batchSize: must be an integer >= 1'],
    [{ drain: { batchSize: 1.5 } }, 'option drain.batchSize: must be an integer >= 1'],
    [{ drain: { intervalMs: -1 } }, 'option drain.intervalMs: must be an integer from 0 to 10000'],
    [{ drain: { intervalMs: 10001 } }, 'option drain.intervalMs: must be an integer from 0 to 10000'],
    [{ drain: { batch: 100 } }, 'option drain.batch: unknown field (allowed: batchSize, intervalMs)'],
    [{ roomPattern: '' }, "option roomPattern: must be a regular expression's source, like '^[a-z]{1,32}$'"],
    [{ roomPattern: '(' }, 'option roomPattern: must be a valid regular expression (Invalid regular expression: /(/u: Unterminated group)'],
    [{ authenticate: 'yes' }, 'option authenticate: must be a function'],
    [{ onJoin: true }, 'option onJoin: must be a function'],
    [{ onMessage: {} }, 'option onMessage: must be a function'],
    [{ broker: {} }, 'option broker: must implement the Broker interface (open, subscribe, unsubscribe, append, update, publish, read, members, rooms, changeUser, userState, moderation, signal, nodes, close)'],
  ]
  for (const [options, message] of cases) assert.equal(errorOf(options), message, JSON.stringify(options))
})

test('an unknown option is named, with the options there are', () => {
  const message = errorOf({ maxRoomz: 3 })
  assert.match(message, /^option maxRoomz: unknown field \(allowed: path, home, rest, health, metrics, allowedOrigins, maxPayload, /)
  assert.match(message, /authenticate, onJoin, onMessage, onRename, broker\)$/, 'the hooks and the broker are options too')
  assert.match(errorOf({ a: 1, b: 2, c: 3, d: 4 }), /^option a, b, c and 1 more: unknown fields \(allowed: path, /)
})

test('every problem is reported at once', () => {
  assert.equal(errorOf({ maxPayload: 0, rest: true }), 'option rest: must be false or { prefix: string, authorize?: function }; option maxPayload: must be an integer >= 1')
})

test('historyOnJoin may not exceed historySize, and follows a lowered historySize when unset', () => {
  assert.equal(errorOf({ historySize: 10, historyOnJoin: 100 }),
    'option historyOnJoin: must be at most historySize, which is 10, not 100: a join cannot send more messages than a room keeps')
  assert.equal(errorOf({ historyOnJoin: 1001 }),
    'option historyOnJoin: must be at most historySize, which is 1000 (the default), not 1001: a join cannot send more messages than a room keeps')
  assert.equal(resolveOptions({ historySize: 10 }).historyOnJoin, 10)
  assert.equal(resolveOptions({ historySize: 0 }).historyOnJoin, 0)
  assert.equal(resolveOptions({ historySize: 10, historyOnJoin: 10 }).historyOnJoin, 10)
})

test('maxTextLength must fit in maxPayload, at 6 bytes a character plus the frame\'s other fields', () => {
  assert.equal(errorOf({ maxPayload: 4096 }),
    'option maxTextLength: 2000 (the default) does not fit in maxPayload, which is 4096: a send of 2000 characters may take 12512 bytes ' +
    "(6 a character, escaped, plus 512 for the frame's other fields); raise maxPayload to 12512 or lower maxTextLength to 597")
  assert.equal(errorOf({ maxTextLength: 3000 }),
    'option maxTextLength: 3000 does not fit in maxPayload, which is 16384 (the default): a send of 3000 characters may take 18512 bytes ' +
    "(6 a character, escaped, plus 512 for the frame's other fields); raise maxPayload to 18512 or lower maxTextLength to 2645")
  assert.match(errorOf({ maxPayload: 500, maxTextLength: 1 }), /raise maxPayload to 518$/, 'no text length fits: only a larger maxPayload helps')
  assert.equal(resolveOptions({ maxPayload: 4096, maxTextLength: 597 }).maxTextLength, 597, 'the largest that fits is accepted')
})

test('a send of maxTextLength characters, each taking the most bytes JSON gives one, fits in maxPayload', () => {
  const { maxPayload, maxTextLength } = resolveOptions({ maxPayload: 4096, maxTextLength: 597 })
  // A control character is escaped as \uXXXX (6 bytes), an emoji is 4 bytes of UTF-8; ref, cid and room at their longest.
  for (const character of ['\u0001', '\u{1F600}', '\ud800']) {
    const frame = JSON.stringify({ type: 'send', ref: 'r'.repeat(64), room: 'a'.repeat(64), text: character.repeat(maxTextLength), cid: 'c'.repeat(64) })
    assert.ok(Buffer.byteLength(frame) <= maxPayload, `${Buffer.byteLength(frame)} bytes for ${JSON.stringify(character)}`)
  }
})

test('maxBufferedBytes must hold a reply with one message of full size', () => {
  assert.equal(errorOf({ maxBufferedBytes: 10 }),
    'option maxBufferedBytes: must be at least 25024, twice the largest message frame for maxTextLength 2000 (the default), not 10: ' +
    'a joined or history reply may fill half of it and must hold one message of full size')
  assert.match(errorOf({ maxTextLength: 100, maxBufferedBytes: 2000 }), /^option maxBufferedBytes: must be at least 2224, .* maxTextLength 100, not 2000:/)
  assert.equal(resolveOptions({ maxTextLength: 100, maxBufferedBytes: 2224 }).maxBufferedBytes, 2224)
})

test('maxMembersInReply: the members of a reply fit in a quarter of maxBufferedBytes; unset, it shrinks to fit', () => {
  assert.equal(resolveOptions({}).maxMembersInReply, 100)
  assert.equal(errorOf({ maxBufferedBytes: 65536, maxMembersInReply: 52 }),
    'option maxMembersInReply: must be at most 51 for maxBufferedBytes 65536, not 52: the members of a reply (up to 320 bytes each) may fill a quarter of it')
  assert.equal(resolveOptions({ maxBufferedBytes: 65536, maxMembersInReply: 51 }).maxMembersInReply, 51)
  assert.equal(resolveOptions({ maxBufferedBytes: 65536 }).maxMembersInReply, 51)
  assert.equal(resolveOptions({ maxTextLength: 1, maxBufferedBytes: 1036 }).maxMembersInReply, 1, 'the smallest maxBufferedBytes still holds one')
  assert.match(errorOf({ maxMembersInReply: 0 }), /^option maxMembersInReply: must be an integer >= 1/)
})

test('the defaults pass every rule between options', () => {
  assert.doesNotThrow(() => resolveOptions({}))
  assert.doesNotThrow(() => resolveOptions({ ...defaults, roomPattern: defaults.roomPattern }))
})

test('registering with a bad option fails the start with that message', async () => {
  const app = Fastify()
  void app.register(chatRooms, { maxTextLength: -1 })
  await assert.rejects(async () => { await app.ready() }, /^OptionsError: fastify-chat-rooms: option maxTextLength: must be an integer from 1 to 65536$/)
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
  await assert.rejects(loadConfig(file, { PORT: 'abc' }), { message: `config ${file}: port: must be an integer from 0 to 65535` })

  const refused: Array<[unknown, string]> = [
    [{ ...good, chat: { historySize: -1 } }, 'chat.historySize: must be an integer >= 0'],
    [{ ...good, chat: { rest: true } }, 'chat.rest: must be false or { prefix: string }'],
    [{ ...good, chat: { historySize: 10, historyOnJoin: 20 } }, 'chat.historyOnJoin: must be at most chat.historySize, which is 10, not 20: a join cannot send more messages than a room keeps'],
    [{ ...good, chat: { drain: { batchSize: 0 } } }, 'chat.drain.batchSize: must be an integer >= 1'],
    [{ ...good, chat: { roomPattern: '[' } }, 'chat.roomPattern: must be a valid regular expression (Invalid regular expression: /[/u: Unterminated character class)'],
    [{ ...good, chat: 'all' }, "chat: must be an object of the plugin's options"],
    [{ ...good, prot: 1 }, 'prot: unknown field (allowed: host, port, logLevel, connectionTimeout, redis, sqlite, postgres, accounts, admins, sessionSecret, chat)'],
    [{ ...good, chat: { rest: { prefix: '/api', authorize: 'admins' } } }, 'chat.rest.authorize: unknown field (allowed: prefix)'],
    [{ ...good, sqlite: 'chat.db', accounts: true, admins: 'alice' }, "admins: must be a list of account names like ['alice'], who may moderate (needs accounts: true)"],
    [{ ...good, sqlite: 'chat.db', accounts: true, admins: ['alice', ' '] }, 'admins.1: must not be empty'],
    [{ ...good, sqlite: 'chat.db', accounts: true, admins: ['a'.repeat(33)] }, 'admins.0: must be at most 32 characters'],
    [{ ...good, sqlite: 'chat.db', admins: [] }, 'admins: needs accounts: true (an admin is a signed-in account); set accounts: true, or remove admins'],
    [{ ...good, connectionTimeout: -1 }, 'connectionTimeout: must be an integer >= 0'],
    [{ ...good, redis: 'http://nope' }, "redis: must be a Redis URL like 'redis://127.0.0.1:6379'"],
    [{ ...good, logLevel: 'loud' }, "logLevel: must be 'fatal', 'error', 'warn', 'info', 'debug', 'trace' or 'silent'"],
    [{ ...good, port: 70000 }, 'port: must be an integer from 0 to 65535'],
    [{ ...good, host: '' }, 'host: must be a non-empty string'],
    [{ port: 1, logLevel: 'info', chat: {} }, 'host: missing, must be a non-empty string'],
    [{ ...good, sqlite: '' }, "sqlite: must be a database file like 'data/chat.db', relative to the working directory"],
    [{ ...good, postgres: 'mysql://db' }, "postgres: must be a PostgreSQL URL like 'postgres://127.0.0.1:5432/chat'"],
    [{ ...good, sqlite: 'chat.db', postgres: 'postgres://db/chat' }, 'sqlite and postgres: a config names at most one broker (where rooms live); keep one of them'],
    [{ ...good, accounts: true }, 'accounts: needs sqlite or postgres to keep the accounts in (no broker key is set); set one of them, or accounts: false'],
    [{ ...good, accounts: true, redis: 'redis://127.0.0.1:6379' }, 'accounts: needs sqlite or postgres to keep the accounts in (redis does not keep them); set one of them, or accounts: false'],
    [{ ...good, sqlite: 'chat.db', accounts: 'yes' }, 'accounts: must be true (people register and sign in; needs sqlite or postgres) or false (everyone is a guest)'],
    [{ ...good, sqlite: 'chat.db', accounts: true, sessionSecret: 'short' }, 'sessionSecret: must be a secret of at least 32 characters that signs session cookies'],
    [[good], 'config: must be an object { host, port, logLevel, connectionTimeout?, redis? | sqlite? | postgres?, accounts?, admins?, sessionSecret?, chat }'],
  ]
  for (const [config, message] of refused) {
    await writeFile(file, JSON.stringify(config))
    await assert.rejects(loadConfig(file, {}), { name: 'OptionsError', message: `config ${file}: ${message}` }, JSON.stringify(config))
  }
  await writeFile(file, '{ not json')
  await assert.rejects(loadConfig(file, {}), /cannot be read as JSON/)
})

test('the shipped example configs are valid', async () => {
  const config = await loadConfig(new URL('../../example/config.json', import.meta.url), {})
  assert.equal(config.port, 9999)
  assert.equal(config.sqlite, 'data/chat.db')
  assert.equal(config.accounts, true)
  const redis = await loadConfig(new URL('../../example/config.redis.json', import.meta.url), {})
  assert.equal(redis.redis, 'redis://127.0.0.1:6379')
})
