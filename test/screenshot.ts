/**
 * Regenerates docs/screenshot.png, the README's picture of the home page in use:
 * `npm run build && node dist/test/screenshot.js [out.png] [--phone]`.
 * The example server with accounts (on a throwaway SQLite file): Ada, an
 * admin, signed in on two tabs, with Grace and Linus. Not a test (no .test.
 * in the name); it uses the browser tests' helpers.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { chromium, type Browser, type BrowserContextOptions, type Page } from 'playwright-core'
import { CHROMIUM, CHROMIUM_ARGS, joinRoom, say, switchRoom, waitConnected, waitForMessage, waitJoined } from './helpers/browser.js'
import { homePage, startExample } from './helpers/example-server.js'
import { freePort } from './helpers/free-port.js'

const phone = process.argv.includes('--phone')
const out = process.argv.slice(2).find((arg) => !arg.startsWith('--')) ?? fileURLToPath(new URL('../../docs/screenshot.png', import.meta.url))
const PASSWORD = 'a password for the picture'

/** A browser context signed in as `name` (registered on first use), in the lobby. */
async function signIn (browser: Browser, url: string, name: string, how: 'register' | 'login', options: BrowserContextOptions = {}): Promise<Page> {
  const page = await (await browser.newContext(options)).newPage()
  await page.goto(url)
  await page.waitForSelector('#password-field:not([hidden])')
  await page.fill('#login-name', name)
  await page.fill('#login-password', PASSWORD)
  await page.click(how === 'register' ? '#register-submit' : '#login-submit')
  await waitConnected(page)
  await waitJoined(page, 'lobby')
  return page
}

const dir = await mkdtemp(join(tmpdir(), 'chat-screenshot-'))
const config = join(dir, 'config.json')
await writeFile(config, JSON.stringify({ host: '127.0.0.1', port: 1, logLevel: 'warn', sqlite: join(dir, 'chat.db'), accounts: true, admins: ['Ada'], chat: { rest: { prefix: '/api' } } }))
const port = await freePort()
const server = startExample({ CHAT_CONFIG: config, PORT: String(port) })
const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS })
try {
  if ((await homePage(port))?.status !== 200) throw new Error(`the example server did not start:\n${server.output()}`)
  const url = `http://127.0.0.1:${port}/`
  const viewport = phone ? { width: 390, height: 844 } : { width: 1100, height: 600 }
  const ada = await signIn(browser, url, 'Ada', 'register', { viewport, deviceScaleFactor: phone ? 2 : 1 })
  const grace = await signIn(browser, url, 'Grace', 'register')
  const linus = await signIn(browser, url, 'Linus', 'register')
  const adaOnHerPhone = await signIn(browser, url, 'Ada', 'login')
  await say(grace, 'Morning! Did the deploy go out?')
  await say(ada, 'Yes, 0.2.0 is live. Restarted twice, nobody lost a line.')
  await say(ada, 'Notes: https://example.com/releases/0.2.0')
  await say(grace, 'Nice. I\'ll post them in #releases.')
  await say(linus, 'Ship it.')
  for (const page of [ada, adaOnHerPhone, grace]) await joinRoom(page, 'releases')
  for (const page of [ada, adaOnHerPhone]) await switchRoom(page, 'lobby')
  await say(grace, 'Release notes for 0.2.0 are up.')
  await say(grace, 'Shout if anything is missing.')
  await ada.waitForSelector('#room-list button[data-room="releases"] .unread:text("2")')
  await waitForMessage(ada, 'Ship it.')
  await ada.click('#directory-refresh')
  await ada.waitForSelector('#directory-list button[data-room="releases"]')
  await ada.fill('#text', 'On my way to read them')
  await linus.fill('#text', 'Also…')
  await ada.waitForSelector('#typing:text("Linus is typing…")')
  await ada.waitForFunction(() => [...document.querySelectorAll('#member-list .who')].some((who) => who.textContent === 'Ada (you) ×2'))
  if (!phone) await ada.locator('#member-list li:has-text("Linus") details.moderate summary').click()
  await ada.focus('#text')
  await ada.screenshot({ path: out })
  console.log(`wrote ${out}`)
} finally {
  await browser.close()
  server.child.kill('SIGTERM')
  await server.exited
  await rm(dir, { recursive: true, force: true })
}
