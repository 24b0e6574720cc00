import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import Database from 'better-sqlite3'
import { MIGRATIONS } from '../lib/brokers/sqlite-schema.js'
import { SqliteBroker, type SqliteBrokerOptions } from '../lib/sqlite.js'
import type { Member } from '../lib/protocol.js'
import { pageMessages } from '../lib/broker.js'
import { brokerContract } from './broker-contract.js'
import { RawClient } from './helpers/client.js'
import { RecordingNode } from './helpers/recording-node.js'
import { startServer } from './helpers/server.js'

const PROCESS = fileURLToPath(new URL('./helpers/sqlite-process.js', import.meta.url))
const alice: Member = { id: 'a1', user: 'a1', name: 'alice' }

/** A database file in a temp dir of its own, removed after the test. */
async function tempFile (t: TestContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'chat-sqlite-'))
  t.after(() => rm(dir, { recursive: true, force: true }))
  return join(dir, 'chat.db')
}

/** An opened broker on `file`, closed after the test. */
async function openBroker (t: TestContext, options: SqliteBrokerOptions, node = new RecordingNode()): Promise<SqliteBroker> {
  const broker = new SqliteBroker(options)
  await broker.open(node)
  t.after(() => broker.close())
  return broker
}

// The contract holds the broker to `historySize`; the option that keeps it does. Both ways of acknowledging keep it.
for (const synchronous of ['normal', 'full'] as const) {
  brokerContract(`SqliteBroker (synchronous: '${synchronous}')`, (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'chat-sqlite-'))
    const broker = new SqliteBroker({ file: join(dir, 'chat.db'), retention: { messages: 'historySize' }, synchronous })
    t.after(async () => {
      await broker.close()
      await rm(dir, { recursive: true, force: true })
    })
    return broker
  })
}

test('keeps every message by default, whatever historySize', async (t) => {
  const broker = await openBroker(t, { file: await tempFile(t) }, new RecordingNode(5))
  for (let i = 1; i <= 12; i++) await broker.append('r', { from: alice, text: `m${i}` })
  const all = await broker.read('r', { limit: 100 })
  assert.deepEqual(all.messages.map((m) => m.seq), Array.from({ length: 12 }, (_, i) => i + 1))
})

test('a broker reopened on the same file keeps seq, epoch, history and cid retries', async (t) => {
  const file = await tempFile(t)
  const first = new SqliteBroker({ file })
  await first.open(new RecordingNode())
  await first.publish('r', { type: 'presence', room: 'r', action: 'join', member: alice })
  const sent = [await first.append('r', { from: alice, text: 'one', cid: 'c1' }), await first.append('r', { from: alice, text: 'two', cid: 'c2' })]
  const before = await first.read('r', { limit: 10 })
  await first.close()

  const second = await openBroker(t, { file })
  const after = await second.read('r', { limit: 10 })
  assert.deepEqual(after, before)
  assert.deepEqual(after.messages, sent.map((s) => s.message))
  assert.deepEqual(await second.members('r'), [], 'rosters are not durable: nobody is connected after a restart')
  const retry = await second.append('r', { from: alice, text: 'two', cid: 'c2' })
  assert.deepEqual(retry, { message: sent[1]!.message, duplicate: true })
  assert.equal((await second.append('r', { from: alice, text: 'three' })).message.seq, 3)
  assert.equal((await second.read('r', { limit: 1 })).epoch, before.epoch)
})

test('appends of one turn are committed together and delivered in seq order after the commit', async (t) => {
  const node = new RecordingNode()
  const broker = await openBroker(t, { file: await tempFile(t) }, node)
  await broker.subscribe('r')
  const sends = Array.from({ length: 50 }, (_, i) => broker.append('r', { from: alice, text: `m${i}` }))
  assert.equal(node.messages('r').length, 0, 'nothing is delivered before the commit')
  const results = await Promise.all(sends)
  assert.deepEqual(results.map((r) => r.message.seq), Array.from({ length: 50 }, (_, i) => i + 1))
  assert.deepEqual(node.messages('r').map((m) => m.seq), results.map((r) => r.message.seq))
})

