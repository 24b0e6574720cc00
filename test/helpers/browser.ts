/**
 * Debian's Chromium driven by playwright-core (never a downloaded browser),
 * and what the tests do on the home page: enter the chat, send, read the DOM.
 */
import { existsSync } from 'node:fs'
import type { TestContext } from 'node:test'
import { chromium, type Browser, type BrowserContextOptions, type Page } from 'playwright-core'

export const CHROMIUM = '/usr/bin/chromium'
/** Headless in a container: no sandbox (we run as root), no GPU, and nothing that talks to Google. */
export const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync']
/** Long enough for a page to reconnect after a server restart (client backoff starts at 0.5 s), short enough to fail fast. */
export const WAIT_MS = 15_000

/**
 * Whether the browser tests must be skipped: false when Chromium is there,
 * else the reason. Under `CI=true` a missing Chromium throws: CI never skips them.
 */
export function skipUnlessChromium (): string | false {
  if (existsSync(CHROMIUM)) return false
  const reason = `Chromium is missing at ${CHROMIUM} (apt-get install chromium)`
  if (process.env.CI === 'true') throw new Error(`${reason}. Under CI the browser tests must run, not skip.`)
  console.log(`skipping the browser tests: ${reason}`)
  return reason
}

/** Launches Chromium for one test and closes it (and every page) after it. */
export async function launchBrowser (t: TestContext): Promise<Browser> {
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: WAIT_MS })
  t.after(() => browser.close())
  return browser
}

/**
 * A page in its own context (its own localStorage, like another person's
 * browser). Uncaught page errors and dialogs are collected: tests assert none.
 */
export async function openPage (browser: Browser, options: BrowserContextOptions = {}): Promise<{ page: Page, errors: string[], dialogs: string[] }> {
  const context = await browser.newContext({ viewport: { width: 1100, height: 700 }, ...options })
  context.setDefaultTimeout(WAIT_MS)
  const page = await context.newPage()
  const errors: string[] = []
  const dialogs: string[] = []
  page.on('pageerror', (error) => errors.push(error.message))
  page.on('console', (message) => { if (/Content.Security.Policy/i.test(message.text())) errors.push(message.text()) })
  page.on('dialog', (dialog) => { dialogs.push(dialog.message()); void dialog.dismiss() })
  return { page, errors, dialogs }
}

/** Opens the home page, enters with `name` into `room` and waits until connected. */
export async function enterChat (page: Page, url: string, name: string, room = 'lobby'): Promise<void> {
  await page.goto(url)
  await page.fill('#login-name', name)
  await page.fill('#login-room', room)
  await page.press('#login-name', 'Enter')
  await waitConnected(page)
  await waitJoined(page, room)
}

/**
 * Waits until `room` is the current room and joined: the server listed us in
 * its members (what is said from then on is live, not join history).
 */
export async function waitJoined (page: Page, room: string): Promise<void> {
  await page.waitForSelector(`#room-list button[data-room="${room}"][aria-current="true"]`)
  // Attached, not visible: on a narrow screen the members list is behind a button.
  await page.waitForSelector('#member-list li:has-text("(you)")', { state: 'attached' })
}

export async function waitConnected (page: Page): Promise<void> {
  await page.waitForSelector('#status[data-status="open"]')
}

/** Types into the composer and presses Enter, as a person would. */
export async function say (page: Page, text: string): Promise<void> {
  await page.fill('#text', text)
  await page.press('#text', 'Enter')
}

/** Waits until a message with exactly `text` is shown in the current room. */
export async function waitForMessage (page: Page, text: string): Promise<void> {
  await page.waitForFunction((wanted) => [...document.querySelectorAll('#messages li[data-seq] .text')]
    .some((node) => node.textContent === wanted), text)
}

/** The shown messages of the current room, in DOM order. */
export async function shownMessages (page: Page): Promise<Array<{ seq: number, from: string, text: string }>> {
  return page.$$eval('#messages li[data-seq]', (items) => items.map((item) => ({
    seq: Number((item as HTMLElement).dataset.seq),
    from: item.querySelector('.from')?.textContent ?? '',
    text: item.querySelector('.text')?.textContent ?? '',
  })))
}

/** The members list as shown (each person's name, "(you)", "×2" for two tabs; not the moderation controls), sorted. */
export async function shownMembers (page: Page): Promise<string[]> {
  return (await page.$$eval('#member-list li', (items) => items.map((item) => (item.querySelector('.who') ?? item).textContent ?? ''))).sort()
}

export async function switchRoom (page: Page, room: string): Promise<void> {
  await page.click(`#room-list button[data-room="${room}"]`)
  await page.waitForSelector(`#room-list button[data-room="${room}"][aria-current="true"]`)
}

export async function joinRoom (page: Page, room: string): Promise<void> {
  await page.fill('#join-room', room)
  await page.press('#join-room', 'Enter')
  await waitJoined(page, room)
}

/** The unread badge of `room` in the room list ('' when none). */
export async function unreadBadge (page: Page, room: string): Promise<string> {
  return page.$eval(`#room-list button[data-room="${room}"]`, (button) => button.querySelector('.unread')?.textContent ?? '')
}

/** Sends each of `texts` through the composer in one go, as fast as the page can: they go out together. */
export async function sayAtOnce (page: Page, texts: string[]): Promise<void> {
  await page.evaluate((all) => {
    const text = document.getElementById('text') as HTMLTextAreaElement
    const composer = document.getElementById('composer') as HTMLFormElement
    for (const body of all) {
      text.value = body
      composer.requestSubmit()
    }
  }, texts)
}
