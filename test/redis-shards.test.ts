/**
 * RedisBroker past one Redis: rooms spread over three standalone shards by
 * jump consistent hash, or over a three-master Redis Cluster with sharded
 * pub/sub. Both keep the broker contract; a room's keys stay on its shard;
 * and when one shard stops, only its rooms answer `unavailable`, and they
 * come back by themselves when it returns. Private redis-servers only.
 */
import assert from 'node:assert/strict'
import { after, describe, it, test, type TestContext } from 'node:test'
import { Redis } from 'ioredis'
import { ChatError } from '../lib/errors.js'
import { jumpHash, shardOf } from '../lib/brokers/jump-hash.js'
import { RedisKeys } from '../lib/brokers/redis-keys.js'
import type { Member } from '../lib/protocol.js'
import { RedisBroker, type RedisBrokerOptions } from '../lib/redis.js'
import { brokerContract } from './broker-contract.js'
import { RecordingNode } from './helpers/recording-node.js'
import { uniquePrefix } from './helpers/redis.js'
import { RedisCluster, RedisServer, skipUnlessRedisServer } from './helpers/redis-server.js'

const alice: Member = { id: 'a1', user: 'a1', name: 'alice' }

test('jumpHash gives the published values of Lamping and Veach\'s algorithm', () => {
  // The values other implementations of the paper's algorithm give (e.g. Go's dgryski/go-jump tests).
  assert.equal(jumpHash(1n, 1), 0)
  assert.equal(jumpHash(42n, 57), 43)
  assert.equal(jumpHash(0xDEAD10CCn, 1), 0)
  assert.equal(jumpHash(0xDEAD10CCn, 666), 361)
  assert.equal(jumpHash(256n, 1024), 520)
  assert.throws(() => jumpHash(1n, 0), RangeError)
})

test('shardOf spreads rooms evenly, and a shard added at the end takes about 1/N of the rooms from the others, moving none between them', () => {
  const rooms = Array.from({ length: 30_000 }, (_, i) => `room-${i}`)
  const counts = [0, 0, 0]
  for (const room of rooms) counts[shardOf(room, 3)]!++
  for (const count of counts) assert.ok(Math.abs(count - 10_000) < 400, `each of 3 shards holds about a third: ${counts.join(', ')}`)
  let moved = 0
  for (const room of rooms) {
    const before = shardOf(room, 3)
    const now = shardOf(room, 4)
    if (now === before) continue
    moved++
    assert.equal(now, 3, `${room} moved from shard ${before} to ${now}, not to the new shard`)
  }
  assert.ok(Math.abs(moved - 7500) < 400, `about a quarter moved: ${moved}`)
  assert.equal(shardOf('anything', 1), 0)
})

test('RedisBroker names the option that puts rooms nowhere, or in two places', () => {
  const refusals: Array<[RedisBrokerOptions, RegExp]> = [
    [{ url: 'redis://a', shards: ['redis://b'] }, /at most one of url, shards and cluster \(got url and shards\)/],
    [{ shards: [] }, /shards must be a non-empty list/],
    [{ shards: ['redis://a', 'redis://a'] }, /shards lists redis:\/\/a twice/],
    [{ shards: ['redis://a'], registryShard: 'redis://b' }, /registryShard redis:\/\/b must be one of shards/],
    [{ url: 'redis://a', registryShard: 'redis://a' }, /registryShard redis:\/\/a must be one of shards/],
    [{ cluster: [] }, /cluster must be a non-empty list/],
  ]
  for (const [options, message] of refusals) assert.throws(() => new RedisBroker(options), message)
})

const skip = skipUnlessRedisServer()
const shards = skip ? [] : await Promise.all([0, 1, 2].map(async () => await RedisServer.start()))
const cluster = skip ? undefined : await RedisCluster.start(3)
after(async () => await Promise.all([...shards.map(async (shard) => await shard.kill()), cluster?.kill()]))
const shardUrls = shards.map((shard) => shard.url)

