/**
 * The HTTP API's routes that act rather than read (PROTOCOL.md, "Moderation"):
 * publishing and deleting messages as the server, kick, ban, unban, mute,
 * unmute and the list of bans and mutes. They exist only with
 * `rest.authorize`, which is asked about every request after `authenticate`;
 * a refusal is 403.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import Type from 'typebox'
import { refuse } from './admission.js'
import type { Hub } from './hub-api.js'
import { MAX_USER_LENGTH } from './moderation.js'
import type { Authorize, RestAction } from './options.js'
import { MessageSchema, MAX_RAW_STRING } from './protocol.js'

const Restriction = Type.Object({ until: Type.Optional(Type.Integer()) })
/** A user's bans and mutes in force, as the moderation routes answer them. */
const Entry = { user: Type.String(), ban: Type.Optional(Restriction), mute: Type.Optional(Restriction) }
const ModerationReply = Type.Object({ room: Type.String(), ...Entry })
const ModerationListReply = Type.Object({ room: Type.String(), moderation: Type.Array(Type.Object(Entry)) })
const PublishBody = Type.Object({ text: Type.String({ minLength: 1, maxLength: MAX_RAW_STRING }) }, { additionalProperties: false })
const DeletedReply = Type.Object({ seq: Type.Integer() })
/** A message's seq in a path, as the route's schema checks it (400 otherwise). */
const MessageParams = Type.Object({ room: Type.String(), seq: Type.Integer({ minimum: 1 }) })
const ModerationBody = Type.Object({
  user: Type.String({ minLength: 1, maxLength: MAX_USER_LENGTH }),
  ms: Type.Optional(Type.Integer({ minimum: 1 })),
}, { additionalProperties: false })

/** The calls a `POST {prefix}/rooms/:room/{action}` route makes, by action. */
const CALLS = ['kick', 'ban', 'unban', 'mute', 'unmute'] as const
/** Whether a call takes a duration (`ms`). */
function timed (action: (typeof CALLS)[number]): action is 'ban' | 'mute' {
  return action === 'ban' || action === 'mute'
}

type RoomRequest<Body = unknown> = FastifyRequest<{ Params: { room: string }, Body: Body }>

export interface ModerationRoutesOptions {
  hub: Hub
  authorize: Authorize
  roomPattern: RegExp
}

/** Adds the routes to the HTTP API's context (its `authenticate` hook and error handler apply). */
export function moderationRoutes (api: FastifyInstance, { hub, authorize, roomPattern }: ModerationRoutesOptions): void {
  /** A route's `preValidation`: `authorize` decides, before the body is looked at; then the room name is checked. */
  const guard = (action: RestAction) => async (request: RoomRequest, reply: FastifyReply): Promise<FastifyReply | undefined> => {
    let allowed = false
    try {
      allowed = (await authorize(request, action)) === true
    } catch (error) {
      request.log.warn({ err: error, action }, 'chat rest.authorize threw; refusing with 403')
    }
    if (!allowed) return refuse(reply, 403, `not allowed to ${action}`)
    if (!roomPattern.test(request.params.room)) return refuse(reply, 400, `room: must match ${roomPattern.source}`)
    return undefined
  }

  api.post('/rooms/:room/messages', {
    preValidation: guard('publish'),
    schema: { body: PublishBody, response: { 200: MessageSchema } },
  }, async (request: RoomRequest<{ text: string }>) => await hub.broadcast(request.params.room, request.body.text))

  api.delete<{ Params: { room: string, seq: number } }>('/rooms/:room/messages/:seq', {
    preValidation: guard('delete'),
    schema: { params: MessageParams, response: { 200: DeletedReply } },
  }, async (request) => ({ seq: await hub.deleteMessage(request.params.room, request.params.seq) }))

  for (const action of CALLS) {
    api.post(`/rooms/:room/${action}`, {
      preValidation: guard(action),
      schema: { body: ModerationBody, response: { 200: ModerationReply } },
    }, async (request: RoomRequest<{ user: string, ms?: number }>, reply) => {
      const { room } = request.params
      const { user, ms } = request.body
      if (ms !== undefined && !timed(action)) return refuse(reply, 400, `body/ms: only ban and mute take a duration, not ${action}`)
      const entry = timed(action) ? await hub[action](room, user, ms === undefined ? {} : { ms }) : await hub[action](room, user)
      return { room, ...entry }
    })
  }

  api.get('/rooms/:room/moderation', {
    preValidation: guard('moderation'),
    schema: { response: { 200: ModerationListReply } },
  }, async (request: RoomRequest) => ({ room: request.params.room, moderation: await hub.moderation(request.params.room) }))
}
