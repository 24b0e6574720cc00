/**
 * The home page's people in Chromium, on the example server with accounts:
 * one person in two tabs listed once, read markers clearing badges in every
 * tab, an admin's kick and ban and what the removed person's page says.
 */
import { describe, test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Browser, Page } from 'playwright-core'
import { homePage, startExample, tempDir } from './helpers/example-server.js'
import { freePort } from './helpers/free-port.js'
import {
  joinRoom, launchBrowser, openPage, say, shownMembers, skipUnlessChromium, switchRoom, unreadBadge, waitConnected, waitForMessage, waitJoined,
} from './helpers/browser.js'

const skip = skipUnlessChromium()
/** Each test is done in seconds; this bounds a hung browser or server. */
const timeout = 60_000
const PASSWORD = 'correct horse battery'

/** The example server with accounts on and `admins`, on a fresh SQLite file; its home page URL. */
async function exampleWithAccounts (t: TestContext, admins: string[] = []): Promise<string> {
  const dir = await tempDir(t)
  const config = join(dir, 'config.json')
  await writeFile(config, JSON.stringify({ host: '127.0.0.1', port: 1, logLevel: 'warn', sqlite: join(dir, 'chat.db'), accounts: true, admins, chat: { rest: { prefix: '/api' } } }))
  const port = await freePort()
  const server = startExample({ CHAT_CONFIG: config, PORT: String(port) })
  t.after(async () => {
    server.child.kill('SIGKILL')
    await server.exited
  })
  assert.equal((await homePage(port))?.status, 200, server.output())
  return `http://127.0.0.1:${port}/`
}

interface Person { page: Page, errors: string[] }

/** An init script: the page's WebSockets, kept in `window.sockets`, so a test can drop the connection. */
function keepSockets (): void {
  const Native = window.WebSocket
  const sockets: WebSocket[] = []
  Object.assign(window, { sockets })
  window.WebSocket = class extends Native {
    constructor (...args: ConstructorParameters<typeof WebSocket>) {
      super(...args)
      sockets.push(this)
    }
  }
}

/** Drops the page's connection as a network blip would look to it (a close that is not final): it reconnects. */
async function dropConnection (page: Page): Promise<void> {
  await page.evaluate(() => (window as unknown as { sockets: WebSocket[] }).sockets.at(-1)?.close(4000, 'dropped by the test'))
}

/** A new browser context that registers `name` (or signs in, when it exists) and enters `room`. */
async function signedIn (browser: Browser, url: string, name: string, how: 'register' | 'login', room = 'lobby'): Promise<Person> {
  const { page, errors } = await openPage(browser)
  await page.addInitScript(keepSockets)
  await page.goto(url)
  await page.waitForSelector('#password-field:not([hidden])')
  await page.fill('#login-name', name)
  await page.fill('#login-password', PASSWORD)
  await page.fill('#login-room', room)
  await page.click(how === 'register' ? '#register-submit' : '#login-submit')
  await waitConnected(page)
  await waitJoined(page, room)
  return { page, errors }
}

/** The notices of the current room that say who came or went. */
async function comings (page: Page): Promise<string[]> {
  return page.$$eval('#messages li.notice', (items) => items.map((item) => item.textContent ?? '').filter((line) => / (joined|left)$/.test(line)))
}

async function membersAre (page: Page, expected: string[]): Promise<void> {
  await page.waitForFunction((wanted) => {
    const shown = [...document.querySelectorAll('#member-list li')].map((item) => (item.querySelector('.who') ?? item).textContent).sort()
    return JSON.stringify(shown) === JSON.stringify(wanted)
  }, [...expected].sort()).catch(() => {})
  assert.deepEqual(await shownMembers(page), [...expected].sort())
}

async function badgeIs (page: Page, room: string, expected: string): Promise<void> {
  await page.waitForFunction(({ room, expected }) =>
    (document.querySelector(`#room-list button[data-room="${room}"] .unread`)?.textContent ?? '') === expected, { room, expected }).catch(() => {})
  assert.equal(await unreadBadge(page, room), expected, `${room}'s badge`)
}

