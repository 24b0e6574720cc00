/**
 * What both bench servers share: listen on a loopback port ($BENCH_PORT, or
 * a free one), tell the runner which one on stdout, collect garbage on SIGUSR2
 * (so the runner reads retained memory, not garbage), exit at once on SIGTERM,
 * and on SIGINT close as a deployment does (`close`), then exit.
 */
import type { Server } from 'node:http'

export async function serve (server: Server, stop: () => void, close: () => Promise<unknown> = async () => {}): Promise<void> {
  const port = Number(process.env.BENCH_PORT ?? 0)
  await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port, backlog: 4096 }, resolve))
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('no port')
  process.on('SIGUSR2', () => (globalThis as { gc?: () => void }).gc?.())
  process.on('SIGTERM', stop)
  process.once('SIGINT', () => { void close().finally(stop) })
  process.stdout.write(`${JSON.stringify({ port: address.port })}\n`)
}
