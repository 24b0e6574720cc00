// The home page: a chat on the shipped client library. Every text that comes
// from the network is put in the page with textContent, never as HTML.
import { ChatClient } from './client/index.js'
import { el } from './dom.js'
import { messageItem as timelineItem, noticeItem, pendingItem as pendingTimelineItem, regroup } from './timeline.js'
import { carryEditor, messageActions } from './message-actions.js'
import { reactionBar } from './reactions.js'
import { roomDirectory } from './directory.js'
import { memberItems } from './members.js'
import { deleteMessage, showRestrictions } from './moderation.js'
import { signIn, whoAmI } from './accounts.js'

const NAME_KEY = 'chat-rooms.name'
const ROOMS_KEY = 'chat-rooms.rooms'
/** Someone stops being shown as typing when nothing more came for this long. */
const TYPING_SHOWN_MS = 4000
/** We tell the others we are typing at most this often. */
const TYPING_SENT_EVERY_MS = 2000
const PAGE_SIZE = 50
/** A send still unanswered after this long is shown as "sending…"; a quick one never flickers. */
const PENDING_SHOWN_AFTER_MS = 300

const $ = (id) => document.getElementById(id)
const statusLine = $('status')
const roomList = $('room-list')
const messageList = $('messages')
const memberList = $('member-list')
const typingLine = $('typing')
const membersTitle = $('members-title')
const text = $('text')


/**
 * room → { messages: Map<seq, message>, members: Map<id, member> (the first page the server sent, and who joined since),
 * memberCount, typing: Map<id, {name, timer}>, more, loadingOlder, notices, lastSeq, pending: Map<cid, {text, node}>,
 * latest (the room's newest seq known), read (the user's read marker), reading (a read request is out),
 * epoch, joinedBefore, removed ('kicked', 'banned' or 'refused' while we are not in it) }
 * Unread are the messages held with a seq above read (see unreadLabel).
 */
const rooms = new Map()
let current
let client
let myId
/** Who we are: one user in every tab of a signed-in account; a guest's is its connection id. */
let myUser
/** Whether the signed-in account may moderate (GET /auth/me says `admin`). */
let admin = false
/** Every connection id this page had: our messages from before a reconnect are still ours. */
const myIds = new Set()
let lastTypingSent = 0
/** The last name seen of each user, for the list of bans and mutes (which names users by id). */
const knownNames = new Map()
/** Whether the server has accounts: then the page signs in (a session cookie) instead of picking a name. */
let accounts = false

function remember (key, value) {
  try { localStorage.setItem(key, JSON.stringify(value)) } catch { /* storage may be off; nothing to remember then */ }
}

function recall (key, fallback) {
  try { return JSON.parse(localStorage.getItem(key) ?? 'null') ?? fallback } catch { return fallback }
}

function roomState (room) {
  let state = rooms.get(room)
  if (!state) {
    state = { messages: new Map(), members: new Map(), memberCount: 0, typing: new Map(), more: true, loadingOlder: false, notices: [], lastSeq: 0, pending: new Map(), latest: 0, read: 0, reading: false, epoch: undefined, joinedBefore: false, removed: undefined }
    rooms.set(room, state)
  }
  return state
}

// ------------------------------------------------------------------ rendering

function renderRooms () {
  roomList.replaceChildren(...[...rooms.keys()].map((room) => {
    const state = rooms.get(room)
    const button = el('button', { type: 'button', textContent: room })
    button.dataset.room = room
    if (room === current) button.setAttribute('aria-current', 'true')
    if (state.removed) {
      button.classList.add('removed')
      button.title = `You are not in ${room} (${state.removed})`
    }
    const unread = unreadLabel(state)
    if (unread !== '') {
      const badge = el('span', { className: 'unread', textContent: unread })
      badge.setAttribute('aria-label', `${unread} unread`)
      button.append(badge)
    }
    button.addEventListener('click', () => switchTo(room))
    return el('li', {}, button)
  }))
}

/**
 * The messages above the read marker, among those the page holds (a join
 * brings the newest): edits and reactions move seqs, and so the marker, but
 * are no news.
 */