describe('people on the home page in Chromium (the example server with accounts)', { skip }, () => {
  test('one account in two browsers: listed once with ×2, joined and left said once, and reading in one clears the badge in both', { timeout }, async (t) => {
    const url = await exampleWithAccounts(t)
    const browser = await launchBrowser(t)
    const bob = await signedIn(browser, url, 'bob', 'register')
    const alice1 = await signedIn(browser, url, 'alice', 'register')
    const alice2 = await signedIn(browser, url, 'alice', 'login')

    await membersAre(bob.page, ['alice ×2', 'bob (you)'])
    await membersAre(alice1.page, ['alice (you) ×2', 'bob'])
    await membersAre(alice2.page, ['alice (you) ×2', 'bob'])
    assert.equal(await bob.page.textContent('#members-title'), 'Members (2)', 'people, not connections')
    assert.deepEqual(await comings(bob.page), ['alice joined'], 'her second browser is no new person')

    // Both of Alice's browsers are in `random` but look at the lobby: what Bob says there is unread in both.
    for (const alice of [alice1, alice2]) {
      await joinRoom(alice.page, 'random')
      await switchRoom(alice.page, 'lobby')
    }
    await joinRoom(bob.page, 'random')
    await say(bob.page, 'r1')
    await say(bob.page, 'r2')
    for (const alice of [alice1, alice2]) await badgeIs(alice.page, 'random', '2')
    await switchRoom(alice1.page, 'random')
    await waitForMessage(alice1.page, 'r2')
    await badgeIs(alice1.page, 'random', '')
    await badgeIs(alice2.page, 'random', '')

    // The marker is the server's: a reloaded page (a new connection) counts only what came after it.
    await switchRoom(alice1.page, 'lobby')
    await say(bob.page, 'r3')
    for (const alice of [alice1, alice2]) await badgeIs(alice.page, 'random', '1')
    await alice2.page.reload()
    await waitConnected(alice2.page)
    await waitJoined(alice2.page, 'lobby')
    await badgeIs(alice2.page, 'random', '1')
    await switchRoom(alice1.page, 'random')
    await badgeIs(alice2.page, 'random', '')

    await switchRoom(bob.page, 'lobby')
    await alice2.page.context().close()
    await membersAre(bob.page, ['alice', 'bob (you)']) // drawn with the leave's notice, if it had one
    assert.deepEqual(await comings(bob.page), ['alice joined'], 'one of her browsers going is no leaving')
    await alice1.page.context().close()
    await membersAre(bob.page, ['bob (you)'])
    await bob.page.waitForSelector('#messages li.notice:text("alice left")')
    assert.deepEqual(await comings(bob.page), ['alice joined', 'alice left'])
    assert.deepEqual([...bob.errors, ...alice1.errors, ...alice2.errors], [])
  })

  test('an admin mutes, kicks, bans and unbans a member: the member\'s page says so each time and does not rejoin while banned', { timeout }, async (t) => {
    const url = await exampleWithAccounts(t, ['root'])
    const browser = await launchBrowser(t)
    const root = await signedIn(browser, url, 'root', 'register')
    const mallory = await signedIn(browser, url, 'mallory', 'register')
    await membersAre(root.page, ['mallory', 'root (you)'])
    assert.equal(await mallory.page.locator('#member-list details.moderate').count(), 0, 'only admins see the controls')

    // Muted for 10 minutes (the first choice): her messages are refused, and the admin sees the mute until lifted.
    const controls = root.page.locator('#member-list li[data-user] details.moderate')
    await controls.locator('summary').click()
    await controls.locator('button[data-action="mute"]').click()
    await root.page.waitForSelector('#messages li.notice:text("You muted mallory for 10 minutes.")')
    await root.page.waitForSelector('#restriction-list li[data-user] .what:text("muted until")')
    await say(mallory.page, 'can anyone hear me?')
    await mallory.page.waitForSelector('#messages li.notice:text("Not sent (forbidden)")')
    await controls.locator('button[data-action="unmute"]').click()
    await root.page.waitForSelector('#messages li.notice:text("You unmuted mallory.")')
    await root.page.waitForSelector('#restriction-list li:text("Nobody")')
    await say(mallory.page, 'and now?')
    await waitForMessage(root.page, 'and now?')

    await controls.locator('button[data-action="kick"]').click()
    await mallory.page.waitForSelector('#messages li.notice:text("You were removed from #lobby by a moderator.")')
    await root.page.waitForSelector('#messages li.notice:text("You removed mallory.")')
    await membersAre(root.page, ['root (you)'])
    assert.equal(await mallory.page.isDisabled('#text'), true, 'no writing to a room one is not in')

    // A kicked person may come back; then a ban of an hour removes them and keeps them out.
    await mallory.page.fill('#join-room', 'lobby')
    await mallory.page.press('#join-room', 'Enter')
    await membersAre(root.page, ['mallory', 'root (you)'])
    const again = root.page.locator('#member-list li[data-user] details.moderate')
    await again.locator('summary').click()
    await again.locator('select').selectOption({ label: '1 hour' })
    await again.locator('button[data-action="ban"]').click()
    await mallory.page.waitForSelector('#messages li.notice:text("You were banned from #lobby by a moderator.")')
    await root.page.waitForSelector('#messages li.notice:text("You banned mallory for 1 hour.")')
    assert.match(await mallory.page.getAttribute('#room-list button[data-room="lobby"]', 'class') ?? '', /removed/)

    // Her page stays out across a reconnect (a reload would not rejoin it either: it is no longer remembered).
    await dropConnection(mallory.page)
    await mallory.page.waitForSelector('#status[data-status="reconnecting"]')
    await waitConnected(mallory.page) // open: every room the client kept is rejoined, or refused with an error
    assert.deepEqual(await mallory.page.$$eval('#messages li.notice', (items) => items.map((item) => item.textContent).filter((line) => line?.startsWith('Error'))), [],
      'no rejoin was tried (the ban would refuse it)')
    await membersAre(root.page, ['root (you)'])
    assert.deepEqual(await mallory.page.evaluate(() => JSON.parse(localStorage.getItem('chat-rooms.rooms') ?? '[]')), [])
    // And the server refuses her if she asks.
    await mallory.page.fill('#join-room', 'lobby')
    await mallory.page.press('#join-room', 'Enter')
    await mallory.page.waitForSelector('#messages li.notice:text("Could not join lobby")')

    // The admin sees the ban in force and lifts it; then she may come back.
    const banned = root.page.locator('#restriction-list li[data-user]')
    await banned.locator('.what:text("banned until")').waitFor()
    assert.equal(await banned.locator('.who').textContent(), 'mallory')
    await banned.locator('button[data-action="unban"]').click()
    await root.page.waitForSelector('#messages li.notice:text("You unbanned mallory.")')
    await root.page.waitForSelector('#restriction-list li:text("Nobody")')
    await mallory.page.fill('#join-room', 'lobby')
    await mallory.page.press('#join-room', 'Enter')
    await membersAre(root.page, ['mallory', 'root (you)'])
    assert.equal(await mallory.page.isDisabled('#text'), false)
    assert.deepEqual([...root.errors, ...mallory.errors], [])
  })
})
