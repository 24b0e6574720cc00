/**
 * What both bench servers share: listen on a free loopback port, tell the
 * runner which one on stdout, collect garbage on SIGUSR2 (so the runner reads
 * retained memory, not garbage), and exit at once on SIGTERM.
 */
import type { Server } from 'node:http'

export async function serve (server: Server, stop: () => void): Promise<void> {
  await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port: 0, backlog: 4096 }, resolve))
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('no port')
  process.on('SIGUSR2', () => (globalThis as { gc?: () => void }).gc?.())
  process.on('SIGTERM', stop)
  process.stdout.write(`${JSON.stringify({ port: address.port })}\n`)
}
