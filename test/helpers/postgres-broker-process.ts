/**
 * A node in a process of its own, for tests that SIGKILL it: opens a
 * PostgresBroker, announces one member in one room, prints "ready", then, with
 * `send`, sends messages to the room without end, printing "acked <cid> <seq>"
 * for each one acknowledged.
 * Arguments: url schema leaseMs room memberId memberName [send].
 */
import { PostgresBroker } from '../../lib/postgres.js'
import { resolveOptions } from '../../lib/options.js'

const [connectionString, schema, leaseMs, room, id, name, mode] = process.argv.slice(2) as [string, string, string, string, string, string, string?]
const broker = new PostgresBroker({ connectionString, schema, leaseMs: Number(leaseMs) })
const quiet = (): void => {}
await broker.open({ deliver: quiet, outOfSync: quiet, signal: quiet, historySize: 100, reactionLimits: resolveOptions().reactionLimits, connections: () => 0, log: { info: quiet, warn: quiet, error: quiet } })
await broker.subscribe(room)
await broker.publish(room, { type: 'presence', room, action: 'join', member: { id, user: id, name } })
process.stdout.write('ready\n')
/** Sends in flight at once: enough that the kill lands amid commits. */
const SENDERS = 8
if (mode === 'send') {
  let next = 0
  await Promise.all(Array.from({ length: SENDERS }, async () => {
    for (;;) {
      const cid = `c${next++}`
      const { message } = await broker.append(room, { from: { id, user: id, name }, text: cid, cid })
      process.stdout.write(`acked ${cid} ${message.seq}\n`)
    }
  }))
}
