/**
 * fastify-chat-rooms: real-time chat rooms for Fastify over WebSockets.
 * The default export is the plugin; brokers, types and the wire schemas are named exports.
 */
import chatRooms from './plugin.js'

export default chatRooms
export { chatRooms }
export type { Hub, HubListener } from './hub-api.js'
export { SERVER_MEMBER, DISCONNECT_USER_CLOSE, type HubStats, type HubEvents } from './hub.js'
export { MemoryBroker, type MemoryBrokerOptions } from './brokers/memory.js'
export type { Broker, BrokerNode, BrokerLogger, MessageDraft, AppendResult, ReadRange, ReadResult, RoomInfo, RoomsPage, NodeInfo, ModerationEntry, Restriction, UserState, UserChange, UserEvent, NodeSignal, UpdateDraft, UpdateResult, ReactionLimits } from './broker.js'
export { MAX_USER_LENGTH, type RestrictionOptions } from './moderation.js'
export { CID_RETENTION_MS } from './broker.js'
export { ChatError, CloseCodes, ErrorCodes, type ErrorCode, type CloseCode } from './errors.js'
export { OptionsSchema, OptionsError, resolveOptions, defaults, type ChatRoomsOptions, type ResolvedOptions, type Identity, type PendingMessage, type HookMember, type Authorize, type RestAction, type RestOptions } from './options.js'
export * from './protocol.js'
