// The items of a room's message list: messages (with links, grouped by
// person), notices, and sends still waiting for the server.
import { el, linkedText } from './dom.js'

/** Messages of one person closer together than this share one header (name and time). */
const GROUP_WITHIN_MS = 5 * 60_000

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' })
const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' })

/**
 * A stored message in its current state; `mine` marks our own. Its text is
 * text, with http(s) addresses as links; an edited one says so, and a
 * deleted one keeps its place as "message deleted".
 */
export function messageItem (message, mine) {
  const when = new Date(message.ts)
  const time = el('time', { dateTime: when.toISOString(), textContent: timeFormat.format(when), title: dateFormat.format(when) })
  const text = message.deleted === true
    ? el('span', { className: 'text', textContent: 'message deleted' })
    : el('span', { className: 'text' }, ...linkedText(message.text))
  const item = el('li', {}, el('span', { className: 'from', textContent: message.from.name }), time, text)
  if (message.edited !== undefined) item.append(el('span', { className: 'edited', textContent: '(edited)', title: `edited ${dateFormat.format(new Date(message.edited))}` }))
  if (message.deleted === true) item.classList.add('deleted')
  item.dataset.seq = String(message.seq)
  item.dataset.user = message.from.user
  item.dataset.ts = String(message.ts)
  if (mine) item.classList.add('mine')
  return item
}

/**
 * Marks each of `items` (message items in the list) as continuing the message
 * before it when one person said both within GROUP_WITHIN_MS: it then shows
 * no header of its own. A notice in between starts a new group.
 */
export function regroup (items) {
  for (const item of items) {
    const before = item.previousElementSibling
    const continues = before?.dataset.seq !== undefined && before.dataset.user === item.dataset.user &&
      Number(item.dataset.ts) - Number(before.dataset.ts) < GROUP_WITHIN_MS
    item.classList.toggle('continued', continues)
  }
}

/** A send waiting for the server (e.g. while reconnecting), under our `name`: shown until its message arrives. */
export function pendingItem (body, name) {
  return el('li', { className: 'mine pending' },
    el('span', { className: 'from', textContent: name }),
    el('span', { className: 'text', textContent: body }),
    el('span', { className: 'sending', textContent: 'sending…' }))
}

export function noticeItem (textContent) {
  return el('li', { className: 'notice', textContent })
}
