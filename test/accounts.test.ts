/** The example server's accounts: sign-up, sign-in and sign-out, the session on the WebSocket, and bad input. */
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Page } from 'playwright-core'
import WebSocket from 'ws'
import Fastify from 'fastify'
import Database from 'better-sqlite3'
import { Accounts, SIGN_IN_LIMIT } from '../example/accounts.js'
import { SqliteAccountStore } from '../example/sqlite-accounts.js'
import type { RestAction } from '../lib/options.js'
import { launchBrowser, openPage, say, shownMembers, skipUnlessChromium, waitConnected, waitForMessage, waitJoined } from './helpers/browser.js'
import { RawClient } from './helpers/client.js'
import { homePage, sessionCookie, signUp, startExample, tempDir, type SignedIn } from './helpers/example-server.js'
import { freePort } from './helpers/free-port.js'
import { POSTGRES_URL, asAdmin, skipUnlessPostgres } from './helpers/postgres.js'

/** Unlike anything else the server could print, so finding it in the log means it leaked. */
const PASSWORD = `pw-${randomBytes(8).toString('hex')}`

interface Example {
  base: string
  ws: string
  output: () => string
  stop: () => Promise<number | null>
}

/** Writes a config with accounts on and `broker` (e.g. `{ sqlite: file }`) in `dir`. */
async function accountsConfig (dir: string, broker: object, extra: object = {}): Promise<string> {
  const config = join(dir, 'config.json')
  await writeFile(config, JSON.stringify({ host: '127.0.0.1', port: 1, logLevel: 'trace', accounts: true, ...broker, ...extra, chat: { rest: { prefix: '/api' } } }))
  return config
}

/** Starts the example server on `config` and waits until it answers. */
async function runExample (t: TestContext, config: string, port?: number): Promise<Example> {
  port ??= await freePort()
  const server = startExample({ CHAT_CONFIG: config, PORT: String(port) })
  t.after(() => server.child.kill('SIGKILL'))
  assert.equal((await homePage(port))?.status, 200, server.output())
  return {
    base: `http://127.0.0.1:${port}`,
    ws: `ws://127.0.0.1:${port}/ws`,
    output: server.output,
    stop: async () => {
      server.child.kill('SIGTERM')
      return (await server.exited)[0]
    },
  }
}

/** An example server with accounts on SQLite, in a temp directory. */
async function onSqlite (t: TestContext): Promise<Example> {
  const dir = await tempDir(t)
  return runExample(t, await accountsConfig(dir, { sqlite: join(dir, 'chat.db') }))
}

async function post (example: Example, route: string, body?: unknown, cookie?: string): Promise<Response> {
  const headers: Record<string, string> = {}
  if (body !== undefined) headers['content-type'] = 'application/json'
  if (cookie !== undefined) headers.cookie = cookie
  return fetch(`${example.base}${route}`, { method: 'POST', headers, body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body) })
}

async function me (example: Example, cookie?: string): Promise<unknown> {
  const response = await fetch(`${example.base}/auth/me`, { headers: cookie === undefined ? {} : { cookie } })
  assert.equal(response.status, 200)
  return response.json()
}

function register (example: Example, name: string): Promise<{ cookie: string, user: SignedIn }> {
  return signUp(example.base, name, PASSWORD)
}

/** The `welcome` of a WebSocket connection made with `cookie`. */
async function welcome (t: TestContext, url: string, cookie: string): Promise<{ id: string, user: string, name: string }> {
  const socket = new WebSocket(url, { headers: { cookie } })
  t.after(() => socket.terminate())
  const [data] = await once(socket, 'message') as [Buffer]
  return JSON.parse(String(data)) as { id: string, user: string, name: string }
}

