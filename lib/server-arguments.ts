/**
 * The checks of what the server API (`fastify.hub`) is given: the rules a
 * member's messages are held to, refused as `invalid` naming the argument, so
 * that a mistaken call never reaches the broker.
 */
import { ChatError } from './errors.js'
import { assertWellFormed, characterCount } from './protocol.js'

/** A room name `roomPattern` allows. */
export function checkRoom (room: unknown, roomPattern: RegExp): asserts room is string {
  if (typeof room !== 'string' || !roomPattern.test(room)) throw new ChatError('invalid', `room: must match ${roomPattern.source}`)
  assertWellFormed('room', room)
}

/** A message text of 1 to `maxTextLength` characters. */
export function checkText (text: string, maxTextLength: number): void {
  if (text.length === 0 || characterCount(text, maxTextLength) > maxTextLength) {
    throw new ChatError('invalid', `text: must be 1 to ${maxTextLength} characters`)
  }
  assertWellFormed('text', text)
}

/** The seq of a stored message: a whole number from 1. */
export function checkSeq (seq: unknown): asserts seq is number {
  if (typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq < 1) throw new ChatError('invalid', 'seq: must be a whole number >= 1')
}
