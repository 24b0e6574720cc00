/**
 * The `fastify-chat-rooms/sqlite` entry point: the SQLite broker, apart from
 * the main entry so that users of the other brokers never load better-sqlite3.
 */
export { SqliteBroker, type SqliteBrokerOptions } from './brokers/sqlite.js'
export type { RetentionOptions } from './broker.js'
