/**
 * Type tests: this file must compile (`npm run typecheck`); each
 * `@ts-expect-error` line must fail to compile, or the build fails.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import Fastify from 'fastify'
import chatRooms, { type ChatRoomsOptions, type Hub, type Message, type RoomInfo, type NodeInfo, type HubStats, type HubEvents, type Member, type ModerationEntry, type RestrictionOptions, type ServerFrameOf, type Update } from '../lib/index.js'
import { connect, type ReplyTo } from '../lib/testing.js'

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends (<T>() => T extends B ? 1 : 2) ? true : false
function expectType<T extends true> (_: T): void {}

test('fastify.hub is typed through declaration merging, and options are checked', async () => {
  const app = Fastify()
  await app.register(chatRooms, { home: false, rateLimit: { perSecond: 5, burst: 10 } })
  await app.ready()
  expectType<Equal<typeof app.hub, Hub>>(true)
  expectType<Equal<Awaited<ReturnType<Hub['broadcast']>>, Message>>(true)
  expectType<Equal<Awaited<ReturnType<Hub['rooms']>>, RoomInfo[]>>(true)
  expectType<Equal<ReturnType<Hub['stats']>, HubStats>>(true)
  expectType<Equal<Awaited<ReturnType<Hub['nodes']>>, NodeInfo[]>>(true)
  expectType<Equal<Parameters<Hub['ban']>, [room: string, user: string, options?: RestrictionOptions]>>(true)
  expectType<Equal<Awaited<ReturnType<Hub['moderation']>>, ModerationEntry[]>>(true)
  expectType<Equal<HubEvents['leave'][0]['last'], boolean | undefined>>(true)
  expectType<Equal<HubEvents['message'], [message: Message]>>(true)
  expectType<Equal<HubEvents['update'], [update: Update]>>(true)
  expectType<Equal<Awaited<ReturnType<Hub['editMessage']>>, number>>(true)
  expectType<Equal<HubEvents['join'][0]['room'], string>>(true)
  expectType<Equal<HubEvents['leave'][0]['member']['name'], string>>(true)
  const seen: string[] = []
  const onMessage = (message: Message): void => { seen.push(message.text) }
  expectType<Equal<ReturnType<typeof app.hub.on<'message'>>, Hub>>(true)
  expectType<Equal<Parameters<typeof app.hub.once<'join'>>[1], (event: { room: string, member: Member, first: boolean }) => void>>(true)
  app.hub.on('message', onMessage).once('join', ({ room }) => seen.push(room)).off('message', onMessage)
  // @ts-expect-error no such event
  app.hub.on('joined', () => {})
  // @ts-expect-error a join listener gets { room, member }, not a message
  app.hub.on('join', onMessage)

  // @ts-expect-error maxPayload is a number
  const badPayload: ChatRoomsOptions = { maxPayload: 'big' }
  // @ts-expect-error unknown option
  const typo: ChatRoomsOptions = { maxRoomz: 3 }
  // @ts-expect-error rest takes a prefix or false, not true
  const badRest: ChatRoomsOptions = { rest: true }
  // @ts-expect-error authenticate returns an identity with a name
  const badAuth: ChatRoomsOptions = { authenticate: async () => ({ id: 'x' }) }
  // @ts-expect-error onMessage returns text, a verdict, or nothing
  const badHook: ChatRoomsOptions = { onMessage: () => 42 }
  assert.ok([badPayload, typo, badRest, badAuth, badHook].length === 5)
  await app.close()
})

test('fastify.hub has the server API only: member actions are not on it', async (t) => {
  const app = Fastify()
  t.after(() => app.close())
  await app.register(chatRooms, { home: false })
  await app.ready()
  // @ts-expect-error members join through their connection
  void app.hub.join
  // @ts-expect-error members leave through their connection
  void app.hub.leave
  // @ts-expect-error members send through their connection; the server uses broadcast
  void app.hub.send
  // @ts-expect-error connections attach themselves
  void app.hub.attach
  // @ts-expect-error connections detach themselves
  void app.hub.detach
  // @ts-expect-error the counters are the connections'; stats() reads them
  void app.hub.count
  // @ts-expect-error typing is a member action
  void app.hub.typing
  // @ts-expect-error rename is a member action
  void app.hub.rename
  // @ts-expect-error members page history through their connection; the server uses history
  void app.hub.memberHistory
  // @ts-expect-error the plugin opens the hub
  void app.hub.open
  // @ts-expect-error the plugin closes the hub
  void app.hub.close
  // @ts-expect-error membership of a link is internal
  void app.hub.isMember
  // @ts-expect-error read markers move through the user's connections
  void app.hub.read
  // @ts-expect-error members change messages through their connection; the server uses editMessage and deleteMessage
  void app.hub.changeMessage
  assert.deepEqual(Object.keys(app.hub).sort(), ['ban', 'broadcast', 'deleteMessage', 'disconnect', 'disconnectUser', 'editMessage', 'history', 'kick', 'members', 'moderation', 'mute', 'nodes', 'off', 'on', 'once', 'rooms', 'stats', 'unban', 'unmute'])
  assert.ok(Object.isFrozen(app.hub))
})

test('the test kit types frames by their type, patterns by the frame\'s fields, replies by the request', async (t) => {
  const app = Fastify()
  t.after(() => app.close())
  await app.register(chatRooms, { home: false })
  const alice = await connect(app, { t })
  expectType<Equal<Awaited<ReturnType<typeof alice.join>>, ServerFrameOf<'joined'>>>(true)
  expectType<Equal<Awaited<ReturnType<typeof alice.send>>, number>>(true)
  expectType<Equal<ReplyTo<'history'>, ServerFrameOf<'history'>>>(true)
  expectType<Equal<ReplyTo<'edit'>, ServerFrameOf<'ack'>>>(true)
  await alice.join('lobby')
  const seq = await alice.send('lobby', 'hi')
  const message = await alice.expect({ type: 'message', seq, from: { name: /^guest-/ } })
  expectType<Equal<typeof message, Message>>(true)
  const page = await alice.request({ type: 'history', room: 'lobby', limit: 1 })
  expectType<Equal<typeof page, ServerFrameOf<'history'>>>(true)
  const checks = [
    // @ts-expect-error no server frame has this type
    () => alice.expect({ type: 'mesage' }),
    // @ts-expect-error a message has no field `txt`
    () => alice.expect({ type: 'message', txt: 'hi' }),
    // @ts-expect-error a seq is a number
    () => alice.expect({ type: 'message', seq: '1' }),
    // @ts-expect-error the predicate gets a message, which has no `action`
    () => alice.expect('message', (frame) => frame.action === 'join'),
    // @ts-expect-error typing gets no reply to wait for: push it
    () => alice.request({ type: 'typing', room: 'lobby' }),
  ]
  assert.equal(checks.length, 5)
  assert.equal(message.text, 'hi')
  assert.deepEqual(page.messages.map((entry) => entry.seq), [seq])
})