function unreadLabel (state) {
  let unread = 0
  for (const seq of state.messages.keys()) if (seq > state.read) unread++
  return unread === 0 ? '' : String(unread)
}

/** An admin, on a server with the HTTP API: moderation is offered. */
function moderating () {
  return admin && Boolean(window.chatConfig.rest)
}

function renderMembers () {
  const room = current
  const state = rooms.get(room)
  const moderation = moderating() ? { restPrefix: window.chatConfig.rest, report: (line) => notice(room, line), changed: renderRestrictions } : undefined
  const items = state ? memberItems(room, state.members.values(), myUser, moderation) : []
  // A big room's `joined` lists only the first members; the count is the whole room (its connections).
  const unlisted = state ? state.memberCount - state.members.size : 0
  const count = items.length + Math.max(0, unlisted)
  if (unlisted > 0) items.push(el('li', { className: 'more', textContent: `and ${unlisted} more` }))
  memberList.replaceChildren(...items)
  membersTitle.textContent = state ? `Members (${count})` : 'Members'
  $('members-toggle').textContent = state ? `Members (${count})` : 'Members'
}

/** For an admin: the current room's bans and mutes, each with the button that lifts it. */
function renderRestrictions () {
  $('restrictions').hidden = !moderating() || !current
  if ($('restrictions').hidden) return
  const room = current
  showRestrictions(window.chatConfig.rest, room, $('restriction-list'), {
    nameOf: (user) => knownNames.get(user) ?? user,
    report: (line) => notice(room, line),
    changed: () => { if (room === current) renderRestrictions() },
  })
}

/**
 * A message of `room` as the list shows it, in its current state: ours (from any of this page's connections, or
 * another tab of our user) marked so, with edit and delete when our user wrote it (delete for an admin on any),
 * and its reactions.
 */
function messageItem (room, message) {
  const item = timelineItem(message, myIds.has(message.from.id) || message.from.user === myUser)
  if (message.deleted === true) return item
  const own = message.from.user === myUser
  const failed = (what) => (error) => {
    notice(room, `Could not ${what}: ${error.message}`)
    return false
  }
  const actions = {
    edit: own ? (text) => client.edit(room, message.seq, text).then(() => true, failed('edit the message')) : undefined,
    remove: own ? () => client.delete(room, message.seq).catch(failed('delete the message'))
      : moderating() ? () => deleteMessage(window.chatConfig.rest, room, message.seq).catch(failed('delete the message')) : undefined,
  }
  if (actions.edit || actions.remove) item.prepend(messageActions(item, message, actions))
  item.append(reactionBar(message, myUser, (reaction, on) => {
    client.react(room, message.seq, reaction, on).catch(failed(`react with ${reaction}`))
  }))
  return item
}

/**
 * Shows `message` of `room` in its new state (edited, deleted, reacted to), in its place; what had
 * the keyboard's focus in its item keeps it, and an edit being written stays open.
 */
function showChanged (room, message) {
  rooms.get(room)?.messages.set(message.seq, message)
  const old = room === current ? messageList.querySelector(`li[data-seq="${message.seq}"]`) : null
  if (!old) return
  const item = messageItem(room, message)
  carryEditor(old, item)
  const focused = old.contains(document.activeElement) ? document.activeElement : undefined
  old.replaceWith(item)
  regroup([item])
  if (focused) sameControl(item, focused)?.focus()
}

/** The control of `item` that does what `control` (of the item it replaced) did. */
function sameControl (item, control) {
  if (item.contains(control)) return control
  const { action, reaction, quick } = control.dataset
  if (action) return item.querySelector(`[data-action="${action}"]`)
  if (reaction) return [...item.querySelectorAll('[data-reaction]')].find((button) => button.dataset.reaction === reaction)
  if (quick) return item.querySelector('.add-reaction summary')
  return undefined
}

function pendingItem (body) {
  return pendingTimelineItem(body, client.name ?? '')
}

function dropPending (state, cid) {
  state.pending.get(cid)?.node.remove()
  state.pending.delete(cid)
}

function nearBottom () {
  return messageList.scrollHeight - messageList.scrollTop - messageList.clientHeight < 60
}

