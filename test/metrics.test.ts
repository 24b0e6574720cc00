/**
 * The `metrics` option: `GET /metrics` serves the `chat_*` series in the
 * Prometheus text format, and they move with what real clients do; the
 * application's own registry receives them; a broker outage shows; the
 * example server serves them with its shipped config.
 */
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import Fastify from 'fastify'
import { Counter, Registry } from 'prom-client'
import chatRooms from '../lib/index.js'
import { CloseCodes } from '../lib/errors.js'
import { RedisBroker } from '../lib/redis.js'
import { RawClient } from './helpers/client.js'
import { homePage, startExample, tempDir } from './helpers/example-server.js'
import { freePort } from './helpers/free-port.js'
import { uniquePrefix } from './helpers/redis.js'
import { RedisServer, skipUnlessRedisServer } from './helpers/redis-server.js'
import { startServer } from './helpers/server.js'

/** Each sample of a scrape by its name and labels as written (`chat_closes_total{code="1000"}`); comments left out. */
type Samples = Map<string, number>

async function scrape (httpUrl: string): Promise<Samples> {
  const response = await fetch(`${httpUrl}/metrics`)
  assert.equal(response.status, 200)
  assert.match(response.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/)
  const samples: Samples = new Map()
  for (const line of (await response.text()).split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const space = line.lastIndexOf(' ')
    samples.set(line.slice(0, space), Number(line.slice(space + 1)))
  }
  return samples
}