test('retention by count keeps the newest messages per room and still recognises a trimmed cid', async (t) => {
  const broker = await openBroker(t, { file: await tempFile(t), retention: { messages: 3 } })
  await broker.append('r', { from: alice, text: 'first', cid: 'early' })
  for (let i = 0; i < 9; i++) await broker.append('r', { from: alice, text: `m${i}` })
  assert.deepEqual((await broker.read('r', { limit: 100 })).messages.map((m) => m.seq), [8, 9, 10])
  const retry = await broker.append('r', { from: alice, text: 'first', cid: 'early' })
  assert.deepEqual([retry.duplicate, retry.message.seq], [true, 1])
})

test('pages back through 10,000 messages with read({ before, limit })', async (t) => {
  const broker = await openBroker(t, { file: await tempFile(t) })
  await Promise.all(Array.from({ length: 10_000 }, (_, i) => broker.append('r', { from: alice, text: `m${i + 1}` })))
  const seen: number[] = []
  let before: number | undefined
  let more = true
  while (more) {
    const page = await broker.read('r', { ...(before === undefined ? {} : { before }), limit: 250 })
    seen.unshift(...page.messages.map((m) => m.seq))
    assert.ok(page.messages.every((m) => m.text === `m${m.seq}`))
    more = page.more
    before = page.messages[0]?.seq
  }
  assert.deepEqual(seen, Array.from({ length: 10_000 }, (_, i) => i + 1))
})

/** Runs test/helpers/sqlite-process.js; `lines` gets each line it prints. */
function child (mode: 'burst' | 'users' | 'changes' | 'open', file: string, lines: (line: string) => void) {
  const proc = spawn(process.execPath, [PROCESS, mode, file], { stdio: ['ignore', 'pipe', 'inherit'] })
  let rest = ''
  proc.stdout.on('data', (chunk: Buffer) => {
    const parts = (rest + String(chunk)).split('\n')
    rest = parts.pop() ?? ''
    for (const line of parts) lines(line)
  })
  return { proc, exited: once(proc, 'exit') as Promise<[number | null, string | null]> }
}

test('after a SIGKILL right after a burst of acked appends, every acked message is stored, in order, none twice', async (t) => {
  const file = await tempFile(t)
  const acked: number[] = []
  let reached: () => void = () => {}
  const enough = new Promise<void>((resolve) => { reached = resolve })
  const burst = child('burst', file, (line) => {
    if (/^\d+$/.test(line)) acked.push(Number(line))
    if (acked.length >= 1000) reached()
  })
  t.after(() => burst.proc.kill('SIGKILL'))
  await enough
  burst.proc.kill('SIGKILL')
  await burst.exited
  const broker = await openBroker(t, { file })
  const stored = await broker.read('r', { after: 0, limit: 1_000_000 })
  const seqs = stored.messages.map((m) => m.seq)
  assert.deepEqual(seqs, Array.from({ length: stored.seq }, (_, i) => i + 1), 'contiguous from 1, in order')
  assert.equal(new Set(stored.messages.map((m) => m.cid)).size, seqs.length, 'nothing stored twice')
  assert.ok(Math.max(...acked) <= stored.seq, `acked up to ${Math.max(...acked)}, stored up to ${stored.seq}`)
})

test('a second process opening the same file is refused with an error naming the file, and may open it once the first closed', async (t) => {
  const file = await tempFile(t)
  const broker = await openBroker(t, { file })
  await broker.append('r', { from: alice, text: 'held' })
  const lines: string[] = []
  const second = child('open', file, (line) => lines.push(line))
  const [code] = await second.exited
  assert.equal(code, 1)
  assert.deepEqual(lines, [`refused: SqliteBroker: ${file} is in use by another process; one process per file (use the PostgreSQL broker for several nodes)`])
  await broker.close()
  const after: string[] = []
  const third = child('open', file, (line) => after.push(line))
  const [thirdCode] = await third.exited
  assert.deepEqual([thirdCode, after], [0, ['opened']])
})

