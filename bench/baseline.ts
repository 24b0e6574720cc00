/**
 * The baseline: a bare `ws` server with rooms, the broadcast of ws's README.
 * It speaks just enough of PROTOCOL.md for the generator (join, send, the same
 * `message` fields) and does nothing more: no validation, limits or history.
 * Each message is encoded once and the same bytes are sent to every member.
 */
import { createServer } from 'node:http'
import { WebSocketServer, type WebSocket } from 'ws'
import { serve } from './serve.js'

interface Room {
  seq: number
  readonly sockets: Set<WebSocket>
}

const rooms = new Map<string, Room>()
const server = createServer()
const wss = new WebSocketServer({ server, path: '/ws', maxPayload: 16384 })
let connections = 0

wss.on('connection', (socket) => {
  const id = String(++connections)
  const from = { id, user: id, name: `b${id}` }
  const joined = new Set<Room>()
  socket.send(JSON.stringify({ type: 'welcome', protocol: 2, ...from }))
  socket.on('message', (data) => {
    const request = JSON.parse(String(data)) as { type: string, room: string, text?: string }
    let room = rooms.get(request.room)
    if (request.type === 'join') {
      if (!room) rooms.set(request.room, room = { seq: 0, sockets: new Set() })
      room.sockets.add(socket)
      joined.add(room)
      socket.send(JSON.stringify({ type: 'joined', room: request.room, seq: room.seq }))
    } else if (request.type === 'send' && room && joined.has(room)) {
      const seq = ++room.seq
      const message = { type: 'message', room: request.room, seq, id: `${from.id}.${seq}`, from, text: request.text, ts: Date.now() }
      const frame = Buffer.from(JSON.stringify(message))
      for (const member of room.sockets) member.send(frame, { binary: false })
    }
  })
  socket.on('close', () => {
    for (const room of joined) room.sockets.delete(socket)
  })
})

await serve(server, () => process.exit(0))
