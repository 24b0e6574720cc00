/**
 * Messages that change on the home page in Chromium, on the example server
 * with accounts and SQLite: two people react and edit, an author deletes, an
 * admin deletes anyone's message, and a reload and a server restart show the
 * same state.
 */
import { describe, test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { isDeepStrictEqual } from 'node:util'
import type { Browser, Page } from 'playwright-core'
import { sleep } from './helpers/client.js'
import { type ExampleServer, homePage, startExample, tempDir } from './helpers/example-server.js'
import { freePort } from './helpers/free-port.js'
import { WAIT_MS, launchBrowser, openPage, say, skipUnlessChromium, waitConnected, waitForMessage, waitJoined } from './helpers/browser.js'

const skip = skipUnlessChromium()
/** The test is done in well under a minute; this bounds a hung browser or server. */
const timeout = 90_000
const PASSWORD = 'correct horse battery'
/** How often a wait reads the page again. */
const POLL_MS = 50

interface Person { page: Page, errors: string[], dialogs: string[] }

/** A message item as a person sees it: what the tests compare between pages and across reloads. */
interface Shown {
  seq: number
  text: string
  edited: boolean
  deleted: boolean
  /** `👍 2*`: the reaction, its count, and `*` when it is ours (highlighted). */
  reactions: string[]
  /** The edit and delete controls offered. */
  actions: string[]
}

/** A new browser context that registers `name` and enters the lobby. */
async function register (browser: Browser, url: string, name: string): Promise<Person> {
  const person = await openPage(browser)
  await person.page.goto(url)
  await person.page.waitForSelector('#password-field:not([hidden])')
  await person.page.fill('#login-name', name)
  await person.page.fill('#login-password', PASSWORD)
  await person.page.click('#register-submit')
  await waitConnected(person.page)
  await waitJoined(person.page, 'lobby')
  return person
}

async function shown (page: Page): Promise<Shown[]> {
  return page.$$eval('#messages li[data-seq]', (items) => items.map((item) => ({
    seq: Number((item as HTMLElement).dataset.seq),
    text: item.querySelector('.text')?.textContent ?? '',
    edited: item.querySelector('.edited')?.textContent === '(edited)',
    deleted: item.classList.contains('deleted'),
    reactions: [...item.querySelectorAll<HTMLElement>('.reaction')]
      .map((button) => `${button.dataset.reaction} ${button.dataset.count}${button.getAttribute('aria-pressed') === 'true' ? '*' : ''}`),
    actions: [...item.querySelectorAll<HTMLElement>('.message-actions [data-action]')].map((button) => button.dataset.action ?? ''),
  })))
}

/** Waits until `page` shows `expected` (as `shown` reads it), then asserts it, so a failure shows the difference. */
async function shows (page: Page, expected: Shown[], what: string): Promise<void> {
  const deadline = Date.now() + WAIT_MS
  let now = await shown(page)
  while (!isDeepStrictEqual(now, expected) && Date.now() < deadline) {
    await sleep(POLL_MS)
    now = await shown(page)
  }
  assert.deepEqual(now, expected, what)
}

/** The item of message `seq` in the current room. */
function item (page: Page, seq: number): ReturnType<Page['locator']> {
  return page.locator(`#messages li[data-seq="${seq}"]`)
}

async function react (page: Page, seq: number, reaction: string): Promise<void> {
  await item(page, seq).locator('.add-reaction summary').click()
  await item(page, seq).locator(`button[data-quick="${reaction}"]`).click()
}

async function toggle (page: Page, seq: number, reaction: string): Promise<void> {
  await item(page, seq).locator(`.reaction[data-reaction="${reaction}"]`).click()
}

async function edit (page: Page, seq: number, text: string): Promise<void> {
  await item(page, seq).locator('button[data-action="edit"]').click()
  await item(page, seq).locator('form.edit textarea').fill(text)
  await item(page, seq).locator('form.edit textarea').press('Enter')
}

async function remove (page: Page, seq: number): Promise<void> {
  await item(page, seq).locator('button[data-action="delete"]').click()
  await item(page, seq).locator('button[data-action="confirm-delete"]').click()
}

async function reload (page: Page): Promise<void> {
  await page.reload()
  await waitConnected(page)
  await waitJoined(page, 'lobby')
}

describe('messages that change on the home page in Chromium (the example server with accounts and SQLite)', { skip }, () => {
  test('reactions counted and toggled, an edit and deletes shown to both in place, the same after a reload and a server restart', { timeout }, async (t: TestContext) => {
    const dir = await tempDir(t)
    const config = join(dir, 'config.json')
    await writeFile(config, JSON.stringify({ host: '127.0.0.1', port: 1, logLevel: 'warn', sqlite: join(dir, 'chat.db'), accounts: true, admins: ['root'], chat: { rest: { prefix: '/api' } } }))
    const port = await freePort()
    /** A server process on the same port and file: only the file carries the chat from one to the next. */
    async function startServer (): Promise<ExampleServer> {
      const server = startExample({ CHAT_CONFIG: config, PORT: String(port) })
      t.after(async () => {
        server.child.kill('SIGKILL')
        await server.exited
      })
      assert.equal((await homePage(port))?.status, 200, server.output())
      return server
    }
    const server = await startServer()
    const url = `http://127.0.0.1:${port}/`
    const browser = await launchBrowser(t)
    const alice = await register(browser, url, 'alice')
    const bob = await register(browser, url, 'bob')

    for (const text of ['first', 'second', 'third']) await say(alice.page, text)
    await waitForMessage(bob.page, 'third')
    const [first, second, third] = (await shown(bob.page)).map((message) => message.seq) as [number, number, number]
    const message = (seq: number, text: string, changes: Partial<Shown> = {}): Shown =>
      ({ seq, text, edited: false, deleted: false, reactions: [], actions: [], ...changes })
    const own = ['edit', 'delete']
    await shows(alice.page, [message(first, 'first', { actions: own }), message(second, 'second', { actions: own }), message(third, 'third', { actions: own })],
      'the author may edit and delete her messages')
    await shows(bob.page, [message(first, 'first'), message(second, 'second'), message(third, 'third')], 'no edit or delete on another\'s messages')

    // Bob reacts; Alice sees the count, and one click of hers gives the same reaction: both see 2, highlighted.
    await react(bob.page, first, '👍')
    await shows(alice.page, [message(first, 'first', { actions: own, reactions: ['👍 1'] }), message(second, 'second', { actions: own }), message(third, 'third', { actions: own })], 'Bob\'s 👍, not hers')
    await shows(bob.page, [message(first, 'first', { reactions: ['👍 1*'] }), message(second, 'second'), message(third, 'third')], 'his own 👍, highlighted')
    await toggle(alice.page, first, '👍')
    await toggle(bob.page, first, '👍') // and back: one click takes his away…
    await shows(bob.page, [message(first, 'first', { reactions: ['👍 1'] }), message(second, 'second'), message(third, 'third')], 'his taken back')
    await toggle(bob.page, first, '👍') // …and one gives it again
    await react(bob.page, second, '🎉')

    // Alice fixes her second message and takes back her third: both see it, each in its place.
    await edit(alice.page, second, 'second, fixed')
    await remove(alice.page, third)
    const aliceSees = [
      message(first, 'first', { actions: own, reactions: ['👍 2*'] }),
      message(second, 'second, fixed', { actions: own, edited: true, reactions: ['🎉 1'] }),
      message(third, 'message deleted', { deleted: true }),
    ]
    const bobSees = [
      message(first, 'first', { reactions: ['👍 2*'] }),
      message(second, 'second, fixed', { edited: true, reactions: ['🎉 1*'] }),
      message(third, 'message deleted', { deleted: true }),
    ]
    await shows(alice.page, aliceSees, 'Alice, after the changes')
    await shows(bob.page, bobSees, 'Bob, after the changes')

    // A reload joins again: the messages come in their current state.
    await reload(bob.page)
    await shows(bob.page, bobSees, 'Bob, reloaded')

    // A crash and a restart on the same file: the pages reconnect by themselves and resume; a fresh page shows the same.
    // Bob stays offline until Alice, back first, has reacted: he learns of it only by resuming (the update replayed).
    server.child.kill('SIGKILL')
    await server.exited
    for (const { page } of [alice, bob]) await page.waitForSelector('#status[data-status="reconnecting"]')
    await bob.page.context().setOffline(true)
    await startServer()
    await waitConnected(alice.page)
    await shows(alice.page, aliceSees, 'Alice, resumed after the restart')
    await react(alice.page, second, '😂')
    aliceSees[1] = message(second, 'second, fixed', { actions: own, edited: true, reactions: ['🎉 1', '😂 1*'] })
    bobSees[1] = message(second, 'second, fixed', { edited: true, reactions: ['🎉 1*', '😂 1'] })
    await shows(alice.page, aliceSees, 'Alice, after her 😂')
    assert.equal(await bob.page.getAttribute('#status', 'data-status'), 'reconnecting', 'Bob was offline all along')
    await bob.page.context().setOffline(false)
    await waitConnected(bob.page)
    await shows(bob.page, bobSees, 'Bob, resumed after the restart, with the 😂 he missed')
    await reload(alice.page)
    await shows(alice.page, aliceSees, 'Alice, reloaded after the restart')

    // An admin may delete anyone's message (through the HTTP API); edit stays the author's.
    const root = await register(browser, url, 'root')
    await shows(root.page, [
      message(first, 'first', { actions: ['delete'], reactions: ['👍 2'] }),
      message(second, 'second, fixed', { actions: ['delete'], edited: true, reactions: ['🎉 1', '😂 1'] }),
      message(third, 'message deleted', { deleted: true }),
    ], 'the admin: delete on every message, no edit')
    await remove(root.page, first)
    aliceSees[0] = bobSees[0] = message(first, 'message deleted', { deleted: true })
    await shows(alice.page, aliceSees, 'Alice, after the admin\'s delete')
    await shows(bob.page, bobSees, 'Bob, after the admin\'s delete')

    for (const person of [alice, bob, root]) assert.deepEqual([...person.errors, ...person.dialogs], [])
  })
})