function renderMessages () {
  const state = rooms.get(current)
  $('room-title').textContent = current ?? ''
  if (!state) return messageList.replaceChildren()
  // A notice stands after the message that was newest when it came.
  const timeline = [
    ...[...state.messages.values()].map((message) => ({ at: message.seq, order: 0, node: () => messageItem(current, message) })),
    ...state.notices.map((entry, order) => ({ at: entry.afterSeq, order: order + 1, node: () => noticeItem(entry.line) })),
  ].sort((a, b) => a.at - b.at || a.order - b.order)
  for (const entry of state.pending.values()) entry.node = pendingItem(entry.text)
  const items = timeline.map((entry) => entry.node())
  messageList.replaceChildren(...items, ...[...state.pending.values()].map((entry) => entry.node))
  regroup(items)
  messageList.scrollTop = messageList.scrollHeight
  renderComposer()
  fillScreen()
}

/** A room we were removed from takes no messages until joined again. */
function renderComposer () {
  const removed = rooms.get(current)?.removed
  text.disabled = removed !== undefined
  text.placeholder = removed === undefined ? 'Message — Enter to send' : `You are not in ${current}: join it again to write`
}

function renderTyping () {
  const state = rooms.get(current)
  const names = state ? [...state.typing.values()].map((entry) => entry.name) : []
  typingLine.textContent = names.length === 0 ? '' : names.length === 1 ? `${names[0]} is typing…` : `${names.join(', ')} are typing…`
}

function notice (room, line) {
  const state = roomState(room)
  state.notices.push({ afterSeq: state.lastSeq, line })
  if (room === current) {
    const stick = nearBottom()
    messageList.append(noticeItem(line))
    if (stick) messageList.scrollTop = messageList.scrollHeight
  }
}

function setStatus ({ status, retryIn }) {
  const labels = {
    connecting: 'Connecting…',
    open: 'Connected',
    reconnecting: retryIn === undefined ? 'Reconnecting…' : `Connection lost; retrying in ${Math.ceil(retryIn / 1000)} s`,
    closed: 'Disconnected',
    // The server refused who we are (a session that ended, say): retrying cannot help.
    unauthorized: 'Not signed in: reload the page to sign in again',
  }
  statusLine.dataset.status = status
  statusLine.textContent = labels[status]
}

// ------------------------------------------------------------------ actions

function switchTo (room) {
  current = room
  markRead(room)
  renderRooms()
  renderMessages()
  renderMembers()
  renderRestrictions()
  renderTyping()
  text.focus()
}

/** Older history loads on scrolling up; a list too short to scroll loads it right away instead. */
function fillScreen () {
  setTimeout(() => {
    if (messageList.scrollHeight <= messageList.clientHeight) loadOlder()
  })
}

function rememberRooms () {
  remember(ROOMS_KEY, [...rooms.keys()].filter((room) => !rooms.get(room).removed))
}

async function join (room) {
  const state = roomState(room)
  state.removed = undefined
  rememberRooms()
  switchTo(room)
  try {
    await client.join(room)
  } catch (error) {
    state.removed = 'refused'
    rememberRooms()
    notice(room, `Could not join ${room}: ${error.message}`)
    renderRooms()
    if (room === current) renderComposer()
  }
}

/** A guest (no account) is a new user on each connection, whose read marker no other connection shares. */
function guest () {
  return myUser === myId
}

/** Whether the person can see the page: then what the current room shows is read. */
function seen () {
  return document.visibilityState === 'visible' && document.hasFocus()
}

/**
 * The current room is read up to its newest message once the person sees it:
 * its badge clears here at once, and for a signed-in user the server moves
 * the marker, which clears it in every other tab too. One `read` per room is out at a
 * time; one made meanwhile goes after it with the newest seq.
 */
function markRead (room) {
  const state = rooms.get(room)
  if (!state || room !== current || state.removed || !seen() || state.read >= state.latest) return
  state.read = state.latest
  renderRooms()
  // A guest's marker would serve no other tab (see guest()), only fill the store.
  if (!state.reading && !guest()) sendRead(room, state)
}

