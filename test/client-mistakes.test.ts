/**
 * What clients do wrong is theirs, not the server's: it is logged at debug,
 * without stack traces, and at a bounded rate, so that no client can flood the
 * logs. Read from a real Fastify logger's output.
 */
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { Writable } from 'node:stream'
import type { AddressInfo } from 'node:net'
import Fastify from 'fastify'
import chatRooms from '../lib/index.js'
import { CLIENT_MISTAKES_LOGGED_PER_MINUTE, ClientMistakes } from '../lib/client-mistakes.js'
import { RawClient } from './helpers/client.js'

/** Pino's level numbers. */
const DEBUG = 20

interface LogLine {
  level: number
  msg?: string
  [field: string]: unknown
}

/** A server whose logger writes every line, debug included, to the returned array. */
async function serveWithLog (t: TestContext): Promise<{ wsUrl: string, lines: LogLine[] }> {
  const lines: LogLine[] = []
  const stream = new Writable({
    write (chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n')) if (line !== '') lines.push(JSON.parse(line) as LogLine)
      done()
    },
  })
  const app = Fastify({ logger: { level: 'debug', stream } })
  await app.register(chatRooms, { home: false, maxPayload: 1024, maxTextLength: 80 })
  await app.listen({ host: '127.0.0.1', port: 0 })
  t.after(() => app.close())
  return { wsUrl: `ws://127.0.0.1:${(app.server.address() as AddressInfo).port}/ws`, lines }
}

/** The TCP socket under a client, to write frames `ws` would not. */
function tcpOf (client: RawClient): import('node:net').Socket {
  return (client.socket as unknown as { _socket: import('node:net').Socket })._socket
}

/** Ways to break the WebSocket framing, each closing the connection. */
const MALFORMED: Array<{ name: string, send: (client: RawClient) => void, code: number }> = [
  { name: 'RSV1 without an extension', send: (client) => tcpOf(client).write(Buffer.from([0xc1, 0x80, 0, 0, 0, 0])), code: 1002 },
  { name: 'invalid UTF-8', send: (client) => client.socket.send(Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), { binary: false }), code: 1007 },
  { name: 'larger than maxPayload', send: (client) => client.send({ type: 'ping', ref: 'x'.repeat(2000) }), code: 1009 },
]

/** Enough mistakes to show a bound: far more than a minute's worth of lines. */
const ROUNDS = 30

test('malformed and oversized frames from many connections are logged at debug, without stack traces, at a bounded rate', async (t) => {
  const { wsUrl, lines } = await serveWithLog(t)
  for (let round = 0; round < ROUNDS; round++) {
    for (const { send, code, name } of MALFORMED) {
      const client = await RawClient.connect(t, wsUrl)
      send(client)
      assert.equal((await client.closed).code, code, name)
    }
  }
  // Bad messages inside good frames are answered, and closed with 1008 when they keep coming.
  const garbage = await RawClient.connect(t, wsUrl)
  for (let i = 0; i < 60; i++) garbage.socket.send('not json')
  assert.equal((await garbage.closed).code, 1008)

  const ours = lines.filter((line) => line.msg?.startsWith('chat') === true)
  assert.ok(ours.length > 0, 'the mistakes are logged')
  assert.deepEqual(ours.filter((line) => line.level > DEBUG), [], 'nothing a client did wrong is logged above debug')
  assert.deepEqual(lines.filter((line) => JSON.stringify(line).includes('"stack"')), [], 'no stack traces')
  assert.equal(ours.length, CLIENT_MISTAKES_LOGGED_PER_MINUTE, `${ours.length} lines for ${ROUNDS * MALFORMED.length} malformed frames`)
  assert.deepEqual(ours.slice(0, MALFORMED.length).map((line) => line.code), ['WS_ERR_UNEXPECTED_RSV_1', 'WS_ERR_INVALID_UTF8', 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH'], 'each line says what was wrong')
})

test('past its lines of a minute, the mistake log counts, and says how many it left out when the minute is over and at close', () => {
  const lines: Array<{ fields: object, message: string }> = []
  const log = new ClientMistakes({ debug: (fields, message) => lines.push({ fields, message }) }, 0)
  for (let i = 0; i < CLIENT_MISTAKES_LOGGED_PER_MINUTE + 5; i++) log.record({ n: i }, 'mistake', 1000 + i)
  assert.equal(lines.length, CLIENT_MISTAKES_LOGGED_PER_MINUTE)
  log.record({ n: 'next minute' }, 'mistake', 60_000)
  assert.deepEqual(lines.slice(-2).map((line) => line.fields), [{ notLogged: 5 }, { n: 'next minute' }])
  for (let i = 0; i < CLIENT_MISTAKES_LOGGED_PER_MINUTE + 2; i++) log.record({ n: i }, 'mistake', 61_000)
  log.flush()
  assert.deepEqual(lines.at(-1)?.fields, { notLogged: 3 })
  log.flush()
  assert.deepEqual(lines.at(-1)?.fields, { notLogged: 3 }, 'nothing more to say')
})
