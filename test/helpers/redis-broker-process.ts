/**
 * A node in a process of its own, for tests that SIGKILL it: opens a
 * RedisBroker, announces one member in one room, prints "ready", and waits.
 * Arguments: url prefix leaseMs room memberId memberName.
 */
import { RedisBroker } from '../../lib/redis.js'
import { resolveOptions } from '../../lib/options.js'

const [url, prefix, leaseMs, room, id, name] = process.argv.slice(2) as [string, string, string, string, string, string]
const broker = new RedisBroker({ url, prefix, leaseMs: Number(leaseMs) })
const quiet = (): void => {}
await broker.open({ deliver: quiet, outOfSync: quiet, signal: quiet, historySize: 100, reactionLimits: resolveOptions().reactionLimits, connections: () => 0, log: { info: quiet, warn: quiet, error: quiet } })
await broker.subscribe(room)
await broker.publish(room, { type: 'presence', room, action: 'join', member: { id, user: id, name } })
process.stdout.write('ready\n')
