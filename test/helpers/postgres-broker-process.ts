/**
 * A node in a process of its own, for tests that SIGKILL it: opens a
 * PostgresBroker, announces one member in one room, prints "ready", and waits.
 * Arguments: url schema leaseMs room memberId memberName.
 */
import { PostgresBroker } from '../../lib/postgres.js'

const [connectionString, schema, leaseMs, room, id, name] = process.argv.slice(2) as [string, string, string, string, string, string]
const broker = new PostgresBroker({ connectionString, schema, leaseMs: Number(leaseMs) })
const quiet = (): void => {}
await broker.open({ deliver: quiet, historySize: 100, connections: () => 0, log: { info: quiet, warn: quiet, error: quiet } })
await broker.subscribe(room)
await broker.publish(room, { type: 'presence', room, action: 'join', member: { id, name } })
process.stdout.write('ready\n')
