/**
 * One room's Redis keys live on one slot, so rooms can be spread over shards
 * or a Redis Cluster: every key of a room shares the room's hash tag, no
 * script builds a key name, and the broker works on a Redis in cluster mode,
 * where a command or script whose keys hash to two slots fails.
 */
import assert from 'node:assert/strict'
import { after, describe, it, test, type TestContext } from 'node:test'
import { Redis } from 'ioredis'
import { SCRIPTS } from '../lib/brokers/redis-scripts.js'
import type { Member, Presence } from '../lib/protocol.js'
import { RedisBroker, type RedisBrokerOptions } from '../lib/redis.js'
import { brokerContract } from './broker-contract.js'
import { RecordingNode } from './helpers/recording-node.js'
import { REDIS_URL, deleteKeys, keysUnder, skipUnlessRedis, uniquePrefix } from './helpers/redis.js'
import { RedisServer, skipUnlessRedisServer } from './helpers/redis-server.js'

const alice: Member = { id: 'a1', user: 'a1', name: 'alice' }

/** Script commands that name no key: TIME. (Scripts publish through `publish`, which takes a channel.) */
const KEYLESS_COMMANDS = new Set(['TIME'])

test('no script builds a key name: every command a script sends names one of the keys it declares', () => {
  for (const [name, script] of Object.entries(SCRIPTS)) {
    assert.doesNotMatch(script.body, /KEYS\[|ARGV\[/, `${name} reads KEYS and ARGV through named locals only`)
    assert.ok(!Object.keys(script.args).some((arg) => /prefix|key/i.test(arg)), `${name} takes no key prefix or key part`)
    // PUBLISH on one Redis or shards, SPUBLISH on a Cluster: only `publish` (redis-lua.ts) chooses.
    assert.doesNotMatch(script.body, /'S?PUBLISH'/, `${name} publishes through publish(), never by name`)
    const calls = [...script.body.matchAll(/redis\.call\(\s*'(\w+)'\s*(?:,\s*([^,)]+))?/g)]
    assert.ok(calls.length > 0, `${name} calls Redis`)
    for (const [, command, first] of calls) {
      if (KEYLESS_COMMANDS.has(command!)) continue
      const key = first?.trim() ?? ''
      assert.ok((script.keys as readonly string[]).includes(key), `${name}: ${command} ${key} is not one of its KEYS (${script.keys.join(', ')})`)
    }
  }
})

/** The part of a key that Redis Cluster hashes: between the first `{` and the next `}` when not empty, else all of it. */
function hashTag (key: string): string {
  const open = key.indexOf('{')
  const close = key.indexOf('}', open + 1)
  return open < 0 || close <= open + 1 ? key : key.slice(open + 1, close)
}

describe('the Redis key layout', { skip: await skipUnlessRedis() }, () => {
  it('gives every key and the channel of a room the room\'s own hash tag, and the registry\'s keys one tag of their own', async (t) => {
    const prefix = uniquePrefix()
    const broker = new RedisBroker({ url: REDIS_URL, prefix })
    const admin = new Redis(REDIS_URL)
    t.after(async () => {
      await broker.close()
      admin.disconnect()
      await deleteKeys(prefix)
    })
    await broker.open(new RecordingNode())
    // Braces and a percent sign in a name must not end or empty its tag.
    const rooms = ['lobby', 'a{b}%c', '}x']
    for (const room of rooms) {
      await broker.subscribe(room)
      await broker.publish(room, { type: 'presence', room, action: 'join', member: alice })
      await broker.append(room, { from: alice, text: 'hi', cid: 'c1' })
      await broker.changeUser(room, alice.user, { kind: 'read', seq: 1 })
    }
    const names = [...await keysUnder(prefix), ...await admin.pubsub('CHANNELS', `${prefix}*`) as string[]]
    const byTag = new Map<string, string[]>()
    for (const name of names) {
      const tag = hashTag(name)
      assert.notEqual(tag, name, `${name} has a hash tag`)
      byTag.set(tag, [...byTag.get(tag) ?? [], name])
    }
    const registry = byTag.get('nodes') ?? []
    assert.ok(registry.length >= 3 && registry.every((key) => key.startsWith(`${prefix}registry{`)), `registry keys: ${registry.join(' ')}`)
    byTag.delete('nodes')
    assert.deepEqual([...byTag.keys()].map((tag) => decodeURIComponent(tag)).sort(), [...rooms].sort(), 'one tag per room: its name')
    for (const [tag, keys] of byTag) {
      const kinds = keys.map((key) => key.slice(key.lastIndexOf(':') + 1)).sort()
      assert.deepEqual(kinds, ['channel', 'cidq', 'cids', 'log', 'members', 'meta', 'present', 'users'], `the keys and channel of ${decodeURIComponent(tag)}`)
    }
  })
})

const clusterSkip = skipUnlessRedisServer()
const cluster = clusterSkip ? undefined : await RedisServer.start({ cluster: true })
after(() => cluster?.kill())

function clusterBroker (t: TestContext, options: RedisBrokerOptions = {}): RedisBroker {
  const broker = new RedisBroker({ url: cluster?.url, prefix: uniquePrefix(), ...options })
  t.after(() => broker.close())
  return broker
}

brokerContract('RedisBroker on a one-node Redis Cluster', (t) => clusterBroker(t), { skip: clusterSkip })

describe('RedisBroker on a one-node Redis Cluster', { skip: clusterSkip }, () => {
  it('sweeps the members of a node that closed without their leave, and lists rooms and members across nodes', async (t) => {
    const prefix = uniquePrefix()
    const [gone, stays] = [clusterBroker(t, { prefix }), clusterBroker(t, { prefix, leaseMs: 300 })]
    const node = new RecordingNode()
    await gone.open(new RecordingNode())
    await stays.open(node)
    await stays.subscribe('r')
    await gone.publish('r', { type: 'presence', room: 'r', action: 'join', member: alice })
    assert.deepEqual(await stays.members('r'), [alice])
    assert.deepEqual(await stays.rooms(), [{ room: 'r', members: 1, seq: 0 }])
    await gone.close()
    await node.until('the leave', () => node.events('r').some((event) => (event as Presence).action === 'leave'))
    assert.deepEqual(await stays.members('r'), [])
    assert.deepEqual(await stays.rooms(), [])
  })
})
