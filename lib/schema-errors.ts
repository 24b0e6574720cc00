/**
 * Turns a TypeBox validator's errors into readable lines, each naming the
 * field and saying what it allows (`rateLimit.burst: must be an integer >= 1`,
 * `rest: must be false or { prefix: string }`). The plugin's options, the
 * example's config file and the wire protocol all report schema errors here.
 */
import type { TSchema } from 'typebox'
import type { TLocalizedValidationError } from 'typebox/error'

/** The part of a compiled TypeBox validator this module uses. */
export interface SchemaValidator {
  Type(): TSchema
  Errors(value: unknown): TLocalizedValidationError[]
}

/** A schema node as JSON Schema writes it; only the keywords read here. */
interface Node {
  description?: string
  const?: unknown
  enum?: unknown[]
  anyOf?: Node[]
  type?: string
  minimum?: number
  exclusiveMinimum?: number
  maximum?: number
  exclusiveMaximum?: number
  minLength?: number
  maxLength?: number
  pattern?: string
  items?: Node
  properties?: Record<string, Node>
  required?: string[]
}

/** Unknown fields named in one line, at most: their names come from the input, which may hold thousands. */
const MAX_NAMES_SHOWN = 3
/** An input's own field name is cut to this many characters when shown, for the same reason. */
const MAX_NAME_SHOWN = 32
/** An object with more fields than this is called "an object" rather than spelled out in one line. */
const MAX_FIELDS_SPELLED = 4

/** The node a TypeBox `schemaPath` (`#/properties/rest/anyOf/1`) points to: a JSON pointer into the schema. */
function nodeAt (schema: TSchema, schemaPath: string): Node {
  let node: unknown = schema
  for (const step of schemaPath.split('/').slice(1)) {
    node = (node as Record<string, unknown> | undefined)?.[step.replaceAll('~1', '/').replaceAll('~0', '~')]
  }
  return (node ?? {}) as Node
}

/** `/rateLimit/perSecond` → `rateLimit.perSecond`; the empty path (the value itself) is `whole`. */
function fieldName (instancePath: string, whole: string): string {
  if (instancePath === '') return whole
  return instancePath.slice(1).split('/').map((step) => step.replaceAll('~1', '/').replaceAll('~0', '~')).join('.')
}

function within (instancePath: string, name: string, whole: string): string {
  const shown = name.length > MAX_NAME_SHOWN ? `${name.slice(0, MAX_NAME_SHOWN)}…` : name
  return instancePath === '' ? shown : `${fieldName(instancePath, whole)}.${shown}`
}

function literal (value: unknown): string {
  return typeof value === 'string' ? `'${value}'` : JSON.stringify(value)
}

/** `a`, `a or b`, `a, b or c`. */
function orList (items: string[]): string {
  return items.length <= 1 ? (items[0] ?? 'nothing') : `${items.slice(0, -1).join(', ')} or ${items.at(-1) as string}`
}

/** ` >= 1`, ` > 0`, ` from 0 to 65535`: the bounds of a number. */
function range (node: Node): string {
  if (node.minimum !== undefined && node.maximum !== undefined) return ` from ${node.minimum} to ${node.maximum}`
  const lower = node.minimum !== undefined ? `>= ${node.minimum}` : node.exclusiveMinimum !== undefined ? `> ${node.exclusiveMinimum}` : ''
  const upper = node.maximum !== undefined ? `<= ${node.maximum}` : node.exclusiveMaximum !== undefined ? `< ${node.exclusiveMaximum}` : ''
  return [lower, upper].filter(Boolean).map((bound) => ` ${bound}`).join(' and')
}

function stringRule (node: Node): string {
  const { minLength = 0, maxLength, pattern } = node
  const length = maxLength !== undefined
    ? ` of ${minLength > 0 ? `${minLength} to ` : 'at most '}${maxLength} characters`
    : minLength > 1 ? ` of at least ${minLength} characters` : ''
  const kind = minLength === 1 && maxLength === undefined ? 'a non-empty string' : `a string${length}`
  return pattern === undefined ? kind : `${kind} matching ${pattern}`
}

/** A value's shape in one short phrase, as it appears inside `{ … }`: `integer >= 1`, `string`, `'a' | 'b'`. */
function shape (node: Node): string {
  if (node.const !== undefined) return literal(node.const)
  if (node.enum) return node.enum.map(literal).join(' | ')
  if (node.anyOf) return node.anyOf.map(shape).join(' | ')
  if (node.type === 'integer' || node.type === 'number') return `${node.type}${range(node)}`
  if (node.type === 'array') return 'list'
  if (node.type === 'object') return objectShape(node)
  return node.type ?? 'any value'
}