/** A broker on the three shards or the cluster, closed after the test; private servers, so keys die with them. */
function broker (t: TestContext, options: RedisBrokerOptions): RedisBroker {
  const made = new RedisBroker({ prefix: uniquePrefix(), commandTimeout: 1000, ...options })
  t.after(() => made.close())
  return made
}

brokerContract('RedisBroker on three Redis shards', (t) => broker(t, { shards: shardUrls, leaseMs: 3000 }), { skip })
brokerContract('RedisBroker on a three-master Redis Cluster', (t) => broker(t, { cluster: cluster?.urls, leaseMs: 3000 }), { skip })

/** Keys under `prefix` on one server. */
async function keysOn (url: string, prefix: string): Promise<string[]> {
  const client = new Redis(url, { maxRetriesPerRequest: 0 })
  try {
    return await client.keys(`${prefix}*`)
  } finally {
    client.disconnect()
  }
}

/** Rooms named `room-N` until each of `count` shards has `perShard` of them. */
function roomsPerShard (count: number, perShard: number): string[][] {
  const rooms: string[][] = Array.from({ length: count }, () => [])
  for (let i = 0; rooms.some((list) => list.length < perShard); i++) {
    const list = rooms[shardOf(`room-${i}`, count)]!
    if (list.length < perShard) list.push(`room-${i}`)
  }
  return rooms
}

describe('RedisBroker on three Redis shards', { skip }, () => {
  it('keeps every key of a room on the shard the jump hash picks, and the node registry on the registry shard', async (t) => {
    const prefix = uniquePrefix()
    const registryShard = shardUrls[1]!
    const node = new RecordingNode()
    const chat = broker(t, { shards: shardUrls, registryShard, prefix })
    await chat.open(node)
    const rooms = roomsPerShard(3, 2)
    for (const room of rooms.flat()) {
      await chat.publish(room, { type: 'presence', room, action: 'join', member: alice })
      await chat.append(room, { text: 'hi', from: alice })
    }
    const keys = new RedisKeys(prefix)
    for (const [index, url] of shardUrls.entries()) {
      const stored = new Set(await keysOn(url, prefix))
      for (const [owner, owned] of rooms.entries()) {
        for (const room of owned) {
          const { meta, log, members } = keys.room(room)
          for (const key of [meta, log, members]) assert.equal(stored.has(key), owner === index, `${key} is on shard ${owner} only (looked on ${index})`)
        }
      }
      assert.equal(stored.has(keys.registry.records), url === registryShard, `the registry is on ${registryShard} only`)
    }
    assert.deepEqual((await chat.rooms()).map(({ room, members }) => [room, members]), rooms.flat().sort().map((room) => [room, 1]),
      'the registry lists the rooms of every shard, counted on their own shard')
  })

  it('serves the rooms of the other shards while one is down, answers unavailable for its rooms, and recovers them by itself when it returns', async (t) => {
    await shardDown(t, { shards: shardUrls }, shards[2]!, async () => {
      await shards[2]!.start()
    }, (room) => shardOf(room, 3) === 2)
  })
})