/** Two connections with one session are one user: the account's id as `user`, its name, and ids that start with the account's id. */
async function oneUserInTwoConnections (t: TestContext, example: Example, cookie: string, user: SignedIn): Promise<void> {
  const welcomes = [await welcome(t, example.ws, cookie), await welcome(t, `${example.ws}?name=somebody-else`, cookie)]
  assert.deepEqual(welcomes.map(({ user, name }) => ({ user, name })), [{ user: user.id, name: user.name }, { user: user.id, name: user.name }])
  const tabs = [await RawClient.connect(t, example.ws, { headers: { cookie } }), await RawClient.connect(t, example.ws, { headers: { cookie } })]
  await tabs[0]!.request('joined', { type: 'join', room: 'lobby' })
  const { members } = await tabs[1]!.request('joined', { type: 'join', room: 'lobby' })
  assert.deepEqual(members.map(({ user, name }) => ({ user, name })), [{ user: user.id, name: user.name }, { user: user.id, name: user.name }])
  for (const { id } of [...welcomes, ...members]) assert.ok(id.startsWith(`${user.id}.`), `${id} is a connection of ${user.id}`)
  assert.equal(new Set(members.map(({ id }) => id)).size, 2, 'two tabs are still two connections')
}

test('register answers with a session cookie that /auth/me and the WebSocket know, in every tab', async (t) => {
  const example = await onSqlite(t)
  assert.deepEqual(await me(example), { user: null })
  const response = await post(example, '/auth/register', { name: '  Alice ', password: PASSWORD })
  assert.equal(response.status, 201)
  const setCookie = response.headers.getSetCookie().join('\n')
  assert.match(setCookie, /chat_session=[^;]+\.[^;]+;/, 'the cookie is signed')
  assert.match(setCookie, /HttpOnly/)
  assert.match(setCookie, /SameSite=Lax/)
  const { user } = await response.json() as { user: SignedIn }
  assert.equal(user.name, 'Alice', 'the name is trimmed as PROTOCOL.md says')
  assert.equal(user.admin, false, 'no admins are configured')
  const cookie = sessionCookie(response)
  assert.deepEqual(await me(example, cookie), { user })
  await oneUserInTwoConnections(t, example, cookie, user)
  await assert.rejects(RawClient.connect(t, `${example.ws}?name=Alice`), /HTTP 401/, 'without a session nobody gets in, whatever the name')
})

test('a wrong password and an unknown name get the same 401; the right one, in any case of the name, signs in', async (t) => {
  const example = await onSqlite(t)
  const { user } = await register(example, 'Bob')
  const wrong = await post(example, '/auth/login', { name: 'Bob', password: `${PASSWORD}x` })
  const unknown = await post(example, '/auth/login', { name: 'Nobody', password: PASSWORD })
  assert.deepEqual([wrong.status, wrong.headers.getSetCookie()], [401, []])
  assert.deepEqual([unknown.status, unknown.headers.getSetCookie()], [401, []])
  assert.deepEqual(await wrong.text(), await unknown.text())
  const right = await post(example, '/auth/login', { name: 'bob', password: PASSWORD })
  assert.equal(right.status, 200)
  assert.deepEqual(await right.json(), { user })
  assert.deepEqual(await me(example, sessionCookie(right)), { user })
})

test('a taken name gets 409, compared case-insensitively after NFKC and trimming', async (t) => {
  const example = await onSqlite(t)
  await register(example, 'Carol')
  for (const name of ['Carol', 'carol', ' CAROL ', 'Ｃａｒｏｌ']) {
    const response = await post(example, '/auth/register', { name, password: PASSWORD })
    assert.equal(response.status, 409, name)
    assert.deepEqual(response.headers.getSetCookie(), [])
    assert.match((await response.json() as { message: string }).message, /^name: already taken/)
  }
  assert.equal((await post(example, '/auth/register', { name: 'Caroline', password: PASSWORD })).status, 201)
})

