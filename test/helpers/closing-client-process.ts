/**
 * A ChatClient in a process of its own that calls `close()` at one point of its
 * reconnect cycle, for the test that nothing reconnects after it: the process
 * exits by itself only when no socket and no timer is left.
 * argv: the server's ws URL, the point (`CLOSE_POINTS` in test/client.test.ts).
 * Joins room `a` and prints one JSON line per step: `{ socket: n }` when it opens
 * its nth socket, `{ event, status? }` for each event, `{ ready: id }` once in
 * `a`, `{ closing: point }` as it calls `close()`.
 */
import { WebSocket } from 'ws'
import { ChatClient } from '../../lib/client/index.js'

/** ms before a reconnect (jittered down to half): time for the test to change the room while the client is away. */
const RETRY_MS = 300

const [url, point] = process.argv.slice(2)
if (url === undefined || point === undefined) throw new Error('usage: closing-client-process.js <ws url> <point>')
const print = (line: object): void => { process.stdout.write(`${JSON.stringify(line)}\n`) }

let sockets = 0
/** A real `ws` socket that reports its opening, so the test can tell whether a socket was opened after `close()`. */
class CountedWebSocket extends WebSocket {
  constructor (address: string) {
    super(address)
    print({ socket: ++sockets })
  }
}

const chat = new ChatClient(url, { WebSocket: CountedWebSocket, reconnect: { minDelay: RETRY_MS, maxDelay: RETRY_MS } })
let welcomes = 0
let closing = false
/** Closes when `here` is the point asked for; events of the first connection count only for the reconnect itself. */
function reached (here: string): void {
  if (here !== point || closing) return
  closing = true
  print({ closing: point })
  chat.close()
}

chat.on('status', (change) => {
  if (change.status === 'reconnecting' && welcomes === 1) {
    reached('status reconnecting')
    if (point === 'waiting for the retry') setTimeout(() => reached(point), (change.retryIn ?? 0) / 2)
    // Same delay as the retry's timer, set after it: runs right after the retry opened its socket.
    if (point === 'connecting') setTimeout(() => reached(point), change.retryIn ?? 0)
  }
  if (change.status === 'open' && welcomes === 2) reached('status open')
})
chat.on('welcome', () => { if (++welcomes === 2) reached('welcome') })
for (const event of ['joined', 'gap', 'message', 'error'] as const) {
  chat.on(event, () => { if (welcomes === 2) reached(event) })
}
// After the listeners that close, as an application's other listeners: they must see the events in the order they happened.
for (const event of ['welcome', 'joined', 'gap', 'message', 'error'] as const) chat.on(event, () => print({ event }))
chat.on('status', (change) => print({ event: 'status', status: change.status }))

await chat.join('a')
print({ ready: chat.id })