test('a client resuming after a server restart with since and the old epoch gets recovered: true and exactly what it missed', async (t) => {
  const file = await tempFile(t)
  const first = await startServer(t, { broker: new SqliteBroker({ file }) })
  const reader = await RawClient.connect(t, `${first.wsUrl}?name=reader`)
  const writer = await RawClient.connect(t, `${first.wsUrl}?name=writer`)
  const joined = await reader.request('joined', { type: 'join', room: 'lobby' })
  await writer.request('joined', { type: 'join', room: 'lobby' })
  await writer.request('ack', { type: 'send', room: 'lobby', text: 'seen' })
  const seen = await reader.next('message', (m) => m.text === 'seen')
  reader.socket.terminate()
  const missed = [await writer.request('ack', { type: 'send', room: 'lobby', text: 'missed 1' }), await writer.request('ack', { type: 'send', room: 'lobby', text: 'missed 2' })]
  await first.app.close()

  const second = await startServer(t, { broker: new SqliteBroker({ file }) })
  const back = await RawClient.connect(t, `${second.wsUrl}?name=reader`)
  const resumed = await back.request('joined', { type: 'join', room: 'lobby', since: seen.seq, epoch: joined.epoch })
  assert.equal(resumed.recovered, true)
  assert.equal(resumed.epoch, joined.epoch)
  assert.deepEqual(resumed.history.map((m) => [m.seq, m.text]), missed.map((a, i) => [a.seq, `missed ${i + 1}`]))
})

/** Polls `check` (on real timers) until it holds, for up to 5 s. */
async function eventually (what: string, check: () => Promise<boolean>): Promise<void> {
  const deadline = performance.now() + 5000
  while (!await check()) {
    assert.ok(performance.now() < deadline, `still not: ${what}`)
    await new Promise((resolve) => setImmediate(resolve))
  }
}

test('the sweep deletes messages past retention.age and forgets rooms idle past idleRoomTtl, but not rooms with members', async (t) => {
  t.mock.timers.enable({ apis: ['Date', 'setInterval'], now: 1_000_000 })
  const broker = await openBroker(t, { file: await tempFile(t), retention: { age: 60_000 }, idleRoomTtl: 120_000 })
  await broker.append('r', { from: alice, text: 'old', cid: 'old' })
  await broker.append('idle', { from: alice, text: 'x' })
  await broker.publish('busy', { type: 'presence', room: 'busy', action: 'join', member: alice })
  t.mock.timers.tick(30_000)
  await broker.append('r', { from: alice, text: 'new' })
  t.mock.timers.tick(30_001)
  const texts = async (room: string): Promise<string[]> => pageMessages((await broker.read(room, { limit: 10 })).messages).map((m) => m.text)
  await eventually('the old message is deleted', async () => (await texts('r')).join() === 'new')
  const retry = await broker.append('r', { from: alice, text: 'old', cid: 'old' })
  assert.deepEqual([retry.duplicate, retry.message.seq], [true, 1], 'a retry of a deleted message is still recognised')
  assert.equal((await broker.read('idle', { limit: 1 })).seq, 1, 'not idle long enough yet')
  t.mock.timers.tick(60_000)
  await eventually('the idle room is forgotten', async () => (await broker.read('idle', { limit: 1 })).epoch === '')
  assert.equal((await broker.read('r', { limit: 1 })).seq, 2, 'a room active since is kept')
  assert.notEqual((await broker.read('busy', { limit: 1 })).epoch, '', 'a room with members is kept')
})

test('bad options are refused with the field named', () => {
  assert.throws(() => new SqliteBroker({ file: '' }), /file: must be a non-empty path/)
  assert.throws(() => new SqliteBroker({ file: 'x.db', retention: { messages: 0 } }), /retention\.messages: must be a positive integer, not 0/)
  assert.throws(() => new SqliteBroker({ file: 'x.db', idleRoomTtl: -1 }), /idleRoomTtl: must be a positive integer, not -1/)
  assert.throws(() => new SqliteBroker({ file: 'x.db', synchronous: 'off' as 'full' }), /synchronous: must be 'normal' or 'full', not off/)
})

