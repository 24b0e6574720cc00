import Fastify from 'fastify'
import WebSocket from 'ws'
import chatRooms from './dist/lib/index.js'
const kind = process.argv[2]
async function broker () {
  if (kind === 'redis') return new (await import('./dist/lib/redis.js')).RedisBroker({ url: 'redis://127.0.0.1:6379', prefix: 'chk' + process.pid })
  if (kind === 'sqlite') return new (await import('./dist/lib/sqlite.js')).SqliteBroker({ file: '/tmp/chk.db' })
  if (kind === 'pg') return new (await import('./dist/lib/postgres.js')).PostgresBroker({ connectionString: 'postgres://postgres@127.0.0.1:5432/test', schema: 'chk' + process.pid })
}
const apps = []
for (let i = 0; i < (kind === 'sqlite' || kind === 'memory' ? 1 : 2); i++) { const app = Fastify(); await app.register(chatRooms, { home: false, broker: await broker() }); await app.listen({ port: 0, host: '127.0.0.1' }); apps.push(app) }
function client (app) {
  const ws = new WebSocket(`ws://127.0.0.1:${app.server.address().port}/ws`)
  const frames = []; let close
  ws.on('message', (d) => frames.push(JSON.parse(d)))
  ws.on('close', (c) => { close = c })
  return { ws, frames, get close () { return close }, open: new Promise(r => ws.once('open', r)) }
}
const room = 'fresh-' + Date.now()
const a = client(apps[0]); await a.open; a.ws.send(JSON.stringify({ type: 'join', room }))
await new Promise(r => setTimeout(r, 300))
const b = client(apps.at(-1)); await b.open; b.ws.send(JSON.stringify({ type: 'join', room }))
await new Promise(r => setTimeout(r, 300))
b.ws.send(JSON.stringify({ type: 'send', room, text: 'hi', ref: 'r1' }))
await new Promise(r => setTimeout(r, 800))
console.log(kind, 'a:', a.frames.map(f => f.type + (f.action ? ':' + f.action : '') + (f.epoch ? ' e=' + f.epoch : '')).join(', '), 'close', a.close)
console.log(kind, 'b:', b.frames.map(f => f.type + (f.epoch ? ' e=' + f.epoch : '')).join(', '), 'close', b.close)
a.ws.close(); b.ws.close()
for (const app of apps) await app.close()
if (kind === 'pg') { const pg = (await import('pg')).default; const c = new pg.Client('postgres://postgres@127.0.0.1:5432/test'); await c.connect(); await c.query(`drop schema chk${process.pid} cascade`); await c.end() }
