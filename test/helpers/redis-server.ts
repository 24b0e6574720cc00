/**
 * A private redis-server on a free port, for tests that stop, hang or kill
 * it without disturbing the shared one, or run it in cluster mode; and a
 * Redis Cluster of several of them. Nothing is persisted but a cluster
 * node's cluster config.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { freePort } from './free-port.js'

const REDIS_SERVER = process.env.REDIS_SERVER ?? '/usr/bin/redis-server'
const REDIS_CLI = process.env.REDIS_CLI ?? '/usr/bin/redis-cli'
/** A redis-server starts in milliseconds; this only bounds a broken start. */
const START_TIMEOUT_MS = 10_000
/** Redis Cluster's hash slots: keys hash to 0…16383. */
const CLUSTER_SLOTS = 16_384

/** Like `skipUnlessRedis`: the reason to skip when redis-server is missing, but under `CI=true` a failure. */
export function skipUnlessRedisServer (): string | false {
  const missing = [[REDIS_SERVER, 'REDIS_SERVER'], [REDIS_CLI, 'REDIS_CLI']].find(([path]) => !existsSync(path!))
  if (missing === undefined) return false
  const reason = `${missing[0]} is missing (set ${missing[1]} to its path)`
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
  /** In cluster mode, serve no slot yet: `RedisCluster` shares them out. */
  joinLater?: boolean
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

  /** Starts (again) on the same port, empty; a cluster node keeps its node id and slots. */
  async start (): Promise<void> {
    const args = ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no']
    const restart = this.dir !== undefined
    if (this.options.cluster) {
      this.dir ??= mkdtempSync(join(tmpdir(), 'chat-redis-'))
      // A master that is down takes only its own slots out of service, and is noticed within a second.
      args.push('--cluster-enabled', 'yes', '--cluster-config-file', join(this.dir, 'nodes.conf'),
        '--cluster-require-full-coverage', 'no', '--cluster-node-timeout', '1000', '--dir', this.dir)
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
    if (this.options.cluster && !this.options.joinLater && !restart) await this.serveEverySlot()
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

  /** Kills it (its data is lost); `start` brings an empty one back on the same port, a cluster node as the same node. */
  async stop (): Promise<void> {
    const child = this.child
    this.child = undefined
    if (child && child.exitCode === null && child.signalCode === null) {
      child.kill('SIGCONT')
      child.kill('SIGKILL')
      await once(child, 'exit')
    }
  }

  /** Stops it for good, with its cluster config. */
  async kill (): Promise<void> {
    await this.stop()
    if (this.dir) rmSync(this.dir, { recursive: true, force: true })
    this.dir = undefined
  }

  get running (): boolean {
    return this.child !== undefined
  }

  /** What `ROLE` says it is: 'master' or 'slave'. */
  async role (): Promise<string> {
    const client = new Redis(this.url, { maxRetriesPerRequest: 0 })
    try {
      return ((await client.call('ROLE')) as [string])[0]
    } finally {
      client.disconnect()
    }
  }

  /** `CLUSTER INFO`'s cluster_state is ok. */
  async clusterOk (): Promise<boolean> {
    const client = new Redis(this.url, { maxRetriesPerRequest: 0, retryStrategy: () => null })
    client.on('error', () => {})
    try {
      return (await client.call('CLUSTER', 'INFO') as string).includes('cluster_state:ok')
    } catch {
      return false
    } finally {
      client.disconnect()
    }
  }
}

/**
 * A Redis Cluster of `masters` masters, each with `replicas` replicas, made by
 * `redis-cli --cluster create`; `masters` lists the servers that were masters
 * when it was made, `nodes` every server.
 */
export class RedisCluster {
  private constructor (readonly nodes: RedisServer[], readonly masters: RedisServer[]) {}

  get urls (): string[] {
    return this.masters.map((master) => master.url)
  }

  static async start (masters = 3, replicas = 0): Promise<RedisCluster> {
    const servers = await Promise.all(Array.from({ length: masters * (1 + replicas) }, async () => await RedisServer.start({ cluster: true, joinLater: true })))
    try {
      await new Promise<void>((resolve, reject) => {
        execFile(REDIS_CLI, ['--cluster', 'create', ...servers.map((server) => `127.0.0.1:${server.port}`), '--cluster-replicas', String(replicas), '--cluster-yes'],
          { timeout: START_TIMEOUT_MS }, (error, stdout, stderr) => error ? reject(new Error(`redis-cli --cluster create failed: ${stderr || stdout}`, { cause: error })) : resolve())
      })
      const roles = await Promise.all(servers.map(async (server) => await server.role()))
      const cluster = new RedisCluster(servers, servers.filter((_, i) => roles[i] === 'master'))
      await cluster.whenOk()
      return cluster
    } catch (error) {
      await Promise.all(servers.map(async (server) => await server.kill()))
      throw error
    }
  }

  /** Resolves once every running node says the cluster is ok (they agree on the slots). */
  async whenOk (): Promise<void> {
    const deadline = Date.now() + START_TIMEOUT_MS
    while (!(await Promise.all(this.nodes.filter((node) => node.running).map(async (node) => await node.clusterOk()))).every(Boolean)) {
      if (Date.now() > deadline) throw new Error('the Redis Cluster did not become ok')
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
  }

  async kill (): Promise<void> {
    await Promise.all(this.nodes.map(async (node) => await node.kill()))
  }
}