/** Scrapes until `done` holds for a scrape (the counts of a close arrive after the client sees it); fails after 5 s. */
async function scrapeUntil (httpUrl: string, what: string, done: (samples: Samples) => boolean, ms = 5000): Promise<Samples> {
  const deadline = Date.now() + ms
  for (;;) {
    const samples = await scrape(httpUrl)
    if (done(samples)) return samples
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms; last scrape ${JSON.stringify([...samples].filter(([name]) => !name.includes('_bucket')))}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

test('the chat_* series move with connections, rooms, messages, closes by code and errors by code', async (t) => {
  const { httpUrl, wsUrl } = await startServer(t, { home: false, metrics: true })
  const before = await scrape(httpUrl)
  assert.equal(before.get('chat_connections'), 0)
  assert.equal(before.get('chat_rooms'), 0)
  assert.equal(before.get('chat_messages_in_total'), 0)
  assert.equal(before.get('chat_nodes'), 1)
  assert.equal(before.get('chat_broker_up'), 1)
  assert.equal(before.get('chat_broker_outages_total'), 0)

  const alice = await RawClient.connect(t, `${wsUrl}?name=alice`)
  const bob = await RawClient.connect(t, `${wsUrl}?name=bob`)
  await alice.request('joined', { type: 'join', room: 'lobby' })
  await bob.request('joined', { type: 'join', room: 'lobby' })
  await alice.request('ack', { type: 'send', room: 'lobby', text: 'hello' })
  await bob.next('message')
  await assert.rejects(alice.request('ack', { type: 'send', room: 'elsewhere', text: 'lost' }), /not_joined/)

  const busy = await scrape(httpUrl)
  assert.equal(busy.get('chat_connections'), 2)
  assert.equal(busy.get('chat_rooms'), 1)
  // alice: join, send, send; bob: join.
  assert.equal(busy.get('chat_messages_in_total'), 4)
  // Each: welcome, its joined, alice's presence of bob's join; alice: ack, message, error; bob: message.
  assert.equal(busy.get('chat_messages_out_total'), 9)
  assert.equal(busy.get('chat_errors_total{code="not_joined"}'), 1)
  assert.ok((busy.get('chat_broker_call_duration_seconds_count{operation="append"}') ?? 0) >= 1, 'the append was timed')
  assert.ok((busy.get('chat_broker_call_duration_seconds_bucket{le="+Inf",operation="append"}') ?? 0) >= 1)
  for (const name of busy.keys()) assert.match(name, /^chat_/, 'only chat_* series in the plugin\'s own registry')
  assert.ok(![...busy.keys()].some((name) => name.includes('lobby') || name.includes('alice')), 'no room or user in a label')

  alice.socket.close(1000)
  bob.send({ type: 'join', room: 'x' })
  bob.socket.send(Buffer.from('binary'), { binary: true })
  assert.equal((await bob.closed).code, CloseCodes.unsupportedData)
  const after = await scrapeUntil(httpUrl, 'both closes counted', (samples) => samples.get('chat_connections') === 0)
  assert.equal(after.get('chat_closes_total{code="1000"}'), 1, 'the peer\'s code when the peer closed')
  assert.equal(after.get('chat_closes_total{code="1003"}'), 1, 'the server\'s code when the server closed')
  assert.equal(after.get('chat_rooms'), 0)
})

test('a close code the server never sends is counted as other, so the label stays bounded', async (t) => {
  const { httpUrl, wsUrl } = await startServer(t, { home: false, metrics: true })
  const client = await RawClient.connect(t, wsUrl)
  client.socket.close(4321)
  const after = await scrapeUntil(httpUrl, 'the close counted', (samples) => samples.get('chat_connections') === 0)
  assert.equal(after.get('chat_closes_total{code="other"}'), 1)
  assert.equal(after.get('chat_closes_total{code="4321"}'), undefined)
})

test('resumes are counted by whether the joined reply recovered what was missed', async (t) => {
  const { httpUrl, wsUrl } = await startServer(t, { home: false, metrics: true, historySize: 2, historyOnJoin: 2, rateLimit: { perSecond: 1000, burst: 1000 } })
  const alice = await RawClient.connect(t, wsUrl)
  const first = await alice.request('joined', { type: 'join', room: 'r' })
  await alice.request('ack', { type: 'send', room: 'r', text: 'm1' })
  const bob = await RawClient.connect(t, wsUrl)
  assert.equal((await bob.request('joined', { type: 'join', room: 'r', since: 1, epoch: first.epoch })).recovered, true)
  for (let i = 2; i <= 4; i++) await alice.request('ack', { type: 'send', room: 'r', text: `m${i}` })
  const carol = await RawClient.connect(t, wsUrl)
  assert.equal((await carol.request('joined', { type: 'join', room: 'r', since: 1, epoch: first.epoch })).recovered, false, 'seq 2 fell out of a history of 2')
  const samples = await scrape(httpUrl)
  assert.equal(samples.get('chat_resumes_total{recovered="true"}'), 1)
  assert.equal(samples.get('chat_resumes_total{recovered="false"}'), 1)
  assert.equal(samples.get('chat_broker_call_duration_seconds_count{operation="append"}'), 4)
})

test('a reader past maxBufferedBytes counts a slow-consumer close, a 4008 close and its dropped frame', async (t) => {
  const { app, httpUrl, wsUrl } = await startServer(t, { home: false, metrics: true, maxBufferedBytes: 30_000, maxTextLength: 2000 })
  const reader = await RawClient.connect(t, `${wsUrl}?name=reader`)
  await reader.request('joined', { type: 'join', room: 'big' })
  // The reader's TCP socket is not read: what the server writes piles up until it passes maxBufferedBytes.
  const stream = (reader.socket as unknown as { _socket: import('node:net').Socket })._socket
  stream.pause()
  const text = 'x'.repeat(2000)
  let sent = 0
  while ((await scrape(httpUrl)).get('chat_slow_consumer_closes_total') === 0 && sent < 5000) {
    for (let i = 0; i < 50; i++, sent++) await app.hub.broadcast('big', text)
  }
  stream.resume()
  const after = await scrapeUntil(httpUrl, 'the slow reader closed', (samples) => samples.get('chat_connections') === 0)
  assert.equal(after.get('chat_slow_consumer_closes_total'), 1)
  assert.equal(after.get('chat_closes_total{code="4008"}'), 1)
  assert.ok((after.get('chat_dropped_frames_total') ?? 0) >= 1)
})

test('the application\'s registry receives the series beside its own; they leave it on close, and a second instance sharing it is refused', async (t) => {
  const registry = new Registry()
  const ours = new Counter({ name: 'app_requests_total', help: 'the application\'s own', registers: [registry] })
  ours.inc(3)
  const { app, httpUrl, wsUrl } = await startServer(t, { home: false, metrics: { registry } })
  await RawClient.connect(t, wsUrl)
  const samples = await scrape(httpUrl)
  assert.equal(samples.get('app_requests_total'), 3, 'the route serves the whole registry')
  assert.equal(samples.get('chat_connections'), 1)
  assert.match(await registry.getSingleMetricAsString('chat_connections'), /chat_connections 1/)

  const second = Fastify({ logger: false })
  t.after(() => second.close())
  await assert.rejects(async () => { await second.register(chatRooms, { home: false, metrics: { registry } }).ready() },
    /option metrics\.registry: already holds chat_closes_total, .*chat_broker_up; give each instance of the plugin a registry of its own/)

  await app.close()
  assert.deepEqual((await registry.getMetricsAsJSON()).map((metric) => metric.name), ['app_requests_total'])
  const again = Fastify({ logger: false })
  t.after(() => again.close())
  await again.register(chatRooms, { home: false, metrics: { registry } })
  await again.ready()
  assert.ok(registry.getSingleMetric('chat_connections'), 'a new instance registers into it again')
})

test('two instances with metrics: true in one process keep registries of their own', async (t) => {
  const first = await startServer(t, { home: false, metrics: true })
  const second = await startServer(t, { home: false, metrics: true })
  await RawClient.connect(t, first.wsUrl)
  assert.equal((await scrape(first.httpUrl)).get('chat_connections'), 1)
  assert.equal((await scrape(second.httpUrl)).get('chat_connections'), 0)
})

test('without the option there is no /metrics route', async (t) => {
  const { httpUrl } = await startServer(t, { home: false })
  assert.equal((await fetch(`${httpUrl}/metrics`)).status, 404)
})

const redisServerMissing = skipUnlessRedisServer()

test('a broker outage shows in chat_broker_up and is counted once in chat_broker_outages_total', { skip: redisServerMissing }, async (t: TestContext) => {
  const redis = await RedisServer.start()
  t.after(() => redis.kill())
  const broker = new RedisBroker({ url: redis.url, prefix: uniquePrefix(), commandTimeout: 300, leaseMs: 3000 })
  const { httpUrl } = await startServer(t, { home: false, metrics: true, broker })
  const up = await scrape(httpUrl)
  assert.deepEqual([up.get('chat_broker_up'), up.get('chat_nodes'), up.get('chat_broker_outages_total')], [1, 1, 0])

  await redis.kill()
  const down = await scrapeUntil(httpUrl, 'the outage seen', (samples) => samples.get('chat_broker_up') === 0 && samples.get('chat_broker_outages_total') === 1)
  assert.equal(down.get('chat_nodes'), 1, 'the last count the broker gave')
  const calls = (samples: Map<string, number>): number => samples.get('chat_broker_call_duration_seconds_count{operation="nodes"}') ?? 0
  const later = await scrapeUntil(httpUrl, 'more failed calls', (samples) => calls(samples) >= calls(down) + 2)
  assert.equal(later.get('chat_broker_outages_total'), 1, 'calls failing within one outage count it once')

  await redis.start()
  const back = await scrapeUntil(httpUrl, 'the recovery seen', (samples) => samples.get('chat_broker_up') === 1, 15_000)
  assert.equal(back.get('chat_broker_outages_total'), 1)
})

test('the example server with its shipped config serves /metrics', async (t) => {
  const port = await freePort()
  const server = startExample({ CHAT_CONFIG: undefined, PORT: String(port) }, await tempDir(t))
  t.after(() => server.child.kill('SIGKILL'))
  assert.equal((await homePage(port))?.status, 200, server.output())
  const samples = await scrape(`http://127.0.0.1:${port}`)
  assert.deepEqual([samples.get('chat_connections'), samples.get('chat_nodes'), samples.get('chat_broker_up')], [0, 1, 1])
  assert.equal(samples.get('chat_broker_call_duration_seconds_count{operation="open"}'), 1, 'the SQLite broker\'s calls are timed')
})
