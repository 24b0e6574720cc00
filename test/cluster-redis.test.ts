/**
 * Several server processes sharing one Redis, three Redis shards or a
 * three-master Redis Cluster behave, to every client, like one server: one
 * ordered stream per room, presence across nodes, resume on another node,
 * and the members of a killed node leave within the lease.
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { createInterface } from 'node:readline'
import type { Readable } from 'node:stream'
import { after, describe, it, type TestContext } from 'node:test'
import { fileURLToPath } from 'node:url'
import type { ServerFrameOf } from '../lib/protocol.js'
import { RawClient } from './helpers/client.js'
import { REDIS_URL, deleteKeys, skipUnlessRedis, uniquePrefix } from './helpers/redis.js'
import { RedisCluster, RedisServer, skipUnlessRedisServer } from './helpers/redis-server.js'

type Message = ServerFrameOf<'message'>

/** Short for a quick test, long enough that a loaded machine does not let a live node's lease lapse. */
const LEASE_MS = 3000
const skip = await skipUnlessRedis() || skipUnlessRedisServer()
const nodeScript = fileURLToPath(new URL('./helpers/chat-node-process.js', import.meta.url))

interface Node {
  wsUrl: string
  kill: (signal: NodeJS.Signals) => Promise<void>
}

/** Where the nodes keep the rooms: the environment that tells chat-node-process. */
interface Place {
  name: string
  env: Record<string, string>
}

/** The shared Redis; three standalone shards; a three-master Cluster (private servers, stopped after the file). */
async function places (): Promise<Place[]> {
  if (skip) return []
  const shards = await Promise.all([0, 1, 2].map(async () => await RedisServer.start()))
  const cluster = await RedisCluster.start(3)
  after(async () => await Promise.all([...shards.map(async (shard) => await shard.kill()), cluster.kill()]))
  return [
    { name: 'one Redis', env: { REDIS_URL } },
    { name: 'three Redis shards', env: { CHAT_REDIS: JSON.stringify({ shards: shards.map((shard) => shard.url) }) } },
    { name: 'a three-master Redis Cluster', env: { CHAT_REDIS: JSON.stringify({ cluster: cluster.urls }) } },
  ]
}

