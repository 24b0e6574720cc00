/**
 * The example server's accounts: `POST /auth/register`, `/auth/login` and
 * `/auth/logout`, `GET /auth/me`, the chat plugin's `authenticate`, which
 * reads the same session cookie, so a person is one user in every tab and on
 * every device, and `authorize`, which lets the config's admins moderate.
 *
 * The cookie holds a random token, signed; the store keeps only its SHA-256
 * with an expiry, so a signed-out or expired session is over for good, and a
 * copy of the database lets no one in. Passwords are never logged or echoed:
 * a body that is not JSON gets a message of ours, not the parser's (which
 * quotes the text).
 */
import { createHash, randomBytes } from 'node:crypto'
import cookie from '@fastify/cookie'
import rateLimit from '@fastify/rate-limit'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Identity, RestAction } from '../lib/options.js'
import { normalizeName } from '../lib/protocol.js'
import type { Account, AccountStore } from './account-store.js'
import { hashPassword, verifyPassword } from './passwords.js'

export const SESSION_COOKIE = 'chat_session'
const SESSION_TTL_SECONDS = 30 * 24 * 60 * 60
/** Per client IP, on each of register and login: enough for a person's typos, too few to guess passwords. */
export const SIGN_IN_LIMIT = { max: 10, timeWindow: 60_000 }
export const MIN_PASSWORD_LENGTH = 8
/** A bound on the work a sign-in asks of scrypt and of the body parser. */
export const MAX_PASSWORD_LENGTH = 256
const BODY_LIMIT_BYTES = 4096
/** The secret made when the config gives none: 32 random bytes. */
const SECRET_BYTES = 32

/**
 * How names compare: "Alice", "alice" and "ａｌｉｃｅ" (full-width) are one
 * name, so nobody can register a look-alike of a taken name this way. The
 * account keeps the name as it was registered, for display.
 */
export function nameKey (name: string): string {
  return name.normalize('NFKC').toLowerCase()
}

/** An error Fastify answers with `statusCode` and `{ statusCode, error, message }`. */
class HttpError extends Error {
  constructor (readonly statusCode: number, message: string) {
    super(message)
  }
}

/** The `{ name, password }` of a register or login body, or a 400 naming the field. */
function credentials (body: unknown): { name: string, password: string } {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new HttpError(400, 'body: must be a JSON object { name, password }')
  const { name, password, ...rest } = body as Record<string, unknown>
  const unknown = Object.keys(rest)[0]
  if (unknown !== undefined) throw new HttpError(400, `${unknown.slice(0, 32)}: unknown field; the body is { name, password }`)
  if (typeof name !== 'string') throw new HttpError(400, 'name: must be a string')
  let normalized: string
  try {
    normalized = normalizeName(name)
  } catch (error) {
    throw new HttpError(400, (error as Error).message)
  }
  if (typeof password !== 'string') throw new HttpError(400, 'password: must be a string')
  const length = [...password].length
  if (length < MIN_PASSWORD_LENGTH || length > MAX_PASSWORD_LENGTH) {
    throw new HttpError(400, `password: must be ${MIN_PASSWORD_LENGTH} to ${MAX_PASSWORD_LENGTH} characters`)
  }
  return { name: normalized, password }
}

function tokenHash (token: string): string {
  return createHash('sha256').update(token).digest('hex')
}

/** An account as the routes answer it: whether it is one of the config's admins, too. */
export interface SignedIn extends Account {
  admin: boolean
}

export interface AccountRoutesOptions {
  /** Signs the session cookie (at least 32 characters); without it one is made once and kept in the database. */
  sessionSecret?: string
}

export class Accounts {
  /**
   * The routes' instance, whose cookie plugin parses and unsigns: set when
   * they are registered, since the secret may live in the database, which
   * opens with the broker.
   */
  private cookies: FastifyInstance | undefined

  /** The admins' names as `nameKey` compares them. */
  private readonly admins: ReadonlySet<string>

  /** `admins`: account names (the config's, already checked against the name rules). */
  constructor (private readonly store: AccountStore, admins: readonly string[] = []) {
    this.admins = new Set(admins.map((name) => nameKey(normalizeName(name))))
  }

  /**
   * The chat plugin's `authenticate`: the signed-in account, or nothing (401).
   * Its `id` is the account's, so every tab and device of it is one `user`.
   */
  readonly authenticate = async (request: FastifyRequest): Promise<Identity | undefined> => {
    const account = await this.signedIn(request)
    return account && { id: account.id, name: account.name }
  }

