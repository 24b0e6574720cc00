/**
 * Exact resume with messages that change (fast-check): a client offline
 * during a hundred random sends, edits, deletes and reactions resumes to
 * exactly the state of a client that stayed, and both agree with a model of
 * PROTOCOL.md's rules; on the memory broker and over Redis across two nodes.
 */
import { describe, test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import fc from 'fast-check'
import { WebSocket } from 'ws'
import type { Broker } from '../lib/broker.js'
import { MemoryBroker, type Message } from '../lib/index.js'
import { RedisBroker } from '../lib/redis.js'
import { ChatClient, ChatClientError, type Joined, type WebSocketConstructor } from '../lib/client/index.js'
import { startServer } from './helpers/server.js'
import { startRelay } from './helpers/relay.js'
import { byQuery } from './helpers/users.js'
import { REDIS_URL, deleteKeys, skipUnlessRedis, uniquePrefix } from './helpers/redis.js'

const AUTHORS = ['alice', 'bob', 'carol'] as const
const REACTIONS = ['👍', '❤️', '+1', '🎉'] as const
/** Messages stored while the offline client is still there, so that it holds what is changed later. */
const BEFORE = 8
/** Sends, edits, deletes and reactions while it is away. */
const WHILE_AWAY = 100
const RUNS = 8

type Author = typeof AUTHORS[number]
type Op =
  | { type: 'send', by: Author, text: string }
  | { type: 'edit', by: Author, target: number, text: string }
  | { type: 'delete', by: Author, target: number }
  | { type: 'react', by: Author, target: number, reaction: string, on: boolean }

const by = fc.constantFrom(...AUTHORS)
const text = fc.string({ minLength: 1, maxLength: 12 }).filter((value) => value.trim() === value && value.trim().length > 0)
/** How far back from the latest seq a change's target may be. */
const RECENT = 12
const target = fc.nat({ max: RECENT - 1 })
const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 2, arbitrary: fc.record({ type: fc.constant('send' as const), by, text }) },
  { weight: 3, arbitrary: fc.record({ type: fc.constant('edit' as const), by, target, text }) },
  { weight: 1, arbitrary: fc.record({ type: fc.constant('delete' as const), by, target }) },
  { weight: 5, arbitrary: fc.record({ type: fc.constant('react' as const), by, target, reaction: fc.constantFrom(...REACTIONS), on: fc.boolean() }) },
)

/** A message as PROTOCOL.md says it is stored, ts aside: what both clients must hold. */
interface ModelMessage { seq: number, author: Author, text: string, edited: boolean, deleted: boolean, reactions: Map<string, string[]> }

/** The room by PROTOCOL.md's rules, written apart from lib/: each op's outcome and the state it leaves. */
class Model {
  readonly messages = new Map<number, ModelMessage>()
  latest = 0

  /** The seq an op gets, or the error code it is refused with; a reaction that changes nothing gets the latest seq. */
  apply (op: Op): number | string {
    if (op.type === 'send') {
      this.messages.set(++this.latest, { seq: this.latest, author: op.by, text: op.text, edited: false, deleted: false, reactions: new Map() })
      return this.latest
    }
    const message = this.messages.get(this.targetSeq(op.target))
    if (message === undefined || message.deleted) return 'not_found'
    if (op.type !== 'react' && message.author !== op.by) return 'forbidden'
    if (op.type === 'edit') Object.assign(message, { text: op.text, edited: true })
    if (op.type === 'delete') Object.assign(message, { text: '', edited: false, deleted: true, reactions: new Map() })
    if (op.type === 'react') {
      const users = message.reactions.get(op.reaction) ?? []
      if (users.includes(op.by) === op.on) return this.latest
      const left = op.on ? [...users, op.by] : users.filter((user) => user !== op.by)
      if (left.length === 0) message.reactions.delete(op.reaction)
      else message.reactions.set(op.reaction, left)
    }
    return ++this.latest
  }

  /** One of the newest entries, where changes meet: a message, or an update's seq (`not_found`). */
  targetSeq (index: number): number {
    return Math.max(1, this.latest - index % RECENT)
  }

  state (): unknown[] {
    return [...this.messages.values()].map(({ seq, text, edited, deleted, reactions }) => ({ seq, text, edited, deleted, reactions: Object.fromEntries(reactions) }))
  }
}

/** What a client's store holds, in the model's terms. */
function held (messages: readonly Message[]): unknown[] {
  return messages.map(({ seq, text, edited, deleted, reactions }) => ({ seq, text, edited: edited !== undefined, deleted: deleted === true, reactions: reactions ?? {} }))
}

async function until (condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
}

