// The rooms that exist on the server, from the plugin's HTTP API
// (`GET {rest}/rooms`), a page at a time, to pick one to join.
import { el } from './dom.js'

const PAGE_SIZE = 50

/**
 * Fills `list` with the server's rooms; `more` (a button) loads the next
 * page, `refresh` starts again. `pick(room)` is called with the room chosen.
 */
export function roomDirectory ({ restPrefix, list, more, refresh, pick }) {
  let after
  /** Counts the loads: an answer to one that a newer load overtook is dropped. */
  let loads = 0

  async function load (fromStart) {
    const load = ++loads
    const query = new URLSearchParams({ limit: String(PAGE_SIZE) })
    if (!fromStart && after !== undefined) query.set('after', after)
    try {
      const response = await fetch(`${restPrefix}/rooms?${query}`)
      if (!response.ok) throw new Error(`the server answered ${response.status}`)
      const page = await response.json()
      if (load !== loads) return
      const items = page.rooms.map(({ room, members }) => {
        const button = el('button', { type: 'button', title: `Join ${room}` }, el('span', { textContent: room }), el('span', { className: 'count', textContent: String(members) }))
        button.dataset.room = room
        button.querySelector('.count').setAttribute('aria-label', `${members} connected`)
        button.addEventListener('click', () => pick(room))
        return el('li', {}, button)
      })
      if (fromStart) list.replaceChildren(...items)
      else list.append(...items)
      if (page.rooms.length === 0 && fromStart) list.replaceChildren(el('li', { className: 'empty', textContent: 'No rooms yet' }))
      if (fromStart || page.rooms.length > 0) after = page.rooms.at(-1)?.room
      more.hidden = !page.more
    } catch (error) {
      if (load !== loads) return
      list.replaceChildren(el('li', { className: 'empty', textContent: `Could not list the rooms (${error.message})` }))
      more.hidden = true
    }
  }

  more.addEventListener('click', () => load(false))
  refresh.addEventListener('click', () => load(true))
  return { reload: () => load(true) }
}
