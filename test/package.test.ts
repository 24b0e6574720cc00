/**
 * What a user gets from npm works: the package is packed (with its license and
 * source maps that resolve), installed into a fresh project, and registered
 * and tested with its test kit from both TypeScript and plain JavaScript; its
 * production dependencies keep our Node promise; and the incremental build
 * rebuilds whatever is missing.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { cp, mkdir, mkdtemp, rm, writeFile, readFile, readdir, stat, symlink } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

const run = promisify(execFile)
const root = fileURLToPath(new URL('../../', import.meta.url))

const jsApp = `
import Fastify from 'fastify'
import chatRooms from 'fastify-chat-rooms'
import { ChatClient } from 'fastify-chat-rooms/client'
import { RedisBroker } from 'fastify-chat-rooms/redis'
import { SqliteBroker } from 'fastify-chat-rooms/sqlite'
import { PostgresBroker } from 'fastify-chat-rooms/postgres'
import { connect } from 'fastify-chat-rooms/testing'
import WebSocket from 'ws'
if (typeof RedisBroker !== 'function') throw new Error('no RedisBroker export')
if (typeof SqliteBroker !== 'function') throw new Error('no SqliteBroker export')
if (typeof PostgresBroker !== 'function') throw new Error('no PostgresBroker export')
const app = Fastify()
await app.register(chatRooms, { maxTextLength: 100 })
await app.listen({ host: '127.0.0.1', port: 0 })
const page = await fetch('http://127.0.0.1:' + app.server.address().port + '/')
const client = new ChatClient('ws://127.0.0.1:' + app.server.address().port + '/ws', { name: 'js', WebSocket })
await client.join('lobby')
const seq = await client.send('lobby', 'hi')
client.close()
const tester = await connect(app, { query: { name: 'kit' } })
const joined = await tester.join('lobby')
await tester.close()
const rooms = (await app.hub.rooms()).length
await app.close()
// prom-client is an optional peer this project does not install: the metrics option says so at start.
const metrics = await Fastify().register(chatRooms, { metrics: true }).ready().then(() => 'started', (error) => error.message)
console.log(JSON.stringify({ home: page.status, seq, rooms, kit: [tester.welcome.name, joined.seq], metrics }))
`

const tsApp = `
import Fastify from 'fastify'
import chatRooms, { type ChatRoomsOptions, type Message } from 'fastify-chat-rooms'
import { connect, type ChatTestClient } from 'fastify-chat-rooms/testing'
const options: ChatRoomsOptions = { home: false, onMessage: ({ text }) => text.trim() }
const app = Fastify()
await app.register(chatRooms, options)
await app.ready()
const stored: Message = await app.hub.broadcast('news', 'typed')
const stats = app.hub.stats().connections
const tester: ChatTestClient = await connect(app)
await tester.join('news')
const seen: Message = await tester.send('news', 'again').then((seq) => tester.expect({ type: 'message', seq }))
await tester.close()
console.log(JSON.stringify({ seq: stored.seq, stats, kit: seen.seq }))
await app.close()
`

/** Planted in dist/ before packing: a build output whose source is gone, as after deleting or renaming a module. */
const ORPHAN = 'dist/lib/orphan-of-a-deleted-module.js'