/** Starts `count` server processes on one prefix; stops them (and deletes the shared Redis' keys) after the test. */
async function startNodes (t: TestContext, place: Place, count: number): Promise<Node[]> {
  const prefix = uniquePrefix()
  const nodes = await Promise.all(Array.from({ length: count }, async () => {
    const child = spawn(process.execPath, [nodeScript], {
      env: { ...process.env, ...place.env, CHAT_PREFIX: prefix, CHAT_LEASE_MS: String(LEASE_MS) },
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    const exited = once(child, 'exit')
    const kill = async (signal: NodeJS.Signals): Promise<void> => {
      if (child.exitCode !== null || child.signalCode !== null) return
      child.kill(signal)
      await exited
    }
    t.after(() => kill('SIGKILL'))
    return { wsUrl: `ws://127.0.0.1:${await announcedPort(child.stdout)}/ws`, kill }
  }))
  if (place.env.REDIS_URL !== undefined) t.after(() => deleteKeys(prefix))
  return nodes
}

/** The port a node prints once listening; its log lines (also on stdout) are passed on to stderr. */
async function announcedPort (stdout: Readable): Promise<number> {
  for await (const line of createInterface({ input: stdout })) {
    const { port } = JSON.parse(line) as { port?: number }
    if (port !== undefined) {
      stdout.on('data', (chunk: Buffer) => process.stderr.write(chunk))
      return port
    }
    process.stderr.write(`${line}\n`)
  }
  throw new Error('the node exited before it listened')
}

/** Takes `count` message frames of `room`, in arrival order. */
async function takeMessages (client: RawClient, room: string, count: number): Promise<Message[]> {
  const messages: Message[] = []
  while (messages.length < count) messages.push(await client.next('message', (m) => m.room === room, 10_000))
  return messages
}

for (const place of await places()) {
describe(`several server nodes on ${place.name}`, () => {
  it('give every member of each of many rooms, whichever node it is on, the identical contiguous sequence of the room', async (t) => {
    const nodes = await startNodes(t, place, 3)
    const rooms = Array.from({ length: 12 }, (_, i) => `room-${i}`)
    const members = await Promise.all(rooms.flatMap((room) => nodes.map(async (node, n) => {
      const client = await RawClient.connect(t, `${node.wsUrl}?name=${room}-user${n}`)
      await client.request('joined', { type: 'join', room })
      return { room, client, n }
    })))
    const perClient = 10
    for (const { room, client, n } of members) {
      for (let i = 0; i < perClient; i++) client.send({ type: 'send', room, text: `${room} c${n} m${i}`, cid: `${room}-${n}-${i}` })
    }
    const total = nodes.length * perClient
    const received = await Promise.all(members.map(async ({ room, client }) => ({ room, messages: await takeMessages(client, room, total) })))
    for (const room of rooms) {
      const sequences = received.filter((member) => member.room === room).map(({ messages }) => messages)
      assert.deepEqual(sequences[0]!.map((m) => m.seq), Array.from({ length: total }, (_, i) => i + 1), `${room}: contiguous seqs`)
      for (const sequence of sequences) assert.deepEqual(sequence, sequences[0], `${room}: one order on every node`)
      assert.equal(new Set(sequences[0]!.map((m) => m.cid)).size, total, `${room}: each message once`)
    }
  })

  it('let a client resume on another node with since and get exactly what it missed', async (t) => {
    const [first, second, third] = await startNodes(t, place, 3)
    const reader = await RawClient.connect(t, `${first!.wsUrl}?name=reader`)
    const writer = await RawClient.connect(t, `${second!.wsUrl}?name=writer`)
    const { epoch } = await reader.request('joined', { type: 'join', room: 'r' })
    await writer.request('joined', { type: 'join', room: 'r' })
    for (let i = 0; i < 3; i++) writer.send({ type: 'send', room: 'r', text: `seen ${i}` })
    const seen = await takeMessages(reader, 'r', 3)
    reader.socket.terminate()
    for (let i = 0; i < 4; i++) await writer.request('ack', { type: 'send', room: 'r', text: `missed ${i}` })

    const back = await RawClient.connect(t, `${third!.wsUrl}?name=reader`)
    const joined = await back.request('joined', { type: 'join', room: 'r', since: seen.at(-1)!.seq, epoch })
    assert.equal(joined.recovered, true)
    assert.equal(joined.epoch, epoch)
    assert.deepEqual(joined.history.map((m) => [m.seq, m.text]), [[4, 'missed 0'], [5, 'missed 1'], [6, 'missed 2'], [7, 'missed 3']])
    writer.send({ type: 'send', room: 'r', text: 'live' })
    assert.equal((await back.next('message', (m) => m.room === 'r')).seq, 8)
  })

  it('send leave for the members of a node killed with SIGKILL, on the other nodes, within the lease', async (t) => {
    const [first, second, doomed] = await startNodes(t, place, 3)
    const watchers = [await RawClient.connect(t, `${first!.wsUrl}?name=w1`), await RawClient.connect(t, `${second!.wsUrl}?name=w2`)]
    for (const watcher of watchers) await watcher.request('joined', { type: 'join', room: 'r' })
    const victim = await RawClient.connect(t, `${doomed!.wsUrl}?name=victim`)
    const joined = await victim.request('joined', { type: 'join', room: 'r' })
    const victimId = joined.members.find((m) => m.name === 'victim')!.id
    for (const watcher of watchers) await watcher.next('presence', (p) => p.action === 'join' && p.member.id === victimId)

    const killedAt = Date.now()
    await doomed!.kill('SIGKILL')
    await Promise.all(watchers.map((watcher) =>
      watcher.next('presence', (p) => p.action === 'leave' && p.member.id === victimId, LEASE_MS * 3)))
    const elapsed = Date.now() - killedAt
    assert.ok(elapsed <= LEASE_MS * 4 / 3 + 1000, `leave after ${elapsed} ms with a ${LEASE_MS} ms lease`)
    const rejoined = await watchers[0]!.request('joined', { type: 'join', room: 'r' })
    assert.deepEqual(rejoined.members.map((m) => m.name).sort(), ['w1', 'w2'])
  })
})
}
