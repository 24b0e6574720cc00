/**
 * The `fastify-chat-rooms/postgres` entry point: the PostgreSQL broker, apart
 * from the main entry so that users of the other brokers never load pg.
 */
export { PostgresBroker, type PostgresBrokerOptions, type RetentionOptions } from './brokers/postgres.js'
