/**
 * Regenerates docs/screenshot.png, the README's picture of the home page in use:
 * `npm run build && node dist/test/screenshot.js [out.png] [--phone]`.
 * Not a test (no .test. in the name); it uses the browser tests' helpers.
 */
import { fileURLToPath } from 'node:url'
import Fastify from 'fastify'
import { chromium } from 'playwright-core'
import chatRooms from '../lib/index.js'
import { CHROMIUM, CHROMIUM_ARGS, enterChat, joinRoom, say, switchRoom, waitForMessage } from './helpers/browser.js'

const phone = process.argv.includes('--phone')
const out = process.argv.slice(2).find((arg) => !arg.startsWith('--')) ?? fileURLToPath(new URL('../../docs/screenshot.png', import.meta.url))

const app = Fastify({ logger: false })
await app.register(chatRooms)
await app.listen({ host: '127.0.0.1', port: 0 })
const url = `http://127.0.0.1:${(app.server.address() as { port: number }).port}/`
const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS })
try {
  const viewport = phone ? { width: 390, height: 800 } : { width: 1000, height: 540 }
  const ada = await (await browser.newContext({ viewport, deviceScaleFactor: phone ? 2 : 1 })).newPage()
  const grace = await (await browser.newContext()).newPage()
  const linus = await (await browser.newContext()).newPage()
  await enterChat(ada, url, 'Ada')
  await enterChat(grace, url, 'Grace')
  await enterChat(linus, url, 'Linus')
  await say(grace, 'Morning! Did the deploy go out?')
  await say(ada, 'Yes, 0.1.0 is live. Restarted twice, nobody lost a line.')
  await say(grace, 'Nice. I\'ll post the release notes in #releases.')
  await say(linus, 'Ship it.')
  await joinRoom(ada, 'releases')
  await joinRoom(grace, 'releases')
  await switchRoom(ada, 'lobby')
  await say(grace, 'Release notes for 0.1.0 are up.')
  await say(grace, 'Shout if anything is missing.')
  await ada.waitForSelector('#room-list button[data-room="releases"] .unread:text("2")')
  await waitForMessage(ada, 'Ship it.')
  await ada.fill('#text', 'On my way to read them')
  await linus.fill('#text', 'Also…')
  await ada.waitForSelector('#typing:text("Linus is typing…")')
  await ada.screenshot({ path: out })
  console.log(`wrote ${out}`)
} finally {
  await browser.close()
  await app.close()
}
