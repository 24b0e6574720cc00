// The reactions under a message: each with its count, ours highlighted and
// toggled by one click, and a few quick ones to add.
import { el } from './dom.js'

/** Offered to add in one click; any other reaction someone gave shows too. */
const QUICK_REACTIONS = ['👍', '❤️', '😂', '🎉']

/**
 * The reaction bar of `message` for the user `me`; `toggle(reaction, on)`
 * adds (`on`) or takes back our reaction. The server's update redraws the bar.
 */
export function reactionBar (message, me, toggle) {
  const given = Object.entries(message.reactions ?? {}).map(([reaction, users]) => {
    const mine = users.includes(me)
    const button = el('button', { type: 'button', className: 'reaction', textContent: `${reaction} ${users.length}` })
    button.dataset.reaction = reaction
    button.dataset.count = String(users.length)
    button.setAttribute('aria-pressed', String(mine))
    button.title = mine ? `Take back your ${reaction}` : `React with ${reaction} too`
    button.setAttribute('aria-label', `${reaction}: ${users.length}${mine ? ', yours' : ''}`)
    button.addEventListener('click', () => toggle(reaction, !mine))
    return button
  })
  const summary = el('summary', { textContent: '+☺', title: 'Add a reaction' })
  summary.setAttribute('aria-label', 'Add a reaction')
  const picker = el('details', { className: 'add-reaction' }, summary,
    el('span', { className: 'quick-reactions' }, ...QUICK_REACTIONS.map((reaction) => {
      const button = el('button', { type: 'button', textContent: reaction, title: `React with ${reaction}` })
      button.dataset.quick = reaction
      button.addEventListener('click', () => {
        picker.open = false
        toggle(reaction, true)
      })
      return button
    })))
  return el('div', { className: 'reactions' }, ...given, picker)
}
