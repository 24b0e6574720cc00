/**
 * The plugin under @fastify/websocket's `injectWS`: an upgrade with no TCP
 * socket and no peer address, served over an in-memory stream. Raw injectWS
 * here, not the test kit, so that these hold whatever the kit does.
 */
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { Writable } from 'node:stream'
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import type WebSocket from 'ws'
import chatRooms, { type ChatRoomsOptions } from '../lib/index.js'
import { isServerFrame, type ServerFrame } from '../lib/protocol.js'

async function appWith (t: TestContext, options: ChatRoomsOptions, server: FastifyServerOptions = {}): Promise<FastifyInstance> {
  const app = Fastify({ logger: false, ...server })
  await app.register(chatRooms, { home: false, ...options })
  await app.ready()
  t.after(() => app.close())
  return app
}

/** An injected socket and the frames it receives, in order. */
async function inject (t: TestContext, app: FastifyInstance, path = '/ws'): Promise<{ socket: WebSocket, frames: ServerFrame[], closed: Promise<number> }> {
  const frames: ServerFrame[] = []
  let closed!: Promise<number>
  // Listeners go on before the upgrade completes: `welcome` is sent at once.
  const socket = await app.injectWS(path, {}, {
    onInit: (ws) => {
      ws.on('message', (data) => {
        const frame: unknown = JSON.parse(String(data))
        assert.ok(isServerFrame(frame), `a frame outside the protocol: ${String(data)}`)
        frames.push(frame)
      })
      closed = new Promise((resolve) => ws.once('close', resolve))
    },
  })
  t.after(() => socket.terminate())
  return { socket, frames, closed }
}

async function until (condition: () => boolean, what: string): Promise<void> {
  for (let waited = 0; !condition(); waited += 10) {
    if (waited > 2000) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

test('an injected upgrade is welcomed and can join and send, with or without trustProxy, logged or not', async (t) => {
  // Behind trustProxy, Fastify's request.ip reads the socket's address: an injected request has no socket.
  const logged = { logger: { stream: new Writable({ write: (_chunk, _encoding, done) => done() }) } }
  for (const server of [{}, { trustProxy: true }, { trustProxy: true, ...logged }]) {
    const app = await appWith(t, {}, server)
    const { socket, frames } = await inject(t, app, '/ws?name=alice')
    await until(() => frames.length === 1, 'welcome')
    assert.equal(frames[0]?.type, 'welcome')
    assert.equal(frames[0]?.type === 'welcome' && frames[0].name, 'alice')
    socket.send(JSON.stringify({ type: 'join', room: 'lobby', ref: 'j' }))
    socket.send(JSON.stringify({ type: 'send', room: 'lobby', text: 'hi', ref: 's' }))
    await until(() => frames.some((frame) => frame.type === 'ack'), 'the ack')
    assert.deepEqual(frames.map((frame) => frame.type), ['welcome', 'joined', 'message', 'ack'])
  }
})

test('injected connections take connection slots, per address too, and give them back when they close', async (t) => {
  const app = await appWith(t, { maxConnections: 2, maxConnectionsPerIp: 1 })
  const first = await inject(t, app)
  await assert.rejects(app.injectWS('/ws'), /Unexpected server response: 429/)
  first.socket.close()
  await first.closed
  const second = await inject(t, app)
  await until(() => second.frames.length === 1, 'welcome')
})

test('an injected connection is left out of the heartbeat (its client answers no ping) and is closed with 1001 on shutdown', async (t) => {
  const app = await appWith(t, { heartbeatInterval: 100 })
  const { socket, closed } = await inject(t, app)
  // Three heartbeats: a connection that the heartbeat pinged would be terminated at the second.
  await new Promise((resolve) => setTimeout(resolve, 350))
  assert.equal(socket.readyState, socket.OPEN)
  await app.close()
  assert.equal(await closed, 1001)
})
