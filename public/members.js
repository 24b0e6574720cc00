// A room's members as the page lists them: people, not connections.
import { el } from './dom.js'
import { moderationControls } from './moderation.js'

/** The members (by connection) as people: one entry per user, with how many tabs or devices they are connected with. */
export function people (members) {
  const byUser = new Map()
  for (const member of members) {
    const person = byUser.get(member.user)
    if (person) person.connections++
    else byUser.set(member.user, { user: member.user, name: member.name, connections: 1 })
  }
  return [...byUser.values()].sort((a, b) => a.name.localeCompare(b.name))
}

/**
 * The list items of `room`'s members: "alice (you) ×2"; with `moderation`
 * (`{ restPrefix, report, changed }`, for an admin) each other person has its controls.
 */
export function memberItems (room, members, myUser, moderation) {
  return people(members).map((person) => {
    const who = el('span', { className: 'who', textContent: person.user === myUser ? `${person.name} (you)` : person.name })
    if (person.connections > 1) {
      const devices = el('span', { className: 'devices', textContent: `×${person.connections}` })
      devices.setAttribute('aria-label', `in ${person.connections} tabs or devices`)
      who.append(' ', devices)
    }
    const item = el('li', {}, who)
    item.dataset.user = person.user
    if (moderation && person.user !== myUser) item.append(moderationControls(moderation.restPrefix, room, person, moderation))
    return item
  })
}
