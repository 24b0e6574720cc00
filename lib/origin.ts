/**
 * Web origins (`scheme://host[:port]`) compared as browsers compare them:
 * WHATWG URL parsing puts the host in lower case, drops a default port and
 * writes an IPv6 literal in its shortest form.
 */

/** `url`'s origin in that form; undefined unless `url` is an http(s) origin alone (no user, path, query or fragment). */
export function originOf (url: string): string | undefined {
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    return undefined
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') return undefined
  const originOnly = parsed.username === '' && parsed.password === '' && parsed.pathname === '/' && parsed.search === '' && parsed.hash === ''
  return originOnly ? parsed.origin : undefined
}