test('a malformed body gets 400 naming the field, and never echoes the password', async (t) => {
  const example = await onSqlite(t)
  const cases: Array<[string, unknown, RegExp]> = [
    ['not JSON', `{"name":"dave","password":"${PASSWORD}"`, /^body: must be JSON$/],
    ['a string', JSON.stringify(PASSWORD), /^body: must be a JSON object/],
    ['no name', { password: PASSWORD }, /^name: must be a string/],
    ['an empty name', { name: '   ', password: PASSWORD }, /^name: must not be empty/],
    ['a long name', { name: 'd'.repeat(33), password: PASSWORD }, /^name: must be at most 32 characters/],
    ['a control character', { name: 'da\u0007ve', password: PASSWORD }, /^name: must not contain control characters/],
    ['no password', { name: 'dave' }, /^password: must be a string/],
    ['a short password', { name: 'dave', password: 'short' }, /^password: must be 8 to 256 characters/],
    ['a long password', { name: 'dave', password: PASSWORD.repeat(20) }, /^password: must be 8 to 256 characters/],
    ['an extra field', { name: 'dave', password: PASSWORD, remember: true }, /^remember: unknown field/],
  ]
  for (const route of ['/auth/register', '/auth/login']) {
    for (const [what, body, message] of cases) {
      const response = await post(example, route, body)
      const text = await response.text()
      assert.equal(response.status, 400, `${route}, ${what}: ${text}`)
      assert.match((JSON.parse(text) as { message: string }).message, message, `${route}, ${what}`)
      assert.ok(!text.includes(PASSWORD), `${route}, ${what}: the answer echoes the password`)
    }
  }
  // The cases spend each route's whole limit: malformed attempts count too.
  assert.equal(cases.length, SIGN_IN_LIMIT.max)
  assert.equal((await post(example, '/auth/login', { name: 'dave', password: PASSWORD })).status, 429)
})

test(`more than ${SIGN_IN_LIMIT.max} sign-in attempts a minute get 429`, async (t) => {
  const example = await onSqlite(t)
  for (let attempt = 0; attempt < SIGN_IN_LIMIT.max; attempt++) {
    assert.equal((await post(example, '/auth/login', { name: 'Eve', password: PASSWORD })).status, 401)
  }
  const limited = await post(example, '/auth/login', { name: 'Eve', password: PASSWORD })
  assert.equal(limited.status, 429)
  assert.deepEqual(Object.keys(await limited.json() as object).sort(), ['error', 'message', 'statusCode'])
})

test('logout ends the session: the old cookie no longer opens /auth/me or the WebSocket', async (t) => {
  const example = await onSqlite(t)
  const { cookie, user } = await register(example, 'Frank')
  const other = sessionCookie(await post(example, '/auth/login', { name: 'Frank', password: PASSWORD }))
  const connected = await RawClient.connect(t, example.ws, { headers: { cookie } })
  const logout = await post(example, '/auth/logout', undefined, cookie)
  assert.deepEqual([logout.status, await logout.json()], [200, { user: null }])
  assert.match(logout.headers.getSetCookie().join('\n'), /chat_session=;/, 'the cookie is cleared')
  assert.deepEqual(await me(example, cookie), { user: null })
  await assert.rejects(RawClient.connect(t, example.ws, { headers: { cookie } }), /HTTP 401/)
  assert.deepEqual(await me(example, other), { user }, 'the session of another device goes on')
  assert.equal(connected.socket.readyState, connected.socket.OPEN, 'a connection already open is not cut (hub.disconnectUser is for that)')
  const [token, signature] = other.slice('chat_session='.length).split('.') as [string, string]
  assert.deepEqual(await me(example, `chat_session=${token}.${'A'.repeat(signature.length)}`), { user: null }, 'a token with a wrong signature is refused')
})

test('with SQLite, accounts and sessions survive a restart', async (t) => {
  const dir = await tempDir(t)
  const config = await accountsConfig(dir, { sqlite: join(dir, 'chat.db') })
  const port = await freePort()
  const first = await runExample(t, config, port)
  const { cookie, user } = await register(first, 'Grace')
  assert.equal(await first.stop(), 0, first.output())
  const second = await runExample(t, config, port)
  assert.deepEqual(await me(second, cookie), { user }, 'the secret signing cookies was kept')
  const login = await post(second, '/auth/login', { name: 'grace', password: PASSWORD })
  assert.deepEqual([login.status, await login.json()], [200, { user }])
  assert.equal((await post(second, '/auth/register', { name: 'Grace', password: PASSWORD })).status, 409)
})

