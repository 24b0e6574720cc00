/** Pure pieces: the decoder, name rules, the token bucket, the history ring, the brokers' message builders and group commit. */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createDecoder, normalizeName, characterCount, DEFAULT_ROOM_PATTERN, type Message } from '../lib/protocol.js'
import { TokenBucket } from '../lib/rate-limit.js'
import { HistoryRing, messageBytes } from '../lib/history.js'
import { messageJsonAroundSeq, newMessage } from '../lib/broker.js'
import { GroupCommit } from '../lib/brokers/group-commit.js'

const decode = createDecoder({ roomPattern: new RegExp(DEFAULT_ROOM_PATTERN, 'u'), maxTextLength: 5 })

test('the decoder accepts every client message type', () => {
  for (const message of [
    { type: 'join', room: 'a', since: 0, epoch: 'e', ref: 'r' },
    { type: 'leave', room: 'a' },
    { type: 'send', room: 'a', text: 'hi', cid: 'c' },
    { type: 'typing', room: 'a' },
    { type: 'nick', name: 'bob' },
    { type: 'history', room: 'a', before: 3, limit: 100 },
    { type: 'ping' },
  ]) {
    const decoded = decode(JSON.stringify(message))
    assert.ok(decoded.ok, JSON.stringify(message))
  }
})

test('text length counts characters, not UTF-16 units', () => {
  assert.ok(decode(JSON.stringify({ type: 'send', room: 'a', text: '😀😀😀😀😀' })).ok)
  assert.equal(decode(JSON.stringify({ type: 'send', room: 'a', text: '😀😀😀😀😀😀' })).ok, false)
  assert.equal(characterCount('😀😀', 10), 4, 'short strings are measured cheaply, as an upper bound')
  assert.equal(characterCount('😀😀😀', 5), 3)
})

test('deeply nested JSON within the size limit is an error, not a stack overflow', () => {
  const deep = '{"type":"join","room":"a","x":' + '['.repeat(100000) + ']'.repeat(100000) + '}'
  const decoded = decode(deep)
  assert.equal(decoded.ok, false)
})

test('name rules: trimmed, 1–32 characters, no control characters', () => {
  assert.equal(normalizeName('  bob  '), 'bob')
  assert.equal(normalizeName('é'.repeat(32)), 'é'.repeat(32))
  assert.throws(() => normalizeName('   '), /empty/)
  assert.throws(() => normalizeName('x'.repeat(33)), /32/)
  assert.throws(() => normalizeName('a\u0085b'), /control/)
})

test('every string a client sends must be well-formed Unicode: a lone surrogate is invalid, wherever it is', () => {
  const lone = '\ud800x'
  const messages: Array<[Record<string, unknown>, string]> = [
    [{ type: 'join', room: 'a', epoch: lone }, 'epoch'],
    [{ type: 'send', room: 'a', text: `hi${lone}` }, 'text'],
    [{ type: 'send', room: 'a', text: 'hi', cid: `x\udfff` }, 'cid'],
    [{ type: 'nick', name: lone }, 'name'],
    [{ type: 'members', room: 'a', after: lone }, 'after'],
    [{ type: 'ping', ref: lone }, 'ref'],
  ]
  for (const [message, field] of messages) {
    const decoded = decode(JSON.stringify(message))
    assert.deepEqual(decoded, { ok: false, code: 'invalid', message: `${field}: must be well-formed Unicode (no lone surrogate)` }, field)
  }
  const anyRoom = createDecoder({ roomPattern: /^.+$/u, maxTextLength: 5 })
  assert.equal(anyRoom(JSON.stringify({ type: 'join', room: '\udc00', ref: 'r1' })).ok, false, 'even where the room pattern allows any character')
  assert.ok(decode(JSON.stringify({ type: 'send', room: 'a', text: '😀\ud83d\ude00', ref: '😀' })).ok, 'surrogate pairs are characters')
  assert.throws(() => normalizeName(lone), /name: must be well-formed Unicode/)
})

test('the token bucket allows a burst, then the rate', () => {
  const bucket = new TokenBucket(10, 3, 0)
  assert.deepEqual([bucket.take(0), bucket.take(0), bucket.take(0), bucket.take(0)], [true, true, true, false])
  assert.equal(bucket.take(100), true, '100 ms refills one token at 10/s')
  assert.equal(bucket.take(100), false)
  assert.equal(bucket.take(10_000), true)
})

test('after a refusal, the token bucket says when its next token comes, and a take then succeeds', () => {
  const bucket = new TokenBucket(3, 1, 0)
  assert.equal(bucket.take(0), true)
  assert.equal(bucket.take(100), false)
  const wait = bucket.msUntilToken()
  assert.equal(wait, 234, 'a token takes 333.3 ms at 3/s, 100 of them have passed; rounded up')
  assert.equal(bucket.take(100 + wait - 1), false, 'not before')
  assert.equal(bucket.take(100 + wait), true)
})

function message (seq: number): Message {
  return { type: 'message', room: 'r', seq, id: String(seq), from: { id: 'a', user: 'a', name: 'a' }, text: 'x', ts: 0 }
}

