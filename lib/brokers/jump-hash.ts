/**
 * Which shard a room lives on: Lamping and Veach's jump consistent hash
 * ("A Fast, Minimal Memory, Consistent Hash Algorithm", 2014) of a 64-bit
 * digest of the room's name. Every node computes the same shard from the
 * same list, and when a shard is added at the end of the list only the rooms
 * that now belong to it move (about 1/N of them); none moves between the
 * shards that were there before.
 */
import { createHash } from 'node:crypto'

const MASK_64 = (1n << 64n) - 1n
/** The paper's 64-bit linear congruential generator. */
const MULTIPLIER = 2862933555777941757n
const TWO_POW_31 = 2 ** 31

/** The bucket in [0, buckets) of a 64-bit key. */
export function jumpHash (key: bigint, buckets: number): number {
  if (!Number.isInteger(buckets) || buckets < 1) throw new RangeError(`jumpHash: buckets must be a positive integer, not ${buckets}`)
  let bucket = -1
  let next = 0
  while (next < buckets) {
    bucket = next
    key = (key * MULTIPLIER + 1n) & MASK_64
    next = Math.floor((bucket + 1) * (TWO_POW_31 / (Number(key >> 33n) + 1)))
  }
  return bucket
}

/** The shard in [0, shards) of a room: the digest spreads names that differ in one character. */
export function shardOf (room: string, shards: number): number {
  if (shards === 1) return 0
  return jumpHash(createHash('sha1').update(room).digest().readBigUInt64BE(0), shards)
}
