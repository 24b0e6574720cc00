/**
 * PostgresBroker: the broker contract, then what only a shared, durable
 * database can show: many nodes on one schema, large payloads, crashes,
 * connections cut mid-traffic, concurrent migrations, deep history.
 * Needs the PostgreSQL at POSTGRES_URL (default 127.0.0.1:5432, database test).
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import pg from 'pg'
import { ChatError } from '../lib/errors.js'
import { PostgresBroker } from '../lib/postgres.js'
import type { Member, Presence } from '../lib/protocol.js'
import { brokerContract } from './broker-contract.js'
import { RecordingNode } from './helpers/recording-node.js'
import { EVERY_SCHEMA_VERSION, POSTGRES_URL, appliedVersions, asAdmin, cluster, dropSchema, skipUnlessPostgres, uniqueSchema } from './helpers/postgres.js'

const skip = await skipUnlessPostgres()

// The contract holds the broker to `historySize`; the option that keeps it does.
brokerContract('PostgresBroker', (t) => {
  const schema = uniqueSchema()
  // A short lease: a renewal (which carries the connection count) every second.
  const broker = new PostgresBroker({ connectionString: POSTGRES_URL, schema, leaseMs: 3000, retention: { messages: 'historySize' } })
  t.after(async () => {
    await broker.close()
    await dropSchema(schema)
  })
  return broker
}, { skip })

const alice: Member = { id: 'a1', user: 'a1', name: 'alice' }
const ghost: Member = { id: 'g1', user: 'g1', name: 'ghost' }

describe('PostgresBroker options', () => {
  it('refuses bad options, naming the field and what is allowed', () => {
    assert.throws(() => new PostgresBroker({ schema: 'Chat; DROP' }), /schema must be 1 to 50 lower-case letters, digits or _/)
    assert.throws(() => new PostgresBroker({ connectionString: POSTGRES_URL, pool: new pg.Pool() }), /connectionString or pool, not both/)
    assert.throws(() => new PostgresBroker({ leaseMs: 0 }), /leaseMs must be a positive integer/)
    assert.throws(() => new PostgresBroker({ commandTimeout: 1.5 }), /commandTimeout must be a positive integer/)
    assert.throws(() => new PostgresBroker({ retention: { messages: -1 } }), /retention.messages must be a positive integer/)
    assert.throws(() => new PostgresBroker({ retention: { age: Number.NaN } }), /retention.age must be a positive integer/)
  })
})

const seqs = (count: number, from = 1): number[] => Array.from({ length: count }, (_, i) => i + from)

describe('PostgresBroker across nodes', { skip }, () => {
  it('gives one contiguous seq per room across nodes under concurrent senders, and both nodes deliver the identical sequence', async (t) => {
    const nodes = await cluster(t, 2)
    await Promise.all(nodes.map(({ broker }) => broker.subscribe('r')))
    const results = await Promise.all(nodes.flatMap(({ broker }, n) =>
      Array.from({ length: 100 }, (_, i) => broker.append('r', { from: alice, text: `n${n}-${i}`, cid: `n${n}-${i}` }))))
    assert.ok(results.every((result) => !result.duplicate))
    const stored = (await nodes[0]!.broker.read('r', { limit: 500 })).messages
    assert.deepEqual(stored.map((m) => m.seq), seqs(200))
    assert.equal(new Set(stored.map((m) => m.text)).size, 200, 'every message once')
    for (const { node } of nodes) {
      await node.until('all 200 messages', () => node.messages('r').length >= 200)
      assert.deepEqual(node.messages('r'), stored)
    }
  })

  it('delivers a message larger than NOTIFY allows, in order with the others', async (t) => {
    const [sender, receiver] = await cluster(t, 2)
    await receiver!.broker.subscribe('r')
    const big = 'é'.repeat(6000) // 12,000 bytes of UTF-8
    await sender!.broker.append('r', { from: alice, text: 'small' })
    await sender!.broker.append('r', { from: alice, text: big })
    await sender!.broker.append('r', { from: alice, text: 'after' })
    await receiver!.node.until('three messages', () => receiver!.node.messages('r').length >= 3)
    assert.deepEqual(receiver!.node.messages('r').map((m) => [m.seq, m.text]), [[1, 'small'], [2, big], [3, 'after']])
  })

  it('stores a cid retried on another node once', async (t) => {
    const [a, b] = await cluster(t, 2)
    const results = await Promise.all([a, b, a, b].map((n) => n!.broker.append('r', { from: alice, text: 'once', cid: 'same' })))
    assert.equal(results.filter((r) => !r.duplicate).length, 1)
    for (const result of results) assert.deepEqual(result.message, results[0]!.message)
    assert.deepEqual((await b!.broker.read('r', { limit: 10 })).messages.map((m) => m.seq), [1])
  })

  it('lists members of every node and tells every node of presence and typing', async (t) => {
    const [a, b] = await cluster(t, 2)
    await b!.broker.subscribe('r')
    await a!.broker.publish('r', { type: 'presence', room: 'r', action: 'join', member: alice })
    assert.deepEqual(await b!.broker.members('r'), [alice])
    assert.deepEqual(await b!.broker.rooms(), [{ room: 'r', members: 1, seq: 0 }])
    assert.equal((await b!.broker.nodes()).length, 2)
    await a!.broker.publish('r', { type: 'typing', room: 'r', member: alice })
    await b!.node.until('the join and the typing event', () => b!.node.events('r').length === 2)
  })

  it('removes the members of a node killed without closing, with one leave each, within the lease', async (t) => {
    const leaseMs = 1500
    const schema = uniqueSchema()
    const survivors = await cluster(t, 2, { schema, leaseMs })
    await Promise.all(survivors.map(({ broker }) => broker.subscribe('r')))
    const script = fileURLToPath(new URL('./helpers/postgres-broker-process.js', import.meta.url))
    const child = spawn(process.execPath, [script, POSTGRES_URL, schema, String(leaseMs), 'r', ghost.id, ghost.name], { stdio: ['ignore', 'pipe', 'inherit'] })
    t.after(() => child.kill('SIGKILL'))
    const [chunk] = await once(child.stdout!, 'data') as [Buffer]
    assert.equal(chunk.toString().trim(), 'ready')
    assert.deepEqual(await survivors[0]!.broker.members('r'), [ghost])

    const isLeave = (event: { type: string }): boolean => event.type === 'presence' && (event as Presence).action === 'leave'
    const killedAt = Date.now()
    child.kill('SIGKILL')
    for (const { node } of survivors) await node.until('the ghost\'s leave', () => node.events('r').some(isLeave))
    const elapsed = Date.now() - killedAt
    assert.ok(elapsed <= leaseMs * 4 / 3 + 500, `leave after ${elapsed} ms, lease ${leaseMs} ms`)
    assert.deepEqual(await survivors[1]!.broker.members('r'), [])
    assert.deepEqual(await survivors[1]!.broker.rooms(), [])
    await new Promise((resolve) => setTimeout(resolve, leaseMs))
    for (const { node } of survivors) assert.equal(node.events('r').filter(isLeave).length, 1, 'one leave, whichever node swept')
  })

  it('keeps every acked message, in order and once, when the sending node is SIGKILLed mid-burst', async (t) => {
    const schema = uniqueSchema()
    const [reader] = await cluster(t, 1, { schema }, 100_000)
    const script = fileURLToPath(new URL('./helpers/postgres-broker-process.js', import.meta.url))
    const child = spawn(process.execPath, [script, POSTGRES_URL, schema, '3000', 'r', ghost.id, ghost.name, 'send'], { stdio: ['ignore', 'pipe', 'inherit'] })
    t.after(() => child.kill('SIGKILL'))
    const acked = new Map<string, number>()
    let buffered = ''
    await new Promise<void>((resolve) => {
      child.stdout!.on('data', (chunk: Buffer) => {
        const lines = (buffered + chunk.toString()).split('\n')
        buffered = lines.pop()!
        for (const line of lines) {
          const [word, cid, seq] = line.split(' ')
          if (word === 'acked') acked.set(cid!, Number(seq))
        }
        if (acked.size >= 300) resolve()
      })
    })
    child.kill('SIGKILL')
    await once(child, 'exit')
    const stored = (await reader!.broker.read('r', { limit: 100_000 })).messages
    assert.deepEqual(stored.map((m) => m.seq), seqs(stored.length), 'contiguous')
    assert.equal(new Set(stored.map((m) => m.cid)).size, stored.length, 'none twice')
    assert.ok(stored.length >= acked.size)
    for (const [cid, seq] of acked) assert.equal(stored[seq - 1]?.cid, cid, `${cid} is stored at its acked seq`)
  })

  it('migrates one schema safely when several nodes open it at once, and again on a later open', async (t) => {
    const schema = uniqueSchema()
    const nodes = await cluster(t, 5, { schema })
    await nodes[0]!.broker.append('r', { from: alice, text: 'x' })
    assert.deepEqual(await appliedVersions(schema), EVERY_SCHEMA_VERSION)
    const [later] = await cluster(t, 1, { schema })
    assert.equal((await later!.broker.read('r', { limit: 10 })).seq, 1, 'a later node finds the history')
  })

  it('pages back through 10,000 messages: reads reach every message kept, whatever historySize', async (t) => {
    const broker = (await cluster(t, 1, {}, 1000))[0]!.broker
    const total = 10_000
    for (let i = 0; i < total; i += 100) {
      await Promise.all(Array.from({ length: 100 }, (_, j) => broker.append('r', { from: alice, text: `m${i + j}` })))
    }
    const pages: number[] = []
    let before: number | undefined
    for (;;) {
      const page = await broker.read('r', { ...(before === undefined ? {} : { before }), limit: 500 })
      pages.unshift(...page.messages.map((m) => m.seq))
      if (!page.more) break
      before = page.messages[0]!.seq
    }
    assert.deepEqual(pages, seqs(total))
  })

  it('deletes history beyond retention in batches, keeping a room\'s newest messages', async (t) => {
    const schema = uniqueSchema()
    const broker = (await cluster(t, 1, { schema, retention: { messages: 3 } }))[0]!.broker
    for (let i = 0; i < 10; i++) await broker.append('r', { from: alice, text: `m${i}`, cid: `c${i}` })
    assert.equal(await broker.enforceRetention(), 0, 'messages younger than the cid retention time stay')
    await asAdmin((client) => client.query(`UPDATE "${schema}".messages SET created_at = now() - interval '1 hour'`))
    assert.equal(await broker.enforceRetention(), 7)
    const kept = await broker.read('r', { limit: 100 })
    assert.deepEqual([kept.messages.map((m) => m.seq), kept.more, kept.seq], [[8, 9, 10], false, 10])
    assert.equal((await broker.append('r', { from: alice, text: 'next' })).message.seq, 11)
  })

  it('deletes a room without members idle past idleRoomTtl, with its history, and keeps one with members', async (t) => {
    const broker = (await cluster(t, 1, { idleRoomTtl: 200 }))[0]!.broker
    await broker.append('idle', { from: alice, text: 'x', cid: 'c' })
    const { epoch } = await broker.read('idle', { limit: 1 })
    await broker.publish('busy', { type: 'presence', room: 'busy', action: 'join', member: alice })
    await broker.append('busy', { from: alice, text: 'x' })
    await new Promise((resolve) => setTimeout(resolve, 400))
    assert.equal(await broker.enforceRetention(), 1, 'one room deleted')
    assert.equal((await broker.read('busy', { limit: 10 })).messages.length, 1)
    assert.deepEqual(await broker.members('busy'), [alice])
    const { message } = await broker.append('idle', { from: alice, text: 'again', cid: 'c' })
    assert.equal(message.seq, 1, 'a deleted room starts again at seq 1')
    assert.notEqual((await broker.read('idle', { limit: 1 })).epoch, epoch, 'under a new epoch')
  })
})

describe('PostgresBroker when its connections are cut', { skip }, () => {
  const COMMAND_TIMEOUT_MS = 500
  /** Timers and a busy machine: how late a rejection may come beyond the timeout. */
  const SLACK_MS = 400

  it('fails with unavailable in bounded time, recovers by itself, and loses or doubles no acked message', async (t) => {
    const [sender, receiver] = await cluster(t, 2, { commandTimeout: COMMAND_TIMEOUT_MS }, 100_000)
    await receiver!.broker.subscribe('r')
    const acked = new Map<string, number>()
    const failures: number[] = []
    let stop = false
    // Two senders retry each cid until it is acked, as clients do.
    const send = async (name: string): Promise<void> => {
      for (let i = 0; !stop; i++) {
        const cid = `${name}-${i}`
        for (;;) {
          const started = Date.now()
          try {
            const { message } = await sender!.broker.append('r', { from: alice, text: cid, cid })
            acked.set(cid, message.seq)
            break
          } catch (error) {
            assert.ok(error instanceof ChatError && error.code === 'unavailable', String(error))
            failures.push(Date.now() - started)
            await new Promise((resolve) => setTimeout(resolve, 20))
          }
        }
      }
    }
    const senders = [send('a'), send('b')]
    await new Promise((resolve) => setTimeout(resolve, 300))
    const cut = async (): Promise<number> => await asAdmin(async (client) => (await client.query(
      'SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity WHERE application_name LIKE $1',
      [`fastify-chat-rooms-${sender!.broker.nodeId}`])).rows[0].n)
    // A cut of idle connections fails no call (the pool replaces them), and appends are batched, one query at
    // a time: cut at least three times, and on until a cut has caught a query under way (bounded).
    for (let i = 0; i < 30 && (i < 3 || failures.length === 0); i++) {
      assert.ok(await cut() > 0, 'the sender\'s connections were cut')
      await new Promise((resolve) => setTimeout(resolve, i < 3 ? 300 : 100))
    }
    await asAdmin((client) => client.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1',
      [`fastify-chat-rooms-${receiver!.broker.nodeId}`]))
    await new Promise((resolve) => setTimeout(resolve, 500))
    stop = true
    await Promise.all(senders)

    assert.ok(failures.length > 0, 'some calls failed while connections were cut')
    for (const ms of failures) assert.ok(ms <= COMMAND_TIMEOUT_MS + SLACK_MS, `a call failed after ${ms} ms`)
    const stored = (await receiver!.broker.read('r', { limit: 100_000 })).messages
    assert.deepEqual(stored.map((m) => m.seq), seqs(stored.length))
    assert.equal(new Set(stored.map((m) => m.cid)).size, stored.length, 'no cid stored twice')
    for (const [cid, seq] of acked) assert.equal(stored[seq - 1]?.cid, cid, `${cid} is stored at its acked seq`)
    await receiver!.node.until('every stored message', () => receiver!.node.messages('r').length >= stored.length)
    assert.deepEqual(receiver!.node.messages('r'), stored)
    const logs = (node: RecordingNode, level: string, text: string): number => node.logs.filter((e) => e.level === level && e.msg?.includes(text)).length
    await sender!.node.until('the recovery log', () => logs(sender!.node, 'info', 'available again') >= 1)
    assert.ok(logs(sender!.node, 'warn', 'unavailable') >= 1, 'the outage is logged')
  })

  it('fails an append with unavailable in bounded time while its room\'s row is locked, and stores the retry once afterwards', async (t) => {
    const schema = uniqueSchema()
    const { broker, node } = (await cluster(t, 1, { schema, commandTimeout: COMMAND_TIMEOUT_MS }))[0]!
    await broker.append('r', { from: alice, text: 'first' })
    const locker = new pg.Client({ connectionString: POSTGRES_URL })
    await locker.connect()
    t.after(() => locker.end())
    await locker.query('BEGIN')
    await locker.query(`SELECT 1 FROM "${schema}".rooms WHERE room = 'r' FOR UPDATE`)
    const started = Date.now()
    await assert.rejects(broker.append('r', { from: alice, text: 'stuck', cid: 'stuck' }), (error: unknown) => error instanceof ChatError && error.code === 'unavailable')
    const elapsed = Date.now() - started
    assert.ok(elapsed <= COMMAND_TIMEOUT_MS + SLACK_MS, `rejected after ${elapsed} ms`)
    assert.equal((await broker.read('r', { limit: 10 })).seq, 1, 'reads go on meanwhile')
    await locker.query('COMMIT')
    const retry = await broker.append('r', { from: alice, text: 'stuck', cid: 'stuck' })
    assert.deepEqual([retry.message.seq, retry.duplicate], [2, false], 'the timed-out append was rolled back')
    assert.equal((await broker.append('r', { from: alice, text: 'stuck', cid: 'stuck' })).duplicate, true)
    assert.ok(node.logs.some((entry) => entry.level === 'warn' && entry.msg?.includes('unavailable')))
  })
})
