/**
 * The example config's `redis` in each of its forms: the `RedisBroker`
 * options each stands for, and errors that name the field.
 */
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { type Config, loadConfig, redisBrokerOptions } from '../example/config.js'
import { tempDir } from './helpers/example-server.js'

const GOOD = { host: '127.0.0.1', port: 9999, logLevel: 'info', chat: {} }
const A = 'redis://10.0.0.1:6379'
const B = 'rediss://10.0.0.2:6380'

/** A loader of `fields` over a good config, written to a file of the test's own and read as the example server reads it. */
async function configLoader (t: TestContext): Promise<(fields: Record<string, unknown>) => Promise<Config>> {
  const file = join(await tempDir(t), 'config.json')
  return async (fields) => {
    await writeFile(file, JSON.stringify({ ...GOOD, ...fields }))
    return loadConfig(file, {})
  }
}

test('each form of redis stands for the RedisBroker options it names', async (t) => {
  const load = await configLoader(t)
  const forms: Array<[unknown, unknown]> = [
    [A, { url: A }],
    [[A, B], { shards: [A, B] }],
    [{ cluster: [A, B] }, { cluster: [A, B] }],
    [{ url: A, prefix: 'demo:' }, { url: A, prefix: 'demo:' }],
    [{ shards: [A, B], registryShard: B, prefix: 'myapp:' }, { shards: [A, B], registryShard: B, prefix: 'myapp:' }],
    [{ cluster: [A], prefix: 'myapp:' }, { cluster: [A], prefix: 'myapp:' }],
    // As RedisBroker takes them: a seed listed twice is harmless, unlike a shard.
    [{ cluster: [A, A] }, { cluster: [A, A] }],
  ]
  for (const [redis, options] of forms) {
    const config = await load({ redis })
    assert.deepEqual(config.redis, redis, 'the config keeps the form as written')
    assert.deepEqual(redisBrokerOptions(config.redis!), options, JSON.stringify(redis))
  }
})

test('a bad redis stops the config with a message naming the field', async (t) => {
  const load = await configLoader(t)
  const refused: Array<[unknown, string]> = [
    [5, "redis: must be a Redis URL like 'redis://127.0.0.1:6379', a list of them (shards) or { url | shards | cluster, prefix?, registryShard? }"],
    ['http://nope', "redis: must be a Redis URL like 'redis://127.0.0.1:6379'"],
    [[], "redis: must be a list of at least one Redis URL like ['redis://10.0.0.1:6379', 'redis://10.0.0.2:6379']"],
    [[A, 'nope'], "redis.1: must be a Redis URL like 'redis://127.0.0.1:6379'"],
    [[A, B, A], `redis.2: "${A}" is already redis.0; list each Redis once`],
    [{}, 'redis: set exactly one of url, shards and cluster'],
    [{ prefix: 'demo:' }, 'redis: set exactly one of url, shards and cluster'],
    [{ url: A, cluster: [B] }, 'redis: set exactly one of url, shards and cluster (it sets url and cluster)'],
    [{ shards: [A, 'tcp://b'] }, "redis.shards.1: must be a Redis URL like 'redis://127.0.0.1:6379'"],
    [{ shards: [A, B, B] }, `redis.shards.2: "${B}" is already redis.shards.1; list each Redis once`],
    [{ cluster: [] }, "redis.cluster: must be a list of at least one Redis URL like ['redis://10.0.0.1:6379', 'redis://10.0.0.2:6379']"],
    [{ cluster: A }, "redis.cluster: must be a list of at least one Redis URL like ['redis://10.0.0.1:6379', 'redis://10.0.0.2:6379']"],
    [{ url: 'localhost:6379' }, "redis.url: must be a Redis URL like 'redis://127.0.0.1:6379'"],
    [{ url: A, prefix: '' }, "redis.prefix: must be a non-empty prefix of every key and channel, like 'myapp:'"],
    [{ url: A, registryShard: A }, 'redis.registryShard: only with redis.shards (it names the shard that holds the node registry); remove it'],
    [{ shards: [A], registryShard: B }, `redis.registryShard: must be one of redis.shards, not "${B}"`],
    [{ shards: [A], db: 1 }, 'redis.db: unknown field (allowed: url, shards, cluster, prefix, registryShard)'],
  ]
  for (const [redis, message] of refused) {
    await assert.rejects(load({ redis }), (error: Error) => {
      assert.equal(error.name, 'OptionsError')
      assert.equal(error.message.replace(/^config [^:]+: /, ''), message, JSON.stringify(redis))
      return true
    })
  }
})

test('redis in any form is one broker and keeps no accounts', async (t) => {
  const load = await configLoader(t)
  const forms = [A, [A, B], { cluster: [A] }, { url: A, prefix: 'demo:' }]
  for (const redis of forms) {
    await assert.rejects(load({ redis, accounts: true }), { message: /accounts: needs sqlite or postgres to keep the accounts in \(redis does not keep them\)/ }, JSON.stringify(redis))
    await assert.rejects(load({ redis, sqlite: 'chat.db' }), { message: /redis and sqlite: a config names at most one broker/ }, JSON.stringify(redis))
  }
})
