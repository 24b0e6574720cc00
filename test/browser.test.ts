/**
 * The home page in a real browser (Debian's Chromium): two people chatting,
 * server restarts under open pages (one broker across two instances, and the
 * example server's own process on its SQLite file, killed and restarted),
 * origin checks and HTML injection, and a phone-width screen with the keyboard.
 */
import { describe, test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { isDeepStrictEqual } from 'node:util'
import type { Page } from 'playwright-core'
import Fastify, { type FastifyInstance } from 'fastify'
import chatRooms, { MemoryBroker, type ChatRoomsOptions } from '../lib/index.js'
import { startServer } from './helpers/server.js'
import { sleep } from './helpers/client.js'
import { type ExampleServer, homePage, startExample } from './helpers/example-server.js'
import { freePort } from './helpers/free-port.js'
import {
  WAIT_MS, enterChat, joinRoom, launchBrowser, openPage, say, sayAtOnce, shownMembers, shownMessages, skipUnlessChromium,
  switchRoom, unreadBadge, waitConnected, waitForMessage, waitJoined,
} from './helpers/browser.js'

const skip = skipUnlessChromium()

/** A chat server on a chosen port (0: any), so a test can stop it and start another on the same port. */
async function listenChat (t: TestContext, port: number, options: ChatRoomsOptions): Promise<{ app: FastifyInstance, port: number }> {
  const app = Fastify({ logger: false })
  await app.register(chatRooms, options)
  await app.listen({ host: '127.0.0.1', port })
  t.after(() => app.close())
  return { app, port: (app.server.address() as AddressInfo).port }
}

/** Each test is done in seconds; this bounds a hung browser or a page that never reconnects. */
const timeout = 60_000

/**
 * An init script: the page's WebSocket, wrapped to record each close code in
 * `window.closeCodes`, so a test sees how the server went away (1001, or 1006 for a crash).
 */
function recordCloseCodes (): void {
  const Native = window.WebSocket
  const codes: number[] = []
  Object.assign(window, { closeCodes: codes })
  window.WebSocket = class extends Native {
    constructor (...args: ConstructorParameters<typeof WebSocket>) {
      super(...args)
      this.addEventListener('close', (event) => codes.push(event.code))
    }
  }
}

/** The page's window once `recordCloseCodes` ran. */
interface RecordingWindow { closeCodes: number[] }

/** From now on: a function that gives each page's first close code recorded after now (0 while none). */
async function firstClosesFromNow (pages: Array<{ page: Page }>): Promise<() => Promise<number[]>> {
  const readers = await Promise.all(pages.map(async ({ page }) => {
    const mark = await page.evaluate(() => (window as unknown as RecordingWindow).closeCodes.length)
    return () => page.evaluate((from) => (window as unknown as RecordingWindow).closeCodes[from] ?? 0, mark)
  }))
  return () => Promise.all(readers.map((read) => read()))
}

/** Polls `read` until it gives `expected` or WAIT_MS pass, then asserts it (a readable diff when it never did). */
async function until<T> (read: () => Promise<T>, expected: T, message: string): Promise<void> {
  const deadline = Date.now() + WAIT_MS
  let actual = await read()
  while (!isDeepStrictEqual(actual, expected) && Date.now() < deadline) {
    await sleep(50)
    actual = await read()
  }
  assert.deepEqual(actual, expected, message)
}

interface StoredMessage { seq: number, from: { name: string }, text: string }

/** What the server stored in `room`, from its HTTP API, oldest first. */
async function stored (port: number, room: string): Promise<StoredMessage[]> {
  const reply = await fetch(`http://127.0.0.1:${port}/api/rooms/${room}/messages?limit=100`)
  return (await reply.json() as { messages: StoredMessage[] }).messages
}

/** Waits until the server stored exactly `texts` in `room` (each once, any order), and checks their seqs run 1…n. */
async function storedOnce (port: number, room: string, texts: string[]): Promise<void> {
  await until(async () => (await stored(port, room)).map((m) => m.text).sort(), [...texts].sort(), `${room}: each message stored once`)
  assert.deepEqual((await stored(port, room)).map((m) => m.seq), texts.map((_, i) => i + 1), `${room}: seqs without holes`)
}

/** What a page shows of its current room, and the unread badges of all its rooms. */
async function shownRoom (page: Page) {
  return page.evaluate(() => {
    const all = (selector: string) => [...document.querySelectorAll<HTMLElement>(selector)]
    return {
      room: document.querySelector<HTMLElement>('#room-list button[aria-current="true"]')?.dataset.room,
      messages: all('#messages li[data-seq]').map((item) => [Number(item.dataset.seq), item.querySelector('.from')?.textContent, item.querySelector('.text')?.textContent]),
      pending: all('#messages li.pending').map((item) => item.querySelector('.text')?.textContent),
      // Who came and went is fine; anything else (history lost, messages missing, an error) is not.
      notices: all('#messages li.notice').map((item) => item.textContent ?? '').filter((line) => !/ (joined|left)$/.test(line)),
      members: all('#member-list li').map((item) => (item.querySelector('.who') ?? item).textContent).sort(),
      unread: Object.fromEntries(all('#room-list button').map((button) => [button.dataset.room, button.querySelector('.unread')?.textContent ?? ''])),
    }
  })
}

/**
 * Waits until `person`'s page shows `room` as the server stored it (each message once, in seq
 * order), nothing pending, no notice of loss, `members` (no ghost), and `unread`; then checks
 * again a moment later, when a duplicate would have come.
 */
async function showsResumed (person: { name: string, page: Page }, port: number, room: string, members: string[], unread: Record<string, string>): Promise<void> {
  const expected = {
    room,
    messages: (await stored(port, room)).map((m) => [m.seq, m.from.name, m.text]),
    pending: [],
    notices: [],
    members: members.map((name) => name === person.name ? `${name} (you)` : name).sort(),
    unread,
  }
  await until(() => shownRoom(person.page), expected, `${person.name} in ${room}`)
  await sleep(200)
  assert.deepEqual(await shownRoom(person.page), expected, `${person.name} in ${room}, a moment later`)
}

describe('the home page in Chromium', { skip }, () => {
  test('two people chat: both ways, members, typing, history on join, rooms with unread counts', { timeout }, async (t) => {
    const { httpUrl } = await startServer(t)
    const browser = await launchBrowser(t)
    const alice = await openPage(browser)
    const bob = await openPage(browser)

    await enterChat(alice.page, httpUrl, 'alice')
    await say(alice.page, 'hello, anyone?')
    await waitForMessage(alice.page, 'hello, anyone?')

    // Bob joins later and gets what was said before from the join's history.
    await enterChat(bob.page, httpUrl, 'bob')
    await waitForMessage(bob.page, 'hello, anyone?')
    await alice.page.waitForFunction(() => document.querySelectorAll('#member-list li').length === 2)
    assert.deepEqual(await shownMembers(alice.page), ['alice (you)', 'bob'])
    assert.deepEqual(await shownMembers(bob.page), ['alice', 'bob (you)'])

    await bob.page.fill('#text', 'hi ali')
    await alice.page.waitForSelector('#typing:text("bob is typing…")')
    await bob.page.press('#text', 'Enter')
    await waitForMessage(alice.page, 'hi ali')
    assert.equal(await alice.page.textContent('#typing'), '', 'a message ends its sender\'s typing')
    await bob.page.fill('#text', 'and')
    await alice.page.waitForSelector('#typing:text("bob is typing…")') // at once, not after the typing throttle
    await bob.page.fill('#text', '')
    await say(alice.page, 'hi bob')
    await waitForMessage(bob.page, 'hi bob')
    for (const { page } of [alice, bob]) {
      await waitForMessage(page, 'hi bob')
      assert.deepEqual((await shownMessages(page)).map(({ seq, from, text }) => [seq, from, text]),
        [[1, 'alice', 'hello, anyone?'], [2, 'bob', 'hi ali'], [3, 'alice', 'hi bob']])
    }

    // Both in a second room; Bob goes back to the lobby and what Alice says there waits as unread.
    await joinRoom(alice.page, 'random')
    await joinRoom(bob.page, 'random')
    await switchRoom(bob.page, 'lobby')
    await say(alice.page, 'one')
    await say(alice.page, 'two')
    await bob.page.waitForSelector('#room-list button[data-room="random"] .unread:text("2")')
    assert.equal(await unreadBadge(bob.page, 'lobby'), '')
    await switchRoom(bob.page, 'random')
    assert.equal(await unreadBadge(bob.page, 'random'), '', 'reading a room clears its count')
    assert.deepEqual((await shownMessages(bob.page)).map((m) => m.text), ['one', 'two'])
    assert.equal(await bob.page.evaluate(() => document.activeElement?.id), 'text', 'switching rooms puts focus in the composer')

    // Leaving shows in the other's members list.
    await bob.page.context().close()
    await alice.page.waitForFunction(() => document.querySelectorAll('#member-list li').length === 1)
    assert.deepEqual(await shownMembers(alice.page), ['alice (you)'])
    assert.deepEqual([...alice.errors, ...bob.errors], [])
  })

  test('a room with more members than one reply holds shows the count and "and N more"', { timeout }, async (t) => {
    const broker = new MemoryBroker()
    const { httpUrl } = await startServer(t, { broker, maxMembersInReply: 2 })
    for (let i = 0; i < 5; i++) {
      await broker.publish('lobby', { type: 'presence', room: 'lobby', action: 'join', member: { id: `member-${i}`, user: `member-${i}`, name: `member ${i}` } })
    }
    const browser = await launchBrowser(t)
    const alice = await openPage(browser)
    await enterChat(alice.page, httpUrl, 'alice')
    // Rendered as the joined frame is handled, which may come a moment after the page says it joined.
    await alice.page.waitForSelector('#members-title:text("Members (6)")')
    // Seen once under load: the list lacked "alice (you)" right after the join; wait for it, then say what was shown.
    await alice.page.waitForSelector('#member-list li:text-is("alice (you)")').catch(() => {})
    const shown = await shownMembers(alice.page)
    const listed = shown.filter((line) => !line.startsWith('and '))
    assert.ok(listed.includes('alice (you)'), JSON.stringify(shown))
    assert.deepEqual(shown.filter((line) => line.startsWith('and ')), [`and ${6 - listed.length} more`])
    await broker.publish('lobby', { type: 'presence', room: 'lobby', action: 'leave', member: { id: 'member-4', user: 'member-4', name: 'member 4' } })
    await alice.page.waitForSelector('#members-title:text("Members (5)")')
    assert.deepEqual(alice.errors, [])
  })

  test('a page the server refuses (authenticate) says so and stops, instead of retrying forever', { timeout }, async (t) => {
    const asked: string[] = []
    const { httpUrl } = await startServer(t, { authenticate: (request) => { asked.push(request.ws ? 'upgrade' : 'http'); return undefined } })
    const browser = await launchBrowser(t)
    const { page, errors } = await openPage(browser)
    await page.goto(httpUrl)
    await page.fill('#login-name', 'alice')
    await page.press('#login-name', 'Enter')
    await page.waitForSelector('#status[data-status="unauthorized"]')
    await sleep(1500) // past the client's first retry delays: a retry would ask again
    assert.deepEqual(asked, ['upgrade', 'http'], 'the refused upgrade, then the plain GET that tells the page why; no retry')
    assert.match(await page.textContent('#status') ?? '', /Not signed in/)
    assert.deepEqual(errors, [])
  })

  test('a server restart under open pages: both reconnect, nothing lost or shown twice', { timeout }, async (t) => {
    // One broker across both servers, as with Redis, so the history and seq survive the restart.
    const broker = new MemoryBroker()
    const first = await listenChat(t, 0, { broker })
    const url = `http://127.0.0.1:${first.port}/`
    const browser = await launchBrowser(t)
    const alice = await openPage(browser)
    const bob = await openPage(browser)
    await enterChat(alice.page, url, 'alice')
    await enterChat(bob.page, url, 'bob')
    await say(alice.page, 'a1')
    await say(bob.page, 'b1')
    await waitForMessage(alice.page, 'b1')

    // Said as the server goes down: stored before it, or retried after it with the same cid.
    await say(bob.page, 'b2 just before the restart')
    await first.app.close()
    for (const { page } of [alice, bob]) await page.waitForSelector('#status[data-status="reconnecting"]')
    await say(alice.page, 'a2 while the server is down')
    await alice.page.waitForSelector('#messages li.pending:has-text("a2 while the server is down")')

    await listenChat(t, first.port, { broker })
    for (const { page } of [alice, bob]) await waitConnected(page)
    await say(bob.page, 'b3 after the restart')

    const expected = ['a1', 'b1', 'b2 just before the restart', 'a2 while the server is down', 'b3 after the restart']
    for (const { page } of [alice, bob]) {
      for (const text of expected) await waitForMessage(page, text)
      await sleep(200) // a duplicate would come right after
      const shown = await shownMessages(page)
      assert.deepEqual(shown.map((m) => m.seq), [1, 2, 3, 4, 5], 'each seq once, in order')
      assert.deepEqual(shown.map((m) => m.text).sort(), [...expected].sort(), 'each message once')
      assert.deepEqual((await shownMembers(page)).map((name) => name.replace(' (you)', '')), ['alice', 'bob'], 'no member left over from before')
      assert.equal(await page.locator('#messages li.pending').count(), 0, 'no "sending…" left')
    }
    assert.deepEqual(await alice.page.$$eval('#messages li.mine .text', (nodes) => nodes.map((node) => node.textContent)),
      ['a1', 'a2 while the server is down'], 'our messages from before the reconnect are still marked ours')
    assert.deepEqual([...alice.errors, ...bob.errors], [])
  })

  test('a restart that loses the history: the page says so and follows the new stream', { timeout }, async (t) => {
    const first = await listenChat(t, 0, { broker: new MemoryBroker() })
    const browser = await launchBrowser(t)
    const alice = await openPage(browser)
    await enterChat(alice.page, `http://127.0.0.1:${first.port}/`, 'alice')
    await say(alice.page, 'old 1')
    await say(alice.page, 'old 2')
    await waitForMessage(alice.page, 'old 2')
    await first.app.close()
    const second = await listenChat(t, first.port, { broker: new MemoryBroker() })
    await waitConnected(alice.page)
    await second.app.hub.broadcast('lobby', 'new 1')
    await waitForMessage(alice.page, 'new 1')
    assert.deepEqual((await shownMessages(alice.page)).map((m) => [m.seq, m.text]), [[1, 'new 1']])
    assert.deepEqual(await alice.page.$$eval('#messages li', (items) => items.map((item) => item.className || item.querySelector('.text')?.textContent)),
      ['notice', 'new 1'], 'the notice comes before the new stream')
    assert.match(await alice.page.textContent('#messages li.notice') ?? '', /lost this room's history/)
    await joinRoom(alice.page, 'elsewhere')
    await switchRoom(alice.page, 'lobby') // drawn again from the page's state
    assert.deepEqual(await alice.page.$$eval('#messages li', (items) => items.map((item) => item.className || item.querySelector('.text')?.textContent)),
      ['notice', 'new 1'])
    assert.deepEqual(alice.errors, [])
  })

  test('the example server with SQLite, killed and then restarted gracefully under open pages: every page resumes every room', { timeout }, async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'chat-browser-'))
    t.after(() => rm(dir, { recursive: true, force: true }))
    const config = join(dir, 'config.json')
    await writeFile(config, JSON.stringify({ host: '127.0.0.1', port: 1, logLevel: 'warn', sqlite: join(dir, 'chat.db'), chat: { rest: { prefix: '/api' } } }))
    const port = await freePort()
    /** A new server process on the same port and file: only the file carries the chat from one to the next. */
    async function startServerProcess (): Promise<ExampleServer> {
      const server = startExample({ CHAT_CONFIG: config, PORT: String(port) })
      t.after(() => server.child.kill('SIGKILL'))
      assert.equal((await homePage(port))?.status, 200, server.output())
      return server
    }
    let server = await startServerProcess()
    const url = `http://127.0.0.1:${port}/`
    const browser = await launchBrowser(t)
    const person = async (name: string) => ({ name, ...await openPage(browser) })
    const alice = await person('alice')
    const bob = await person('bob')
    const carol = await person('carol')
    const everyone = [alice, bob, carol]
    for (const { page } of everyone) await page.addInitScript(recordCloseCodes)
    for (const { page, name } of everyone) await enterChat(page, url, name)
    // Bob and Carol are also in `random` and `quiet`; Carol keeps looking at the lobby, so what comes there is unread.
    for (const { page } of [bob, carol]) {
      await joinRoom(page, 'random')
      await joinRoom(page, 'quiet')
      await switchRoom(page, 'lobby')
    }

    await switchRoom(bob.page, 'random')
    await say(bob.page, 'r1')
    await say(bob.page, 'r2')
    await switchRoom(bob.page, 'lobby')
    await say(alice.page, 'a1')
    await waitForMessage(bob.page, 'a1')
    await say(bob.page, 'b1')
    await waitForMessage(carol.page, 'b1')
    await say(carol.page, 'c1')
    for (const { page } of everyone) await waitForMessage(page, 'c1')
    await carol.page.waitForSelector('#room-list button[data-room="random"] .unread:text("2")')

    // A crash right after an ack, with Bob's burst on the wire: each of it is stored and not
    // acked, or not stored at all, and comes back with its cid after the restart.
    await switchRoom(bob.page, 'random')
    let firstCloses = await firstClosesFromNow(everyone)
    await say(alice.page, 'a2')
    await waitForMessage(alice.page, 'a2')
    await sayAtOnce(bob.page, ['r3', 'r4', 'r5', 'r6'])
    server.child.kill('SIGKILL')
    assert.equal((await server.exited)[1], 'SIGKILL')
    for (const { page } of everyone) await page.waitForSelector('#status[data-status="reconnecting"]')
    await say(alice.page, 'a3 while the server is down')
    await say(carol.page, 'c2 while the server is down')
    await alice.page.waitForSelector('#messages li.pending:has-text("a3 while the server is down")')
    await carol.page.waitForSelector('#messages li.pending:has-text("c2 while the server is down")')

    server = await startServerProcess()
    for (const { page } of everyone) await waitConnected(page)
    assert.deepEqual(await firstCloses(), [1006, 1006, 1006], 'a crash: no close frame')
    const lobby = ['a1', 'b1', 'c1', 'a2', 'a3 while the server is down', 'c2 while the server is down']
    const random = ['r1', 'r2', 'r3', 'r4', 'r5', 'r6']
    await storedOnce(port, 'lobby', lobby)
    await storedOnce(port, 'random', random)
    const lobbyMembers = ['alice', 'bob', 'carol']
    const pairMembers = ['bob', 'carol']
    // Bob looked at `random` since b1: the lobby's a2, a3 and c2 are unread there; Carol never looked at `random`.
    await showsResumed(alice, port, 'lobby', lobbyMembers, { lobby: '' })
    await showsResumed(bob, port, 'random', pairMembers, { lobby: '3', random: '', quiet: '' })
    await showsResumed(carol, port, 'lobby', lobbyMembers, { lobby: '', random: '6', quiet: '' })
    await switchRoom(carol.page, 'random')
    await showsResumed(carol, port, 'random', pairMembers, { lobby: '', random: '', quiet: '' })
    await switchRoom(bob.page, 'lobby')
    await showsResumed(bob, port, 'lobby', lobbyMembers, { lobby: '', random: '', quiet: '' })
    await switchRoom(carol.page, 'lobby')
    await switchRoom(bob.page, 'random')

    // A graceful restart (1001). Carol stays offline until the others are back and Bob's message,
    // the first ever in `quiet`, is stored: she learns of it only by resuming, and it is unread.
    await say(bob.page, 'r7')
    await say(alice.page, 'a4')
    await waitForMessage(bob.page, 'r7')
    await waitForMessage(alice.page, 'a4')
    firstCloses = await firstClosesFromNow(everyone)
    server.child.kill('SIGTERM')
    for (const { page } of everyone) await page.waitForSelector('#status[data-status="reconnecting"]')
    await carol.page.context().setOffline(true)
    await switchRoom(bob.page, 'quiet')
    await say(bob.page, 'q1 while the server is down')
    await bob.page.waitForSelector('#messages li.pending:has-text("q1 while the server is down")')
    assert.equal((await server.exited)[0], 0, server.output())

    await startServerProcess()
    for (const { page } of [alice, bob]) await waitConnected(page)
    await storedOnce(port, 'quiet', ['q1 while the server is down'])
    assert.equal(await carol.page.getAttribute('#status', 'data-status'), 'reconnecting', 'Carol was offline all along')
    await carol.page.context().setOffline(false)
    await waitConnected(carol.page)
    assert.deepEqual(await firstCloses(), [1001, 1001, 1001], 'going away')
    lobby.push('a4')
    random.push('r7')
    await storedOnce(port, 'lobby', lobby)
    await storedOnce(port, 'random', random)
    await showsResumed(alice, port, 'lobby', lobbyMembers, { lobby: '' })
    await showsResumed(bob, port, 'quiet', pairMembers, { lobby: '1', random: '', quiet: '' })
    await showsResumed(carol, port, 'lobby', lobbyMembers, { lobby: '', random: '1', quiet: '1' })
    await switchRoom(carol.page, 'random')
    await showsResumed(carol, port, 'random', pairMembers, { lobby: '', random: '', quiet: '1' })
    await switchRoom(carol.page, 'quiet')
    await showsResumed(carol, port, 'quiet', pairMembers, { lobby: '', random: '', quiet: '' })
    for (const room of ['lobby', 'random']) {
      await switchRoom(bob.page, room)
      await showsResumed(bob, port, room, room === 'lobby' ? lobbyMembers : pairMembers, { lobby: '', random: '', quiet: '' })
    }
    assert.deepEqual(everyone.flatMap(({ errors }) => errors), [])
  })

  test('older history loads on scrolling up; after a reload, history is not counted as unread', { timeout }, async (t) => {
    const { app, httpUrl } = await startServer(t, { historyOnJoin: 5 })
    for (let i = 1; i <= 120; i++) await app.hub.broadcast('lobby', `old ${i}`)
    await app.hub.broadcast('random', 'said before anyone came')
    const browser = await launchBrowser(t)
    const { page, errors } = await openPage(browser)
    await enterChat(page, httpUrl, 'alice')
    // Five messages do not fill the list, so more load at once, without a scroll event.
    await page.waitForFunction(() => {
      const list = document.getElementById('messages') as HTMLElement
      return list.scrollHeight > list.clientHeight
    })
    for (let tries = 0; (await shownMessages(page)).length < 120 && tries < 20; tries++) {
      await page.$eval('#messages', (list) => { list.scrollTop = 0 })
      await sleep(100)
    }
    assert.deepEqual((await shownMessages(page)).map((m) => m.seq), Array.from({ length: 120 }, (_, i) => i + 1))

    await joinRoom(page, 'random')
    await switchRoom(page, 'lobby')
    await page.reload()
    await page.press('#login-name', 'Enter') // the name and rooms are remembered
    await waitJoined(page, 'lobby')
    while ((await app.hub.members('random')).length === 0) await sleep(20) // rejoined: what comes now is live
    assert.equal(await unreadBadge(page, 'random'), '', 'what was said before we came is not unread')
    await app.hub.broadcast('random', 'new')
    await page.waitForSelector('#room-list button[data-room="random"] .unread:text("1")')
    assert.deepEqual(errors, [])
  })

  test('a page of another origin is refused (403) by default and admitted when allowed', { timeout }, async (t) => {
    // A tiny site on another port, whose script opens a WebSocket to the chat server named in its query.
    const site = createServer((_request, response) => {
      response.setHeader('content-type', 'text/html; charset=utf-8')
      response.end(`<!doctype html><title>elsewhere</title><script>
        window.events = []
        const socket = new WebSocket(new URLSearchParams(location.search).get('ws'))
        socket.onopen = () => events.push('open')
        socket.onmessage = (event) => events.push('message:' + JSON.parse(event.data).type)
        socket.onerror = () => events.push('error')
        socket.onclose = (event) => events.push('close:' + event.code)
      </script>`)
    })
    await new Promise<void>((resolve) => site.listen(0, '127.0.0.1', resolve))
    t.after(() => new Promise((resolve) => site.close(resolve)))
    const origin = `http://127.0.0.1:${(site.address() as AddressInfo).port}`
    const browser = await launchBrowser(t)

    async function tryFromElsewhere (options: ChatRoomsOptions): Promise<{ events: string[], statuses: number[] }> {
      const statuses: number[] = []
      const { wsUrl } = await startServer(t, options, async (app) => {
        app.addHook('onResponse', async (request, reply) => { if (request.url.startsWith('/ws')) statuses.push(reply.statusCode) })
      })
      const { page } = await openPage(browser)
      await page.goto(`${origin}/?ws=${encodeURIComponent(wsUrl)}`)
      await page.waitForFunction(() => (window as unknown as { events: string[] }).events.some((e) => e.startsWith('close:') || e === 'message:welcome'))
      const events = await page.evaluate(() => (window as unknown as { events: string[] }).events)
      await page.context().close()
      return { events, statuses }
    }

    const refused = await tryFromElsewhere({})
    assert.deepEqual(refused.statuses, [403])
    assert.ok(!refused.events.includes('open'), `never opened: ${refused.events.join(' ')}`)
    assert.deepEqual(refused.events, ['error', 'close:1006'])

    const admitted = await tryFromElsewhere({ allowedOrigins: [origin] })
    assert.deepEqual(admitted.events, ['open', 'message:welcome'])
  })

  test('names and messages with HTML or script show as text and run nothing', { timeout }, async (t) => {
    const { httpUrl } = await startServer(t)
    const browser = await launchBrowser(t)
    const alice = await openPage(browser)
    const mallory = await openPage(browser)
    const evilName = '<img src=x onerror=alert(1)>'
    const evilTexts = [
      '<img src=x onerror="window.__pwned=\'img\'">',
      '<script>window.__pwned=\'script\'</script>',
      '<svg onload="window.__pwned=\'svg\'"></svg>',
      '<iframe srcdoc="<script>parent.__pwned=\'iframe\'</script>"></iframe>',
      '<b>bold?</b> &amp; &lt;',
    ]
    await enterChat(alice.page, httpUrl, 'alice')
    await enterChat(mallory.page, httpUrl, evilName)
    await mallory.page.fill('#text', 'typing…')
    await alice.page.waitForSelector('#typing:text("is typing")')
    assert.equal(await alice.page.textContent('#typing'), `${evilName} is typing…`)
    for (const text of evilTexts) await say(mallory.page, text)
    await mallory.page.fill('#name-input', '<script>alert(2)</script>')
    await mallory.page.press('#name-input', 'Enter')

    for (const { page } of [alice, mallory]) {
      await page.waitForFunction((count) => document.querySelectorAll('#messages li[data-seq]').length === count, evilTexts.length)
      assert.deepEqual((await shownMessages(page)).map((m) => [m.from, m.text]), evilTexts.map((text) => [evilName, text]))
    }
    await alice.page.waitForSelector('#messages li.notice:text("is now")')
    assert.deepEqual(await alice.page.$$eval('#messages li.notice', (items) => items.map((item) => item.textContent)),
      [`${evilName} joined`, `${evilName} is now <script>alert(2)</script>`])
    assert.deepEqual(await shownMembers(alice.page), ['<script>alert(2)</script>', 'alice (you)'])
    await sleep(300) // an injected image would fail to load and fire onerror by now
    for (const { page, errors, dialogs } of [alice, mallory]) {
      assert.equal(await page.$$eval('#chat img, #chat script, #chat svg, #chat iframe, #chat b', (nodes) => nodes.length), 0)
      assert.equal(await page.evaluate(() => (window as unknown as { __pwned?: string }).__pwned), undefined)
      assert.deepEqual(dialogs, [])
      assert.deepEqual(errors, [])
    }
  })

  test('phone width: the page fits, Enter sends, Shift+Enter breaks the line, focus is in the composer', { timeout }, async (t) => {
    const { app, httpUrl } = await startServer(t)
    const browser = await launchBrowser(t)
    const phone = await openPage(browser, { viewport: { width: 390, height: 800 }, isMobile: true, hasTouch: true })
    const desk = await openPage(browser)
    await enterChat(phone.page, httpUrl, 'pat')
    await enterChat(desk.page, httpUrl, 'dee')
    assert.equal(await phone.page.evaluate(() => document.activeElement?.id), 'text', 'entering puts focus in the composer')
    assert.ok(await phone.page.evaluate(() => document.documentElement.scrollWidth <= 390), 'nothing wider than the screen')

    await phone.page.keyboard.type('first line')
    await phone.page.keyboard.press('Shift+Enter')
    await phone.page.keyboard.type('second line')
    await phone.page.keyboard.press('Enter')
    await waitForMessage(desk.page, 'first line\nsecond line')
    await waitForMessage(phone.page, 'first line\nsecond line')
    assert.equal(await phone.page.inputValue('#text'), '', 'the composer is emptied')
    assert.equal(await phone.page.evaluate(() => document.activeElement?.id), 'text', 'and keeps focus')

    // A long talk scrolls inside the conversation: the newest line and the composer stay on screen.
    for (let i = 1; i <= 30; i++) await app.hub.broadcast('lobby', `line ${i}`)
    await say(desk.page, 'read me on a phone')
    await waitForMessage(phone.page, 'read me on a phone')
    await sleep(100)
    for (const selector of ['#messages li[data-seq]:last-child', '#text']) {
      const box = await phone.page.locator(selector).boundingBox()
      assert.ok(box && box.y >= 0 && box.y + box.height <= 800, `${selector} is on screen: ${JSON.stringify(box)}`)
    }
    for (const selector of ['#messages li[data-seq]:last-child', '#text', '#composer button']) {
      const box = await phone.page.locator(selector).boundingBox()
      assert.ok(box && box.x >= 0 && box.x + box.width <= 390, `${selector} fits the width: ${JSON.stringify(box)}`)
    }
    await phone.page.locator('#text').fill('tapped')
    await phone.page.locator('#composer button').tap()
    await waitForMessage(desk.page, 'tapped')
    assert.deepEqual([...phone.errors, ...desk.errors], [])
  })
})