/** Two nodes' chat URLs (one node may serve both), each on a broker of its own from `makeBroker`. */
async function nodes (t: TestContext, makeBroker: () => Broker, count: 1 | 2): Promise<string[]> {
  const urls: string[] = []
  const shared = count === 1 ? makeBroker() : undefined
  for (let i = 0; i < 2; i++) {
    // A room's whole history fits a resume; the generated ops are neither paced nor, when refused, taken for a misbehaving client.
    const server = await startServer(t, {
      home: false,
      authenticate: byQuery,
      broker: shared ?? makeBroker(),
      historySize: 1000,
      rateLimit: { perSecond: 1e6, burst: 1e6 },
      errorLimit: { count: 1e6, windowMs: 60_000 },
    })
    urls.push(server.wsUrl)
    if (shared) return [server.wsUrl, server.wsUrl]
  }
  return urls
}

async function exactResume (t: TestContext, makeBroker: () => Broker, nodeCount: 1 | 2): Promise<void> {
  const [live, away] = await nodes(t, makeBroker, nodeCount) as [string, string]
  const relay = await startRelay(Number(new URL(away).port))
  const clients: ChatClient[] = []
  /** The latest seq each client was told of, by room (a message's or an update's). */
  const seen = new Map<ChatClient, Map<string, number>>()
  const latestSeen = (client: ChatClient, room: string): number => seen.get(client)?.get(room) ?? 0
  const connect = (url: string, user: string): ChatClient => {
    const client = new ChatClient(`${url}?user=${user}`, { WebSocket: WebSocket as unknown as WebSocketConstructor, reconnect: { minDelay: 20, maxDelay: 50 }, requestTimeout: 5000 })
    const latest = new Map<string, number>()
    const note = (entry: { room: string, seq: number }): void => { latest.set(entry.room, Math.max(latest.get(entry.room) ?? 0, entry.seq)) }
    client.on('message', note)
    client.on('update', note)
    seen.set(client, latest)
    clients.push(client)
    return client
  }
  t.after(() => {
    for (const client of clients) client.close()
    relay.close()
  })
  const authors = Object.fromEntries(AUTHORS.map((user) => [user, connect(live, user)])) as Record<Author, ChatClient>
  const stayed = connect(live, 'stayed')
  const offline = connect(relay.url, 'offline')
  let run = 0

  await fc.assert(fc.asyncProperty(fc.array(op, { minLength: WHILE_AWAY, maxLength: WHILE_AWAY }), async (ops) => {
    const room = `r${++run}`
    await Promise.all([...Object.values(authors), stayed, offline].map((client) => client.join(room)))
    const model = new Model()
    const perform = async (op: Op): Promise<void> => {
      const client = authors[op.by]
      const seq = model.targetSeq(op.type === 'send' ? 0 : op.target)
      const outcome = op.type === 'send'
        ? client.send(room, op.text)
        : op.type === 'edit'
          ? client.edit(room, seq, op.text)
          : op.type === 'delete' ? client.delete(room, seq) : client.react(room, seq, op.reaction, op.on)
      const got = await outcome.catch((error: unknown) => error instanceof ChatClientError ? error.code : Promise.reject(error))
      assert.equal(got, model.apply(op), `${JSON.stringify(op)} on seq ${seq}`)
    }
    for (let i = 0; i < BEFORE; i++) await perform({ type: 'send', by: AUTHORS[i % AUTHORS.length] as Author, text: `before ${i}` })
    await until(() => offline.store(room)?.size === BEFORE, 'the offline client holds the first messages')

    relay.down()
    for (const next of ops) await perform(next)
    await until(() => latestSeen(stayed, room) === model.latest, 'the stayed client saw every entry')
    const resumed = new Promise<Joined>((resolve) => { const stop = offline.on('joined', (joined) => { if (joined.room === room) { stop(); resolve(joined) } }) })
    relay.up()
    const { recovered, history } = await resumed
    assert.equal(recovered, true, 'resumed from where it was')
    assert.equal(history.length, model.latest - BEFORE, 'with every entry stored while it was away')
    await until(() => latestSeen(offline, room) === model.latest, 'the offline client applied them')

    assert.deepEqual(offline.store(room)?.messages, stayed.store(room)?.messages, 'the resumed client holds exactly what the one that stayed holds')
    assert.deepEqual(held(stayed.store(room)?.messages ?? []), model.state(), 'and that is the model\'s state')
    await Promise.all([...Object.values(authors), stayed, offline].map((client) => client.leave(room)))
  }), { numRuns: RUNS })
}

describe('a client offline during random changes resumes to exactly the state of one that stayed', () => {
  test('on the memory broker', { timeout: 120_000 }, async (t) => {
    await exactResume(t, () => new MemoryBroker(), 1)
  })

  test('over Redis, resuming on another node', { timeout: 120_000 }, async (t) => {
    const skip = await skipUnlessRedis()
    if (skip !== false) return t.skip(skip)
    const prefix = uniquePrefix()
    t.after(() => deleteKeys(prefix))
    await exactResume(t, () => new RedisBroker({ url: REDIS_URL, prefix }), 2)
  })
})