test('the packed package installs and registers from JavaScript and TypeScript', { timeout: 300_000 }, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'chat-pack-'))
  t.after(() => rm(dir, { recursive: true, force: true }))
  await writeFile(join(root, ORPHAN), 'export {}\n')
  t.after(() => rm(join(root, ORPHAN), { force: true }))
  const { stdout: packed } = await run('npm', ['pack', '--json', '--pack-destination', dir], { cwd: root, maxBuffer: 1 << 24 })
  const [{ filename, files }] = JSON.parse(packed.slice(packed.indexOf('['))) as [{ filename: string, files: Array<{ path: string }> }]
  const paths = files.map((file) => file.path)
  assert.ok(paths.includes('dist/lib/index.js') && paths.includes('dist/lib/index.d.ts') && paths.includes('public/index.html'))
  assert.ok(!paths.some((path) => path.startsWith('dist/test/') || path.startsWith('lib/')), 'only the build and the page ship')
  assert.ok(paths.includes('LICENSE'), 'the license ships')
  assert.ok(!paths.includes(ORPHAN), 'pack builds from a clean dist: an output without a source does not ship')

  await run('tar', ['xzf', join(dir, filename), '-C', dir])
  const maps = paths.filter((path) => path.endsWith('.map'))
  assert.ok(maps.length > 0)
  for (const path of maps) {
    const map = JSON.parse(await readFile(join(dir, 'package', path), 'utf8')) as { sources: string[], sourcesContent?: Array<string | null> }
    map.sources.forEach((source, i) => {
      const shipped = paths.includes(join(dirname(path), source))
      assert.ok(shipped || typeof map.sourcesContent?.[i] === 'string', `${path}: ${source} is neither shipped nor inlined`)
    })
  }

  const devVersions = JSON.parse(await readFile(join(root, 'package.json'), 'utf8')) as { devDependencies: Record<string, string> }
  await writeFile(join(dir, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }))
  await run('npm', ['install', '--no-audit', '--no-fund', join(dir, filename), `fastify@${devVersions.devDependencies.fastify}`, 'ws',
    `typescript@${devVersions.devDependencies.typescript}`, `ioredis@${devVersions.devDependencies.ioredis}`, `pg@${devVersions.devDependencies.pg}`, `@types/node@${devVersions.devDependencies['@types/node']}`], { cwd: dir, maxBuffer: 1 << 24 })

  // better-sqlite3 (an optional peer) is the one this checkout built: a fresh copy would compile from source again.
  await symlink(join(root, 'node_modules/better-sqlite3'), join(dir, 'node_modules/better-sqlite3'), 'dir')
  await writeFile(join(dir, 'app.mjs'), jsApp)
  const js = JSON.parse((await run('node', ['app.mjs'], { cwd: dir })).stdout) as { home: number, seq: number, rooms: number, kit: [string, number], metrics: string }
  assert.deepEqual(js, { home: 200, seq: 1, rooms: 1, kit: ['kit', 1], metrics: 'fastify-chat-rooms: option metrics: needs prom-client, an optional peer dependency that is not installed; run `npm install prom-client`, or leave metrics off' })

  await writeFile(join(dir, 'app.ts'), tsApp)
  await writeFile(join(dir, 'tsconfig.json'), JSON.stringify({
    compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, skipLibCheck: false, types: ['node'], outDir: 'out' },
    files: ['app.ts'],
  }))
  await run(join(dir, 'node_modules/.bin/tsc'), ['-p', '.'], { cwd: dir })
  const ts = JSON.parse((await run('node', ['out/app.js'], { cwd: dir })).stdout) as { seq: number, stats: number, kit: number }
  assert.deepEqual(ts, { seq: 1, stats: 0, kit: 2 })
})

/** Whether a `engines.node` range admits `version`: npm's range grammar (||, spaces, hyphen, x-ranges, ^, ~), without prereleases. */
function admits (range: string, version: string): boolean {
  const parse = (partial: string): number[] => {
    const parts = partial.replace(/^v/, '').split('.').filter((part) => !/^[x*X]$/.test(part))
    if (parts.some((part) => !/^\d+$/.test(part))) throw new Error(`cannot read version ${partial} in ${range}`)
    return parts.map(Number)
  }
  const compare = (a: number[], b: number[]): number => {
    for (let i = 0; i < 3; i++) if ((a[i] ?? 0) !== (b[i] ?? 0)) return (a[i] ?? 0) - (b[i] ?? 0)
    return 0
  }
  /** The first version above every version `partial` covers: `20` → 21.0.0, `20.1` → 20.2.0, `20.1.2` → 20.1.3. */
  const above = (partial: number[]): number[] => partial.length === 0 ? [Infinity] : [...partial.slice(0, -1), (partial.at(-1) as number) + 1]
  const wanted = parse(version)
  const inside = (low: number[], high: number[]): boolean => compare(wanted, low) >= 0 && compare(wanted, high) < 0
  const comparator = (text: string): boolean => {
    const [, op = '', partial = ''] = /^(>=|<=|>|<|=|\^|~)?(.*)$/.exec(text) as RegExpExecArray
    const v = parse(partial)
    switch (op) {
      case '>=': return compare(wanted, v) >= 0
      case '>': return compare(wanted, above(v)) >= 0
      case '<': return compare(wanted, v) < 0
      case '<=': return compare(wanted, above(v)) < 0
      case '~': return inside(v, v.length >= 2 ? above(v.slice(0, 2)) : above(v))
      case '^': {
        const significant = v.findIndex((part) => part !== 0)
        return inside(v, above(v.slice(0, significant === -1 ? v.length : significant + 1)))
      }
      default: return inside(v, above(v))
    }
  }
  return range.split('||').some((alternative) => {
    const text = alternative.trim().replace(/(>=|<=|>|<|=|\^|~)\s+/g, '$1')
    const hyphen = /^(\S+)\s+-\s+(\S+)$/.exec(text)
    if (hyphen) return comparator(`>=${hyphen[1] as string}`) && comparator(`<=${hyphen[2] as string}`)
    return text === '' || text.split(/\s+/).every(comparator)
  })
}

