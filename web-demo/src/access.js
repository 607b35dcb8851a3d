// Access in token mode: what a link's token says, and the page shown instead
// of the editor when there is no token, or the server refuses it.
//
// A token is a JWT (HS256) whose payload names the documents it opens (`doc`:
// a name, a `prefix*` pattern or `*`), what it allows (`perm`: read or write)
// and until when (`exp`). The page reads the payload to adapt itself (a
// read-only editor); whether the token is any good is for the server to say.

import { $, h } from './ui.js'
import { docUrl } from './docs.js'

/**
 * The claims of a JWT, or null when it is not one (e.g. the admin key).
 * @returns {{ doc?: string, perm?: string, exp?: number, name?: string } | null}
 */
export const tokenClaims = (token) => {
  const parts = token.split('.')
  if (parts.length !== 3) return null
  try {
    const base64 = parts[1].replace(/-/g, '+').replace(/_/g, '/')
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0))
    const claims = JSON.parse(new TextDecoder().decode(bytes))
    return claims !== null && typeof claims === 'object' ? claims : null
  } catch {
    return null
  }
}

/** The server's rule: `*` is everything, `prefix*` a prefix, else exactly. */
export const patternMatches = (pattern, name) =>
  pattern.endsWith('*') ? name.startsWith(pattern.slice(0, -1)) : pattern === name

/** A word for a POSIX shell, quoted only when it needs to be. */
const shellWord = (s) => (/^[\w./:@%+-]+$/.test(s) ? s : `'${s.replace(/'/g, "'\\''")}'`)

/**
 * How an owner makes a link for this document. The page cannot know whether
 * weft got its key from a file (`--auth-key-file`) or from `WEFT_AUTH_KEY`:
 * `weft token` takes it from the same places, so the hint names both.
 */
const ownerHint = (docName) => {
  const example = new URL(docUrl(docName, 'TOKEN'), location.href).href
  return h('div', { class: 'gate-hint' },
    h('p', null, 'If you own this server, make a token with the key weft was started with. ',
      h('code', null, 'weft token'), ' reads it from the same place: its key file (',
      h('code', null, '--auth-key-file'), ' or ', h('code', null, 'WEFT_AUTH_KEY_FILE'), '), or ',
      h('code', null, 'WEFT_AUTH_KEY'), ':'),
    h('pre', null, h('code', null, `weft token --doc ${shellWord(docName)} --perm write`)),
    h('p', null, 'and add it to the address: ', h('code', { class: 'gate-url' }, example), '. Use ', h('code', null, '--perm read'), ' for a link that can only read.'))
}

const show = (kind, title, ...body) => {
  document.body.dataset.gate = kind
  $('gate-title').textContent = title
  // replaceChildren() would write a missing part (null) as the text "null".
  $('gate-body').replaceChildren(...body.filter((part) => part != null && part !== false))
  $('gate').hidden = false
}

/** Token mode, and the address has no token. */
export const showNoToken = (docName) => show('all',
  'This document needs an access link',
  h('p', null, 'This weft server opens documents only for people who hold an access token, and this page’s address has none.'),
  h('p', { class: 'gate-lead' }, 'Open the link you were given (its address ends in ', h('code', null, '?token=…'), '), or ask the document’s owner for one.'),
  ownerHint(docName))

/** The server refused the token itself (malformed, expired, revoked, another key). */
export const showRefused = (docName, reason) => show('all',
  'The access token in this link was refused',
  h('p', { class: 'gate-reason' }, 'The server said: ', h('strong', null, reason), '.'),
  h('p', { class: 'gate-lead' }, 'Ask whoever gave you the link for a new one.'),
  ownerHint(docName))

/**
 * The token is good, but not for this document.
 * @param {{ docs: { name: string }[], claims: any, token: string }} opts
 */
export const showWrongDocument = (docName, reason, { docs, claims, token }) => {
  const names = docs.map((d) => d.name)
  const pattern = typeof claims?.doc === 'string' ? claims.doc : null
  if (pattern !== null && !pattern.endsWith('*') && !names.includes(pattern)) names.unshift(pattern)
  const shown = names.slice(0, 8)
  const scope = pattern !== null && pattern.endsWith('*') && pattern !== '*'
    ? h('p', null, 'It opens the documents whose names start with ', h('code', null, pattern.slice(0, -1)), '.')
    : null
  show('doc',
    `Your link does not open “${docName}”`,
    h('p', { class: 'gate-reason' }, 'The server said: ', h('strong', null, reason), '.'),
    scope,
    shown.length > 0
      ? h('div', null,
        h('p', { class: 'gate-lead' }, names.length === 1 ? 'The document it opens:' : 'Documents it opens:'),
        h('ul', { class: 'gate-docs' }, ...shown.map((name) =>
          h('li', null, h('a', { href: docUrl(name, token) }, name)))))
      : null,
    h('p', null, 'Or ask the document’s owner for a link to this one.'))
}
