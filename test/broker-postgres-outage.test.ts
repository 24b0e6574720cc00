/**
 * PostgresBroker when PostgreSQL restarts, crashes, stops or hangs, and when a
 * node starts while it is down: calls fail with `unavailable` in bounded time,
 * the broker recovers by itself, a retried cid is stored once, and members on
 * every node see one gap-free order. Each test runs a throwaway PostgreSQL
 * cluster (test/helpers/postgres-server.ts) with two server nodes on it and
 * library clients (lib/client) on both.
 */
import assert from 'node:assert/strict'
import { describe, it, type TestContext } from 'node:test'
import Fastify from 'fastify'
import { WebSocket } from 'ws'
import chatRooms from '../lib/index.js'
import { ChatClient, ChatClientError, type Message } from '../lib/client/index.js'
import { ChatError } from '../lib/errors.js'
import type { Entry } from '../lib/protocol.js'
import { PostgresBroker } from '../lib/postgres.js'
import { asAdmin, uniqueSchema } from './helpers/postgres.js'
import { PostgresServer, skipUnlessPostgresServer } from './helpers/postgres-server.js'
import { resolveOptions } from '../lib/options.js'

const COMMAND_TIMEOUT_MS = 500
/**
 * How late beyond `commandTimeout` a call may fail during a hang: a request
 * may wait for two broker calls in turn, plus timers and a busy machine. A
 * bound that shows nothing waits for PostgreSQL to return, not a speed target.
 */
const HANG_BOUND_MS = 3 * COMMAND_TIMEOUT_MS + 1000
/** How long a recovery, a delivery or a retried send may take before the test fails. */
const RECOVERY_MS = 20_000
/** Client sends each sender makes at most in the restart test. */
const MAX_SENDS_PER_SENDER = 400

const skip = skipUnlessPostgresServer()

interface Node {
  broker: PostgresBroker
  wsUrl: string
  readyUrl: string
  logs: Array<{ level: number, msg?: string }>
}

/** A server node (Fastify, the plugin, its own PostgresBroker) on `server`'s `schema`; closed after the test. */
async function startNode (t: TestContext, server: PostgresServer, schema: string): Promise<Node> {
  const broker = new PostgresBroker({ connectionString: server.url, schema, commandTimeout: COMMAND_TIMEOUT_MS })
  const logs: Node['logs'] = []
  const app = Fastify({ logger: { level: 'info', stream: { write: (line: string) => { logs.push(JSON.parse(line) as Node['logs'][number]) } } } })
  // Senders retry every 50 ms during an outage: more than the default rate limit allows.
  await app.register(chatRooms, { broker, home: false, health: { prefix: '/health' }, rateLimit: { perSecond: 1000, burst: 1000 } })
  await app.listen({ host: '127.0.0.1', port: 0 })
  t.after(() => app.close())
  const { port } = app.server.address() as { port: number }
  return { broker, wsUrl: `ws://127.0.0.1:${port}/ws`, readyUrl: `http://127.0.0.1:${port}/health/ready`, logs }
}

/** Two nodes sharing one schema of `server`. */
async function startNodes (t: TestContext, server: PostgresServer): Promise<[Node, Node]> {
  const schema = uniqueSchema()
  return [await startNode(t, server, schema), await startNode(t, server, schema)]
}

/** A library client that records every message and gap it hears; closed after the test. */
function connect (t: TestContext, node: Node, name: string): { client: ChatClient, messages: Message[], gaps: number } {
  const client = new ChatClient(node.wsUrl, { name, WebSocket, reconnect: { minDelay: 50, maxDelay: 500 }, requestTimeout: 5000 })
  t.after(() => client.close())
  const heard = { client, messages: [] as Message[], gaps: 0 }
  client.on('message', (message) => heard.messages.push(message))
  client.on('gap', () => heard.gaps++)
  return heard
}

