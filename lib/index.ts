/**
 * fastify-chat-rooms: real-time chat rooms for Fastify over WebSockets.
 * The default export is the plugin; brokers, types and the wire schemas are named exports.
 */
import chatRooms from './plugin.js'

export default chatRooms
export { chatRooms }
export type { Hub, HubListener } from './hub-api.js'
export { SERVER_MEMBER, type HubStats, type HubEvents } from './hub.js'
export { MemoryBroker, type MemoryBrokerOptions } from './brokers/memory.js'
export type { Broker, BrokerNode, BrokerLogger, MessageDraft, AppendResult, ReadRange, ReadResult, RoomInfo, RoomsPage, NodeInfo } from './broker.js'
export { CID_RETENTION_MS } from './broker.js'
export { ChatError, CloseCodes, ErrorCodes, type ErrorCode, type CloseCode } from './errors.js'
export { OptionsSchema, OptionsError, resolveOptions, defaults, type ChatRoomsOptions, type ResolvedOptions, type Identity, type PendingMessage } from './options.js'
export * from './protocol.js'
