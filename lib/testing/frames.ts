/**
 * Reads what the server sent a test connection, holding it to the protocol's
 * schemas (protocol.ts): a frame the protocol does not allow fails the test
 * with what is wrong with it, rather than reaching the test's own checks.
 */
import { serverFrameValidators, type ServerFrame, type ServerFrameType } from '../protocol.js'
import { schemaErrors } from '../schema-errors.js'
import { cut, show } from './pattern.js'

/** The frame in `data`, or what is wrong with it. */
export function readFrame (data: Buffer, isBinary: boolean): { frame: ServerFrame } | { problem: string } {
  const text = data.toString('utf8')
  const outside = (why: string): { problem: string } => ({ problem: `the server sent a frame outside the protocol (${why}): ${cut(text)}` })
  if (isBinary) return outside('a binary frame')
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    return outside('not JSON')
  }
  const type = (value as { type?: unknown } | null)?.type
  const validator = typeof type === 'string' ? serverFrameValidators.get(type) : undefined
  if (validator === undefined) return outside(`no server frame has type ${show(type)}`)
  if (!validator.Check(value)) return outside(schemaErrors(validator, value, type as ServerFrameType).join('; '))
  return { frame: value as ServerFrame }
}
