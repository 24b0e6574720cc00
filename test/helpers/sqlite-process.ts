/**
 * A SQLite broker in a process of its own, for the crash and second-process
 * tests: `burst FILE` appends without end, printing each acked seq until
 * killed; `users FILE` stores two messages, a read marker of 2 for `reader`
 * and a ban of `spammer` in room `r`, prints `stored` and waits to be killed;
 * `open FILE` opens the file and prints `opened`, or the error.
 */
import { SqliteBroker } from '../../lib/sqlite.js'
import { RecordingNode } from './recording-node.js'

const [mode, file] = process.argv.slice(2) as [string, string]
const broker = new SqliteBroker({ file })
try {
  await broker.open(new RecordingNode())
} catch (error) {
  process.stdout.write(`refused: ${(error as Error).message}\n`)
  process.exit(1)
}
process.stdout.write('opened\n')
if (mode === 'burst') {
  // Waves of concurrent appends, so that kills land inside group commits.
  for (let wave = 0; ; wave++) {
    const sends = Array.from({ length: 20 }, (_, i) => broker.append('r', { from: { id: 'a', user: 'a', name: 'a' }, text: `w${wave}-${i}`, cid: `w${wave}-${i}` })
      .then(({ message }) => { process.stdout.write(`${message.seq}\n`) }))
    await Promise.all(sends)
  }
}
if (mode === 'users') {
  for (const text of ['one', 'two']) await broker.append('r', { from: { id: 'w', user: 'w', name: 'w' }, text })
  await broker.changeUser('r', 'reader', { kind: 'read', seq: 2 })
  await broker.changeUser('r', 'spammer', { kind: 'ban' })
  process.stdout.write('stored\n')
  // Held open, as a server is, until the test kills it.
  setInterval(() => {}, 60_000)
}
