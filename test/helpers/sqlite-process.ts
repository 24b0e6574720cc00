/**
 * A SQLite broker in a process of its own, for the crash and second-process
 * tests: `burst FILE` appends without end, printing each acked seq until
 * killed; `users FILE` stores two messages, a read marker of 2 for `reader`
 * and a ban of `spammer` in room `r`, prints `stored` and waits to be killed;
 * `changes FILE` stores three messages in room `r`, edits the first (cid
 * `e1`), reacts to the second and deletes the third, prints the changes' seqs
 * as they are acknowledged (`acked 4 5 6`) and waits to be killed;
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
if (mode === 'changes') {
  const writer = { id: 'w', user: 'w', name: 'w' }
  for (const text of ['one', 'two', 'three']) await broker.append('r', { from: writer, text })
  const seqs = [
    await broker.update('r', { by: writer, target: 1, action: 'edit', text: 'one, edited', cid: 'e1' }),
    await broker.update('r', { by: { id: 'x', user: 'x', name: 'x' }, target: 2, action: 'react', reaction: '👍' }),
    await broker.update('r', { by: writer, target: 3, action: 'delete' }),
  ].map(({ seq }) => seq)
  // Killed on this line, at once: the changes were acknowledged and nothing else happened since.
  process.stdout.write(`acked ${seqs.join(' ')}\n`)
  setInterval(() => {}, 60_000)
}
if (mode === 'users') {
  for (const text of ['one', 'two']) await broker.append('r', { from: { id: 'w', user: 'w', name: 'w' }, text })
  await broker.changeUser('r', 'reader', { kind: 'read', seq: 2 })
  await broker.changeUser('r', 'spammer', { kind: 'ban' })
  process.stdout.write('stored\n')
  // Held open, as a server is, until the test kills it.
  setInterval(() => {}, 60_000)
}