/** A client's or the broker's own `unavailable`. */
const isUnavailable = (error: unknown): boolean => (error instanceof ChatClientError || error instanceof ChatError) && error.code === 'unavailable'

/** Runs `call` and checks it fails with `unavailable` within `HANG_BOUND_MS`; reports how long it took. */
async function assertUnavailable (t: TestContext, what: string, call: () => Promise<unknown>): Promise<void> {
  const started = Date.now()
  await assert.rejects(call(), isUnavailable, what)
  const elapsed = Date.now() - started
  assert.ok(elapsed <= HANG_BOUND_MS, `${what}: rejected after ${elapsed} ms`)
  t.diagnostic(`${what}: unavailable after ${elapsed} ms`)
}

/** Retries `call` while it fails with `unavailable` (or a timeout, the answer lost); fails after `RECOVERY_MS`. */
async function untilAvailable<T> (call: () => Promise<T>, onFailure: () => void = () => {}): Promise<T> {
  const deadline = Date.now() + RECOVERY_MS
  for (;;) {
    try {
      return await call()
    } catch (error) {
      const retry = isUnavailable(error) || (error instanceof ChatClientError && error.code === 'timeout')
      if (!retry || Date.now() > deadline) throw error
      onFailure()
      await sleep(50)
    }
  }
}

/** Waits until `done()` holds; fails naming `what` after `RECOVERY_MS`. */
async function until (what: string, done: () => boolean | Promise<boolean>): Promise<void> {
  const deadline = Date.now() + RECOVERY_MS
  while (!(await done())) {
    assert.ok(Date.now() < deadline, `timed out waiting for ${what}`)
    await sleep(50)
  }
}