test('the password never reaches the log, even at trace level', async (t) => {
  const example = await onSqlite(t)
  const { cookie } = await register(example, 'Heidi')
  await post(example, '/auth/login', { name: 'Heidi', password: PASSWORD })
  await post(example, '/auth/login', { name: 'Heidi', password: `${PASSWORD}!` })
  await post(example, '/auth/login', `{"name":"Heidi","password":"${PASSWORD}"`)
  await post(example, '/auth/register', { name: 'Heidi', password: PASSWORD })
  await RawClient.connect(t, example.ws, { headers: { cookie } })
  await post(example, '/auth/logout', undefined, cookie)
  const output = example.output()
  assert.match(output, /"url":"\/auth\/login"/, 'the log is on at trace level')
  assert.ok(!output.includes(PASSWORD), 'the log holds the password')
  assert.ok(!output.includes(cookie.split('=')[1]!.split('.')[0]!), 'the log holds the session token')
})

test('a sessionSecret in the config signs the cookies', async (t) => {
  const dir = await tempDir(t)
  const sessionSecret = randomBytes(24).toString('base64url')
  const config = await accountsConfig(dir, { sqlite: join(dir, 'chat.db') }, { sessionSecret })
  const example = await runExample(t, config)
  const { cookie, user } = await register(example, 'Ivan')
  assert.deepEqual(await me(example, cookie), { user })
  const short = await accountsConfig(await tempDir(t), { sqlite: join(dir, 'other.db') }, { sessionSecret: 'too short' })
  const refused = startExample({ CHAT_CONFIG: short })
  t.after(() => refused.child.kill('SIGKILL'))
  assert.equal((await refused.exited)[0], 1)
  assert.match(refused.output(), /sessionSecret:/)
  assert.ok(!refused.output().includes('too short'), 'the secret is not echoed')
})

test('accounts with redis or with no broker stop the server with a message naming both fields', async (t) => {
  for (const broker of [{ redis: 'redis://127.0.0.1:6379' }, {}]) {
    const config = await accountsConfig(await tempDir(t), broker)
    const server = startExample({ CHAT_CONFIG: config })
    t.after(() => server.child.kill('SIGKILL'))
    assert.equal((await server.exited)[0], 1, server.output())
    assert.match(server.output(), /accounts: needs sqlite or postgres/)
    if ('redis' in broker) assert.match(server.output(), /redis/)
  }
})

test('two sessions of one account (two sign-ins, as two devices) get the same user in welcome', async (t) => {
  const example = await onSqlite(t)
  const { cookie: phone, user } = await register(example, 'Kim')
  const laptop = sessionCookie(await post(example, '/auth/login', { name: 'kim', password: PASSWORD }))
  assert.notEqual(laptop, phone)
  const welcomes = [await welcome(t, example.ws, phone), await welcome(t, example.ws, laptop)]
  assert.deepEqual(welcomes.map(({ user, name }) => ({ user, name })), [{ user: user.id, name: 'Kim' }, { user: user.id, name: 'Kim' }])
  assert.notEqual(welcomes[0]!.id, welcomes[1]!.id, 'each device is still its own connection')
  const other = await welcome(t, example.ws, (await register(example, 'Lee')).cookie)
  assert.notEqual(other.user, user.id, 'another account is another user')
})

/** Writes a config with `fields` over a valid one (accounts on SQLite) and starts the example on it, expecting it to refuse. */
async function refusedConfig (t: TestContext, fields: object): Promise<string> {
  const dir = await tempDir(t)
  const server = startExample({ CHAT_CONFIG: await accountsConfig(dir, { sqlite: join(dir, 'chat.db') }, fields) })
  t.after(() => server.child.kill('SIGKILL'))
  assert.equal((await server.exited)[0], 1, server.output())
  return server.output()
}

