/**
 * Many clients of client.ts at once, as the generator and the sharded
 * workload (shards.ts) drive them: opening them, a bounded number at a time,
 * until every one has joined its room; waiting until the server goes quiet;
 * and publishing through some of them at a paced rate.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import { BATCH_MS, Client, clientFrame, nowUs, type Tally } from './client.js'

/** Clients connecting at once: the set-up is not what is measured, and more would only queue in the listen backlog. */
const CONNECT_CONCURRENCY = 200
const CONNECT_TIMEOUT_MS = 60_000
/** Batched clients take their turns in this many slices, so that their reads never come in one burst. */
const BATCH_SLICES = 10
/** Publishers send every this many ms, as many messages as the rate says are due. */
const TICK_MS = 2

/** Where one client connects and which room it joins. */
export interface Seat { port: number, room: string }

/**
 * Opens one client per seat, in order, a bounded number at a time, and resolves once all have joined. Every
 * `timedEvery`-th client times its frames; the others read in batches (client.ts).
 */
export async function connectAll (seats: Seat[], tally: Tally, timedEvery: number): Promise<Client[]> {
  const clients: Client[] = []
  let next = 0
  let joined = 0
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${joined} of ${seats.length} joined in time`)), CONNECT_TIMEOUT_MS)
    const open = (): void => {
      const i = next++
      const seat = seats[i]
      if (seat !== undefined) clients.push(new Client(seat.port, seat.room, tally, onJoined, i % timedEvery === 0))
    }
    const onJoined = (): void => {
      if (++joined === seats.length) {
        clearTimeout(timer)
        resolve()
      } else {
        open()
      }
    }
    for (let i = 0; i < Math.min(CONNECT_CONCURRENCY, seats.length); i++) open()
  })
  let slice = 0
  setInterval(() => {
    for (let i = slice; i < clients.length; i += BATCH_SLICES) clients[i]!.readBatch()
    slice = (slice + 1) % BATCH_SLICES
  }, BATCH_MS / BATCH_SLICES).unref()
  return clients
}

/** Waits until the server has sent nothing for a moment (presence after joins, a backlog after a failed step). */
export async function quiet (tally: Tally): Promise<void> {
  const deadline = Date.now() + 10_000
  while (Date.now() < deadline && nowUs() - tally.lastFrameAt < 300_000) await sleep(50)
}

export interface Publisher {
  client: Client
  room: string
  queued: Buffer[]
}

/**
 * Sends `perSecond` messages a second for `durationMs`, taking the publishers in turn, each message's text its
 * send time (µs, for the receivers' latency); a publisher's messages of one tick go in one write. Resolves with
 * how many were sent: `perSecond × durationMs / 1000`, rounded down.
 */
export async function publishPaced (publishers: Publisher[], perSecond: number, durationMs: number): Promise<number> {
  const t0 = performance.now()
  let sent = 0
  let turn = 0
  await new Promise<void>((resolve) => {
    const timer = setInterval(() => {
      const elapsed = Math.min(performance.now() - t0, durationMs)
      const due = Math.floor((perSecond * elapsed) / 1000)
      for (; sent < due; sent++) {
        const publisher = publishers[turn++ % publishers.length]!
        publisher.queued.push(clientFrame(Buffer.from(`{"type":"send","room":"${publisher.room}","text":"t${nowUs()}"}`)))
      }
      for (const publisher of publishers) {
        if (publisher.queued.length === 0) continue
        publisher.client.write(publisher.queued.length === 1 ? publisher.queued[0]! : Buffer.concat(publisher.queued))
        publisher.queued.length = 0
      }
      if (elapsed >= durationMs) {
        clearInterval(timer)
        resolve()
      }
    }, TICK_MS)
  })
  return sent
}