test('a retention lowered between restarts is caught up by the sweep, in batches, and reads never show the excess', async (t) => {
  const file = await tempFile(t)
  const first = new SqliteBroker({ file })
  await first.open(new RecordingNode())
  await Promise.all(Array.from({ length: 1200 }, (_, i) => first.append('r', { from: alice, text: `m${i + 1}` })))
  await first.close()
  t.mock.timers.enable({ apis: ['setInterval'] })
  const second = new SqliteBroker({ file, retention: { messages: 10 } })
  await second.open(new RecordingNode())
  const newest = await second.read('r', { limit: 100 })
  assert.deepEqual([newest.messages.map((m) => m.seq), newest.more], [Array.from({ length: 10 }, (_, i) => 1191 + i), false])
  t.mock.timers.tick(60_000)
  const stored = (): number => {
    const db = new Database(file, { readonly: true })
    try {
      return (db.prepare('SELECT count(*) AS n FROM messages').get() as { n: number }).n
    } finally {
      db.close()
    }
  }
  // Let the sweep's batches run (each yields a turn), then look at the file itself.
  for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve))
  await second.close()
  assert.equal(stored(), 10)
})

test('a client that missed more than historySize after a restart gets recovered: false and the newest messages, not the oldest it missed', async (t) => {
  const file = await tempFile(t)
  const options = { historySize: 5, historyOnJoin: 3 }
  const first = await startServer(t, { ...options, broker: new SqliteBroker({ file }) })
  const writer = await RawClient.connect(t, `${first.wsUrl}?name=writer`)
  const joined = await writer.request('joined', { type: 'join', room: 'lobby' })
  for (let i = 1; i <= 8; i++) await writer.request('ack', { type: 'send', room: 'lobby', text: `m${i}` })
  await first.app.close()
  const second = await startServer(t, { ...options, broker: new SqliteBroker({ file }) })
  const back = await RawClient.connect(t, `${second.wsUrl}?name=reader`)
  const resumed = await back.request('joined', { type: 'join', room: 'lobby', since: 0, epoch: joined.epoch })
  assert.deepEqual([resumed.recovered, resumed.seq, resumed.history.map((m) => m.text)], [false, 8, ['m6', 'm7', 'm8']])
})

test('database is the open handle, for the application\'s own tables in the same file, kept across a reopen', async (t) => {
  const file = await tempFile(t)
  const broker = new SqliteBroker({ file })
  assert.throws(() => broker.database, /SqliteBroker: not open/)
  await broker.open(new RecordingNode())
  broker.database.exec('CREATE TABLE app_notes (text TEXT NOT NULL)')
  broker.database.prepare('INSERT INTO app_notes (text) VALUES (?)').run('kept')
  await broker.append('lobby', { from: alice, text: 'hello' })
  await broker.close()
  assert.throws(() => broker.database, /SqliteBroker: not open/)

  const reopened = await openBroker(t, { file })
  assert.deepEqual(reopened.database.prepare('SELECT text FROM app_notes').all(), [{ text: 'kept' }])
  assert.deepEqual((await reopened.read('lobby', { limit: 10 })).messages.map((message) => message.text), ['hello'])
})

const bob: Member = { id: 'b1', user: 'b1', name: 'bob' }
const joinRoom = (broker: SqliteBroker, member: Member): Promise<void> => broker.publish('r', { type: 'presence', room: 'r', action: 'join', member })
const forbidden = (error: { code?: string }): boolean => error.code === 'forbidden'

test('bans, mutes and read markers survive closing and reopening the file, and are enforced at once', async (t) => {
  const file = await tempFile(t)
  const first = new SqliteBroker({ file })
  await first.open(new RecordingNode())
  for (const text of ['one', 'two', 'three']) await first.append('r', { from: bob, text })
  await first.changeUser('r', 'a1', { kind: 'read', seq: 2 })
  await first.changeUser('r', 'a1', { kind: 'mute' })
  await first.changeUser('r', 'b1', { kind: 'ban' })
  await first.close()

  const second = await openBroker(t, { file })
  assert.deepEqual(await second.userState('r', 'a1'), { read: 2, mute: {} })
  assert.deepEqual((await second.moderation('r')).sort((x, y) => x.user.localeCompare(y.user)), [{ user: 'a1', mute: {} }, { user: 'b1', ban: {} }])
  await assert.rejects(joinRoom(second, bob), forbidden)
  await assert.rejects(second.append('r', { from: alice, text: 'muted' }), forbidden)
  assert.deepEqual(await second.members('r'), [])
  assert.equal((await second.read('r', { limit: 10 })).seq, 3, 'nothing refused was stored')
  assert.deepEqual((await second.changeUser('r', 'a1', { kind: 'read', seq: 1 })).state, { read: 2, mute: {} }, 'the marker still never moves back')
})