function objectShape (node: Node): string {
  const fields = Object.entries(node.properties ?? {})
  if (fields.length === 0 || fields.length > MAX_FIELDS_SPELLED) return 'an object'
  const required = new Set(node.required)
  return `{ ${fields.map(([name, field]) => `${name}${required.has(name) ? '' : '?'}: ${shape(field)}`).join(', ')} }`
}

/** What a schema allows, as alternatives to join with "or": a description says it in the schema's own words. */
function alternatives (node: Node): string[] {
  if (node.description !== undefined) return [node.description]
  if (node.const !== undefined) return [literal(node.const)]
  if (node.enum) return node.enum.map(literal)
  if (node.anyOf) return node.anyOf.flatMap(alternatives)
  switch (node.type) {
    case 'boolean': return ['true', 'false']
    case 'integer': return [`an integer${range(node)}`]
    case 'number': return [`a number${range(node)}`]
    case 'string': return [stringRule(node)]
    case 'function': return ['a function']
    case 'array': return [`a list, each item ${node.items ? orList(alternatives(node.items)) : 'any value'}`]
    case 'object': return [objectShape(node)]
    default: return [node.type ?? 'any value']
  }
}

/** "must be …": what the schema at `schemaPath` allows. */
function allowed (schema: TSchema, schemaPath = '#'): string {
  return `must be ${orList(alternatives(nodeAt(schema, schemaPath)))}`
}

/** `/anyOf/2` at the end of a schema path: the error is about one branch of a union as a whole. */
const BRANCH = /\/anyOf\/\d+$/

/**
 * The errors worth reporting. A union reports every branch's errors and then
 * its own; a branch of the wrong kind for the value (a `type`, `const` or
 * `enum` error on the branch itself) says nothing useful, so it is dropped. If a
 * branch of the right kind remains, its errors are the specific ones and the
 * union's own error is dropped; otherwise the union's error stays, and it is
 * described by all of its branches ("false or { prefix: string }"). An
 * unknown field is reported once, by its object.
 */
function relevant (errors: TLocalizedValidationError[]): TLocalizedValidationError[] {
  // Each unknown field is also reported against the `false` schema of additionalProperties: the object's own error says it once.
  const reported = errors.filter((error) => !(error.keyword === 'boolean' && error.schemaPath.endsWith('/additionalProperties')))
  const wrongKind = new Set(reported
    .filter((error) => ['type', 'const', 'enum'].includes(error.keyword) && BRANCH.test(error.schemaPath))
    .map((error) => error.schemaPath))
  const inWrongKind = (path: string): boolean => [...wrongKind].some((branch) => path === branch || path.startsWith(`${branch}/`))
  const kept = reported.filter((error) => !inWrongKind(error.schemaPath))
  return kept.filter((error) => error.keyword !== 'anyOf' ||
    !kept.some((other) => other.schemaPath.startsWith(`${error.schemaPath}/anyOf/`)))
}

function describe (schema: TSchema, error: TLocalizedValidationError, whole: string): string {
  if (error.keyword === 'additionalProperties') {
    const names = error.params.additionalProperties
    const shown = names.slice(0, MAX_NAMES_SHOWN).map((name) => within(error.instancePath, name, whole))
    const more = names.length > MAX_NAMES_SHOWN ? ` and ${names.length - MAX_NAMES_SHOWN} more` : ''
    const known = Object.keys(nodeAt(schema, error.schemaPath).properties ?? {})
    return `${shown.join(', ')}${more}: unknown field${names.length > 1 ? 's' : ''} (allowed: ${known.join(', ')})`
  }
  if (error.keyword === 'required') {
    const object = nodeAt(schema, error.schemaPath)
    return error.params.requiredProperties.map((name) => {
      const field = object.properties?.[name] ?? {}
      return `${within(error.instancePath, name, whole)}: missing, must be ${orList(alternatives(field))}`
    }).join('; ')
  }
  return `${fieldName(error.instancePath, whole)}: ${allowed(schema, error.schemaPath)}`
}

/**
 * Why `value` does not match the validator's schema: one line per problem,
 * each naming the field (`whole` names the value itself). Never empty.
 */
export function schemaErrors (validator: SchemaValidator, value: unknown, whole: string): string[] {
  const schema = validator.Type()
  const lines = [...new Set(relevant(validator.Errors(value)).map((error) => describe(schema, error, whole)))]
  return lines.length > 0 ? lines : [`${whole}: ${allowed(schema)}`]
}
