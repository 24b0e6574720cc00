/** Every client message of PROTOCOL.md over a real socket, and its direct reply and effects. */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { RawClient, sleep } from './helpers/client.js'
import { startServer } from './helpers/server.js'

test('welcome carries protocol 2, the trimmed name, a guest\'s own id as its user, and guest-XXXX without a name', async (t) => {
  const { wsUrl } = await startServer(t, { home: false })
  const frames: unknown[] = []
  for (const url of [`${wsUrl}?name=%20alice%20`, wsUrl]) {
    const { default: WebSocket } = await import('ws')
    const socket = new WebSocket(url)
    t.after(() => socket.terminate())
    frames.push(await new Promise((resolve) => socket.once('message', (data) => resolve(JSON.parse(String(data))))))
  }
  const [named, guest] = frames as Array<{ type: string, protocol: number, id: string, user: string, name: string }>
  assert.equal(named?.type, 'welcome')
  assert.equal(named?.protocol, 2)
  assert.equal(named?.user, named?.id, 'a guest is a user of its own')
  assert.equal(named?.name, 'alice')
  assert.match(guest?.name ?? '', /^guest-[0-9a-f]{4}$/)
  assert.notEqual(named?.id, guest?.id)
})

test('join answers joined with members and history; others get presence join', async (t) => {
  const { wsUrl } = await startServer(t, { home: false })
  const alice = await RawClient.connect(t, `${wsUrl}?name=alice`)
  const bob = await RawClient.connect(t, `${wsUrl}?name=bob`)
  const first = await alice.request('joined', { type: 'join', room: 'lobby' })
  assert.equal(first.room, 'lobby')
  assert.equal(first.seq, 0)
  assert.deepEqual(first.history, [])
  assert.deepEqual(first.members.map((m) => m.name), ['alice'])
  assert.ok(first.epoch.length > 0)

  const second = await bob.request('joined', { type: 'join', room: 'lobby' })
  assert.deepEqual(second.members.map((m) => m.name).sort(), ['alice', 'bob'])
  assert.equal(second.epoch, first.epoch)
  const presence = await alice.next('presence')
  assert.deepEqual({ action: presence.action, name: presence.member.name }, { action: 'join', name: 'bob' })
  await sleep(50)
  assert.equal(bob.pending('presence').length, 0, 'a member is not told of its own join')
})

test('send stores and delivers a message to every member, the sender included, with contiguous seq; ack only with ref', async (t) => {
  const { wsUrl } = await startServer(t, { home: false })
  const alice = await RawClient.connect(t, `${wsUrl}?name=alice`)
  const bob = await RawClient.connect(t, `${wsUrl}?name=bob`)
  await alice.request('joined', { type: 'join', room: 'r' })
  await bob.request('joined', { type: 'join', room: 'r' })
  const ack = await alice.request('ack', { type: 'send', room: 'r', text: 'hello' })
  assert.equal(ack.seq, 1)
  alice.send({ type: 'send', room: 'r', text: 'no ref', cid: 'c-1' })
  for (const client of [alice, bob]) {
    const one = await client.next('message')
    const two = await client.next('message')
    assert.deepEqual([one.seq, two.seq], [1, 2])
    assert.equal(one.text, 'hello')
    assert.equal(one.from.name, 'alice')
    assert.equal(two.cid, 'c-1')
    assert.ok(Math.abs(one.ts - Date.now()) < 5000)
    assert.notEqual(one.id, two.id)
  }
  await sleep(50)
  assert.equal(alice.pending('ack').length, 0, 'no ack without ref')
})