test('the range check used below reads engines ranges as npm does', () => {
  const cases: Array<[string, string, boolean]> = [
    ['>=20', '20.0.0', true], ['>=22', '20.0.0', false], ['>= 0.8', '20.0.0', true], ['*', '20.0.0', true], ['', '20.0.0', true],
    ['20 || >=22', '20.0.0', true], ['18 || 20 || >=22', '21.5.0', false], ['>=16 || 14 >=14.17', '20.0.0', true],
    ['^20.19.0 || >=22.12.0', '20.0.0', false], ['^20.19.0 || >=22.12.0', '20.20.2', true], ['<20', '20.0.0', false],
    ['~20.1', '20.1.9', true], ['~20.1', '20.2.0', false], ['^0.2.3', '0.3.0', false], ['1.2.3 - 20', '20.9.9', true],
    ['>20', '20.5.0', false], ['<=20', '20.5.0', true], ['20.x', '20.5.0', true], ['>=10.0.0', '20.0.0', true],
  ]
  for (const [range, version, expected] of cases) assert.equal(admits(range, version), expected, `${range} for ${version}`)
})

test('every production dependency admits the lowest Node we promise', async () => {
  const manifest = JSON.parse(await readFile(join(root, 'package.json'), 'utf8')) as { engines: { node: string } }
  const lowest = /^>=\s*(\d+(?:\.\d+){0,2})$/.exec(manifest.engines.node)?.[1]
  assert.ok(lowest !== undefined, `engines.node is ${manifest.engines.node}, not a lower bound`)
  const lock = JSON.parse(await readFile(join(root, 'package-lock.json'), 'utf8')) as {
    packages: Record<string, { version?: string, dev?: boolean, engines?: { node?: string } }>
  }
  const production = Object.entries(lock.packages).filter(([, entry]) => entry.dev !== true)
  assert.ok(production.some(([path]) => path === 'node_modules/@fastify/static'), 'the lock lists the production tree')
  const refusing = production
    .filter(([, entry]) => entry.engines?.node !== undefined && !admits(entry.engines.node, lowest))
    .map(([path, entry]) => `${path || 'fastify-chat-rooms'}@${entry.version ?? ''} wants node ${entry.engines?.node ?? ''}`)
  assert.deepEqual(refusing, [], `we promise node ${manifest.engines.node}`)
})

test('the build is incremental and rebuilds what is missing, even with its build info left behind', { timeout: 120_000 }, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'chat-build-'))
  t.after(() => rm(dir, { recursive: true, force: true }))
  for (const file of ['package.json', 'tsconfig.json', 'tsconfig.build.json', 'scripts']) await cp(join(root, file), join(dir, file), { recursive: true })
  await symlink(join(root, 'node_modules'), join(dir, 'node_modules'), 'dir')
  await mkdir(join(dir, 'lib'))
  await writeFile(join(dir, 'lib/a.ts'), 'export const a: number = 1\n')
  const output = join(dir, 'dist/lib/a.js')
  const build = async (): Promise<void> => { await run('npm', ['run', 'build'], { cwd: dir }) }

  await build()
  assert.match(await readFile(output, 'utf8'), /a = 1/)
  const built = (await stat(output)).mtimeMs
  await build()
  assert.equal((await stat(output)).mtimeMs, built, 'nothing changed, nothing is written')
  assert.ok((await readdir(join(dir, 'dist'))).includes('.tsbuildinfo'))

  await rm(join(dir, 'dist/lib'), { recursive: true })
  await build()
  assert.match(await readFile(output, 'utf8'), /a = 1/, 'outputs deleted under a stale build info are built again')

  await rm(join(dir, 'dist'), { recursive: true })
  await build()
  assert.match(await readFile(output, 'utf8'), /a = 1/, 'a deleted dist is built again')

  await writeFile(join(dir, 'lib/a.ts'), 'export const a: number = 2\n')
  await build()
  assert.match(await readFile(output, 'utf8'), /a = 2/, 'a changed source is built again')
})
