/** A TCP relay in front of a server, to lose the network in ways a socket close cannot show. */
import net, { type AddressInfo } from 'node:net'

export interface Relay {
  /** ws://127.0.0.1:port/ws through the relay. */
  url: string
  /** Silently drops what flows on the current connections, as a dead network does; new connections flow. */
  mute: (direction: 'to-client' | 'both') => void
  /** Resets the current connections. */
  cut: () => void
  /** Resets the current connections and refuses new ones until `up()`: the client is offline. */
  down: () => void
  up: () => void
  close: () => void
}

export async function startRelay (targetPort: number): Promise<Relay> {
  const pipes = new Set<{ client: net.Socket, upstream: net.Socket, toClient: boolean, toServer: boolean }>()
  let refusing = false
  const server = net.createServer((client) => {
    if (refusing) return client.destroy()
    const upstream = net.connect(targetPort, '127.0.0.1')
    const pipe = { client, upstream, toClient: true, toServer: true }
    pipes.add(pipe)
    client.on('data', (data) => { if (pipe.toServer) upstream.write(data) })
    upstream.on('data', (data) => { if (pipe.toClient) client.write(data) })
    const end = (): void => { pipes.delete(pipe); client.destroy(); upstream.destroy() }
    for (const socket of [client, upstream]) socket.on('close', end).on('error', end)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const cut = (): void => { for (const pipe of pipes) pipe.client.destroy() }
  return {
    url: `ws://127.0.0.1:${(server.address() as AddressInfo).port}/ws`,
    mute (direction) {
      for (const pipe of pipes) {
        pipe.toClient = false
        if (direction === 'both') pipe.toServer = false
      }
    },
    cut,
    down () {
      refusing = true
      cut()
    },
    up () { refusing = false },
    close () {
      cut()
      server.close()
    },
  }
}