async function sendRead (room, state) {
  state.reading = true
  const seq = state.read
  let marker = seq
  try {
    marker = await client.read(room, seq)
    state.read = Math.max(state.read, marker)
  } catch {
    // The badge is already clear here; the next read carries the marker on (markers only move forward).
  } finally {
    state.reading = false
  }
  if (state.read > marker && !state.removed && client.rooms.includes(room)) sendRead(room, state)
}

async function loadOlder () {
  const state = rooms.get(current)
  if (!state || !state.more || state.loadingOlder || state.messages.size === 0) return
  const room = current
  const oldest = Math.min(...state.messages.keys())
  if (oldest <= 1) return
  state.loadingOlder = true
  try {
    const page = await client.history(room, { before: oldest, limit: PAGE_SIZE })
    // The store applied to them the changes that came while the page was on its way.
    const messages = page.messages.map((message) => client.store(room)?.get(message.seq) ?? message)
    for (const message of messages) state.messages.set(message.seq, message)
    state.more = page.more
    if (room === current) {
      const fromBottom = messageList.scrollHeight - messageList.scrollTop
      const items = messages.map((message) => messageItem(room, message))
      const firstBefore = messageList.firstElementChild
      messageList.prepend(...items)
      regroup(firstBefore ? [...items, firstBefore] : items)
      messageList.scrollTop = messageList.scrollHeight - fromBottom
      fillScreen()
    }
  } catch (error) {
    notice(room, `Could not load older messages: ${error.message}`)
  } finally {
    state.loadingOlder = false
  }
}

