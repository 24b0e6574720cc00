/**
 * The wire protocol (PROTOCOL.md), defined once as TypeBox schemas: the server
 * validates with them, the client library and the tests take their types and
 * checks from them.
 */
import Type, { type Static, type TSchema } from 'typebox'
import { Compile } from 'typebox/compile'
import { ErrorCodes, ChatError, type ErrorCode } from './errors.js'
import { schemaErrors } from './schema-errors.js'

/** Version sent in `welcome`; changes only with a deliberate change of PROTOCOL.md. */
export const PROTOCOL_VERSION = 2

/** A `ref` longer than this is invalid: it is an echo token, not a payload. */
export const MAX_REF_LENGTH = 64
/** A `cid` longer than this is invalid: a random id fits in far less. */
export const MAX_CID_LENGTH = 64
/** Display names are short labels. */
export const MAX_NAME_LENGTH = 32
/**
 * A name as sent (`nick`, the `name` query) before it is trimmed and checked
 * against MAX_NAME_LENGTH: room for surrounding spaces and for characters that
 * take two UTF-16 units, while the schema still refuses a long string unread.
 */
export const MAX_RAW_NAME_LENGTH = 256
/** An epoch is a UUID (36 characters) from the broker; this leaves room for other brokers' formats. */
export const MAX_EPOCH_LENGTH = 64
/** How much of an unknown `type` the error echoes: enough to recognise it, never a payload. */
const UNKNOWN_TYPE_ECHO_LENGTH = 32
/** A `history` request pages at most this many messages. */
export const MAX_HISTORY_LIMIT = 100
export const DEFAULT_HISTORY_LIMIT = 50
/**
 * Bytes one member may take in a `joined` or `members` reply, as JSON with its
 * comma: a name of 32 characters escaped at 6 bytes each (192), the keys (30),
 * and an id and a user of 49 bytes each (an authenticated id is its user, a dot
 * and a suffix of 6). A page holds at most `maxMembersInReply` members and that
 * many times this in bytes, so members with longer ids make shorter pages.
 */
export const MEMBER_REPLY_BYTES = 320
/**
 * Raw strings longer than this many characters are refused by the schema
 * before any closer check, so a configurable rule (room pattern, text length)
 * never has to look at an unbounded string. `maxTextLength` may not exceed it.
 */
export const MAX_RAW_STRING = 65536
/** A reaction is a short token (an emoji, `+1`): at most this many characters. */
export const MAX_REACTION_LENGTH = 32
/** Distinct reactions one message may carry, by default (`maxReactionsPerMessage`). */
export const DEFAULT_MAX_REACTIONS_PER_MESSAGE = 20

/** The limits of one server instance that shape what a client message may hold. */
export interface WireLimits {
  roomPattern: RegExp
  maxTextLength: number
}

export const DEFAULT_ROOM_PATTERN = '^[A-Za-z0-9_\\-.:]{1,64}$'
export const DEFAULT_MAX_TEXT_LENGTH = 2000

// ---------------------------------------------------------------- shared parts

const Ref = Type.String({ maxLength: MAX_REF_LENGTH })
const Room = Type.String({ minLength: 1, maxLength: MAX_RAW_STRING })
const Seq = Type.Integer({ minimum: 0 })
/** The seq of a stored entry: the first is 1. */
const EntrySeq = Type.Integer({ minimum: 1 })
const Cid = Type.String({ minLength: 1, maxLength: MAX_CID_LENGTH })
/** Read only up to a bound: checked against `maxTextLength` once it passes. */
const RawText = Type.String({ minLength: 1, maxLength: MAX_RAW_STRING })
/** Read only up to a bound: `reaction` is checked closely (MAX_REACTION_LENGTH characters) once it passes. */
const RawReaction = Type.String({ minLength: 1, maxLength: 4 * MAX_REACTION_LENGTH })

/**
 * A member as every frame shows it: `id` names the connection (one tab or
 * device), `user` the person (the same in each of their tabs), `name` the label.
 */
export const MemberSchema = Type.Object({ id: Type.String(), user: Type.String(), name: Type.String() }, { additionalProperties: false })
export type Member = Static<typeof MemberSchema>

// ---------------------------------------------------------- client → server

function clientMessage<const T extends string, const P extends Record<string, TSchema>> (type: T, fields: P) {
  return Type.Object({ type: Type.Literal(type), ref: Type.Optional(Ref), ...fields }, { additionalProperties: false })
}

