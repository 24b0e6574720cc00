/**
 * A private PostgreSQL cluster on a free port, for tests that stop, crash or
 * hang it without disturbing the shared one: initdb into a temporary
 * directory, trust auth, 127.0.0.1 only, no fsync. Its data survives `stop`
 * and `crash` (the next `start` recovers a crash from the WAL); `cleanup`
 * stops it and deletes the directory. PostgreSQL refuses to run as root, so
 * as root it runs as the `postgres` OS user.
 */
import { execFile, execFileSync } from 'node:child_process'
import { appendFileSync, chownSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { TestContext } from 'node:test'
import { promisify } from 'node:util'
import { freePort } from './free-port.js'

const execFileAsync = promisify(execFile)
/** initdb takes a second or two, a start (with crash recovery) or a stop less: this only bounds a broken one. */
const COMMAND_TIMEOUT_MS = 60_000
/** The OS user PostgreSQL runs as when the tests run as root. */
const OS_USER = 'postgres'
/** How long a crashed postmaster and its backends may take to die. */
const EXIT_TIMEOUT_MS = 10_000

interface Tools {
  /** The directory of initdb, pg_ctl and postgres. */
  bin: string
  /** As root: the OS user to run them as, and its ids to own the directory. */
  owner: { uid: number, gid: number } | undefined
}

/** `PG_BINDIR`, else `pg_config --bindir`, else the newest /usr/lib/postgresql/<version>/bin: the first that has initdb and pg_ctl. */
function findBinDir (): string | undefined {
  const dirs: string[] = []
  if (process.env.PG_BINDIR) dirs.push(process.env.PG_BINDIR)
  try {
    dirs.push(execFileSync('pg_config', ['--bindir'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim())
  } catch {
    // No pg_config (it comes with libpq-dev): look where Debian installs the server.
  }
  const debian = '/usr/lib/postgresql'
  if (existsSync(debian)) dirs.push(...readdirSync(debian).sort((a, b) => Number(b) - Number(a)).map((version) => join(debian, version, 'bin')))
  return dirs.find((dir) => existsSync(join(dir, 'initdb')) && existsSync(join(dir, 'pg_ctl')))
}

/** What is needed and found, or the reason it cannot run. */
function findTools (): Tools | string {
  const bin = findBinDir()
  if (bin === undefined) return 'the PostgreSQL server programs (initdb, pg_ctl) are missing: install the postgresql package or set PG_BINDIR'
  if (process.getuid?.() !== 0) return { bin, owner: undefined }
  if (!existsSync('/usr/sbin/runuser') && !existsSync('/sbin/runuser')) return 'runuser is missing: as root, PostgreSQL must run as another OS user'
  try {
    const id = (flag: string): number => Number(execFileSync('id', [flag, OS_USER], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }))
    return { bin, owner: { uid: id('-u'), gid: id('-g') } }
  } catch {
    return `the OS user "${OS_USER}" is missing: as root, PostgreSQL must run as another OS user`
  }
}

const tools = findTools()

/** Like `skipUnlessPostgres`: the reason to skip when a private cluster cannot run here, but under `CI=true` a failure. */
export function skipUnlessPostgresServer (): string | false {
  if (typeof tools !== 'string') return false
  if (process.env.CI === 'true') throw new Error(`${tools}. Under CI the PostgreSQL outage tests must run, not skip.`)
  console.log(`skipping the PostgreSQL outage tests: ${tools}`)
  return tools
}

export class PostgresServer {
  private constructor (readonly port: number, private readonly dir: string, private readonly tools: Tools) {}

  /** As the superuser, database `postgres`. */
  get url (): string {
    return `postgres://postgres@127.0.0.1:${this.port}/postgres`
  }

  private get data (): string {
    return join(this.dir, 'data')
  }

  /** A new cluster, started unless `started: false`; stopped and deleted after the test. */
  static async create (t: TestContext, { started = true } = {}): Promise<PostgresServer> {
    if (typeof tools === 'string') throw new Error(tools)
    const dir = mkdtempSync(join(tmpdir(), 'chat-pg-'))
    if (tools.owner) chownSync(dir, tools.owner.uid, tools.owner.gid)
    const server = new PostgresServer(await freePort(), dir, tools)
    t.after(() => server.cleanup())
    await server.run('initdb', ['--pgdata', server.data, '--username', 'postgres', '--auth', 'trust', '--encoding', 'UTF8', '--locale', 'C', '--no-sync'])
    appendFileSync(join(server.data, 'postgresql.conf'), [
      `port = ${server.port}`,
      "listen_addresses = '127.0.0.1'",
      `unix_socket_directories = '${dir}'`,
      // Only the OS loses what is not fsynced; a crash of PostgreSQL itself keeps every commit.
      'fsync = off',
      '',
    ].join('\n'))
    if (started) await server.start()
    return server
  }

  /** Starts it and waits until it accepts connections (after recovering from a crash, if it crashed). */
  async start (): Promise<void> {
    await this.run('pg_ctl', ['start', '--pgdata', this.data, '--wait', '--log', join(this.dir, 'log')])
  }

  /** A fast shutdown: backends are told (57P01) and their connections closed. */
  async stop (): Promise<void> {
    await this.run('pg_ctl', ['stop', '--pgdata', this.data, '--wait', '--mode', 'fast'])
  }

  /** SIGKILLs the postmaster and every backend: connections drop without a word, uncommitted work is lost. */
  async crash (): Promise<void> {
    const pids = this.processes()
    for (const pid of pids) signal(pid, 'SIGKILL')
    const deadline = Date.now() + EXIT_TIMEOUT_MS
    while (pids.some(alive)) {
      if (Date.now() > deadline) throw new Error(`PostgreSQL on ${this.port} did not die`)
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
    // Its lock files name a dead postmaster, whose pid a zombie may still hold: the next start must not wait for it.
    rmSync(join(this.data, 'postmaster.pid'), { force: true })
    rmSync(join(this.dir, `.s.PGSQL.${this.port}.lock`), { force: true })
  }

  /** A hung server: the postmaster and its backends stop, their sockets stay open. */
  pause (): void {
    for (const pid of this.processes()) signal(pid, 'SIGSTOP')
  }

  resume (): void {
    for (const pid of this.processes()) signal(pid, 'SIGCONT')
  }

  /** Stops it, if it runs, and deletes its directory. */
  async cleanup (): Promise<void> {
    if (this.postmaster() !== undefined) {
      this.resume()
      await this.run('pg_ctl', ['stop', '--pgdata', this.data, '--wait', '--mode', 'immediate']).catch(() => this.crash())
    }
    rmSync(this.dir, { recursive: true, force: true })
  }

  /** The running postmaster's pid, from its lock file. */
  private postmaster (): number | undefined {
    let pid: number
    try {
      pid = Number(readFileSync(join(this.data, 'postmaster.pid'), 'utf8').split('\n')[0])
    } catch {
      return undefined
    }
    return alive(pid) ? pid : undefined
  }

  /** The postmaster and its children (backends and background processes). */
  private processes (): number[] {
    const postmaster = this.postmaster()
    if (postmaster === undefined) return []
    return [postmaster, ...readdirSync('/proc').filter((name) => /^\d+$/.test(name)).map(Number)
      .filter((pid) => procStat(pid)?.ppid === postmaster)]
  }

  private async run (program: string, args: string[]): Promise<void> {
    const path = join(this.tools.bin, program)
    const [file, argv] = this.tools.owner ? ['runuser', ['-u', OS_USER, '--', path, ...args]] : [path, args]
    try {
      // cwd: the user postgres may not be allowed into the test's working directory.
      await execFileAsync(file, argv, { cwd: this.dir, timeout: COMMAND_TIMEOUT_MS })
    } catch (error) {
      const { stderr } = error as { stderr?: string }
      const log = existsSync(join(this.dir, 'log')) ? readFileSync(join(this.dir, 'log'), 'utf8').slice(-2000) : ''
      throw new Error(`${program} ${args[0] ?? ''} failed on port ${this.port}: ${stderr ?? String(error)}\n${log}`, { cause: error })
    }
  }
}

/** State and parent of a process, from /proc; undefined once it is gone. */
function procStat (pid: number): { state: string, ppid: number } | undefined {
  try {
    // The command name, in parentheses, may hold spaces: the fields after it are fixed.
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '').split(' ')
    return { state: fields[0]!, ppid: Number(fields[1]) }
  } catch {
    return undefined
  }
}

/** Running (or stopped), not gone and not a zombie waiting to be reaped. */
function alive (pid: number): boolean {
  const stat = procStat(pid)
  return stat !== undefined && stat.state !== 'Z' && stat.state !== 'X'
}

function signal (pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name)
  } catch {
    // It exited meanwhile.
  }
}
