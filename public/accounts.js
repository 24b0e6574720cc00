// The example server's accounts, as the page asks for them: who is signed in,
// and registering or signing in (whose answer sets the session cookie).

/** Who is signed in (`{ id, name, admin }` or null); undefined when the server has no accounts (no /auth routes). */
export async function whoAmI () {
  const response = await fetch('/auth/me')
  if (response.status === 404) return undefined
  if (!response.ok) throw new Error(`GET /auth/me answered ${response.status}`)
  return (await response.json()).user
}

function signInFailure (status, body) {
  if (status === 401) return 'Wrong name or password.'
  if (status === 409) return 'That name is taken; pick another, or sign in.'
  if (status === 429) return 'Too many attempts; wait a minute and try again.'
  if (status === 400 && typeof body.message === 'string') return `Not accepted: ${body.message}`
  return `The server answered ${status}; try again.`
}

/** Registers or signs in (`action`): `{ user }`, or `{ failure }` saying why not, for a person to read. */
export async function signIn (action, name, password) {
  let response
  try {
    response = await fetch(`/auth/${action}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name, password }) })
  } catch (error) {
    return { failure: `Could not reach the server (${error.message}).` }
  }
  const body = await response.json().catch(() => ({}))
  return response.ok ? { user: body.user } : { failure: signInFailure(response.status, body) }
}