function sleep (ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

const readyStatus = async (node: Node): Promise<number> => (await fetch(node.readyUrl)).status

/** Pino's levels of the lines the tests look for. */
const INFO = 30
const WARN = 40
const ERROR = 50

/** The outage and recovery lines `node` logged. */
function outageLogs (node: Node): { warn: number, info: number } {
  return {
    warn: node.logs.filter((entry) => entry.level === WARN && entry.msg?.includes('PostgreSQL is unavailable')).length,
    info: node.logs.filter((entry) => entry.level === INFO && entry.msg?.includes('PostgreSQL is available again')).length,
  }
}

/** Errors `node` logged: an outage is a warning, once, not an error per call. */
const errorLogs = (node: Node): string[] => node.logs.filter((entry) => entry.level >= ERROR).map((entry) => entry.msg ?? '')

/** [seq, cid] of each message: what two members must agree on. */
const order = (messages: Entry[]): Array<[number, string | undefined]> => messages.map((m) => [m.seq, m.cid])

describe('PostgresBroker when PostgreSQL restarts mid-traffic', { skip }, () => {
  for (const how of ['a fast stop and start', 'a crash and start'] as const) {
    it(`stores every acked message once, in one contiguous order that members on both nodes see, across ${how}`, async (t) => {
      const server = await PostgresServer.create(t)
      const nodes = await startNodes(t, server)
      // Two senders on each node; each is also a member that hears the room.
      const members = nodes.flatMap((node, n) => [0, 1].map((i) => connect(t, node, `n${n}s${i}`)))
      for (const { client } of members) await client.join('r')

      const acked = new Map<string, number>()
      let failures = 0
      let stop = false
      const sending = Promise.all(members.map(async ({ client }, s) => {
        for (let i = 0; i < MAX_SENDS_PER_SENDER && !stop; i++) {
          // Retried with the same cid until acked, as an application does on `unavailable`.
          const cid = `s${s}-${i}`
          acked.set(cid, await untilAvailable(() => client.send('r', cid, { cid }), () => failures++))
        }
      }))
      let gaveUp: unknown
      sending.catch((error: unknown) => { gaveUp = error })
      const ackedAtLeast = async (count: number): Promise<void> => await until(`${count} acked messages`, () => {
        if (gaveUp !== undefined) throw gaveUp
        return acked.size >= count
      })

      await ackedAtLeast(40)
      if (how === 'a crash and start') await server.crash()
      else await server.stop()
      await sleep(300)
      await server.start()
      await ackedAtLeast(acked.size + 40)
      stop = true
      await sending

      assert.ok(failures > 0, 'some sends failed while PostgreSQL was down')
      t.diagnostic(`${acked.size} messages acked; ${failures} failed sends retried`)
      const stored = (await untilAvailable(() => nodes[0].broker.read('r', { limit: 1000 }))).messages
      assert.deepEqual(stored.map((m) => m.seq), Array.from({ length: stored.length }, (_, i) => i + 1), 'seqs are contiguous')
      assert.equal(new Set(stored.map((m) => m.cid)).size, stored.length, 'no cid is stored twice')
      assert.equal(stored.length, acked.size, 'exactly the acked messages are stored')
      for (const [cid, seq] of acked) assert.equal(stored[seq - 1]?.cid, cid, `${cid} is stored at its acked seq`)
      for (const [m, member] of members.entries()) {
        await until(`member ${m} to hear every message`, () => member.messages.length >= stored.length)
        assert.deepEqual(order(member.messages), order(stored), `member ${m} heard the stored order`)
        assert.equal(member.gaps, 0, `member ${m} was told of no gap`)
      }
    })
  }
})

describe('PostgresBroker when PostgreSQL hangs or stops', { skip }, () => {
  it('answers send, join and history with unavailable in bounded time while PostgreSQL hangs, then recovers by itself', async (t) => {
    const server = await PostgresServer.create(t)
    const [a, b] = await startNodes(t, server)
    const sender = connect(t, a, 'sender')
    const receiver = connect(t, b, 'receiver')
    await sender.client.join('r')
    await receiver.client.join('r')
    await sender.client.send('r', 'before', { cid: 'before' })

    server.pause()
    await assertUnavailable(t, 'send', () => sender.client.send('r', 'during', { cid: 'during' }))
    await assertUnavailable(t, 'join', () => sender.client.join('other'))
    await assertUnavailable(t, 'history', () => sender.client.history('r'))
    assert.equal(await readyStatus(a), 503, 'ready says the node should get no new clients')

    server.resume()
    await untilAvailable(() => sender.client.send('r', 'during', { cid: 'during' }))
    await sender.client.send('r', 'after', { cid: 'after' })
    await until('the receiver to hear every message', () => receiver.messages.length >= 3)
    assert.deepEqual(receiver.messages.map((m) => [m.seq, m.text]), [[1, 'before'], [2, 'during'], [3, 'after']])
    assert.equal(await readyStatus(a), 200)
    await until('the recovery log', () => outageLogs(a).info === 1)
    assert.deepEqual(outageLogs(a), { warn: 1, info: 1 }, 'the outage and the recovery are logged once each')
  })

  it('answers unavailable while PostgreSQL is stopped, recovers once it starts, and logs the outage and the recovery once each', async (t) => {
    const server = await PostgresServer.create(t)
    const nodes = await startNodes(t, server)
    const [a, b] = nodes
    const sender = connect(t, a, 'sender')
    const receiver = connect(t, b, 'receiver')
    await sender.client.join('r')
    await receiver.client.join('r')
    await sender.client.send('r', 'before', { cid: 'before' })

    await server.stop()
    for (let i = 0; i < 5; i++) await assertUnavailable(t, `send ${i}`, () => sender.client.send('r', 'during', { cid: 'during' }))
    await assertUnavailable(t, 'join', () => receiver.client.join('other'))
    await assertUnavailable(t, 'history', () => receiver.client.history('r'))
    for (const node of nodes) assert.equal(await readyStatus(node), 503)

    await server.start()
    await untilAvailable(() => sender.client.send('r', 'during', { cid: 'during' }))
    await until('the receiver to hear every message', () => receiver.messages.length >= 2)
    assert.deepEqual(receiver.messages.map((m) => [m.seq, m.text]), [[1, 'before'], [2, 'during']])
    for (const node of nodes) {
      await until('ready', async () => await readyStatus(node) === 200)
      await until('the recovery log', () => outageLogs(node).info === 1)
      assert.deepEqual(outageLogs(node), { warn: 1, info: 1 }, 'the outage and the recovery are logged once each')
      assert.deepEqual(errorLogs(node), [], 'a refused connection is the outage, not a failed statement')
    }
  })
})

describe('PostgresBroker.open while PostgreSQL is down', { skip }, () => {
  it('opens, answers unavailable and not ready, then prepares the schema by itself once PostgreSQL starts', async (t) => {
    const server = await PostgresServer.create(t, { started: false })
    const started = Date.now()
    const [a, b] = await startNodes(t, server)
    assert.ok(Date.now() - started <= HANG_BOUND_MS * 2, 'both nodes opened without waiting for PostgreSQL')
    for (const node of [a, b]) assert.equal(await readyStatus(node), 503)
    const sender = connect(t, a, 'sender')
    const receiver = connect(t, b, 'receiver')
    await assertUnavailable(t, 'join', () => sender.client.join('r'))
    await assertUnavailable(t, 'nodes', () => a.broker.nodes())

    await server.start()
    for (const node of [a, b]) await until('ready', async () => await readyStatus(node) === 200)
    await untilAvailable(() => receiver.client.join('r'))
    await untilAvailable(() => sender.client.join('r'))
    const seq = await sender.client.send('r', 'hello', { cid: 'hello' })
    assert.equal(seq, 1)
    await until('the receiver to hear it', () => receiver.messages.length === 1)
    assert.equal((await a.broker.nodes()).length, 2, 'both nodes hold a lease')
    for (const node of [a, b]) {
      await until('the recovery log', () => outageLogs(node).info === 1)
      assert.deepEqual(outageLogs(node), { warn: 1, info: 1 }, 'the outage and the recovery are logged once each')
      assert.deepEqual(errorLogs(node), [])
    }
  })

  it('still refuses to open, with a clear error, when waiting would not help: a newer schema, no permission', async (t) => {
    const server = await PostgresServer.create(t)
    const schema = uniqueSchema()
    await asAdmin(async (client) => {
      await client.query(`CREATE SCHEMA "${schema}"`)
      await client.query(`CREATE TABLE "${schema}".schema_migrations (version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`)
      await client.query(`INSERT INTO "${schema}".schema_migrations (version) VALUES (999)`)
      await client.query('CREATE ROLE visitor LOGIN')
      await client.query('REVOKE CREATE ON DATABASE postgres FROM PUBLIC')
    }, server.url)
    const quiet = (): void => {}
    const node = { deliver: quiet, outOfSync: quiet, signal: quiet, historySize: 100, reactionLimits: resolveOptions().reactionLimits, connections: () => 0, log: { info: quiet, warn: quiet, error: quiet } }

    const newer = new PostgresBroker({ connectionString: server.url, schema, commandTimeout: COMMAND_TIMEOUT_MS })
    await assert.rejects(newer.open(node), /cannot prepare schema .* at version 999, newer than this fastify-chat-rooms knows/)
    await assert.rejects(newer.nodes(), /not open/, 'nothing keeps trying in the background')

    const visitorUrl = new URL(server.url)
    visitorUrl.username = 'visitor'
    const visitor = new PostgresBroker({ connectionString: visitorUrl.href, schema: uniqueSchema(), commandTimeout: COMMAND_TIMEOUT_MS })
    await assert.rejects(visitor.open(node), /cannot prepare schema .*permission denied/)

    // The failed opens left no connection behind.
    const left = await asAdmin(async (client) => (await client.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name LIKE 'fastify-chat-rooms-%'")).rows[0]!.n, server.url)
    assert.equal(left, 0)
  })
})