  /**
   * The chat plugin's `rest.authorize`: every moderation route (and publishing
   * as the server) is for a signed-in admin only; anyone else is refused (403).
   */
  readonly authorize = async (request: FastifyRequest, _action: RestAction): Promise<boolean> => {
    return (await this.signedIn(request))?.admin === true
  }

  /** The account of the request's session, if any, with whether it is an admin. */
  private async signedIn (request: FastifyRequest): Promise<SignedIn | undefined> {
    const session = this.sessionToken(request)
    const account = session === undefined ? undefined : await this.store.session(tokenHash(session), Date.now())
    return account && this.withRole(account)
  }

  /** An admin is named in the config; the name is compared as a taken name is, so its case does not matter. */
  private withRole (account: Account): SignedIn {
    return { id: account.id, name: account.name, admin: this.admins.has(nameKey(account.name)) }
  }

  /** The routes, as an encapsulated plugin: its cookie, rate limit and JSON parser reach no other route. */
  readonly routes = async (app: FastifyInstance, options: AccountRoutesOptions): Promise<void> => {
    await this.store.open()
    app.addHook('onClose', () => this.store.close())
    const secret = options.sessionSecret ?? await this.store.secret(randomBytes(SECRET_BYTES).toString('base64url'))
    await app.register(cookie, { secret })
    this.cookies = app
    await app.register(rateLimit, { global: false })
    // A hash of no one's password: a sign-in with an unknown name is checked
    // against it, so that it takes as long as one with a wrong password.
    const decoyHash = await hashPassword(randomBytes(SECRET_BYTES).toString('base64url'))

    app.removeContentTypeParser('application/json')
    app.addContentTypeParser('application/json', { parseAs: 'string', bodyLimit: BODY_LIMIT_BYTES }, (_request, body, done) => {
      try {
        done(null, body === '' ? undefined : JSON.parse(body as string))
      } catch {
        done(new HttpError(400, 'body: must be JSON'), undefined)
      }
    })

    const signIn = { bodyLimit: BODY_LIMIT_BYTES, config: { rateLimit: SIGN_IN_LIMIT } }

    app.post('/auth/register', signIn, async (request, reply) => {
      const { name, password } = credentials(request.body)
      const account = { id: randomBytes(8).toString('hex'), name }
      const created = await this.store.create({ ...account, key: nameKey(name), passwordHash: await hashPassword(password) })
      if (!created) throw new HttpError(409, 'name: already taken')
      await this.startSession(account, request, reply)
      return reply.code(201).send({ user: this.withRole(account) })
    })

    app.post('/auth/login', signIn, async (request, reply) => {
      const { name, password } = credentials(request.body)
      const found = await this.store.find(nameKey(name))
      // An unknown name costs one scrypt too, so the time does not tell it from a wrong password.
      const matches = await verifyPassword(password, found?.passwordHash ?? decoyHash)
      if (!found || !matches) throw new HttpError(401, 'wrong name or password')
      await this.startSession(found, request, reply)
      return { user: this.withRole(found) }
    })

    app.post('/auth/logout', async (request, reply) => {
      const session = this.sessionToken(request)
      if (session !== undefined) await this.store.endSession(tokenHash(session))
      reply.clearCookie(SESSION_COOKIE, { path: '/' })
      return { user: null }
    })

    app.get('/auth/me', async (request) => ({ user: (await this.signedIn(request)) ?? null }))
  }

  /** The session token of the request's cookie when its signature holds. */
  private sessionToken (request: FastifyRequest): string | undefined {
    if (!this.cookies || request.headers.cookie === undefined) return undefined
    const signed = this.cookies.parseCookie(request.headers.cookie)[SESSION_COOKIE]
    if (signed === undefined) return undefined
    const { valid, value } = this.cookies.unsignCookie(signed)
    return valid && value !== null ? value : undefined
  }

  private async startSession (account: Account, request: FastifyRequest, reply: FastifyReply): Promise<void> {
    const token = randomBytes(32).toString('base64url')
    await this.store.startSession(tokenHash(token), account.id, Date.now() + SESSION_TTL_SECONDS * 1000)
    reply.setCookie(SESSION_COOKIE, token, {
      path: '/',
      signed: true,
      httpOnly: true,
      sameSite: 'lax',
      secure: request.protocol === 'https',
      maxAge: SESSION_TTL_SECONDS,
    })
  }
}
