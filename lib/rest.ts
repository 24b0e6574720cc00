/**
 * The HTTP API of PROTOCOL.md (with `rest: { prefix }`): rooms, their stored
 * messages and the live nodes, read through the hub's public API and guarded
 * by the same `authenticate` hook as the WebSocket route; with
 * `rest.authorize`, also the routes of rest-moderation.ts.
 */
import type { FastifyInstance } from 'fastify'
import Type from 'typebox'
import { refuse, type Authenticate } from './admission.js'
import { ChatError } from './errors.js'
import type { Hub } from './hub-api.js'
import { REDACTED_REQUEST_LOG } from './log-redaction.js'
import type { Authorize, ResolvedOptions } from './options.js'
import { moderationRoutes } from './rest-moderation.js'
import { MessageSchema, MAX_HISTORY_LIMIT, MAX_RAW_STRING } from './protocol.js'

const MessagesQuery = Type.Object({
  before: Type.Optional(Type.Integer({ minimum: 0 })),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_HISTORY_LIMIT })),
}, { additionalProperties: false })
/** Rooms per page of `GET /rooms`: the default, and the most one request may ask for. */
const DEFAULT_ROOMS_LIMIT = 100
const MAX_ROOMS_LIMIT = 1000
// Other parameters stay: `authenticate` may read one (a token).
const RoomsQuery = Type.Object({
  after: Type.Optional(Type.String({ maxLength: MAX_RAW_STRING })),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_ROOMS_LIMIT })),
})
const RoomsReply = Type.Object({
  rooms: Type.Array(Type.Object({ room: Type.String(), members: Type.Integer(), seq: Type.Integer() })),
  more: Type.Boolean(),
})
const MessagesReply = Type.Object({ room: Type.String(), messages: Type.Array(MessageSchema), more: Type.Boolean() })
const NodesReply = Type.Object({
  nodes: Type.Array(Type.Object({
    id: Type.String(),
    host: Type.String(),
    pid: Type.Integer(),
    startedAt: Type.Integer(),
    lastSeen: Type.Integer(),
    connections: Type.Integer(),
  })),
})

export interface RestRoutesOptions {
  hub: Hub
  options: Pick<ResolvedOptions, 'authenticate' | 'roomPattern'>
  authenticate: Authenticate
  /** `rest.authorize`: with it, the moderation and server-publish routes. */
  authorize: Authorize | undefined
}

/** Registered with `{ prefix }`: the routes of the HTTP API. */
export async function restApi (api: FastifyInstance, { hub, options, authenticate, authorize }: RestRoutesOptions): Promise<void> {
  // Every route of this context, whoever adds it: a token may come in the query string.
  api.addHook('onRoute', (route) => { route.logSerializers = { ...route.logSerializers, ...REDACTED_REQUEST_LOG.logSerializers } })
  if (options.authenticate) {
    // Before validation: who asks is settled before what is asked is looked at (and before `rest.authorize`).
    api.addHook('preValidation', async (request, reply) => {
      if (!(await authenticate(request, reply))) return reply
      return undefined
    })
  }
  // Every route reads the broker: while it is down, the answer is 503 in the error shape; an argument the hub
  // refuses (a text too long for `maxTextLength`) is 400, a message it cannot find 404; other errors go on to
  // the application's handler.
  api.setErrorHandler(async (error, _request, reply) => {
    if (error instanceof ChatError && error.code === 'unavailable') return refuse(reply, 503, error.message)
    if (error instanceof ChatError && error.code === 'invalid') return refuse(reply, 400, error.message)
    if (error instanceof ChatError && error.code === 'not_found') return refuse(reply, 404, error.message)
    throw error
  })
  api.get<{ Querystring: { after?: string, limit?: number } }>('/rooms', {
    schema: { querystring: RoomsQuery, response: { 200: RoomsReply } },
  }, async (request) => {
    const { after, limit = DEFAULT_ROOMS_LIMIT } = request.query
    // One more than the page: whether it comes tells whether more follow.
    const rooms = await hub.rooms({ after, limit: limit + 1 })
    return { rooms: rooms.slice(0, limit), more: rooms.length > limit }
  })
  api.get('/nodes', { schema: { response: { 200: NodesReply } } }, async () => ({ nodes: await hub.nodes() }))
  api.get<{ Params: { room: string }, Querystring: { before?: number, limit?: number } }>('/rooms/:room/messages', {
    schema: { querystring: MessagesQuery, response: { 200: MessagesReply } },
  }, async (request, reply) => {
    const { room } = request.params
    if (!options.roomPattern.test(room)) return refuse(reply, 400, `room: must match ${options.roomPattern.source}`)
    return { room, ...(await hub.history(room, request.query)) }
  })
  if (authorize) moderationRoutes(api, { hub, authorize, roomPattern: options.roomPattern })
}
