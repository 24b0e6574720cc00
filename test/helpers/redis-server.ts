/**
 * A private redis-server on a free port, for tests that stop, hang or kill
 * it without disturbing the shared one. Nothing is persisted.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { existsSync } from 'node:fs'
import { createServer } from 'node:net'

const REDIS_SERVER = process.env.REDIS_SERVER ?? '/usr/bin/redis-server'
/** A redis-server starts in milliseconds; this only bounds a broken start. */
const START_TIMEOUT_MS = 10_000

/** Like `skipUnlessRedis`: the reason to skip when redis-server is missing, but under `CI=true` a failure. */
export function skipUnlessRedisServer (): string | false {
  if (existsSync(REDIS_SERVER)) return false
  const reason = `redis-server is missing at ${REDIS_SERVER} (set REDIS_SERVER to its path)`
  if (process.env.CI === 'true') throw new Error(`${reason}. Under CI the Redis tests must run, not skip.`)
  console.log(`skipping the Redis outage tests: ${reason}`)
  return reason
}

export class RedisServer {
  private child: ChildProcess | undefined

  private constructor (readonly port: number) {}

  get url (): string {
    return `redis://127.0.0.1:${this.port}`
  }

  static async start (): Promise<RedisServer> {
    const server = new RedisServer(await freePort())
    await server.start()
    return server
  }

  /** Starts (again) on the same port, empty. */
  async start (): Promise<void> {
    const child = spawn(REDIS_SERVER, ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: ['ignore', 'pipe', 'inherit'] })
    this.child = child
    let output = ''
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`redis-server did not start on ${this.port}: ${output}`)), START_TIMEOUT_MS)
      child.stdout?.on('data', (chunk: Buffer) => {
        output += chunk.toString()
        if (output.includes('Ready to accept connections')) {
          clearTimeout(timer)
          resolve()
        }
      })
      child.once('exit', (code) => {
        clearTimeout(timer)
        reject(new Error(`redis-server exited with ${code}: ${output}`))
      })
    })
    child.stdout?.resume()
  }

  /** A hung Redis: the process stops answering but keeps its sockets open. */
  pause (): void {
    this.child?.kill('SIGSTOP')
  }

  resume (): void {
    this.child?.kill('SIGCONT')
  }

  /** Kills it (its data is lost); `start` brings an empty one back on the same port. */
  async kill (): Promise<void> {
    const child = this.child
    if (!child || child.exitCode !== null || child.signalCode !== null) return
    this.child = undefined
    child.kill('SIGCONT')
    child.kill('SIGKILL')
    await once(child, 'exit')
  }
}

async function freePort (): Promise<number> {
  const server = createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const address = server.address()
  server.close()
  if (address === null || typeof address === 'string') throw new Error('no port')
  return address.port
}