export const JoinSchema = clientMessage('join', { room: Room, since: Type.Optional(Seq), epoch: Type.Optional(Type.String({ maxLength: MAX_EPOCH_LENGTH })) })
export const LeaveSchema = clientMessage('leave', { room: Room })
export const SendSchema = clientMessage('send', {
  room: Room,
  text: RawText,
  cid: Type.Optional(Cid),
})
export const EditSchema = clientMessage('edit', { room: Room, seq: EntrySeq, text: RawText, cid: Type.Optional(Cid) })
export const DeleteSchema = clientMessage('delete', { room: Room, seq: EntrySeq, cid: Type.Optional(Cid) })
export const ReactSchema = clientMessage('react', { room: Room, seq: EntrySeq, reaction: RawReaction, on: Type.Boolean(), cid: Type.Optional(Cid) })
export const TypingSchema = clientMessage('typing', { room: Room })
export const NickSchema = clientMessage('nick', { name: Type.String({ maxLength: MAX_RAW_NAME_LENGTH }) })
export const HistorySchema = clientMessage('history', {
  room: Room,
  before: Type.Optional(Seq),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_HISTORY_LIMIT })),
})
export const MembersSchema = clientMessage('members', {
  room: Room,
  after: Type.Optional(Type.String({ maxLength: MAX_RAW_STRING })),
  limit: Type.Optional(Type.Integer({ minimum: 1 })),
})
export const ReadSchema = clientMessage('read', { room: Room, seq: Seq })
export const PingSchema = clientMessage('ping', {})

export const ClientSchemas = {
  join: JoinSchema,
  leave: LeaveSchema,
  send: SendSchema,
  edit: EditSchema,
  delete: DeleteSchema,
  react: ReactSchema,
  typing: TypingSchema,
  nick: NickSchema,
  history: HistorySchema,
  members: MembersSchema,
  read: ReadSchema,
  ping: PingSchema,
} as const

export type ClientMessageType = keyof typeof ClientSchemas
export type ClientMessageOf<K extends ClientMessageType> = Static<(typeof ClientSchemas)[K]>
export type ClientMessage = { [K in ClientMessageType]: ClientMessageOf<K> }[ClientMessageType]

// ---------------------------------------------------------- server → client

export const MessageSchema = Type.Object({
  type: Type.Literal('message'),
  room: Type.String(),
  seq: Type.Integer({ minimum: 1 }),
  id: Type.String(),
  from: MemberSchema,
  text: Type.String(),
  ts: Type.Integer(),
  cid: Type.Optional(Type.String()),
  /** When the text was last edited (the edit's `ts`). */
  edited: Type.Optional(Type.Integer()),
  /** The message was deleted: its `text` is empty, its reactions gone. */
  deleted: Type.Optional(Type.Literal(true)),
  /** Reaction → the users who gave it, in the order they did; only non-empty lists. */
  reactions: Type.Optional(Type.Record(Type.String(), Type.Array(Type.String()))),
}, { additionalProperties: false })
export type Message = Static<typeof MessageSchema>

export const UpdateActionSchema = Type.Union([Type.Literal('edit'), Type.Literal('delete'), Type.Literal('react'), Type.Literal('unreact')])
export type UpdateAction = Static<typeof UpdateActionSchema>

/**
 * A change of a stored message, as an entry of the room's stream with its own
 * seq: `text` with `edit`, `reaction` with `react` and `unreact`.
 */
export const UpdateSchema = Type.Object({
  type: Type.Literal('update'),
  room: Type.String(),
  seq: EntrySeq,
  target: EntrySeq,
  action: UpdateActionSchema,
  by: MemberSchema,
  ts: Type.Integer(),
  text: Type.Optional(Type.String()),
  reaction: Type.Optional(Type.String()),
  cid: Type.Optional(Type.String()),
}, { additionalProperties: false })
export type Update = Static<typeof UpdateSchema>

/** An entry of a room's stream: what gets a seq. */
export type Entry = Message | Update

function serverFrame<const T extends string, const P extends Record<string, TSchema>> (type: T, fields: P) {
  return Type.Object({ type: Type.Literal(type), ...fields }, { additionalProperties: false })
}

