// What an admin may do to another member: kick, ban and mute, and delete
// their messages, through the plugin's HTTP API (its moderation routes,
// which `rest.authorize` guards).
import { el } from './dom.js'

/** How long a ban or mute lasts: the choices offered, in ms (none: until lifted). */
const DURATIONS = [
  ['10 minutes', 10 * 60_000],
  ['1 hour', 60 * 60_000],
  ['1 day', 24 * 60 * 60_000],
  ['until lifted', undefined],
]

/** What the admin is told once `action` is done to `name` (for `length`, one of DURATIONS' labels). */
const DONE = {
  kick: (name) => `removed ${name}`,
  ban: (name, length) => `banned ${name} ${length === 'until lifted' ? 'until lifted' : `for ${length}`}`,
  unban: (name) => `unbanned ${name}`,
  mute: (name, length) => `muted ${name} ${length === 'until lifted' ? 'until lifted' : `for ${length}`}`,
  unmute: (name) => `unmuted ${name}`,
}

/** Calls a moderation route of `room` (`path` after it); resolves when done, or throws an Error saying what the server answered. */
async function callRoute (restPrefix, room, path, init) {
  const response = await fetch(`${restPrefix}/rooms/${encodeURIComponent(room)}/${path}`, init)
  if (response.ok) return
  const body = await response.json().catch(() => ({}))
  throw new Error(typeof body.message === 'string' ? `${response.status} ${body.message}` : `the server answered ${response.status}`)
}

/** Asks the server to `action` (kick, ban, unban, mute, unmute) `user` in `room`. */
async function moderate (restPrefix, room, action, user, ms) {
  await callRoute(restPrefix, room, action, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(ms === undefined ? { user } : { user, ms }),
  })
}

/** Deletes anyone's message `seq` of `room`, as the server: every member then gets its update. */
export async function deleteMessage (restPrefix, room, seq) {
  await callRoute(restPrefix, room, `messages/${seq}`, { method: 'DELETE' })
}

/**
 * A button that does `action` to `person` (`{ user, name }`) in `room`, with
 * the duration `lasting()` gives (`[label, ms]`, for a ban or mute); then
 * `report(line)` tells the admin how it went and `changed()` is called.
 */
function actionButton (restPrefix, room, person, action, label, { report, changed, lasting }) {
  const button = el('button', { type: 'button', className: `secondary ${action}`, textContent: label })
  button.dataset.action = action
  button.addEventListener('click', async () => {
    const [length, ms] = lasting?.() ?? []
    button.disabled = true
    try {
      await moderate(restPrefix, room, action, person.user, ms)
      report(`You ${DONE[action](person.name, length)}.`)
    } catch (error) {
      report(`Could not ${action} ${person.name}: ${error.message}`)
    } finally {
      button.disabled = false
    }
    changed()
  })
  return button
}

/**
 * The controls for one person of `room` (`{ user, name }`), behind a
 * disclosure so the list stays readable; `report(line)` tells the admin how
 * it went, and `changed()` is called after each call.
 */
export function moderationControls (restPrefix, room, person, { report, changed }) {
  const duration = el('select', { title: `How long a ban or mute of ${person.name} lasts` },
    ...DURATIONS.map(([label], index) => el('option', { value: String(index), textContent: label })))
  const chosen = () => DURATIONS[Number(duration.value)]
  const button = (action, label) => actionButton(restPrefix, room, person, action, label,
    { report, changed, lasting: action === 'ban' || action === 'mute' ? chosen : undefined })
  const summary = el('summary', { textContent: '⋯', title: `Moderate ${person.name}` })
  summary.setAttribute('aria-label', `Moderate ${person.name}`)
  return el('details', { className: 'moderate' }, summary,
    el('div', { className: 'moderate-menu' },
      el('label', {}, 'Ban or mute for ', duration),
      el('div', { className: 'moderate-actions' }, button('kick', 'Kick'), button('ban', 'Ban'), button('mute', 'Mute'), button('unmute', 'Unmute'))))
}

/** "until 14:05", or nothing for a ban or mute without an end. */
function until (restriction) {
  return restriction.until === undefined ? '' : ` until ${new Date(restriction.until).toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' })}`
}

/**
 * Fills `list` with `room`'s bans and mutes in force (`GET {rest}/rooms/:room/moderation`),
 * each with the button that lifts it. `nameOf(user)` gives a name to show; `report(line)`
 * tells the admin how a lift went, and `changed()` is called after one.
 */
export async function showRestrictions (restPrefix, room, list, { nameOf, report, changed }) {
  let entries
  try {
    const response = await fetch(`${restPrefix}/rooms/${encodeURIComponent(room)}/moderation`)
    if (!response.ok) throw new Error(`the server answered ${response.status}`)
    entries = (await response.json()).moderation
  } catch (error) {
    list.replaceChildren(el('li', { className: 'empty', textContent: `Could not list bans and mutes (${error.message})` }))
    return
  }
  const lift = (action, entry, label) => actionButton(restPrefix, room, { user: entry.user, name: nameOf(entry.user) }, action, label, { report, changed })
  list.replaceChildren(...entries.map((entry) => {
    const what = [entry.ban && `banned${until(entry.ban)}`, entry.mute && `muted${until(entry.mute)}`].filter(Boolean).join(', ')
    const item = el('li', {}, el('span', { className: 'who', textContent: nameOf(entry.user) }), el('span', { className: 'what', textContent: what }),
      el('span', { className: 'moderate-actions' }, ...[entry.ban && lift('unban', entry, 'Unban'), entry.mute && lift('unmute', entry, 'Unmute')].filter(Boolean)))
    item.dataset.user = entry.user
    return item
  }))
  if (entries.length === 0) list.replaceChildren(el('li', { className: 'empty', textContent: 'Nobody' }))
}
