/**
 * A private redis-server on a free port, for tests that stop, hang or kill
 * it without disturbing the shared one, or run it in cluster mode. Nothing
 * is persisted.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { freePort } from './free-port.js'

const REDIS_SERVER = process.env.REDIS_SERVER ?? '/usr/bin/redis-server'
/** A redis-server starts in milliseconds; this only bounds a broken start. */
const START_TIMEOUT_MS = 10_000
/** Redis Cluster's hash slots: keys hash to 0…16383. */
const CLUSTER_SLOTS = 16_384

/** Like `skipUnlessRedis`: the reason to skip when redis-server is missing, but under `CI=true` a failure. */
export function skipUnlessRedisServer (): string | false {
  if (existsSync(REDIS_SERVER)) return false
  const reason = `redis-server is missing at ${REDIS_SERVER} (set REDIS_SERVER to its path)`
  if (process.env.CI === 'true') throw new Error(`${reason}. Under CI the Redis tests must run, not skip.`)
  console.log(`skipping the Redis outage tests: ${reason}`)
  return reason
}

export interface RedisServerOptions {
  /**
   * Cluster mode, one node serving every slot: clients talk to it as to one
   * Redis, but a command or script whose keys hash to two slots fails.
   */
  cluster?: boolean
}

export class RedisServer {
  private child: ChildProcess | undefined
  /** Where a cluster node keeps its cluster config, while it runs. */
  private dir: string | undefined

  private constructor (readonly port: number, private readonly options: RedisServerOptions) {}

  get url (): string {
    return `redis://127.0.0.1:${this.port}`
  }

  static async start (options: RedisServerOptions = {}): Promise<RedisServer> {
    const server = new RedisServer(await freePort(), options)
    await server.start()
    return server
  }

  /** Starts (again) on the same port, empty. */
  async start (): Promise<void> {
    const args = ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no']
    if (this.options.cluster) {
      this.dir = mkdtempSync(join(tmpdir(), 'chat-redis-'))
      args.push('--cluster-enabled', 'yes', '--cluster-config-file', join(this.dir, 'nodes.conf'))
    }
    const child = spawn(REDIS_SERVER, args, { stdio: ['ignore', 'pipe', 'inherit'] })
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
    if (this.options.cluster) await this.serveEverySlot()
  }

  /** Gives this cluster node every slot, and waits until the cluster says it is ok. */
  private async serveEverySlot (): Promise<void> {
    const client = new Redis(this.url)
    try {
      await client.call('CLUSTER', 'ADDSLOTS', ...Array.from({ length: CLUSTER_SLOTS }, (_, slot) => slot))
      const deadline = Date.now() + START_TIMEOUT_MS
      while (!(await client.call('CLUSTER', 'INFO') as string).includes('cluster_state:ok')) {
        if (Date.now() > deadline) throw new Error(`redis-server on ${this.port} did not become an ok cluster`)
        await new Promise((resolve) => setTimeout(resolve, 100))
      }
    } finally {
      client.disconnect()
    }
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
    this.child = undefined
    if (child && child.exitCode === null && child.signalCode === null) {
      child.kill('SIGCONT')
      child.kill('SIGKILL')
      await once(child, 'exit')
    }
    if (this.dir) rmSync(this.dir, { recursive: true, force: true })
    this.dir = undefined
  }
}