test('a ban and a read marker acknowledged before a SIGKILL are kept', async (t) => {
  const file = await tempFile(t)
  let stored: () => void = () => {}
  const done = new Promise<void>((resolve) => { stored = resolve })
  const holder = child('users', file, (line) => { if (line === 'stored') stored() })
  t.after(() => holder.proc.kill('SIGKILL'))
  await done
  holder.proc.kill('SIGKILL')
  await holder.exited
  const broker = await openBroker(t, { file })
  assert.deepEqual(await broker.userState('r', 'reader'), { read: 2 })
  assert.deepEqual(await broker.moderation('r'), [{ user: 'spammer', ban: {} }])
  await assert.rejects(joinRoom(broker, { id: 's1', user: 'spammer', name: 'spam' }), forbidden)
})

test('an edit, a reaction and a delete acknowledged before a SIGKILL are kept, in the stream and in the messages\' state', async (t) => {
  const file = await tempFile(t)
  let acked: (line: string) => void = () => {}
  const done = new Promise<string>((resolve) => { acked = resolve })
  const holder = child('changes', file, (line) => { if (line.startsWith('acked')) acked(line) })
  t.after(() => holder.proc.kill('SIGKILL'))
  const line = await done
  holder.proc.kill('SIGKILL')
  await holder.exited
  assert.equal(line, 'acked 4 5 6')
  const broker = await openBroker(t, { file })
  const page = pageMessages((await broker.read('r', { limit: 10 })).messages)
  assert.deepEqual(page.map((m) => [m.seq, m.text, m.edited !== undefined, m.deleted ?? false, m.reactions]), [
    [1, 'one, edited', true, false, undefined], [2, 'two', false, false, { '👍': ['x'] }], [3, '', false, true, undefined],
  ])
  const stream = await broker.read('r', { after: 3, limit: 10 })
  assert.deepEqual(stream.messages.map((entry) => entry.type === 'update' && [entry.seq, entry.target, entry.action]), [[4, 1, 'edit'], [5, 2, 'react'], [6, 3, 'delete']])
  assert.deepEqual(await broker.update('r', { by: { id: 'w', user: 'w', name: 'w' }, target: 1, action: 'edit', text: 'one, edited', cid: 'e1' }), { seq: 4, duplicate: true }, 'a retry of the acknowledged edit')
})

test('a ban or mute with until ends on time, in a running broker and across a restart', async (t) => {
  t.mock.timers.enable({ apis: ['Date'], now: 1_000_000 })
  const file = await tempFile(t)
  const first = new SqliteBroker({ file })
  await first.open(new RecordingNode())
  await first.changeUser('r', 'b1', { kind: 'ban', until: 1_060_000 })
  await first.changeUser('r', 'a1', { kind: 'mute', until: 1_120_000 })
  await first.close()
  t.mock.timers.tick(30_000)

  const second = new SqliteBroker({ file })
  await second.open(new RecordingNode())
  await assert.rejects(joinRoom(second, bob), forbidden, 'still banned after the restart')
  await assert.rejects(second.append('r', { from: alice, text: 'x' }), forbidden)
  t.mock.timers.tick(30_000)
  await joinRoom(second, bob)
  assert.deepEqual(await second.userState('r', 'b1'), { read: 0 }, 'the ban ended at its until')
  assert.deepEqual(await second.moderation('r'), [{ user: 'a1', mute: { until: 1_120_000 } }])
  await second.close()
  t.mock.timers.tick(60_000)

  const third = await openBroker(t, { file })
  assert.deepEqual(await third.moderation('r'), [], 'the mute ended while the file was closed')
  assert.equal((await third.append('r', { from: alice, text: 'free' })).message.seq, 1)
})

