/** The short soak of CI: bench/soak.ts with a few hundred connections for about ten seconds, in its own processes. */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'

const SOAK = fileURLToPath(new URL('../bench/soak.js', import.meta.url))

test('a short soak: well-behaved members miss nothing, abusers get their close codes, the server returns to baseline', async (t) => {
  const soak = spawn(process.execPath, [SOAK, '--connections', '300', '--duration', '10', '--rate', '200'], { stdio: ['ignore', 'pipe', 'inherit'] })
  // The soak kills its server when it exits; killing the soak on a timeout is enough to leave nothing behind.
  t.after(() => { if (soak.exitCode === null) soak.kill() })
  let output = ''
  soak.stdout.on('data', (chunk: Buffer) => { output += chunk.toString() })
  const code = await new Promise<number | null>((resolve) => soak.on('exit', resolve))
  for (const line of output.trim().split('\n')) t.diagnostic(line)
  assert.equal(code, 0, output)
  assert.match(output, /^PASS$/m)
})