describe('RedisBroker on a three-master Redis Cluster', { skip }, () => {
  it('carries a room\'s events on a shard channel of the master that owns the room, not on cluster-wide pub/sub', async (t) => {
    const prefix = uniquePrefix()
    const chat = broker(t, { cluster: cluster!.urls, prefix })
    await chat.open(new RecordingNode())
    const rooms = ['lobby', 'games', 'news', 'music', 'help', 'random']
    for (const room of rooms) await chat.subscribe(room)
    const keys = new RedisKeys(prefix)
    const owners = await Promise.all(cluster!.masters.map(async (master) => ({ slots: await ownedSlots(master.url), ...(await channelsOn(master.url, prefix)) })))
    for (const room of rooms) {
      for (const { slots, sharded, global } of owners) {
        assert.equal(sharded.includes(keys.channel(room)), slots.has(roomSlot(room)), `${room}'s shard channel is on its own master only`)
        assert.ok(!global.includes(keys.channel(room)), `${room} is not on cluster-wide pub/sub`)
      }
    }
  })

  it('follows a room\'s slot when it moves to another master mid-traffic: one stream, same epoch, nothing lost or repeated', async (t) => {
    const prefix = uniquePrefix()
    const [writer, reader] = [new RecordingNode(), new RecordingNode()]
    const [sending, receiving] = [broker(t, { cluster: cluster!.urls, prefix }), broker(t, { cluster: cluster!.urls, prefix })]
    await Promise.all([sending.open(writer), receiving.open(reader)])
    const room = 'moving'
    const owners = await Promise.all(cluster!.masters.map(async (master) => ({ master, slots: await ownedSlots(master.url) })))
    const from = owners.find(({ slots }) => slots.has(roomSlot(room)))!.master
    const to = owners.find(({ master }) => master !== from)!.master
    await sending.append(room, { text: 'm1', from: alice })
    const { epoch } = await sending.read(room, { limit: 0 })
    await receiving.subscribe(room)
    let sent = 1
    const sendingLoop = (async () => {
      while (sent < 60) {
        // A send refused while the slot moves is retried with its cid, as clients do.
        const stored = await sending.append(room, { text: `m${sent + 1}`, from: alice, cid: `c${sent + 1}` }).then(() => true, () => false)
        if (stored) sent++
        await new Promise((resolve) => setTimeout(resolve, 10))
      }
    })()
    await reader.until('some messages before the move', () => reader.messages(room).length >= 10)
    await moveSlot(roomSlot(room), from, to, cluster!.masters)
    await sendingLoop
    await reader.until('every message after the move', () => reader.messages(room).length === 59, 20_000)
    assert.deepEqual(reader.messages(room).map(({ seq, text }) => [seq, text]), Array.from({ length: 59 }, (_, i) => [i + 2, `m${i + 2}`]))
    assert.equal((await sending.read(room, { limit: 0 })).epoch, epoch, 'the room kept its stream')
    assert.ok((await ownedSlots(to.url)).has(roomSlot(room)), 'the slot did move')
    assert.deepEqual(reader.outOfSyncs, [])
  })

  it('serves the rooms of the other masters while one is down, answers unavailable for its rooms, and recovers them by itself when it returns', async (t) => {
    const lost = cluster!.masters[2]!
    const slots = await ownedSlots(lost.url)
    await shardDown(t, { cluster: cluster!.urls }, lost, async () => {
      await lost.start()
      await cluster!.whenOk()
    }, (room) => slots.has(roomSlot(room)))
  })
})