/** With accounts, the connection carries the session cookie and the server says who we are: no name is sent. */
function start (name) {
  client = new ChatClient(new URL(window.chatConfig.path, location.href), accounts ? {} : { name })
  client.on('status', setStatus)
  client.on('welcome', (welcome) => {
    myId = welcome.id
    myUser = welcome.user
    myIds.add(welcome.id)
    $('name-input').value = welcome.name
    remember(NAME_KEY, welcome.name)
  })
  client.on('joined', (joined) => {
    const state = roomState(joined.room)
    state.members = new Map(joined.members.map((member) => [member.id, member]))
    for (const member of joined.members) knownNames.set(member.user, member.name)
    // In a big room we may not be on the first page; we are always shown.
    state.members.set(myId, { id: myId, user: myUser, name: client.name })
    state.memberCount = joined.memberCount
    // A new stream (the server lost the room): its seqs say nothing of the old one's.
    if (state.epoch !== undefined && state.epoch !== joined.epoch) state.latest = state.read = 0
    state.epoch = joined.epoch
    state.latest = Math.max(state.latest, joined.seq)
    // The user's marker is the server's. A guest has none: what was said before it first came is history,
    // not unread, and what it missed while away is unread.
    state.read = Math.max(state.read, !state.joinedBefore && guest() ? joined.seq : joined.read)
    state.joinedBefore = true
    renderRooms()
    if (joined.room === current) {
      renderMembers()
      markRead(joined.room)
      fillScreen()
    }
  })
  client.on('message', (message) => {
    const state = roomState(message.room)
    // Known already: a rejoin's history brings it again, in its current state.
    if (state.messages.has(message.seq)) return showChanged(message.room, message)
    state.messages.set(message.seq, message)
    knownNames.set(message.from.user, message.from.name)
    state.lastSeq = Math.max(state.lastSeq, message.seq)
    state.latest = Math.max(state.latest, message.seq)
    if (message.cid !== undefined) dropPending(state, message.cid)
    const typing = state.typing.get(message.from.id)
    if (typing) {
      clearTimeout(typing.timer)
      state.typing.delete(message.from.id)
    }
    if (message.room === current) {
      const stick = nearBottom() || message.from.id === myId
      const item = messageItem(message.room, message)
      // Before the "sending…" items, which stand at the end until their messages come.
      const firstPending = messageList.querySelector('li.pending')
      messageList.insertBefore(item, firstPending)
      regroup([item])
      if (stick) messageList.scrollTop = messageList.scrollHeight
      renderTyping()
      markRead(message.room)
    }
    renderRooms()
  })
  client.on('update', ({ room, seq, target }) => {
    const state = roomState(room)
    // An update is an entry of the stream as a message is: the read marker counts it, the badge does not.
    state.latest = Math.max(state.latest, seq)
    const message = client.store(room)?.get(target)
    if (message && state.messages.has(target)) showChanged(room, message)
    if (room === current) markRead(room)
    renderRooms()
  })
  client.on('read', ({ room, seq }) => {
    const state = roomState(room)
    state.read = Math.max(state.read, seq)
    renderRooms()
  })
  client.on('left', ({ room, reason }) => {
    const state = roomState(room)
    state.removed = reason ?? 'kicked'
    state.members.clear()
    state.memberCount = 0
    rememberRooms()
    notice(room, reason === 'banned' ? `You were banned from #${room} by a moderator.` : `You were removed from #${room} by a moderator.`)
    renderRooms()
    if (room === current) {
      renderMembers()
      renderComposer()
    }
  })
  client.on('presence', ({ room, action, member, first, last }) => {
    const state = roomState(room)
    const before = state.members.get(member.id)
    if (action === 'join') state.memberCount++
    if (action === 'leave') state.memberCount = Math.max(0, state.memberCount - 1)
    if (action === 'leave') state.members.delete(member.id)
    else if (action === 'join' || before) state.members.set(member.id, member)
    knownNames.set(member.user, member.name)
    // A person, not a tab: "joined" when their first connection comes, "left" when their last goes.
    if (action === 'join' && first) notice(room, `${member.name} joined`)
    if (action === 'leave' && last) notice(room, `${member.name} left`)
    if (action === 'rename' && before) notice(room, `${before.name} is now ${member.name}`)
    if (room === current) renderMembers()
  })
  client.on('typing', ({ room, member }) => {
    const state = roomState(room)
    clearTimeout(state.typing.get(member.id)?.timer)
    const timer = setTimeout(() => {
      state.typing.delete(member.id)
      if (room === current) renderTyping()
    }, TYPING_SHOWN_MS)
    state.typing.set(member.id, { name: member.name, timer })
    if (room === current) renderTyping()
  })
  client.on('gap', ({ room, epoch, previousEpoch }) => {
    const state = roomState(room)
    if (epoch !== previousEpoch) {
      // A new stream: seq starts again at 1, so nothing of the old one can be placed among it.
      state.messages.clear()
      state.notices = []
      state.lastSeq = 0
    }
    state.more = true
    notice(room, epoch === previousEpoch ? 'Some messages may be missing: scroll up to load them.' : 'The server lost this room\'s history; new messages start here.')
    if (room === current) renderMessages()
  })
  client.on('error', (error) => notice(current, `Error: ${error.message}`))

  $('login').hidden = true
  $('chat').hidden = false
  directory?.reload()
  const saved = recall(ROOMS_KEY, [])
  const first = $('login-room').value.trim()
  for (const room of [...new Set([first, ...saved])]) join(room)
  switchTo(first)
}

/** The send's id, kept across retries so that it is stored once; also finds its "sending…" item. */
function newCid () {
  return Array.from(window.crypto.getRandomValues(new Uint8Array(16)), (byte) => byte.toString(16).padStart(2, '0')).join('')
}

// ------------------------------------------------------------------ accounts

/** Signed in as `user`: show who, and connect (the cookie goes with the upgrade). */
function enterAs (user) {
  admin = user.admin === true
  $('account-name').textContent = user.name
  $('account').hidden = false
  // The name is the account's; renaming is the application's call (not offered here).
  $('name-form').hidden = true
  start(user.name)
}

function offerAccounts () {
  accounts = true
  $('login-hint').hidden = false
  $('password-field').hidden = false
  $('login-password').disabled = false
  $('register-submit').hidden = false
  $('register-submit').disabled = false
  $('login-submit').textContent = 'Sign in'
  $('login-name').autocomplete = 'username'
}

// ------------------------------------------------------------------ wiring

$('login').addEventListener('submit', async (event) => {
  event.preventDefault()
  const name = $('login-name').value.trim()
  remember(NAME_KEY, name)
  if (!accounts) return start(name)
  $('login-error').textContent = ''
  const buttons = [$('login-submit'), $('register-submit')]
  for (const button of buttons) button.disabled = true
  const { user, failure } = await signIn(event.submitter?.value === 'register' ? 'register' : 'login', name, $('login-password').value)
  for (const button of buttons) button.disabled = false
  if (failure) {
    $('login-error').textContent = failure
    return
  }
  $('login-password').value = ''
  enterAs(user)
})

