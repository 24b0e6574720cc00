/**
 * The example server (dist/example/server.js) in a process of its own, as a
 * newcomer runs it: started with an environment (CHAT_CONFIG, PORT…), stopped
 * by signals, its output kept for assertion messages.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { fileURLToPath } from 'node:url'

/** An account as the example's `/auth` routes answer it. */
export interface SignedIn { id: string, name: string, admin: boolean }

const SERVER = fileURLToPath(new URL('../../example/server.js', import.meta.url))
/** The example starts in well under a second; this only bounds a broken start. */
const LISTEN_TIMEOUT_MS = 10_000

export interface ExampleServer {
  child: ChildProcess
  /** Its exit code and signal, once it exited. */
  exited: Promise<[number | null, string | null]>
  /** Everything it wrote to stdout and stderr so far. */
  output: () => string
}

/** Runs the example server; `cwd` is where the shipped config's `data/chat.db` goes. */
export function startExample (env: NodeJS.ProcessEnv, cwd?: string): ExampleServer {
  const child = spawn(process.execPath, [SERVER], { env: { ...process.env, ...env }, cwd, stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout?.on('data', (chunk: Buffer) => { output += String(chunk) })
  child.stderr?.on('data', (chunk: Buffer) => { output += String(chunk) })
  const exited = once(child, 'exit') as Promise<[number | null, string | null]>
  return { child, exited, output: () => output }
}

/** The home page once the server listens on `port`; undefined if it does not within 10 s. */
export async function homePage (port: number): Promise<Response | undefined> {
  const deadline = Date.now() + LISTEN_TIMEOUT_MS
  let page: Response | undefined
  while (!page && Date.now() < deadline) {
    page = await fetch(`http://127.0.0.1:${port}/`).catch(() => undefined)
    if (!page) await new Promise((resolve) => setTimeout(resolve, 100))
  }
  return page
}

/** A temp working directory, removed after the test. */
export async function tempDir (t: TestContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'chat-example-'))
  t.after(() => rm(dir, { recursive: true, force: true }))
  return dir
}

/** The `name=value` of the session cookie a register or login answer set. */
export function sessionCookie (response: Response): string {
  const header = response.headers.getSetCookie().find((line) => line.startsWith('chat_session='))
  assert.ok(header, `no session cookie in ${JSON.stringify(response.headers.getSetCookie())}`)
  return header.split(';')[0]!
}

/** Registers an account on the example server at `base` (with accounts on): its session cookie and account. */
export async function signUp (base: string, name: string, password: string): Promise<{ cookie: string, user: SignedIn }> {
  const response = await fetch(`${base}/auth/register`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name, password }) })
  assert.equal(response.status, 201, await response.clone().text())
  const { user } = await response.json() as { user: SignedIn }
  return { cookie: sessionCookie(response), user }
}