test('a bad admins value stops the server with a message naming the field', async (t) => {
  const [notAList, notNames, badName, noAccounts] = await Promise.all([
    refusedConfig(t, { admins: 'alice' }),
    refusedConfig(t, { admins: ['alice', 7] }),
    refusedConfig(t, { admins: ['alice', '   '] }),
    refusedConfig(t, { accounts: false, admins: ['alice'] }),
  ])
  assert.match(notAList, /admins: must be a list of account names/)
  assert.match(notNames, /admins\.1: must be a string/)
  assert.match(badName, /admins\.1: must not be empty/)
  assert.match(noAccounts, /admins: needs accounts: true/)
})

test('/auth/me says whether the account is one of the admins of the config, whatever the case of its name', async (t) => {
  const dir = await tempDir(t)
  const example = await runExample(t, await accountsConfig(dir, { sqlite: join(dir, 'chat.db') }, { admins: ['Root'] }))
  const admin = await register(example, 'ROOT')
  const member = await register(example, 'Rooted')
  assert.equal(admin.user.admin, true)
  assert.deepEqual(await me(example, admin.cookie), { user: { id: admin.user.id, name: 'ROOT', admin: true } })
  assert.deepEqual(await me(example, member.cookie), { user: { id: member.user.id, name: 'Rooted', admin: false } })
  const login = await post(example, '/auth/login', { name: 'root', password: PASSWORD })
  assert.deepEqual(await login.json(), { user: admin.user }, 'a sign-in answers the role too')
})

const REST_ACTIONS: RestAction[] = ['publish', 'kick', 'ban', 'unban', 'mute', 'unmute', 'moderation']

test('authorize allows a signed-in admin every action; a member and a guest get 403', async (t) => {
  const dir = await tempDir(t)
  const database = new Database(join(dir, 'accounts.db'))
  const accounts = new Accounts(new SqliteAccountStore(() => database), ['Root'])
  const app = Fastify()
  t.after(async () => {
    await app.close()
    database.close()
  })
  await app.register(accounts.routes, {})
  // The check as the plugin's moderation routes make it: allowed, or 403 in Fastify's error shape.
  app.post<{ Params: { action: RestAction } }>('/check/:action', async (request, reply) => {
    if (await accounts.authorize(request, request.params.action)) return { allowed: true }
    return reply.code(403).send({ statusCode: 403, error: 'Forbidden', message: 'not allowed' })
  })
  const base = await app.listen({ host: '127.0.0.1', port: 0 })
  const admin = await signUp(base, 'root', PASSWORD)
  const member = await signUp(base, 'Mallory', PASSWORD)
  for (const action of REST_ACTIONS) {
    const check = (cookie?: string) => fetch(`${base}/check/${action}`, { method: 'POST', headers: cookie === undefined ? {} : { cookie } })
    assert.equal((await check(admin.cookie)).status, 200, `admin, ${action}`)
    assert.equal((await check(member.cookie)).status, 403, `member, ${action}`)
    assert.equal((await check()).status, 403, `guest, ${action}`)
  }
  await fetch(`${base}/auth/logout`, { method: 'POST', headers: { cookie: admin.cookie } })
  assert.equal((await fetch(`${base}/check/kick`, { method: 'POST', headers: { cookie: admin.cookie } })).status, 403, 'a signed-out session is no admin')
})