test('a send with a cid already stored is not stored again; its ack carries the first seq', async (t) => {
  const { wsUrl } = await startServer(t, { home: false })
  const alice = await RawClient.connect(t, wsUrl)
  await alice.request('joined', { type: 'join', room: 'r' })
  const first = await alice.request('ack', { type: 'send', room: 'r', text: 'once', cid: 'abc' })
  const retry = await alice.request('ack', { type: 'send', room: 'r', text: 'once', cid: 'abc' })
  assert.equal(retry.seq, first.seq)
  await alice.next('message')
  await sleep(50)
  assert.equal(alice.pending('message').length, 0, 'the retry is not delivered again')
  const page = await alice.request('history', { type: 'history', room: 'r' })
  assert.equal(page.messages.length, 1)
})

test('leave answers left and others get presence leave; a disconnect is a leave too', async (t) => {
  const { wsUrl } = await startServer(t, { home: false })
  const alice = await RawClient.connect(t, `${wsUrl}?name=alice`)
  const bob = await RawClient.connect(t, `${wsUrl}?name=bob`)
  const carol = await RawClient.connect(t, `${wsUrl}?name=carol`)
  for (const client of [alice, bob, carol]) await client.request('joined', { type: 'join', room: 'r' })
  const left = await bob.request('left', { type: 'leave', room: 'r' })
  assert.equal(left.room, 'r')
  const leave = await alice.next('presence', (p) => p.action === 'leave')
  assert.equal(leave.member.name, 'bob')
  carol.socket.terminate()
  const gone = await alice.next('presence', (p) => p.action === 'leave' && p.member.name === 'carol')
  assert.equal(gone.room, 'r')
  const joined = await alice.request('joined', { type: 'join', room: 'r' })
  assert.deepEqual(joined.members.map((m) => m.name), ['alice'])
})

test('typing reaches the others only and is never stored', async (t) => {
  const { wsUrl } = await startServer(t, { home: false })
  const alice = await RawClient.connect(t, `${wsUrl}?name=alice`)
  const bob = await RawClient.connect(t, `${wsUrl}?name=bob`)
  await alice.request('joined', { type: 'join', room: 'r' })
  await bob.request('joined', { type: 'join', room: 'r' })
  alice.send({ type: 'typing', room: 'r' })
  const typing = await bob.next('typing')
  assert.deepEqual({ room: typing.room, name: typing.member.name }, { room: 'r', name: 'alice' })
  await sleep(50)
  assert.equal(alice.pending('typing').length, 0)
  const page = await alice.request('history', { type: 'history', room: 'r' })
  assert.equal(page.messages.length, 0)
})

test('nick answers renamed and members of every room of the connection get presence rename', async (t) => {
  const { wsUrl } = await startServer(t, { home: false })
  const alice = await RawClient.connect(t, `${wsUrl}?name=alice`)
  const bob = await RawClient.connect(t, `${wsUrl}?name=bob`)
  for (const room of ['a', 'b']) {
    await alice.request('joined', { type: 'join', room })
    await bob.request('joined', { type: 'join', room })
  }
  const renamed = await alice.request('renamed', { type: 'nick', name: '  Alice Cooper ' })
  assert.equal(renamed.name, 'Alice Cooper')
  const rooms = [await bob.next('presence', (p) => p.action === 'rename'), await bob.next('presence', (p) => p.action === 'rename')]
  assert.deepEqual(rooms.map((p) => p.room).sort(), ['a', 'b'])
  assert.ok(rooms.every((p) => p.member.name === 'Alice Cooper'))
  await alice.request('ack', { type: 'send', room: 'a', text: 'hi' })
  const message = await bob.next('message')
  assert.equal(message.from.name, 'Alice Cooper')
  const bad = await alice.request('renamed', { type: 'nick', name: 'a\u0007b' }).catch((error: Error) => error.message)
  assert.match(String(bad), /^invalid: name/)
  const lone = await alice.request('renamed', { type: 'nick', name: '\ud800x' }).catch((error: Error) => error.message)
  assert.match(String(lone), /^invalid: name: must be well-formed Unicode/)
})