export const WelcomeSchema = serverFrame('welcome', { protocol: Type.Literal(PROTOCOL_VERSION), id: Type.String(), user: Type.String(), name: Type.String() })
export const JoinedSchema = serverFrame('joined', {
  ref: Type.Optional(Type.String()),
  room: Type.String(),
  epoch: Type.String(),
  seq: Seq,
  members: Type.Array(MemberSchema),
  memberCount: Seq,
  /** Without `since`: messages in their current state; with it, every entry after it (messages and updates). */
  history: Type.Array(Type.Union([MessageSchema, UpdateSchema])),
  recovered: Type.Optional(Type.Boolean()),
  /** The user's read marker in the room (0 when none). */
  read: Seq,
})
/** Why a member was removed from a room by moderation (`left` without `ref`). */
export const LeftReasonSchema = Type.Union([Type.Literal('kicked'), Type.Literal('banned')])
export type LeftReason = Static<typeof LeftReasonSchema>
export const LeftSchema = serverFrame('left', { ref: Type.Optional(Type.String()), room: Type.String(), reason: Type.Optional(LeftReasonSchema) })
export const PresenceSchema = serverFrame('presence', {
  room: Type.String(),
  action: Type.Union([Type.Literal('join'), Type.Literal('leave'), Type.Literal('rename')]),
  member: MemberSchema,
  /** With `join`: the user had no other connection in the room, on any node. */
  first: Type.Optional(Type.Boolean()),
  /** With `leave`: the user has no connection left in the room. */
  last: Type.Optional(Type.Boolean()),
})
export const TypingEventSchema = serverFrame('typing', { room: Type.String(), member: MemberSchema })
export const AckSchema = serverFrame('ack', { ref: Type.String(), room: Type.String(), seq: Type.Integer({ minimum: 1 }) })
export const HistoryPageSchema = serverFrame('history', {
  ref: Type.Optional(Type.String()),
  room: Type.String(),
  messages: Type.Array(MessageSchema),
  more: Type.Boolean(),
})
export const MembersPageSchema = serverFrame('members', {
  ref: Type.Optional(Type.String()),
  room: Type.String(),
  members: Type.Array(MemberSchema),
  more: Type.Boolean(),
})
export const ReadFrameSchema = serverFrame('read', { ref: Type.Optional(Type.String()), room: Type.String(), seq: Seq })
export const RenamedSchema = serverFrame('renamed', { ref: Type.Optional(Type.String()), name: Type.String() })
export const PongSchema = serverFrame('pong', { ref: Type.Optional(Type.String()) })
export const ErrorFrameSchema = serverFrame('error', {
  ref: Type.Optional(Type.String()),
  code: Type.Enum(ErrorCodes),
  message: Type.String(),
  /** With `rate_limited`: ms until the connection's rate allows its next message. */
  retryAfter: Type.Optional(Type.Integer({ minimum: 0 })),
})

export const ServerSchemas = {
  welcome: WelcomeSchema,
  joined: JoinedSchema,
  left: LeftSchema,
  message: MessageSchema,
  update: UpdateSchema,
  presence: PresenceSchema,
  typing: TypingEventSchema,
  ack: AckSchema,
  history: HistoryPageSchema,
  members: MembersPageSchema,
  read: ReadFrameSchema,
  renamed: RenamedSchema,
  pong: PongSchema,
  error: ErrorFrameSchema,
} as const

export type ServerFrameType = keyof typeof ServerSchemas
export type ServerFrameOf<K extends ServerFrameType> = Static<(typeof ServerSchemas)[K]>
export type ServerFrame = { [K in ServerFrameType]: ServerFrameOf<K> }[ServerFrameType]
export type Presence = ServerFrameOf<'presence'>
export type TypingEvent = ServerFrameOf<'typing'>
/** What a broker carries between nodes for a room: stored entries and ephemeral events. */
export type RoomEvent = Entry | Presence | TypingEvent

/** Whether `event` is a stored entry of the room's stream (it has a seq). */
export function isEntry (event: { type: string }): event is Entry {
  return event.type === 'message' || event.type === 'update'
}

/** A compiled check of each server frame, by its `type`: one per type, so that a test can say what is wrong with a frame. */
export const serverFrameValidators: ReadonlyMap<string, ReturnType<typeof Compile>> = new Map(Object.entries(ServerSchemas).map(([type, schema]) => [type, Compile(schema)]))

/** True when `value` is a well-formed server frame (used by tests and tooling). */
export function isServerFrame (value: unknown): value is ServerFrame {
  const type = (value as { type?: unknown } | null)?.type
  return typeof type === 'string' && serverFrameValidators.get(type)?.Check(value) === true
}

/** Encodes a server frame once, to the bytes sent: the same Buffer goes to every recipient. */
export function encodeFrame (frame: ServerFrame): Buffer {
  return Buffer.from(JSON.stringify(frame))
}

// ---------------------------------------------------------- names and text

// Unicode general category Cc: C0 controls, DEL and C1 controls.
const CONTROL_CHARACTER = /\p{Cc}/u
const WHITESPACE_OR_CONTROL = /[\s\p{Cc}]/u
// A `u` regex reads a surrogate pair as one character, so only a lone surrogate is in category Cs.
const LONE_SURROGATE = /\p{Cs}/u

/**
 * Whether `text` is well-formed Unicode (no lone UTF-16 surrogate): JSON
 * escapes let a client send one, and other stores (Lua's cjson, PostgreSQL)
 * cannot take it, so every string a client sends must pass (PROTOCOL.md).
 */
