/**
 * What an update does to a message's state: the one rule that the brokers
 * apply when they store a change and that the client's room store applies
 * when it receives one, so both end in the same state. No imports at run
 * time, so the browser loads it beside the client as it is.
 */
import type { Message, Update } from '../protocol.js'

/** A change of a message's state, as an `update` entry carries it (`text` with `edit`, `reaction` with `react`/`unreact`). */
export type MessageChange = Pick<Update, 'action' | 'text' | 'reaction' | 'ts'> & { user: string }

/**
 * `message` after `change`, as a new object (`message` is left as it was), or
 * undefined when the change changes nothing: a reaction the user already gave,
 * or one it did not give taken back, or any change of a deleted message. Checks nothing: who may change what is
 * the server's to decide before it stores the update.
 */
export function applyChange (message: Message, change: MessageChange): Message | undefined {
  // The server changes no deleted message; a change applied again (a page's message, see RoomStore) must not revive one.
  if (message.deleted === true) return undefined
  switch (change.action) {
    case 'edit':
      return { ...message, text: change.text ?? '', edited: change.ts }
    case 'delete': {
      // seq, id, from, ts (and cid) stay; the text, its edit time and the reactions go.
      const { edited: _edited, reactions: _reactions, ...kept } = message
      return { ...kept, text: '', deleted: true }
    }
    case 'react': {
      const reaction = change.reaction ?? ''
      const users = message.reactions?.[reaction] ?? []
      if (users.includes(change.user)) return undefined
      return { ...message, reactions: { ...message.reactions, [reaction]: [...users, change.user] } }
    }
    case 'unreact': {
      const reaction = change.reaction ?? ''
      const users = message.reactions?.[reaction]
      if (users === undefined || !users.includes(change.user)) return undefined
      const { [reaction]: _, ...others } = message.reactions ?? {}
      const left = users.filter((user) => user !== change.user)
      const reactions = left.length === 0 ? others : { ...others, [reaction]: left }
      const { reactions: _reactions, ...rest } = message
      return Object.keys(reactions).length === 0 ? rest : { ...rest, reactions }
    }
  }
}

/** `message` after `update` (one that targets it), or `message` itself when the update changes nothing. */
export function appliedUpdate (message: Message, update: Update): Message {
  return applyChange(message, { action: update.action, text: update.text, reaction: update.reaction, ts: update.ts, user: update.by.user }) ?? message
}
