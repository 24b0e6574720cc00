/**
 * Type tests: this file must compile (`npm run typecheck`); each
 * `@ts-expect-error` line must fail to compile, or the build fails.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import Fastify from 'fastify'
import chatRooms, { type ChatRoomsOptions, type Hub, type Message, type RoomInfo, type HubStats, type HubEvents } from '../lib/index.js'

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
  expectType<Equal<HubEvents['message'], [message: Message]>>(true)
  expectType<Equal<HubEvents['join'][0]['room'], string>>(true)
  expectType<Equal<HubEvents['leave'][0]['member']['name'], string>>(true)

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
