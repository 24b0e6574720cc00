/**
 * The health routes (with `health: { prefix }`), for load balancers and
 * service registries: `live` answers while the process serves; `ready` says
 * whether this node should get new clients: the broker answers and the server
 * is not shutting down. They are not behind `authenticate`: the callers are
 * machines without a user's credentials.
 */
import type { FastifyInstance } from 'fastify'
import Type from 'typebox'
import type { NodeInfo } from './broker.js'
import type { Hub } from './hub-api.js'

/**
 * How long `ready` waits for the broker. A healthy broker answers in
 * milliseconds, and a load balancer's check gives up within seconds (a
 * Kubernetes probe after 1 s by default): one slower than this counts as not
 * answering, and the check hears so rather than timing out.
 */
export const READY_TIMEOUT_MS = 1000

const Status = Type.Object({ status: Type.Literal('ok') })
const NotReady = Type.Object({ reason: Type.String() })

export interface HealthOptions {
  hub: Hub
  /** True from the start of `fastify.close()`: new clients should go to other nodes. */
  shuttingDown: () => boolean
}

/**
 * The live nodes, as the broker lists them: a read of the store every broker
 * has (the Redis broker: one script on the registry's keys) that costs little
 * and needs no primitive of its own in the broker seam, so it also tells
 * whether the broker answers (readiness and the metrics ask it).
 * @returns the nodes, or why the broker did not answer within READY_TIMEOUT_MS
 */
export async function nodesWithin (hub: Pick<Hub, 'nodes'>): Promise<NodeInfo[] | string> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<string>((resolve) => {
    timer = setTimeout(() => resolve(`did not answer within ${READY_TIMEOUT_MS} ms`), READY_TIMEOUT_MS)
  })
  try {
    return await Promise.race([hub.nodes().catch((error: Error) => error.message), timeout])
  } finally {
    clearTimeout(timer)
  }
}

/** Registered with `{ prefix }`: `GET live` and `GET ready`. */
export async function healthRoutes (api: FastifyInstance, { hub, shuttingDown }: HealthOptions): Promise<void> {
  api.get('/live', { schema: { response: { 200: Status } } }, async () => ({ status: 'ok' as const }))
  api.get('/ready', { schema: { response: { 200: Status, 503: NotReady } } }, async (_request, reply) => {
    const nodes = shuttingDown() ? undefined : await nodesWithin(hub)
    if (Array.isArray(nodes)) return { status: 'ok' as const }
    return reply.code(503).send({ reason: nodes === undefined ? 'shutting down' : `broker unavailable: ${nodes}` })
  })
}