test('a muted append fails alone: the other calls of its group commit are stored and delivered, in order', async (t) => {
  const node = new RecordingNode()
  const broker = await openBroker(t, { file: await tempFile(t) }, node)
  await broker.subscribe('r')
  const mo: Member = { id: 'm1.tab', user: 'm1', name: 'mo' }
  // One turn's calls: one batch, one transaction; the mute holds from its place in it.
  const [before, mute, after, other] = await Promise.allSettled([
    broker.append('r', { from: mo, text: 'before the mute' }),
    broker.changeUser('r', 'm1', { kind: 'mute' }),
    broker.append('r', { from: mo, text: 'after the mute', cid: 'refused' }),
    broker.append('r', { from: alice, text: 'from another user' }),
  ])
  assert.equal(before.status === 'fulfilled' && before.value.message.seq, 1)
  assert.equal(mute.status === 'fulfilled' && mute.value.changed, true)
  assert.ok(after.status === 'rejected' && forbidden(after.reason as { code?: string }), 'the append after the mute is refused')
  assert.equal(other.status === 'fulfilled' && other.value.message.seq, 2)
  assert.deepEqual((await broker.read('r', { limit: 10 })).messages.map((m) => m.text), ['before the mute', 'from another user'])
  assert.deepEqual(node.delivered.map(({ event }) => event.type === 'message' ? event.seq : event.type), [1, 'user', 2])
  assert.equal((await broker.changeUser('r', 'm1', { kind: 'unmute' })).changed, true)
  assert.equal((await broker.append('r', { from: mo, text: 'after the mute', cid: 'refused' })).duplicate, false, 'the refused cid was never stored')
})

test('a file of schema version 1 is migrated in place, its messages from.user being their from.id', async (t) => {
  const file = await tempFile(t)
  const old = new Database(file)
  old.exec(MIGRATIONS[0]!)
  old.pragma('user_version = 1')
  old.prepare('INSERT INTO rooms (name, epoch, seq, last_active) VALUES (?, ?, ?, ?)').run('r', 'old-epoch', 2, Date.now())
  const insert = old.prepare('INSERT INTO messages (room_id, seq, id, from_id, from_name, text, ts, cid) VALUES (1, ?, ?, ?, ?, ?, ?, ?)')
  insert.run(1, 'm1', 'conn-1', 'ann', 'hello', 1000, 'c1')
  insert.run(2, 'm2', 'conn-2', 'ben', 'hi', 2000, null)
  old.close()

  const broker = await openBroker(t, { file })
  assert.equal(broker.database.pragma('user_version', { simple: true }), MIGRATIONS.length)
  const before = await broker.read('r', { limit: 10 })
  assert.deepEqual([before.epoch, before.seq], ['old-epoch', 2])
  assert.deepEqual(pageMessages(before.messages).map((m) => m.from), [{ id: 'conn-1', user: 'conn-1', name: 'ann' }, { id: 'conn-2', user: 'conn-2', name: 'ben' }])
  assert.equal((await broker.append('r', { from: alice, text: 'hello', cid: 'c1' })).duplicate, true, 'cids stored before still count')
  const tab: Member = { id: 'a1.tab2', user: 'a1', name: 'alice' }
  assert.deepEqual((await broker.append('r', { from: tab, text: 'new' })).message.from, tab)
  assert.deepEqual(pageMessages((await broker.read('r', { after: 2, limit: 10 })).messages).map((m) => m.from), [tab], 'a new message keeps its user')
  assert.deepEqual((await broker.changeUser('r', 'a1', { kind: 'read', seq: 3 })).state, { read: 3 })
})

