/**
 * The baseline: a bare `ws` server with rooms, the broadcast of ws's README.
 * It speaks just enough of PROTOCOL.md for the generator (join, send, the same
 * `message` fields) and does nothing more: no validation, limits or history.
 * Each message is encoded once and the same bytes are sent to every member.
 * With `--presence` it also does what a join costs in the protocol, as ours
 * does it: `joined` lists the room's members, and the others get `presence`
 * `join` (and `leave` when a member goes), encoded once for all of them. That
 * server is the reference for what presence itself costs a connect.
 */
import { createServer } from 'node:http'
import { WebSocketServer, type WebSocket } from 'ws'
import { serve } from './serve.js'

interface Member {
  id: string
  user: string
  name: string
}

interface Room {
  readonly name: string
  seq: number
  readonly members: Map<WebSocket, Member>
}

const presence = process.argv.includes('--presence')
const rooms = new Map<string, Room>()
const server = createServer()
const wss = new WebSocketServer({ server, path: '/ws', maxPayload: 16384 })
let connections = 0

/** Sends `frame`, encoded once, to every member of `room` but `except`. */
function tellOthers (room: Room, except: WebSocket, frame: object): void {
  let bytes: Buffer | undefined
  for (const member of room.members.keys()) {
    if (member === except) continue
    bytes ??= Buffer.from(JSON.stringify(frame))
    member.send(bytes, { binary: false })
  }
}

wss.on('connection', (socket) => {
  const id = String(++connections)
  const from: Member = { id, user: id, name: `b${id}` }
  const joined = new Set<Room>()
  socket.send(JSON.stringify({ type: 'welcome', protocol: 2, ...from }))
  socket.on('message', (data) => {
    const request = JSON.parse(String(data)) as { type: string, room: string, text?: string }
    let room = rooms.get(request.room)
    if (request.type === 'join') {
      if (!room) rooms.set(request.room, room = { name: request.room, seq: 0, members: new Map() })
      room.members.set(socket, from)
      joined.add(room)
      socket.send(JSON.stringify({ type: 'joined', room: request.room, seq: room.seq, ...(presence ? { members: [...room.members.values()], memberCount: room.members.size } : {}) }))
      if (presence) tellOthers(room, socket, { type: 'presence', room: request.room, action: 'join', member: from, first: true })
    } else if (request.type === 'send' && room && joined.has(room)) {
      const seq = ++room.seq
      const message = { type: 'message', room: request.room, seq, id: `${from.id}.${seq}`, from, text: request.text, ts: Date.now() }
      const frame = Buffer.from(JSON.stringify(message))
      for (const member of room.members.keys()) member.send(frame, { binary: false })
    }
  })
  socket.on('close', () => {
    for (const room of joined) {
      room.members.delete(socket)
      if (presence) tellOthers(room, socket, { type: 'presence', room: room.name, action: 'leave', member: from, last: true })
    }
  })
})

await serve(server, () => process.exit(0))