test('history pages backwards with before and limit, oldest first, and says whether more is stored', async (t) => {
  const { wsUrl } = await startServer(t, { home: false, rateLimit: { perSecond: 1000, burst: 1000 } })
  const alice = await RawClient.connect(t, wsUrl)
  await alice.request('joined', { type: 'join', room: 'r' })
  for (let i = 1; i <= 7; i++) await alice.request('ack', { type: 'send', room: 'r', text: `m${i}` })
  const newest = await alice.request('history', { type: 'history', room: 'r', limit: 3 })
  assert.deepEqual(newest.messages.map((m) => m.seq), [5, 6, 7])
  assert.equal(newest.more, true)
  const older = await alice.request('history', { type: 'history', room: 'r', before: 5, limit: 3 })
  assert.deepEqual(older.messages.map((m) => m.seq), [2, 3, 4])
  assert.equal(older.more, true)
  const oldest = await alice.request('history', { type: 'history', room: 'r', before: 2, limit: 3 })
  assert.deepEqual(oldest.messages.map((m) => m.seq), [1])
  assert.equal(oldest.more, false)
  const all = await alice.request('history', { type: 'history', room: 'r' })
  assert.equal(all.messages.length, 7)
})

test('ping answers pong with the ref', async (t) => {
  const { wsUrl } = await startServer(t, { home: false })
  const alice = await RawClient.connect(t, wsUrl)
  const pong = await alice.request('pong', { type: 'ping' })
  assert.equal(pong.type, 'pong')
})

test('joined without since carries the newest historyOnJoin messages, oldest first', async (t) => {
  const { wsUrl } = await startServer(t, { home: false, historyOnJoin: 3, rateLimit: { perSecond: 1000, burst: 1000 } })
  const alice = await RawClient.connect(t, wsUrl)
  await alice.request('joined', { type: 'join', room: 'r' })
  for (let i = 1; i <= 5; i++) await alice.request('ack', { type: 'send', room: 'r', text: `m${i}` })
  const bob = await RawClient.connect(t, wsUrl)
  const joined = await bob.request('joined', { type: 'join', room: 'r' })
  assert.equal(joined.seq, 5)
  assert.deepEqual(joined.history.map((m) => m.seq), [3, 4, 5])
  assert.equal(joined.recovered, undefined)
})

test('join with since resumes exactly: recovered when nothing was lost, not when the history no longer reaches or the epoch changed', async (t) => {
  const { wsUrl } = await startServer(t, { home: false, historySize: 5, historyOnJoin: 2, rateLimit: { perSecond: 1000, burst: 1000 } })
  const alice = await RawClient.connect(t, wsUrl)
  const first = await alice.request('joined', { type: 'join', room: 'r' })
  for (let i = 1; i <= 4; i++) await alice.request('ack', { type: 'send', room: 'r', text: `m${i}` })

  const bob = await RawClient.connect(t, wsUrl)
  const resumed = await bob.request('joined', { type: 'join', room: 'r', since: 2, epoch: first.epoch })
  assert.equal(resumed.recovered, true)
  assert.deepEqual(resumed.history.map((m) => m.seq), [3, 4])

  const upToDate = await RawClient.connect(t, wsUrl)
  const current = await upToDate.request('joined', { type: 'join', room: 'r', since: 4 })
  assert.equal(current.recovered, true)
  assert.deepEqual(current.history, [])

  for (let i = 5; i <= 9; i++) await alice.request('ack', { type: 'send', room: 'r', text: `m${i}` })
  const late = await RawClient.connect(t, wsUrl)
  const lossy = await late.request('joined', { type: 'join', room: 'r', since: 2, epoch: first.epoch })
  assert.equal(lossy.recovered, false, 'seq 3 and 4 fell out of a history of 5')
  assert.deepEqual(lossy.history.map((m) => m.seq), [5, 6, 7, 8, 9])

  const future = await RawClient.connect(t, wsUrl)
  const ahead = await future.request('joined', { type: 'join', room: 'r', since: 50, epoch: first.epoch })
  assert.equal(ahead.recovered, false)
  assert.deepEqual(ahead.history.map((m) => m.seq), [8, 9])

  const stranger = await RawClient.connect(t, wsUrl)
  const otherEpoch = await stranger.request('joined', { type: 'join', room: 'r', since: 3, epoch: 'an-old-epoch' })
  assert.equal(otherEpoch.recovered, false)
  assert.deepEqual(otherEpoch.history.map((m) => m.seq), [8, 9])
})

