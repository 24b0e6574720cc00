/** Schema errors read as one line per problem, naming the field and saying what it allows. */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import Type from 'typebox'
import { Compile } from 'typebox/compile'
import { schemaErrors } from '../lib/schema-errors.js'

const validator = Compile(Type.Object({
  level: Type.Optional(Type.Enum({ low: 'low', high: 'high' })),
  ratio: Type.Optional(Type.Number({ exclusiveMinimum: 0, exclusiveMaximum: 1 })),
  code: Type.Optional(Type.String({ pattern: '^[A-Z]{3}$' })),
  name: Type.Optional(Type.String({ minLength: 2, maxLength: 8 })),
  sizes: Type.Optional(Type.Array(Type.Union([Type.Integer({ minimum: 1 }), Type.Literal('auto')]))),
  nested: Type.Optional(Type.Object({ inner: Type.Object({ on: Type.Boolean() }) }, { additionalProperties: false })),
}, { additionalProperties: false }))

const lines = (value: unknown): string[] => schemaErrors(validator, value, 'value')

test('each kind of rule is said in words', () => {
  assert.deepEqual(lines({ level: 'mid' }), ["level: must be 'low' or 'high'"])
  assert.deepEqual(lines({ ratio: 1 }), ['ratio: must be a number > 0 and < 1'])
  assert.deepEqual(lines({ code: 'ab' }), ['code: must be a string matching ^[A-Z]{3}$'])
  assert.deepEqual(lines({ name: 'x' }), ['name: must be a string of 2 to 8 characters'])
  assert.deepEqual(lines({ sizes: 4 }), ["sizes: must be a list, each item an integer >= 1 or 'auto'"])
  assert.deepEqual(lines({ nested: { inner: { on: 'yes' } } }), ['nested.inner.on: must be true or false'])
  assert.deepEqual(lines({ nested: 3 }), ['nested: must be { inner: { on: boolean } }'])
  assert.deepEqual(lines('text'), ['value: must be an object'])
})

test('a union names the branch the value was meant for, or else all of them', () => {
  assert.deepEqual(lines({ sizes: [2, 0] }), ['sizes.1: must be an integer >= 1'])
  assert.deepEqual(lines({ sizes: [2, 'big'] }), ["sizes.1: must be an integer >= 1 or 'auto'"])
})

test('every problem is reported, each once', () => {
  assert.deepEqual(lines({ level: 'mid', ratio: 0, nested: { inner: {} } }), [
    "level: must be 'low' or 'high'",
    'ratio: must be a number > 0 and < 1',
    'nested.inner.on: missing, must be true or false',
  ])
})

test('unknown fields are named, but only a few and cut short, since they come from the input', () => {
  assert.deepEqual(lines({ nested: { inner: { on: true }, extra: 1 } }), ['nested.extra: unknown field (allowed: inner)'])
  const long = 'x'.repeat(100)
  assert.deepEqual(lines({ [long]: 1, b: 2, c: 3, d: 4, e: 5 }),
    [`${'x'.repeat(32)}…, b, c and 2 more: unknown fields (allowed: level, ratio, code, name, sizes, nested)`])
})
