/**
 * What the test kit waits for: a frame matching a pattern (any subset of its
 * fields, matched deeply, as Phoenix's `assert_push` matches a payload) or a
 * predicate, and how patterns and frames are written in failure messages.
 */
import type { ServerFrame, ServerFrameOf, ServerFrameType } from '../protocol.js'

/**
 * Part of a value: any of an object's fields, each a pattern itself; an array
 * of the same length whose elements match element by element; a RegExp for a
 * string; anything else is compared with `Object.is`. A field written as
 * `undefined` matches only a frame without that field.
 */
export type Pattern<T> =
  T extends string ? T | RegExp
    : T extends ReadonlyArray<infer E> ? ReadonlyArray<Pattern<E>>
      : T extends object ? { [K in keyof T]?: Pattern<T[K]> }
        : T

/** A frame pattern: the frame's `type`, and any of its other fields. */
export type FramePattern<K extends ServerFrameType> = Pattern<ServerFrameOf<K>> & { type: K }

/** A test of frames of one type, for what a pattern cannot say. */
export type FramePredicate<K extends ServerFrameType> = (frame: ServerFrameOf<K>) => boolean

/** A pattern or predicate made into one test, with the words a failure message uses for it. */
export interface Matcher {
  readonly description: string
  test (frame: ServerFrame): boolean
}

/** Whether `value` has everything `pattern` asks for. */
export function matches (pattern: unknown, value: unknown): boolean {
  if (pattern instanceof RegExp) return typeof value === 'string' && value.search(pattern) !== -1
  if (Array.isArray(pattern)) {
    return Array.isArray(value) && value.length === pattern.length && pattern.every((element, index) => matches(element, value[index]))
  }
  if (typeof pattern === 'object' && pattern !== null) {
    if (typeof value !== 'object' || value === null || Array.isArray(value)) return false
    const record = value as Record<string, unknown>
    return Object.entries(pattern).every(([field, expected]) => matches(expected, record[field]))
  }
  return Object.is(pattern, value)
}

/** How much of one frame a failure message shows: enough to tell frames apart, never a page of history. */
const MAX_SHOWN_CHARACTERS = 300

/** `text` cut at MAX_SHOWN_CHARACTERS. */
export function cut (text: string): string {
  return text.length > MAX_SHOWN_CHARACTERS ? `${text.slice(0, MAX_SHOWN_CHARACTERS)}…` : text
}

/** `value` as JSON, RegExps written as themselves, cut at MAX_SHOWN_CHARACTERS. */
export function show (value: unknown): string {
  return cut(JSON.stringify(value, (_key, field: unknown) => field instanceof RegExp ? String(field) : field) ?? String(value))
}

/** The matcher of `expect`/`refute`'s arguments: a pattern, or a type and a predicate. */
export function matcherOf (pattern: FramePattern<ServerFrameType> | ServerFrameType, predicate?: FramePredicate<ServerFrameType>): Matcher {
  if (typeof pattern === 'string') {
    const type = pattern
    const test = predicate ?? (() => true)
    return { description: `${type} frame${predicate ? ` passing ${predicate.name || 'the predicate'}` : ''}`, test: (frame) => frame.type === type && test(frame) }
  }
  return { description: `frame matching ${show(pattern)}`, test: (frame) => matches(pattern, frame) }
}