describe('RedisBroker on a Redis Cluster with a replica per master', { skip }, () => {
  it('carries on when a master dies and its replica takes over: the same streams, nothing acknowledged lost, live delivery resumed', async (t) => {
    const replicated = await RedisCluster.start(3, 1)
    t.after(() => replicated.kill())
    const prefix = uniquePrefix()
    const [writer, reader] = [new RecordingNode(), new RecordingNode()]
    const place = { cluster: replicated.urls, prefix, leaseMs: 3000 }
    const [sending, receiving] = [broker(t, place), broker(t, place)]
    await Promise.all([sending.open(writer), receiving.open(reader)])
    const lost = replicated.masters[0]!
    const slots = await ownedSlots(lost.url)
    const rooms = Array.from({ length: 30 }, (_, i) => `room-${i}`)
    const [gone, kept] = [rooms.filter((room) => slots.has(roomSlot(room))), rooms.filter((room) => !slots.has(roomSlot(room)))]
    assert.ok(gone.length > 0 && kept.length > 0, 'rooms on the lost master and on the others')
    for (const room of rooms) await receiving.subscribe(room)
    for (const room of rooms) await sending.append(room, { text: 'before', from: alice })
    const epochs = await Promise.all(gone.map(async (room) => (await sending.read(room, { limit: 0 })).epoch))
    // Replication is asynchronous: once the replica has every write, the failover loses nothing acknowledged.
    assert.equal(await acknowledgedByReplicas(lost), 1, 'the replica has every write')

    await lost.stop()
    for (const room of kept) await sending.append(room, { text: 'after', from: alice })
    const deadline = Date.now() + 20_000
    for (const room of gone) {
      // Refused until the replica is promoted; retried with its cid, as clients do.
      while (!await sending.append(room, { text: 'after', from: alice, cid: `after-${room}` }).then(() => true, () => false)) {
        assert.ok(Date.now() < deadline, `${room} took messages again within 20 s of its master's death`)
        await new Promise((resolve) => setTimeout(resolve, 200))
      }
    }
    await reader.until('every room delivered its message after the failover', () => rooms.every((room) => reader.messages(room).length === 2), 20_000)
    for (const room of rooms) assert.deepEqual(reader.messages(room).map(({ seq, text }) => [seq, text]), [[1, 'before'], [2, 'after']], room)
    assert.deepEqual(await Promise.all(gone.map(async (room) => (await sending.read(room, { limit: 0 })).epoch)), epochs, 'the promoted replica carries the same streams')
    assert.deepEqual(reader.outOfSyncs, [], 'no reader is sent back to resume')
  })
})

/** How many replicas acknowledge every write `master` has taken so far (`WAIT`). */
async function acknowledgedByReplicas (master: RedisServer): Promise<number> {
  const client = new Redis(master.url)
  try {
    return (await client.call('WAIT', 1, 5000)) as number
  } finally {
    client.disconnect()
  }
}

/** Moves one slot and its keys between masters, as `redis-cli --cluster reshard` does, and tells every master. */
async function moveSlot (slot: number, from: RedisServer, to: RedisServer, masters: RedisServer[]): Promise<void> {
  const [source, target] = [new Redis(from.url), new Redis(to.url)]
  try {
    const [sourceId, targetId] = await Promise.all([source.call('CLUSTER', 'MYID'), target.call('CLUSTER', 'MYID')]) as [string, string]
    await target.call('CLUSTER', 'SETSLOT', slot, 'IMPORTING', sourceId)
    await source.call('CLUSTER', 'SETSLOT', slot, 'MIGRATING', targetId)
    for (;;) {
      const keys = await source.call('CLUSTER', 'GETKEYSINSLOT', slot, 100) as string[]
      if (keys.length === 0) break
      await source.call('MIGRATE', '127.0.0.1', to.port, '', 0, 5000, 'KEYS', ...keys)
    }
    for (const master of [to, from, ...masters.filter((other) => other !== from && other !== to)]) {
      const client = new Redis(master.url)
      await client.call('CLUSTER', 'SETSLOT', slot, 'NODE', targetId).finally(() => client.disconnect())
    }
  } finally {
    source.disconnect()
    target.disconnect()
  }
}

/** The shard channels and the cluster-wide channels under `prefix` that a server's subscribers hold. */
async function channelsOn (url: string, prefix: string): Promise<{ sharded: string[], global: string[] }> {
  const client = new Redis(url)
  try {
    return {
      sharded: (await client.call('PUBSUB', 'SHARDCHANNELS', `${prefix}*`)) as string[],
      global: (await client.call('PUBSUB', 'CHANNELS', `${prefix}*`)) as string[],
    }
  } finally {
    client.disconnect()
  }
}

/** The slots a cluster master serves. */
async function ownedSlots (url: string): Promise<Set<number>> {
  const client = new Redis(url)
  try {
    const myself = (await client.call('CLUSTER', 'MYID')) as string
    const ranges = (await client.call('CLUSTER', 'SLOTS')) as Array<[number, number, [string, number, string]]>
    const slots = new Set<number>()
    for (const [from, to, [, , id]] of ranges) if (id === myself) for (let slot = from; slot <= to; slot++) slots.add(slot)
    return slots
  } finally {
    client.disconnect()
  }
}