$('sign-out').addEventListener('click', async () => {
  client?.close()
  await fetch('/auth/logout', { method: 'POST' }).catch(() => undefined)
  // A fresh page: nothing of this account's rooms or messages stays on screen.
  location.reload()
})

/** Goes to `room`, joining it unless we are in it. */
function enter (room) {
  if (rooms.has(room) && !rooms.get(room).removed) switchTo(room)
  else join(room)
}

$('join-form').addEventListener('submit', (event) => {
  event.preventDefault()
  const room = $('join-room').value.trim()
  $('join-room').value = ''
  enter(room)
})

// Coming back to the page reads what the current room shows.
window.addEventListener('focus', () => markRead(current))
document.addEventListener('visibilitychange', () => markRead(current))

/** On a narrow screen the members list opens over the conversation. */
function showMembers (open) {
  $('chat').classList.toggle('show-members', open)
  $('members-toggle').setAttribute('aria-expanded', String(open))
}
$('members-toggle').addEventListener('click', () => showMembers(!$('chat').classList.contains('show-members')))
$('members-close').addEventListener('click', () => showMembers(false))

$('name-form').addEventListener('submit', async (event) => {
  event.preventDefault()
  try {
    remember(NAME_KEY, await client.nick($('name-input').value))
  } catch (error) {
    notice(current, `Could not rename: ${error.message}`)
  }
})

$('composer').addEventListener('submit', async (event) => {
  event.preventDefault()
  const body = text.value
  if (body.trim() === '' || !current) return
  text.value = ''
  // The others stop showing us as typing when this message arrives; typing again must tell them at once.
  lastTypingSent = 0
  const room = current
  const state = roomState(room)
  const cid = newCid()
  const entry = { text: body, node: pendingItem(body) }
  state.pending.set(cid, entry)
  // Shown at once when the message will not come back right away (offline: the client queues it).
  const shown = setTimeout(() => {
    if (room === current && state.pending.has(cid)) {
      messageList.append(entry.node)
      messageList.scrollTop = messageList.scrollHeight
    }
  }, client.status === 'open' ? PENDING_SHOWN_AFTER_MS : 0)
  try {
    await client.send(room, body, { cid })
  } catch (error) {
    notice(room, `Not sent (${error.code}): ${body.slice(0, 40)}`)
    // Back in the composer to try again, unless something else is being written there.
    if (room === current && text.value === '') text.value = body
  } finally {
    clearTimeout(shown)
    dropPending(state, cid)
  }
})

text.addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
    event.preventDefault()
    $('composer').requestSubmit()
  }
})

text.addEventListener('input', () => {
  const now = Date.now()
  if (current && now - lastTypingSent > TYPING_SENT_EVERY_MS) {
    lastTypingSent = now
    client.typing(current)
  }
})

messageList.addEventListener('scroll', () => {
  if (messageList.scrollTop < 40) loadOlder()
})

const config = await fetch('chat-config.json').then((response) => response.json())
window.chatConfig = config
// With the HTTP API, the rooms that exist are listed to pick from.
const directory = config.rest
  ? roomDirectory({ restPrefix: config.rest, list: $('directory-list'), more: $('directory-more'), refresh: $('directory-refresh'), pick: enter })
  : undefined
$('directory').hidden = !directory
text.maxLength = config.maxTextLength
$('login-name').value = recall(NAME_KEY, '')
$('login-room').value = recall(ROOMS_KEY, ['lobby'])[0] ?? 'lobby'
setStatus({ status: 'closed' })
statusLine.textContent = 'Not connected'
let user
try {
  user = await whoAmI()
} catch (error) {
  // The accounts routes exist but failed: signing in is still offered, and its answer will say why.
  user = null
  $('login-error').textContent = `Could not ask who is signed in (${error.message}).`
}
if (user !== undefined) offerAccounts()
if (user) enterAs(user)
else $('login-name').focus()
