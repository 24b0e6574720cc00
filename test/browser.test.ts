/**
 * The home page in a real browser (Debian's Chromium): two people chatting,
 * a server restart under open pages, origin checks and HTML injection, and a
 * phone-width screen with the keyboard.
 */
import { describe, test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import Fastify, { type FastifyInstance } from 'fastify'
import chatRooms, { MemoryBroker, type ChatRoomsOptions } from '../lib/index.js'
import { startServer } from './helpers/server.js'
import { sleep } from './helpers/client.js'
import {
  enterChat, joinRoom, launchBrowser, openPage, say, shownMembers, shownMessages, skipUnlessChromium,
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
