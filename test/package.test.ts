/**
 * What a user gets from npm works: the package is packed, installed into a
 * fresh project, and registered from both TypeScript and plain JavaScript.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { mkdtemp, rm, writeFile, readFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

const run = promisify(execFile)
const root = fileURLToPath(new URL('../../', import.meta.url))

const jsApp = `
import Fastify from 'fastify'
import chatRooms from 'fastify-chat-rooms'
import { ChatClient } from 'fastify-chat-rooms/client'
import { RedisBroker } from 'fastify-chat-rooms/redis'
import WebSocket from 'ws'
if (typeof RedisBroker !== 'function') throw new Error('no RedisBroker export')
const app = Fastify()
await app.register(chatRooms, { maxTextLength: 100 })
await app.listen({ host: '127.0.0.1', port: 0 })
const page = await fetch('http://127.0.0.1:' + app.server.address().port + '/')
const client = new ChatClient('ws://127.0.0.1:' + app.server.address().port + '/ws', { name: 'js', WebSocket })
await client.join('lobby')
const seq = await client.send('lobby', 'hi')
client.close()
console.log(JSON.stringify({ home: page.status, seq, rooms: (await app.hub.rooms()).length }))
await app.close()
`

const tsApp = `
import Fastify from 'fastify'
import chatRooms, { type ChatRoomsOptions, type Message } from 'fastify-chat-rooms'
const options: ChatRoomsOptions = { home: false, onMessage: ({ text }) => text.trim() }
const app = Fastify()
await app.register(chatRooms, options)
await app.ready()
const stored: Message = await app.hub.broadcast('news', 'typed')
console.log(JSON.stringify({ seq: stored.seq, stats: app.hub.stats().connections }))
await app.close()
`

test('the packed package installs and registers from JavaScript and TypeScript', { timeout: 300_000 }, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'chat-pack-'))
  t.after(() => rm(dir, { recursive: true, force: true }))
  const { stdout: packed } = await run('npm', ['pack', '--json', '--pack-destination', dir], { cwd: root, maxBuffer: 1 << 24 })
  const [{ filename, files }] = JSON.parse(packed.slice(packed.indexOf('['))) as [{ filename: string, files: Array<{ path: string }> }]
  const paths = files.map((file) => file.path)
  assert.ok(paths.includes('dist/lib/index.js') && paths.includes('dist/lib/index.d.ts') && paths.includes('public/index.html'))
  assert.ok(!paths.some((path) => path.startsWith('dist/test/') || path.startsWith('lib/')), 'only the build and the page ship')

  const devVersions = JSON.parse(await readFile(join(root, 'package.json'), 'utf8')) as { devDependencies: Record<string, string> }
  await writeFile(join(dir, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }))
  await run('npm', ['install', '--no-audit', '--no-fund', join(dir, filename), `fastify@${devVersions.devDependencies.fastify}`, 'ws',
    `typescript@${devVersions.devDependencies.typescript}`, `ioredis@${devVersions.devDependencies.ioredis}`, `@types/node@${devVersions.devDependencies['@types/node']}`], { cwd: dir, maxBuffer: 1 << 24 })

  await writeFile(join(dir, 'app.mjs'), jsApp)
  const js = JSON.parse((await run('node', ['app.mjs'], { cwd: dir })).stdout) as { home: number, seq: number, rooms: number }
  assert.deepEqual(js, { home: 200, seq: 1, rooms: 1 })

  await writeFile(join(dir, 'app.ts'), tsApp)
  await writeFile(join(dir, 'tsconfig.json'), JSON.stringify({
    compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, skipLibCheck: false, types: ['node'], outDir: 'out' },
    files: ['app.ts'],
  }))
  await run(join(dir, 'node_modules/.bin/tsc'), ['-p', '.'], { cwd: dir })
  const ts = JSON.parse((await run('node', ['out/app.js'], { cwd: dir })).stdout) as { seq: number, stats: number }
  assert.deepEqual(ts, { seq: 1, stats: 0 })
})
