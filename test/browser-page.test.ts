/**
 * What the home page makes of messages and rooms, in Chromium: links that are
 * anchors (http and https only), one header per run of one person's messages,
 * the server's list of rooms to pick from, and a 390 px phone screen where the
 * connection status and the composer stay in view.
 */
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import type { Page } from 'playwright-core'
import { MemoryBroker } from '../lib/index.js'
import { startServer } from './helpers/server.js'
import { sleep } from './helpers/client.js'
import { enterChat, launchBrowser, openPage, say, shownMessages, skipUnlessChromium, waitForMessage, waitJoined } from './helpers/browser.js'

const skip = skipUnlessChromium()
/** Each test is done in seconds; this bounds a hung browser. */
const timeout = 60_000

/** Whether `selector`'s box lies wholly inside the page's viewport. */
async function inView (page: Page, selector: string): Promise<boolean> {
  return page.$eval(selector, (node) => {
    const box = node.getBoundingClientRect()
    return box.width > 0 && box.top >= 0 && box.left >= 0 && box.bottom <= window.innerHeight && box.right <= window.innerWidth
  })
}

describe('messages and rooms on the home page in Chromium', { skip }, () => {
  test('http(s) addresses in a message are links that open apart from the page; anything else stays text', { timeout }, async (t) => {
    const { httpUrl } = await startServer(t)
    const browser = await launchBrowser(t)
    const { page, errors } = await openPage(browser)
    await enterChat(page, httpUrl, 'alice')
    const text = 'see https://example.com/a?b=1&c=<2>, (http://example.org/wiki/Foo_(bar)) and javascript:alert(1) or ftp://x.org.'
    await say(page, text)
    await waitForMessage(page, text)
    const links = await page.$$eval('#messages li[data-seq] .text a', (anchors) => anchors.map((a) => ({
      href: a.getAttribute('href'), text: a.textContent, rel: a.getAttribute('rel'), target: a.getAttribute('target'),
    })))
    assert.deepEqual(links, [
      { href: 'https://example.com/a?b=1&c=', text: 'https://example.com/a?b=1&c=', rel: 'noopener noreferrer', target: '_blank' },
      { href: 'http://example.org/wiki/Foo_(bar)', text: 'http://example.org/wiki/Foo_(bar)', rel: 'noopener noreferrer', target: '_blank' },
    ])
    assert.equal((await shownMessages(page))[0]?.text, text, 'the text reads as sent')
    assert.deepEqual(errors, [])
  })

  test('consecutive messages of one person share one header; another person or a notice starts a new one', { timeout }, async (t) => {
    const { httpUrl } = await startServer(t)
    const browser = await launchBrowser(t)
    const alice = await openPage(browser)
    const bob = await openPage(browser)
    await enterChat(alice.page, httpUrl, 'alice')
    for (const line of ['a1', 'a2', 'a3']) await say(alice.page, line)
    await waitForMessage(alice.page, 'a3')
    await enterChat(bob.page, httpUrl, 'bob') // a notice on Alice's page: "bob joined"
    await say(alice.page, 'a4')
    await waitForMessage(bob.page, 'a4')
    await say(bob.page, 'b1')
    await say(bob.page, 'b2')
    await say(alice.page, 'a5')
    for (const { page } of [alice, bob]) await waitForMessage(page, 'a5')
    const headers = (page: Page) => page.$$eval('#messages li[data-seq]', (items) => items.map((item) => [
      item.querySelector('.text')?.textContent, getComputedStyle(item.querySelector('.from') as Element).display !== 'none',
    ]))
    assert.deepEqual(await headers(alice.page),
      [['a1', true], ['a2', false], ['a3', false], ['a4', true], ['b1', true], ['b2', false], ['a5', true]])
    // Bob's page has the first three as join history, then the notice of his own join is not there: a4 continues them.
    assert.deepEqual(await headers(bob.page),
      [['a1', true], ['a2', false], ['a3', false], ['a4', false], ['b1', true], ['b2', false], ['a5', true]])
    assert.deepEqual([...alice.errors, ...bob.errors], [])
  })

  test('the rooms that exist are listed from the HTTP API, a page at a time, and picking one joins it', { timeout }, async (t) => {
    const broker = new MemoryBroker()
    const { httpUrl } = await startServer(t, { broker, rest: { prefix: '/api' } })
    // Sixty rooms with someone in each, on "another node": more than one page of the list.
    const names = Array.from({ length: 60 }, (_, i) => `room-${String(i).padStart(2, '0')}`)
    for (const room of names) {
      await broker.publish(room, { type: 'presence', room, action: 'join', member: { id: `m-${room}`, user: `m-${room}`, name: 'someone' }, first: true })
    }
    const browser = await launchBrowser(t)
    const { page, errors } = await openPage(browser)
    await enterChat(page, httpUrl, 'alice')
    const listed = () => page.$$eval('#directory-list button', (buttons) => buttons.map((button) => (button as HTMLElement).dataset.room))
    await page.click('#directory-refresh') // with the lobby, now that we are in it: it comes first
    await page.waitForSelector('#directory-list button[data-room="lobby"]')
    await page.waitForSelector('#directory-list button[data-room="room-48"]')
    assert.equal((await listed()).length, 50, 'one page')
    await page.click('#directory-more')
    await page.waitForSelector('#directory-list button[data-room="room-59"]')
    assert.deepEqual((await listed()).filter((room) => room?.startsWith('room-')), names)
    assert.equal(await page.isHidden('#directory-more'), true, 'no more pages')

    await page.click('#directory-list button[data-room="room-07"]')
    await waitJoined(page, 'room-07')
    await page.click('#directory-refresh')
    await page.waitForSelector('#directory-list button[data-room="room-07"] .count:text-is("2")')
    assert.deepEqual(errors, [])
  })

  test('a 390 × 844 phone: no sideways scroll, and the status and composer stay in view with many rooms and a long talk', { timeout }, async (t) => {
    const { app, httpUrl } = await startServer(t, { rest: { prefix: '/api' } })
    const browser = await launchBrowser(t)
    const { page, errors } = await openPage(browser, { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true })
    await enterChat(page, httpUrl, 'a rather long name for a phone')
    for (let i = 1; i <= 12; i++) {
      await page.fill('#join-room', `a-room-with-a-long-name-${i}`)
      await page.press('#join-room', 'Enter')
    }
    await page.click('#room-list button[data-room="lobby"]')
    for (let i = 1; i <= 40; i++) await app.hub.broadcast('lobby', `line ${i}: https://example.com/${'x'.repeat(i * 3)}`)
    await waitForMessage(page, `line 40: https://example.com/${'x'.repeat(120)}`)
    await sleep(100)
    const fits = () => page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth && document.body.scrollWidth <= window.innerWidth)
    assert.ok(await fits(), 'nothing wider than the screen')
    for (const selector of ['#status', '#text', '#composer button', '#messages li[data-seq]:last-child']) {
      assert.ok(await inView(page, selector), `${selector} is in view`)
    }
    // The members open over the conversation and close again.
    assert.equal(await page.isHidden('#member-list'), true)
    await page.tap('#members-toggle')
    await page.waitForSelector('#member-list li:has-text("(you)")')
    assert.ok(await inView(page, '#member-list li'), 'the members list is in view')
    await page.tap('#members-close')
    await page.waitForSelector('#member-list', { state: 'hidden' })
    await page.tap('#text')
    await page.keyboard.type('from the phone')
    await page.keyboard.press('Enter')
    await waitForMessage(page, 'from the phone')
    assert.ok(await fits(), 'still nothing wider than the screen')
    for (const selector of ['#status', '#text']) assert.ok(await inView(page, selector), `${selector} is still in view`)
    assert.deepEqual(errors, [])
  })
})