/** The cluster slot of a room's keys: CRC16 of its hash tag, as Redis computes it. */
function roomSlot (room: string): number {
  const tag = Buffer.from(room.replace(/[%{}]/g, (char) => encodeURIComponent(char)))
  let crc = 0
  for (const byte of tag) {
    crc ^= byte << 8
    for (let bit = 0; bit < 8; bit++) crc = (crc & 0x8000) !== 0 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff
  }
  return crc % 16_384
}

/**
 * Two nodes send in rooms on every shard while `lost` is stopped: rooms
 * elsewhere keep their order and deliveries, `lostRoom`s answer unavailable,
 * and after `restart` they take messages again under a new epoch, without
 * anything from the test but retries.
 */
async function shardDown (t: TestContext, place: RedisBrokerOptions, lost: RedisServer, restart: () => Promise<void>, lostRoom: (room: string) => boolean): Promise<void> {
  const prefix = uniquePrefix()
  const [writer, reader] = [new RecordingNode(), new RecordingNode()]
  const [sending, receiving] = [broker(t, { ...place, prefix, leaseMs: 3000 }), broker(t, { ...place, prefix, leaseMs: 3000 })]
  await Promise.all([sending.open(writer), receiving.open(reader)])
  const rooms = Array.from({ length: 40 }, (_, i) => `room-${i}`)
  const [gone, kept] = [rooms.filter(lostRoom), rooms.filter((room) => !lostRoom(room))]
  assert.ok(gone.length > 0 && kept.length > 0, 'rooms on the lost shard and on the others')
  for (const room of rooms) await receiving.subscribe(room)
  for (const room of rooms) await sending.append(room, { text: 'before', from: alice })
  const { epoch: before } = await sending.read(gone[0]!, { limit: 0 })

  await lost.stop()
  const refused = await Promise.all(gone.map(async (room) => await sending.append(room, { text: 'during', from: alice }).then(() => undefined, (error: unknown) => error)))
  for (const error of refused) assert.ok(error instanceof ChatError && error.code === 'unavailable', `a lost room answers unavailable: ${String(error)}`)
  for (const room of kept) await sending.append(room, { text: 'during', from: alice })
  await reader.until('the rooms elsewhere delivered', () => kept.every((room) => reader.messages(room).length === 2))
  for (const room of kept) assert.deepEqual(reader.messages(room).map(({ seq, text }) => [seq, text]), [[1, 'before'], [2, 'during']])

  await restart()
  const deadline = Date.now() + 15_000
  for (const room of gone) {
    for (;;) {
      const sent = await sending.append(room, { text: 'after', from: alice, cid: `after-${room}` }).then(() => true, () => false)
      if (sent) break
      assert.ok(Date.now() < deadline, `${room} took messages again within 15 s of its shard's return`)
      await new Promise((resolve) => setTimeout(resolve, 200))
    }
  }
  const { epoch: now } = await sending.read(gone[0]!, { limit: 0 })
  assert.notEqual(now, before, 'the restarted shard lost its data: its rooms begin a new epoch')
  await reader.until('the lost rooms delivered again', () => gone.every((room) => reader.messages(room).some((message) => message.text === 'after')))
  assert.ok(reader.outOfSyncs.some(({ room }) => gone.includes(room)), 'the reader was told that their stream began again')
  for (const room of kept) await sending.append(room, { text: 'after', from: alice })
  await reader.until('the rooms elsewhere still deliver', () => kept.every((room) => reader.messages(room).length === 3))
  assert.deepEqual(writer.logs.filter(({ level }) => level === 'warn').length, 1, 'the outage is logged once, though calls for other rooms answered meanwhile')
}
