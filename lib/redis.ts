/**
 * The `fastify-chat-rooms/redis` entry point: the Redis broker, apart from the
 * main entry so that users of the memory broker never load ioredis.
 */
export { RedisBroker, type RedisBrokerOptions } from './brokers/redis.js'
