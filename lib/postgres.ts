/**
 * The `fastify-chat-rooms/postgres` entry point: the PostgreSQL broker, apart
 * from the main entry so that users of the other brokers never load pg.
 */
export { PostgresBroker, type PostgresBrokerOptions } from './brokers/postgres.js'
export type { RetentionOptions } from './broker.js'