test('joining a room again answers joined without a second membership or presence event', async (t) => {
  const { wsUrl } = await startServer(t, { home: false })
  const alice = await RawClient.connect(t, `${wsUrl}?name=alice`)
  const bob = await RawClient.connect(t, `${wsUrl}?name=bob`)
  await alice.request('joined', { type: 'join', room: 'r' })
  await bob.request('joined', { type: 'join', room: 'r' })
  await alice.next('presence')
  const again = await bob.request('joined', { type: 'join', room: 'r' })
  assert.equal(again.members.length, 2)
  await alice.request('ack', { type: 'send', room: 'r', text: 'one' })
  await bob.next('message')
  await sleep(50)
  assert.equal(alice.pending('presence').length, 0)
  assert.equal(bob.pending('message').length, 0, 'one membership: the message arrives once')
})

test('no gap and no duplicate between joined.history and the live messages that follow, under concurrent sends', async (t) => {
  const { wsUrl } = await startServer(t, { home: false, rateLimit: { perSecond: 10000, burst: 10000 }, historyOnJoin: 1000 })
  const sender = await RawClient.connect(t, wsUrl)
  await sender.request('joined', { type: 'join', room: 'busy' })
  let sending = true
  const pump = (async () => {
    let n = 0
    while (sending) {
      sender.send({ type: 'send', room: 'busy', text: `m${++n}` })
      await sleep(1)
    }
  })()
  await sleep(30)
  const joiners = await Promise.all(Array.from({ length: 10 }, () => RawClient.connect(t, wsUrl)))
  const joined = await Promise.all(joiners.map((client) => client.request('joined', { type: 'join', room: 'busy' })))
  await sleep(50)
  sending = false
  await pump
  const last = await sender.request('ack', { type: 'send', room: 'busy', text: 'last' })
  for (const [i, client] of joiners.entries()) {
    const final = await client.next('message', (m) => m.seq === last.seq)
    const seen = [...(joined[i]?.history ?? []), ...client.pending('message'), final].map((m) => m.seq)
    const expected = Array.from({ length: last.seq }, (_, k) => k + 1)
    assert.deepEqual(seen, expected, `joiner ${i} saw every seq exactly once, in order`)
  }
})

test('a resume or history page too large for one reply is cut to what fits, never closing its reader as slow', async (t) => {
  const { wsUrl, app } = await startServer(t, { home: false, maxBufferedBytes: 100_000, historySize: 200, historyOnJoin: 20 })
  const text = 'x'.repeat(2000)
  for (let i = 0; i < 120; i++) await app.hub.broadcast('big', text)
  const client = await RawClient.connect(t, wsUrl)
  const resumed = await client.request('joined', { type: 'join', room: 'big', since: 0 })
  assert.equal(resumed.recovered, false, 'what was missed does not fit in one reply')
  assert.ok(resumed.history.length > 0 && resumed.history.length <= 20)
  assert.equal(resumed.history.at(-1)?.seq, 120, 'the newest messages are the ones carried')
  const page = await client.request('history', { type: 'history', room: 'big', limit: 100 })
  assert.ok(page.messages.length < 100 && page.messages.length > 0)
  assert.equal(page.more, true)
  assert.equal(page.messages.at(-1)?.seq, 120)
  const small = await client.request('joined', { type: 'join', room: 'big', since: 115 })
  assert.equal(small.recovered, true, 'a resume that fits is exact')
  assert.deepEqual(small.history.map((m) => m.seq), [116, 117, 118, 119, 120])
  assert.equal(app.hub.stats().slowConsumerCloses, 0)
})
