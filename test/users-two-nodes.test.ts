/**
 * One person on two server nodes that share a broker (Redis, PostgreSQL):
 * the tabs of one user are one member to others (`first` once, `last` once),
 * a read in one tab reaches the other on the other node, and a ban made on
 * one node removes the user everywhere and is enforced by both.
 */
import assert from 'node:assert/strict'
import { describe, it, type TestContext } from 'node:test'
import type { Broker } from '../lib/broker.js'
import { PostgresBroker } from '../lib/postgres.js'
import { RedisBroker } from '../lib/redis.js'
import { POSTGRES_URL, dropSchema, skipUnlessPostgres, uniqueSchema } from './helpers/postgres.js'
import { REDIS_URL, deleteKeys, skipUnlessRedis, uniquePrefix } from './helpers/redis.js'
import type { TestServer } from './helpers/server.js'
import { serveUsers, tab } from './helpers/users.js'

/** Short, so that nothing here waits on a lease; long enough that a busy machine renews in time. */
const LEASE_MS = 3000

/** Two servers on one store of their own, each with its own broker; removed after the test. */
type TwoNodes = (t: TestContext) => Promise<[TestServer, TestServer]>

async function twoNodes (t: TestContext, makeBroker: () => Broker): Promise<[TestServer, TestServer]> {
  const start = (): Promise<TestServer> => serveUsers(t, { broker: makeBroker() })
  return [await start(), await start()]
}

const overRedis: TwoNodes = async (t) => {
  const prefix = uniquePrefix()
  t.after(() => deleteKeys(prefix))
  return await twoNodes(t, () => new RedisBroker({ url: REDIS_URL, prefix, leaseMs: LEASE_MS }))
}

const overPostgres: TwoNodes = async (t) => {
  const schema = uniqueSchema()
  t.after(() => dropSchema(schema))
  return await twoNodes(t, () => new PostgresBroker({ connectionString: POSTGRES_URL, schema, leaseMs: LEASE_MS }))
}

function usersOnTwoNodes (name: string, start: TwoNodes, skip: string | false): void {
  describe(`one user on two nodes over ${name}`, { skip }, () => {
    it('is one member to others: first on its first tab, last on its last, even when both close at once', async (t) => {
      const [a, b] = await start(t)
      const bob = await tab(t, a, 'bob')
      await bob.request('joined', { type: 'join', room: 'r' })
      const tab1 = await tab(t, a, 'alice')
      const joined1 = await tab1.request('joined', { type: 'join', room: 'r' })
      assert.ok(joined1.members.some((member) => member.user === 'bob'))
      const first = await bob.next('presence', (p) => p.action === 'join')
      assert.deepEqual({ user: first.member.user, first: first.first }, { user: 'alice', first: true })
      const tab2 = await tab(t, b, 'alice')
      assert.notEqual(tab2.socket, tab1.socket)
      const joined2 = await tab2.request('joined', { type: 'join', room: 'r' })
      assert.equal(joined2.members.filter((member) => member.user === 'alice').length, 2, 'both tabs are members')
      const second = await bob.next('presence', (p) => p.action === 'join')
      assert.deepEqual({ user: second.member.user, first: second.first }, { user: 'alice', first: false })

      tab1.socket.close()
      tab2.socket.close()
      const leaves = [await bob.next('presence', (p) => p.action === 'leave', 10_000), await bob.next('presence', (p) => p.action === 'leave', 10_000)]
      assert.deepEqual(leaves.map((leave) => leave.last).sort(), [false, true], 'exactly one leave says last')
    })

    it('tells a read in one tab to the user\'s tab on the other node, and gives the marker to a later join', async (t) => {
      const [a, b] = await start(t)
      const bob = await tab(t, a, 'bob')
      await bob.request('joined', { type: 'join', room: 'r' })
      for (let i = 0; i < 3; i++) await bob.request('ack', { type: 'send', room: 'r', text: `m${i}` })
      const tab1 = await tab(t, a, 'alice')
      const tab2 = await tab(t, b, 'alice')
      assert.equal((await tab1.request('joined', { type: 'join', room: 'r' })).read, 0)
      await tab2.request('joined', { type: 'join', room: 'r' })
      assert.equal((await tab1.request('read', { type: 'read', room: 'r', seq: 2 })).seq, 2)
      assert.equal((await tab2.next('read', (frame) => frame.ref === undefined, 10_000)).seq, 2, 'the other tab hears of it')
      assert.equal((await tab2.request('read', { type: 'read', room: 'r', seq: 1 })).seq, 2, 'a marker never moves back')
      const tab3 = await tab(t, b, 'alice')
      assert.equal((await tab3.request('joined', { type: 'join', room: 'r' })).read, 2)
      assert.equal(bob.pending('read').length, 0, 'another user hears nothing of it')
    })

    it('removes a user banned on one node from both, and both refuse its joins until the ban ends', async (t) => {
      const [a, b] = await start(t)
      const bob = await tab(t, b, 'bob')
      await bob.request('joined', { type: 'join', room: 'r' })
      const tabs = [await tab(t, a, 'mallory'), await tab(t, b, 'mallory')]
      for (const tab of tabs) await tab.request('joined', { type: 'join', room: 'r' })
      await a.app.hub.ban('r', 'mallory', { ms: 1500 })
      for (const tab of tabs) {
        const left = await tab.next('left', () => true, 10_000)
        assert.deepEqual(left, { type: 'left', room: 'r', reason: 'banned' })
      }
      for (const tab of tabs) {
        await assert.rejects(tab.request('joined', { type: 'join', room: 'r' }), /^Error: forbidden/)
      }
      const leaves = [await bob.next('presence', (p) => p.action === 'leave', 10_000), await bob.next('presence', (p) => p.action === 'leave', 10_000)]
      assert.deepEqual(leaves.map((leave) => leave.last).sort(), [false, true])
      assert.deepEqual((await b.app.hub.moderation('r')).map(({ user }) => user), ['mallory'])
      await new Promise((resolve) => setTimeout(resolve, 1600))
      await tabs[1]!.request('joined', { type: 'join', room: 'r' })
      assert.deepEqual(await a.app.hub.moderation('r'), [], 'the ban ended by itself')
    })
  })
}

usersOnTwoNodes('Redis', overRedis, await skipUnlessRedis())
usersOnTwoNodes('PostgreSQL', overPostgres, await skipUnlessPostgres())
