/**
 * Redis for the tests: the shared server (127.0.0.1:6379, `REDIS_URL` to
 * override), a key prefix per test, and cleanup of that prefix's keys.
 */
import { randomUUID } from 'node:crypto'
import { Redis } from 'ioredis'

export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'

/**
 * Whether the Redis tests must be skipped: false when Redis answers, else the
 * reason to print. Under `CI=true` a missing Redis throws instead: CI never
 * skips them.
 */
export async function skipUnlessRedis (url = REDIS_URL): Promise<string | false> {
  const client = new Redis(url, { lazyConnect: true, retryStrategy: () => null, connectTimeout: 1000, maxRetriesPerRequest: 0 })
  let cause: Error | undefined
  client.on('error', (error: Error) => { cause ??= error })
  try {
    await client.connect()
    await client.ping()
    return false
  } catch (error) {
    const reason = `Redis is missing: nothing answered at ${url} (${(cause ?? error as Error).message}); start redis-server or set REDIS_URL`
    if (process.env.CI === 'true') throw new Error(`${reason}. Under CI the Redis tests must run, not skip.`, { cause: error })
    console.log(`skipping the Redis tests: ${reason}`)
    return reason
  } finally {
    client.disconnect()
  }
}

/** A key prefix no other test uses. */
export function uniquePrefix (): string {
  return `test:${randomUUID()}:`
}

/** Deletes every key under `prefix`. */
export async function deleteKeys (prefix: string, url = REDIS_URL): Promise<void> {
  const client = new Redis(url, { maxRetriesPerRequest: 1 })
  try {
    let cursor = '0'
    do {
      const [next, keys] = await client.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000)
      if (keys.length > 0) await client.del(...keys)
      cursor = next
    } while (cursor !== '0')
  } finally {
    client.disconnect()
  }
}

/** Keys under `prefix` (to check that nothing is left or grows). */
export async function keysUnder (prefix: string, url = REDIS_URL): Promise<string[]> {
  const client = new Redis(url, { maxRetriesPerRequest: 1 })
  try {
    return await client.keys(`${prefix}*`)
  } finally {
    client.disconnect()
  }
}