test('with PostgreSQL, one account is one user on two servers, and outlives them', { skip: await skipUnlessPostgres() }, async (t) => {
  const database = `chat_accounts_${randomBytes(6).toString('hex')}`
  await asAdmin((admin) => admin.query(`CREATE DATABASE ${database}`))
  t.after(() => asAdmin((admin) => admin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`)))
  const url = new URL(POSTGRES_URL)
  url.pathname = `/${database}`
  const config = await accountsConfig(await tempDir(t), { postgres: url.href })
  const [one, two] = await Promise.all([runExample(t, config), runExample(t, config)])
  const { cookie, user } = await register(one, 'Judy')
  assert.deepEqual(await me(two, cookie), { user }, 'a session of one server is known to the other')
  assert.equal((await post(two, '/auth/register', { name: 'JUDY', password: PASSWORD })).status, 409)
  const wrong = await post(two, '/auth/login', { name: 'Judy', password: `${PASSWORD}x` })
  const unknown = await post(two, '/auth/login', { name: 'Nobody', password: PASSWORD })
  assert.deepEqual([wrong.status, await wrong.text()], [unknown.status, await unknown.text()])
  await oneUserInTwoConnections(t, two, cookie, user)
  assert.equal(await one.stop(), 0, one.output())
  assert.equal(await two.stop(), 0, two.output())
  const again = await runExample(t, config)
  const login = await post(again, '/auth/login', { name: 'judy', password: PASSWORD })
  assert.deepEqual([login.status, await login.json()], [200, { user }])
  assert.deepEqual(await me(again, cookie), { user }, 'the stored secret still signs the old session')
  assert.ok(!one.output().includes(PASSWORD) && !two.output().includes(PASSWORD))
})

/** Opens the home page of `base` and fills its sign-in form with `name` and `password`, without submitting. */
async function fillSignIn (page: Page, base: string, name: string, password: string): Promise<void> {
  await page.goto(base)
  await page.waitForSelector('#password-field:not([hidden])')
  await page.fill('#login-name', name)
  await page.fill('#login-password', password)
}

test('the home page registers, signs in, keeps the session across a reload, and signs out', { skip: skipUnlessChromium() }, async (t) => {
  const example = await onSqlite(t)
  const browser = await launchBrowser(t)
  const alice = await openPage(browser)
  await fillSignIn(alice.page, example.base, 'Alice', PASSWORD)
  await alice.page.click('#register-submit')
  await waitConnected(alice.page)
  await waitJoined(alice.page, 'lobby')
  assert.equal(await alice.page.textContent('#account-name'), 'Alice')
  assert.equal(await alice.page.evaluate(() => document.cookie.includes('chat_session')), false, 'the session cookie is HttpOnly')

  // Another browser: a wrong password is told, the right one gets Alice in as the same user.
  const laptop = await openPage(browser)
  await fillSignIn(laptop.page, example.base, 'alice', `${PASSWORD}x`)
  await laptop.page.press('#login-password', 'Enter')
  await laptop.page.waitForSelector('#login-error:has-text("Wrong name or password")')
  await laptop.page.fill('#login-password', PASSWORD)
  await laptop.page.press('#login-password', 'Enter')
  await waitJoined(laptop.page, 'lobby')
  await laptop.page.waitForFunction(() => document.querySelector('#member-list .who')?.textContent === 'Alice (you) ×2')
  assert.deepEqual(await shownMembers(laptop.page), ['Alice (you) ×2'], 'one person, in two browsers')
  await say(laptop.page, 'from the laptop')
  await waitForMessage(alice.page, 'from the laptop')

  // A taken name, in another case, is refused on the page.
  const mallory = await openPage(browser)
  await fillSignIn(mallory.page, example.base, 'ALICE', PASSWORD)
  await mallory.page.click('#register-submit')
  await mallory.page.waitForSelector('#login-error:has-text("That name is taken")')
  assert.equal(await mallory.page.isHidden('#chat'), true)

  // A reload keeps the session: no form, straight into the chat.
  await alice.page.reload()
  await waitJoined(alice.page, 'lobby')
  assert.equal(await alice.page.isHidden('#login'), true)

  await alice.page.click('#sign-out')
  await alice.page.waitForSelector('#password-field:not([hidden])')
  assert.equal(await alice.page.isHidden('#account'), true)
  assert.deepEqual(await me(example), { user: null })
  for (const { errors, dialogs } of [alice, laptop, mallory]) assert.deepEqual([errors, dialogs], [[], []])
})