test('a file of schema version 2 is migrated to 3: its messages read as they were, and can be edited, reacted to and deleted', async (t) => {
  const file = await tempFile(t)
  const old = new Database(file)
  old.exec(MIGRATIONS[0]! + MIGRATIONS[1]!)
  old.pragma('user_version = 2')
  old.prepare('INSERT INTO rooms (name, epoch, seq, last_active) VALUES (?, ?, ?, ?)').run('r', 'v2-epoch', 3, Date.now())
  const insert = old.prepare('INSERT INTO messages (room_id, seq, id, from_id, from_user, from_name, text, ts, cid) VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?)')
  insert.run(1, 'm1', 'a1.tab', 'a1', 'alice', 'hello', 1000, 'c1')
  insert.run(2, 'm2', 'b1', 'b1', 'bob', 'hi', 2000, null)
  insert.run(3, 'm3', 'a1.tab', 'a1', 'alice', 'bye', 3000, null)
  old.close()

  const broker = await openBroker(t, { file })
  assert.equal(broker.database.pragma('user_version', { simple: true }), 3)
  const tab: Member = { id: 'a1.tab', user: 'a1', name: 'alice' }
  const stored = [
    { type: 'message', room: 'r', seq: 1, id: 'm1', from: tab, text: 'hello', ts: 1000, cid: 'c1' },
    { type: 'message', room: 'r', seq: 2, id: 'm2', from: bob, text: 'hi', ts: 2000 },
    { type: 'message', room: 'r', seq: 3, id: 'm3', from: tab, text: 'bye', ts: 3000 },
  ]
  const before = await broker.read('r', { limit: 10 })
  assert.deepEqual([before.epoch, before.seq, before.messages, before.more], ['v2-epoch', 3, stored, false], 'old rows read exactly as they were')
  assert.deepEqual((await broker.read('r', { after: 0, limit: 10 })).messages, stored)
  assert.equal((await broker.update('r', { by: alice, target: 1, action: 'edit', text: 'hello again' })).seq, 4)
  assert.equal((await broker.update('r', { by: alice, target: 2, action: 'react', reaction: '👍' })).seq, 5)
  assert.equal((await broker.update('r', { by: tab, target: 3, action: 'delete' })).seq, 6)
  await assert.rejects(broker.update('r', { by: alice, target: 2, action: 'edit', text: 'mine' }), forbidden, "an old message keeps its author's user")
  const after = pageMessages((await broker.read('r', { limit: 10 })).messages)
  assert.deepEqual(after.map((m) => [m.seq, m.text, m.edited !== undefined, m.deleted ?? false, m.reactions]), [
    [1, 'hello again', true, false, undefined], [2, 'hi', false, false, { '👍': ['a1'] }], [3, '', false, true, undefined],
  ])
  assert.equal((await broker.append('r', { from: alice, text: 'hello', cid: 'c1' })).duplicate, true, 'cids stored before still count')
})

test('retention by count trims updates with the messages, as entries of the stream', async (t) => {
  const broker = await openBroker(t, { file: await tempFile(t), retention: { messages: 4 } })
  for (const text of ['one', 'two', 'three']) await broker.append('r', { from: alice, text })
  for (const reaction of ['a', 'b', 'c']) await broker.update('r', { by: bob, target: 3, action: 'react', reaction })
  const rows = (): number => (broker.database.prepare('SELECT count(*) AS n FROM messages').get() as { n: number }).n
  assert.equal(rows(), 4, 'the newest four entries: message 3 and its three reactions')
  assert.deepEqual((await broker.read('r', { after: 0, limit: 10 })).messages.map((entry) => entry.seq), [3, 4, 5, 6])
  await assert.rejects(broker.update('r', { by: alice, target: 2, action: 'edit', text: 'gone' }), (error: { code?: string }) => error.code === 'not_found')
  assert.deepEqual(pageMessages((await broker.read('r', { limit: 10 })).messages).map((m) => m.reactions), [{ a: ['b1'], b: ['b1'], c: ['b1'] }])
})

test('a room forgotten for idleness takes its bans, mutes and markers with it', async (t) => {
  t.mock.timers.enable({ apis: ['Date', 'setInterval'], now: 1_000_000 })
  const broker = await openBroker(t, { file: await tempFile(t), idleRoomTtl: 120_000 })
  await broker.append('r', { from: bob, text: 'x' })
  await broker.changeUser('r', 'a1', { kind: 'read', seq: 1 })
  await broker.changeUser('r', 'b1', { kind: 'ban' })
  t.mock.timers.tick(120_001)
  await eventually('the idle room is forgotten', async () => (await broker.read('r', { limit: 1 })).epoch === '')
  const userStates = (): unknown => broker.database.prepare('SELECT count(*) AS n FROM user_states').get()
  await eventually('its user states are deleted', async () => (userStates() as { n: number }).n === 0)
  assert.deepEqual([await broker.userState('r', 'a1'), await broker.moderation('r')], [{ read: 0 }, []])
  await joinRoom(broker, bob)
})
