/**
 * The example server's config file: `{ host, port, logLevel, redis?, chat }`,
 * where `chat` holds the plugin's options. Validated at start so a bad field
 * stops the server with a message naming it.
 */
import { readFile } from 'node:fs/promises'
import Type, { type Static } from 'typebox'
import { Compile } from 'typebox/compile'
import { OptionsSchema, OptionsError, describeErrors } from '../lib/options.js'

export const ConfigSchema = Type.Object({
  host: Type.String({ minLength: 1 }),
  port: Type.Integer({ minimum: 0, maximum: 65535 }),
  logLevel: Type.Union(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((level) => Type.Literal(level))),
  redis: Type.Optional(Type.String({ pattern: '^rediss?://' })),
  chat: OptionsSchema,
}, { additionalProperties: false })

export type Config = Static<typeof ConfigSchema>

const validator = Compile(ConfigSchema)

export const DEFAULT_CONFIG_FILE = new URL('../../example/config.json', import.meta.url)

/** Reads and validates the config; `HOST` and `PORT` in `env` override the file. */
export async function loadConfig (file: string | URL, env: NodeJS.ProcessEnv = process.env): Promise<Config> {
  let value: Record<string, unknown>
  try {
    value = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>
  } catch (error) {
    throw new OptionsError(`config ${String(file)}: cannot be read as JSON (${(error as Error).message})`)
  }
  if (env.HOST !== undefined) value.host = env.HOST
  if (env.PORT !== undefined) value.port = Number(env.PORT)
  if (!validator.Check(value)) {
    throw new OptionsError(`config ${String(file)}: ${describeErrors(validator.Errors(value), '')}`)
  }
  return value
}