test('the history ring keeps the newest capacity messages and reads ranges', () => {
  const ring = new HistoryRing(4)
  assert.deepEqual(ring.read({ limit: 10 }), { messages: [], more: false })
  for (let seq = 1; seq <= 6; seq++) ring.push(message(seq))
  const seqs = (range: Parameters<HistoryRing['read']>[0]): number[] => ring.read(range).messages.map((m) => m.seq)
  assert.equal(ring.firstSeq, 3)
  assert.deepEqual(seqs({ limit: 10 }), [3, 4, 5, 6])
  assert.deepEqual(seqs({ limit: 2 }), [5, 6])
  assert.equal(ring.read({ limit: 2 }).more, true)
  assert.deepEqual(seqs({ before: 5, limit: 10 }), [3, 4])
  assert.equal(ring.read({ before: 5, limit: 10 }).more, false)
  assert.deepEqual(seqs({ before: 3, limit: 10 }), [])
  assert.deepEqual(seqs({ after: 1, limit: 10 }), [3, 4, 5, 6])
  assert.deepEqual(seqs({ after: 4, limit: 1 }), [5])
  assert.deepEqual(seqs({ after: 6, limit: 10 }), [])
  assert.equal(ring.get(2), undefined)
  assert.equal(ring.get(6)?.seq, 6)
})

test('the history ring counts its bytes and drops from the oldest end, reading the same ranges after', () => {
  const ring = new HistoryRing(3000)
  for (let seq = 1; seq <= 2500; seq++) ring.push(message(seq))
  const costOf = (from: number, to: number): number => Array.from({ length: to - from + 1 }, (_, i) => messageBytes(message(from + i))).reduce((a, b) => a + b, 0)
  assert.equal(ring.bytes, costOf(1, 2500))
  let freed = 0
  for (let i = 0; i < 2000; i++) freed += ring.dropOldest()
  assert.equal(ring.length, 500)
  assert.equal(ring.firstSeq, 2001)
  assert.equal(freed, costOf(1, 2000))
  assert.equal(ring.bytes, costOf(2001, 2500))
  assert.equal(ring.newestBytes, messageBytes(message(2500)))
  assert.deepEqual(ring.read({ before: 2003, limit: 10 }).messages.map((m) => m.seq), [2001, 2002])
  assert.equal(ring.read({ before: 2003, limit: 10 }).more, false)
  assert.equal(ring.get(2000), undefined)
  ring.push(message(2501))
  assert.deepEqual(ring.read({ after: 2498, limit: 10 }).messages.map((m) => m.seq), [2499, 2500, 2501])
  for (let i = 0; i < 600; i++) ring.dropOldest()
  assert.deepEqual([ring.length, ring.bytes, ring.newestBytes, ring.firstSeq], [0, 0, 0, 0])
  assert.equal(ring.dropOldest(), 0, 'an empty ring frees nothing')
})

test('a message\'s JSON halves around its seq make the JSON of the message with that seq, with and without cid', () => {
  for (const draft of [{ from: { id: 'a', user: 'a', name: 'ann "q"' }, text: 'hé\n' }, { from: { id: 'b', user: 'b', name: 'bob' }, text: 'x', cid: 'c1' }]) {
    const { head, tail } = messageJsonAroundSeq('r"1', 'id1', draft, 42)
    assert.deepEqual(JSON.parse(`${head}1234${tail}`), newMessage('r"1', 1234, 'id1', draft, 42))
    assert.equal(`${head}1234${tail}`, JSON.stringify(newMessage('r"1', 1234, 'id1', draft, 42)))
  }
})

test('group commit: a turn\'s calls commit together, calls made during a commit wait for the next one, one commit at a time', async () => {
  const batches: number[][] = []
  let running = 0
  let release: () => void = () => {}
  const commits = new GroupCommit<number, string>(async (batch) => {
    assert.equal(running++, 0, 'one commit at a time')
    batches.push(batch.map(({ call }) => call))
    await new Promise<void>((resolve) => { release = resolve })
    running--
    for (const { call, resolve } of batch) resolve(`stored ${call}`)
  })
  assert.equal(commits.idle, true)
  const first = [commits.add(1), commits.add(2), commits.add(3)]
  assert.equal(commits.idle, false)
  await new Promise((resolve) => setImmediate(resolve))
  await new Promise((resolve) => setImmediate(resolve))
  // The first commit is under way: these wait for the next.
  const second = [commits.add(4), commits.add(5)]
  await new Promise((resolve) => setImmediate(resolve))
  assert.deepEqual(batches, [[1, 2, 3]])
  release()
  assert.deepEqual(await Promise.all(first), ['stored 1', 'stored 2', 'stored 3'])
  await new Promise((resolve) => setImmediate(resolve))
  await new Promise((resolve) => setImmediate(resolve))
  assert.deepEqual(batches, [[1, 2, 3], [4, 5]])
  const settled = commits.settled()
  release()
  await settled
  assert.deepEqual(await Promise.all(second), ['stored 4', 'stored 5'])
  assert.equal(commits.idle, true)
})

test('group commit: a commit that throws rejects the calls it left unsettled, and the next batch still commits', async () => {
  let fail = true
  const commits = new GroupCommit<number, number>((batch) => {
    batch[0]!.resolve(batch[0]!.call)
    if (fail) throw new Error('disk full')
    for (const { call, resolve } of batch) resolve(call)
  })
  const results = await Promise.allSettled([commits.add(1), commits.add(2)])
  assert.deepEqual(results.map((r) => r.status === 'fulfilled' ? r.value : (r.reason as Error).message), [1, 'disk full'])
  fail = false
  assert.deepEqual(await Promise.all([commits.add(3), commits.add(4)]), [3, 4])
})
