/**
 * The `fastify-chat-rooms/testing` entry point: helpers to test an
 * application's chat without a port (lib/testing/), apart from the main entry
 * so that production code never loads them.
 */
export { connect, ChatTestClient, RefusedError, type ConnectOptions, type InjectedSocket, type ReplyTo, type RequestType, type TestCleanup, type WaitOptions } from './testing/client.js'
export type { Closed } from './testing/mailbox.js'
export { matches, type FramePattern, type FramePredicate, type Pattern } from './testing/pattern.js'
