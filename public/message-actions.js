// Edit and delete on a message item: an author's own messages, or (delete
// only) an admin's on anyone's. Editing happens in place, in a small form
// that hides the text until saved or cancelled.
import { el } from './dom.js'

function actionButton (action, textContent, label, onClick) {
  const button = el('button', { type: 'button', className: `link ${action}`, textContent, title: label })
  button.dataset.action = action
  button.setAttribute('aria-label', label)
  button.addEventListener('click', onClick)
  return button
}

/**
 * The controls of `item` (a message item showing `message`): `edit(text)` when
 * given offers Edit, `remove()` Delete (asked once more before it is done).
 * Each returns a promise of false when it failed; the server's update redraws the item.
 */
export function messageActions (item, message, { edit, remove }) {
  const bar = el('span', { className: 'message-actions' })
  const idle = [
    edit && actionButton('edit', 'Edit', 'Edit this message', () => openEditor(item, message.text, edit)),
    remove && actionButton('delete', 'Delete', 'Delete this message', () => {
      bar.replaceChildren(el('span', { textContent: 'Delete? ' }),
        actionButton('confirm-delete', 'Yes', 'Yes, delete this message', async (event) => {
          // Once: the update then redraws the item as deleted; a failure offers Delete again.
          event.currentTarget.disabled = true
          if (await remove() === false) bar.replaceChildren(...idle)
        }),
        actionButton('keep', 'No', 'No, keep this message', () => bar.replaceChildren(...idle)))
      bar.querySelector('[data-action="keep"]').focus()
    }),
  ].filter(Boolean)
  bar.append(...idle)
  return bar
}

/** Puts a form over `item`'s text, holding `text`; Enter (or Save) calls `edit(new text)`, Escape cancels. */
function openEditor (item, text, edit) {
  if (item.querySelector('form.edit')) return
  const field = el('textarea', { value: text, rows: 2, required: true })
  field.setAttribute('aria-label', 'Edited message')
  const form = el('form', { className: 'edit' }, field,
    el('button', { type: 'submit', textContent: 'Save' }),
    el('button', { type: 'button', className: 'secondary', textContent: 'Cancel' }))
  // The text before the form is the item's (carryEditor may have moved the form to a redrawn item).
  const close = () => {
    const shown = form.previousElementSibling
    if (shown) shown.hidden = false
    form.remove()
  }
  form.querySelector('button[type="button"]').addEventListener('click', close)
  field.addEventListener('keydown', (event) => {
    if (event.key === 'Escape') close()
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault()
      form.requestSubmit()
    }
  })
  form.addEventListener('submit', async (event) => {
    event.preventDefault()
    if (field.value.trim() === '' || field.value === text) return close()
    field.disabled = true
    // The update redraws the item with the new text; on failure the form stays, to try again.
    if (await edit(field.value)) close()
    else field.disabled = false
  })
  hideText(item, form)
  field.focus()
}

function hideText (item, form) {
  const text = item.querySelector('.text')
  text.hidden = true
  text.after(form)
}

/** An edit open in `from` (an item being redrawn) goes on in `to`, unless the message is gone. */
export function carryEditor (from, to) {
  const form = from.querySelector('form.edit')
  if (form && !to.classList.contains('deleted')) hideText(to, form)
}
