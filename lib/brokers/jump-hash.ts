/**
 * Which shard a room lives on: Lamping and Veach's jump consistent hash
 * ("A Fast, Minimal Memory, Consistent Hash Algorithm", 2014) of a 64-bit
 * hash of the room's name. Every node computes the same shard from the
 * same list, and when a shard is added at the end of the list only the rooms
 * that now belong to it move (about 1/N of them); none moves between the
 * shards that were there before.
 */
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

/**
 * The shard in [0, shards) of a room. Its key is two 32-bit hashes of the
 * name's UTF-16 units (FNV-1a, and a multiply-xor with MurmurHash2's
 * constant), each finished by MurmurHash3's mixer so names that differ in one
 * character land far apart: a fraction of a microsecond, where a crypto digest
 * costs several on every call.
 */
export function shardOf (room: string, shards: number): number {
  if (shards === 1) return 0
  let high = 0x811c9dc5
  let low = 0x9747b28c
  for (let i = 0; i < room.length; i++) {
    const unit = room.charCodeAt(i)
    high = Math.imul(high ^ unit, 0x01000193)
    low = Math.imul(low ^ unit, 0x5bd1e995)
  }
  return jumpHash((BigInt(mix32(high)) << 32n) | BigInt(mix32(low ^ room.length)), shards)
}

/** MurmurHash3's 32-bit finalizer: every input bit affects every output bit. */
function mix32 (hash: number): number {
  hash = Math.imul(hash ^ (hash >>> 16), 0x85ebca6b)
  hash = Math.imul(hash ^ (hash >>> 13), 0xc2b2ae35)
  return (hash ^ (hash >>> 16)) >>> 0
}
