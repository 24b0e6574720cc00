/**
 * A raw protocol client for tests: real `ws` socket, every frame checked
 * against the server schemas of lib/protocol.ts, and awaitable by type.
 */
import type { TestContext } from 'node:test'
import WebSocket from 'ws'
import { isServerFrame, type ServerFrame, type ServerFrameOf, type ServerFrameType } from '../../lib/protocol.js'

const WAIT_MS = 3000

export interface Closed {
  code: number
  reason: string
}

export class RawClient {
  readonly frames: ServerFrame[] = []
  readonly closed: Promise<Closed>
  private waiters: Array<() => void> = []

  private constructor (readonly socket: WebSocket) {
    socket.on('message', (data, isBinary) => {
      const frame: unknown = JSON.parse(String(data))
      if (isBinary || !isServerFrame(frame)) throw new Error(`server sent a frame outside the protocol: ${String(data)}`)
      this.frames.push(frame)
      for (const wake of this.waiters.splice(0)) wake()
    })
    this.closed = new Promise((resolve) => {
      socket.on('close', (code, reason) => {
        resolve({ code, reason: reason.toString() })
        for (const wake of this.waiters.splice(0)) wake()
      })
    })
  }

  /** Connects and waits for `welcome`. */
  static async connect (t: TestContext, url: string, options: WebSocket.ClientOptions = {}): Promise<RawClient> {
    const socket = new WebSocket(url, options)
    socket.on('error', () => {})
    const client = new RawClient(socket)
    t.after(() => socket.terminate())
    await new Promise<void>((resolve, reject) => {
      socket.once('open', () => resolve())
      socket.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)))
      socket.once('error', reject)
    })
    await client.next('welcome')
    return client
  }

  send (message: object): void {
    this.socket.send(JSON.stringify(message))
  }

  /** The next frame of `type` not yet taken (frames of other types are skipped, not lost for other waits). */
  async next<K extends ServerFrameType> (type: K, match: (frame: ServerFrameOf<K>) => boolean = () => true, waitMs = WAIT_MS): Promise<ServerFrameOf<K>> {
    const deadline = Date.now() + waitMs
    for (;;) {
      const index = this.frames.findIndex((frame) => frame.type === type && match(frame as ServerFrameOf<K>))
      if (index >= 0) {
        const [frame] = this.frames.splice(index, 1)
        return frame as ServerFrameOf<K>
      }
      const left = deadline - Date.now()
      if (left <= 0 || this.socket.readyState === WebSocket.CLOSED) {
        throw new Error(`no ${type} frame within ${waitMs} ms; got ${JSON.stringify(this.frames.slice(-5))}`)
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left)
        this.waiters.push(() => { clearTimeout(timer); resolve() })
      })
    }
  }

  /** Sends a request with a fresh ref and waits for the reply of `type` (or the error) carrying it. */
  async request<K extends ServerFrameType> (type: K, message: object): Promise<ServerFrameOf<K>> {
    const ref = `r${++RawClient.refs}`
    this.send({ ...message, ref })
    const reply = await Promise.race([
      this.next(type, (frame) => (frame as { ref?: string }).ref === ref),
      this.next('error', (frame) => frame.ref === ref).then((error) => { throw new Error(`${error.code}: ${error.message}`) }),
    ])
    return reply
  }

  /** Frames of `type` received and not yet taken. */
  pending<K extends ServerFrameType> (type: K): Array<ServerFrameOf<K>> {
    return this.frames.filter((frame) => frame.type === type) as Array<ServerFrameOf<K>>
  }

  private static refs = 0
}

export function sleep (ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}
