/**
 * What lib/upgrade.ts relies on of ws and @fastify/websocket beyond their
 * documented APIs. These tests fail loudly when an upgrade of either changes
 * it; the plugin would then fall back to slower or larger, still correct, paths.
 */
import { test } from 'node:test'
import type { ServerResponse } from 'node:http'
import assert from 'node:assert/strict'
import Fastify from 'fastify'
import websocket from '@fastify/websocket'
import WebSocket from 'ws'
import { coalesceHandshakes, releaseUpgrade, transportOf } from '../lib/upgrade.js'
import { textFrame } from '../lib/writer.js'

interface Seen {
  transportFound: boolean
  errorListenersBefore: number
  onlyOurErrorListenerAfter: boolean
  responseDetached: boolean
}

test('frames written to the upgrade\'s TCP socket arrive whole and in order between ws\'s own frames; the upgrade can be let go', async (t) => {
  const app = Fastify({ logger: false })
  await app.register(websocket)
  let seen: Seen | undefined
  const onError = (): void => {}
  // As the plugin does: the upgrade's response is known before the upgrade, in preValidation.
  const responses = new WeakMap<object, ServerResponse>()
  app.get('/ws', {
    websocket: true,
    preValidation: async (request, reply) => { responses.set(request, reply.raw) },
  }, (socket, request) => {
    const transport = transportOf(socket, request.raw)
    const response = responses.get(request) as ServerResponse
    const errorListenersBefore = socket.listenerCount('error')
    const attachedBefore = response.socket !== null
    releaseUpgrade(socket, response, onError)
    const listeners = socket.listeners('error')
    seen = {
      transportFound: transport !== undefined,
      errorListenersBefore,
      onlyOurErrorListenerAfter: listeners.length === 1 && listeners[0] === onError,
      responseDetached: attachedBefore && response.socket === null,
    }
    transport?.write(textFrame(Buffer.from('a')))
    socket.send('b')
    transport?.write(Buffer.concat([textFrame(Buffer.from('c')), textFrame(Buffer.from('x'.repeat(70_000)))]))
    socket.ping('p')
    transport?.write(textFrame(Buffer.from('d')))
    socket.close(4000, 'done')
  })
  await app.listen({ host: '127.0.0.1', port: 0 })
  t.after(() => app.close())
  const { port } = app.server.address() as { port: number }

  const client = new WebSocket(`ws://127.0.0.1:${port}/ws`)
  const received: string[] = []
  client.on('message', (data) => received.push(String(data).length > 10 ? `${String(data).length} bytes` : String(data)))
  client.on('ping', (data) => received.push(`ping ${String(data)}`))
  const code = await new Promise<number>((resolve) => client.on('close', (closeCode) => resolve(closeCode)))

  assert.deepEqual(seen, { transportFound: true, errorListenersBefore: 1, onlyOurErrorListenerAfter: true, responseDetached: true },
    'ws writes to the request\'s socket, and @fastify/websocket gives a socket one error listener: see lib/upgrade.ts')
  assert.deepEqual(received, ['a', 'b', 'c', '70000 bytes', 'ping p', 'd'])
  assert.equal(code, 4000)
})

test('a socket ws does not write to the request\'s socket (an injected one) has no transport: frames go through ws.send', async (t) => {
  const app = Fastify({ logger: false })
  await app.register(websocket)
  let found: boolean | undefined
  app.get('/ws', { websocket: true }, (socket, request) => {
    found = transportOf(socket, request.raw) !== undefined
    socket.send('hello')
  })
  await app.ready()
  t.after(() => app.close())
  let received: (data: string) => void = () => {}
  const message = new Promise<string>((resolve) => { received = resolve })
  const client = await app.injectWS('/ws', {}, { onInit: (ws) => ws.on('message', (data) => received(String(data))) })
  const data = await message
  assert.equal(String(data), 'hello')
  assert.equal(found, false)
  client.terminate()
})

test('ws emits \'headers\' just before it writes the 101 to the request\'s socket: held there, it leaves with what the handler writes at once, and alone when the handler writes nothing', async (t) => {
  const app = Fastify({ logger: false })
  await app.register(websocket)
  coalesceHandshakes(app.websocketServer)
  const held: Array<{ corked: number, bytes: number }> = []
  app.get('/ws', { websocket: true }, (socket, request) => {
    const tcp = request.raw.socket
    held.push({ corked: tcp.writableCorked, bytes: tcp.writableLength })
    if ((request.query as { quiet?: string }).quiet === undefined) transportOf(socket, request.raw)?.write(textFrame(Buffer.from('hello')))
  })
  await app.listen({ host: '127.0.0.1', port: 0 })
  t.after(() => app.close())
  const { port } = app.server.address() as { port: number }

  const client = new WebSocket(`ws://127.0.0.1:${port}/ws`)
  const first = await new Promise<string>((resolve) => client.once('message', (data) => resolve(String(data))))
  assert.equal(first, 'hello')
  client.terminate()
  const quiet = new WebSocket(`ws://127.0.0.1:${port}/ws?quiet`)
  await new Promise((resolve, reject) => { quiet.once('open', resolve); quiet.once('error', reject) })
  quiet.terminate()
  assert.equal(held.length, 2)
  for (const { corked, bytes } of held) {
    assert.equal(corked, 1, 'the socket is corked while the handler runs')
    assert.ok(bytes > 'HTTP/1.1 101'.length, 'the 101 waits in it')
  }
})