function isWellFormed (text: string): boolean {
  return !LONE_SURROGATE.test(text)
}

/** The `invalid` message for a field that is not well-formed Unicode. */
function notWellFormed (field: string): string {
  return `${field}: must be well-formed Unicode (no lone surrogate)`
}

/** Throws `invalid` naming `field` unless each of `texts` is well-formed Unicode. */
export function assertWellFormed (field: string, ...texts: string[]): void {
  if (!texts.every(isWellFormed)) throw new ChatError('invalid', notWellFormed(field))
}

/** Counts characters as people do (code points), cheaply when no surrogate pairs can matter. */
export function characterCount (text: string, atMost: number): number {
  if (text.length <= atMost) return text.length
  let count = 0
  for (const _ of text) {
    if (++count > atMost) break
  }
  return count
}

/**
 * Applies the name rules of PROTOCOL.md: trimmed, 1–32 characters, no control
 * characters. Returns the name to use or throws `invalid`.
 */
export function normalizeName (raw: string): string {
  const name = raw.trim()
  if (name.length === 0) throw new ChatError('invalid', 'name: must not be empty')
  if (characterCount(name, MAX_NAME_LENGTH) > MAX_NAME_LENGTH) {
    throw new ChatError('invalid', `name: must be at most ${MAX_NAME_LENGTH} characters`)
  }
  if (CONTROL_CHARACTER.test(name)) throw new ChatError('invalid', 'name: must not contain control characters')
  assertWellFormed('name', name)
  return name
}

/** What is wrong with `reaction` (PROTOCOL.md: 1–32 characters, no whitespace or control characters), if anything. */
export function reactionProblem (reaction: string): string | undefined {
  if (characterCount(reaction, MAX_REACTION_LENGTH) > MAX_REACTION_LENGTH) return `reaction: must be at most ${MAX_REACTION_LENGTH} characters`
  if (WHITESPACE_OR_CONTROL.test(reaction)) return 'reaction: must not contain whitespace or control characters'
  return undefined
}

// ---------------------------------------------------------- decoding

export type Decoded =
  | { ok: true, message: ClientMessage }
  | { ok: false, code: ErrorCode, message: string, ref?: string }

type Validators = { [K in ClientMessageType]: ReturnType<typeof Compile<(typeof ClientSchemas)[K]>> }

const validators = Object.fromEntries(
  Object.entries(ClientSchemas).map(([type, schema]) => [type, Compile(schema)]),
) as unknown as Validators

const hasOwn = Object.prototype.hasOwnProperty

/**
 * Builds the decoder for one server instance: JSON text in, a valid client
 * message or the protocol error to answer out. Never throws.
 */
export function createDecoder (limits: WireLimits): (data: string) => Decoded {
  const { roomPattern, maxTextLength } = limits
  return function decode (data) {
    let value: unknown
    try {
      value = JSON.parse(data)
    } catch {
      return { ok: false, code: 'bad_json', message: 'the frame is not valid JSON' }
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      return { ok: false, code: 'bad_json', message: 'the frame is not a JSON object' }
    }
    const record = value as Record<string, unknown>
    const ref = typeof record.ref === 'string' && characterCount(record.ref, MAX_REF_LENGTH) <= MAX_REF_LENGTH && isWellFormed(record.ref) ? record.ref : undefined
    const fail = (code: ErrorCode, message: string): Decoded =>
      ref === undefined ? { ok: false, code, message } : { ok: false, code, message, ref }

    const type = record.type
    if (typeof type !== 'string') return fail('invalid', 'type: must be a string')
    if (!hasOwn.call(validators, type)) return fail('unknown_type', `unknown type: ${type.slice(0, UNKNOWN_TYPE_ECHO_LENGTH)}`)
    const validator = validators[type as ClientMessageType]
    if (!validator.Check(value)) return fail('invalid', schemaErrors(validator, value, 'message').join('; '))

    // Every client message is flat: its strings are its fields' values.
    for (const [field, fieldValue] of Object.entries(record)) {
      if (typeof fieldValue === 'string' && !isWellFormed(fieldValue)) return fail('invalid', notWellFormed(field))
    }
    const message = value as ClientMessage
    if ('room' in message && !roomPattern.test(message.room)) {
      return fail('invalid', `room: must match ${roomPattern.source}`)
    }
    if ((message.type === 'send' || message.type === 'edit') && characterCount(message.text, maxTextLength) > maxTextLength) {
      return fail('invalid', `text: must be at most ${maxTextLength} characters`)
    }
    if (message.type === 'react') {
      const problem = reactionProblem(message.reaction)
      if (problem !== undefined) return fail('invalid', problem)
    }
    return { ok: true, message }
  }
}
