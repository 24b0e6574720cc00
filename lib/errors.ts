/**
 * Wire error codes and WebSocket close codes, defined once and shared by the
 * server, the client library and the tests. PROTOCOL.md explains each.
 */

/** Codes carried by an `error` frame. */
export const ErrorCodes = [
  'bad_json',
  'invalid',
  'unknown_type',
  'not_joined',
  'too_many_rooms',
  'room_full',
  'rate_limited',
  'forbidden',
  'unavailable',
  'not_found',
  'too_many_reactions',
] as const

export type ErrorCode = (typeof ErrorCodes)[number]

/** Close codes the server uses, by what they mean. */
export const CloseCodes = {
  normal: 1000,
  goingAway: 1001,
  protocolError: 1002,
  unsupportedData: 1003,
  invalidPayload: 1007,
  policyViolation: 1008,
  messageTooBig: 1009,
  internalError: 1011,
  slowConsumer: 4008,
  /** The server cannot continue the member's stream without a gap: resume with `since`. */
  outOfSync: 4010,
} as const

export type CloseCode = (typeof CloseCodes)[keyof typeof CloseCodes]

/** An error that is answered to the client as an `error` frame with `code`. */
export class ChatError extends Error {
  readonly code: ErrorCode
  constructor (code: ErrorCode, message: string) {
    super(message)
    this.name = 'ChatError'
    this.code = code
  }
}
