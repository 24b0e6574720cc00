// Building page nodes from network text without ever parsing it as HTML.

/** A new element with `props` assigned and `children` (nodes or strings, as text) appended. */
export function el (tag, props = {}, ...children) {
  const node = document.createElement(tag)
  Object.assign(node, props)
  node.append(...children)
  return node
}

/** A web address in running text; what ends it is whitespace or a character no address shows unescaped. */
const LINK = /\bhttps?:\/\/[^\s<>"'`]+/gi
/** Punctuation that ends a sentence rather than the address it follows ("see https://x.org/a."). */
const TRAILING = /[.,;:!?)\]}]+$/

/**
 * `text` as text nodes, with each http(s) address an anchor that opens in a
 * new tab and tells the site neither who sent us nor how to reach this page.
 * Anything that does not parse as an http(s) URL stays text.
 */
export function linkedText (text) {
  const nodes = []
  let at = 0
  for (const match of text.matchAll(LINK)) {
    const address = match[0].replace(TRAILING, (tail) => closesParen(match[0], tail))
    const url = parseUrl(address)
    if (!url) continue
    if (match.index > at) nodes.push(document.createTextNode(text.slice(at, match.index)))
    const anchor = el('a', { href: url.href, textContent: address, target: '_blank', rel: 'noopener noreferrer' })
    nodes.push(anchor)
    at = match.index + address.length
  }
  if (at < text.length) nodes.push(document.createTextNode(text.slice(at)))
  return nodes
}

/** Keeps a `)` that closes a `(` inside the address (Wikipedia's "Foo_(bar)"), drops the rest of `tail`. */
function closesParen (address, tail) {
  const body = address.slice(0, address.length - tail.length)
  const open = (body.match(/\(/g) ?? []).length - (body.match(/\)/g) ?? []).length
  return tail.startsWith(')') && open > 0 ? ')' : ''
}

function parseUrl (address) {
  try {
    const url = new URL(address)
    return url.protocol === 'http:' || url.protocol === 'https:' ? url : undefined
  } catch {
    return undefined
  }
}
