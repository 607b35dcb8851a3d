// The document picker: the stored documents (GET /api/docs: with a token, the
// server lists only those the token opens), and a field to open or create one
// by name. A document is a page: /?doc=<name>, with the page's token kept.

import { $, h, relativeTime, absoluteTime, formatSize } from './ui.js'

export const DEFAULT_DOC = 'welcome'
const MAX_NAME_BYTES = 512
const RESERVED = ['api', 'assets', 'healthz', 'metrics']
const REFRESH_MS = 10_000

/** The URL of a document's page, keeping the access token if there is one. */
export const docUrl = (name, token) => {
  const params = new URLSearchParams()
  if (name !== DEFAULT_DOC) params.set('doc', name)
  if (token) params.set('token', token)
  const query = params.toString()
  return query === '' ? '/' : `/?${query}`
}

/** Why a name cannot be a document name (the server's rules), or null. */
export const nameProblem = (name) => {
  if (name === '') return 'Type a name.'
  if (new TextEncoder().encode(name).length > MAX_NAME_BYTES) return `At most ${MAX_NAME_BYTES} bytes, please.`
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f-\u009f]/.test(name)) return 'No control characters, please.'
  const first = name.split('/')[0]
  if (RESERVED.includes(first)) return `'${first}' is reserved by the server; pick another name.`
  return null
}

/**
 * @param {import('./api.js').Api} api
 * @param {string} current  the open document's name
 * @param {string | null} token
 * @param {() => boolean} isSynced  asks the server only while connected to it
 * @param {(doc: { name: string, created?: string | null }) => void} [onCurrent]
 *   told the open document's entry each time the list comes
 */
export const mountDocs = (api, current, token, isSynced, onCurrent = () => {}) => {
  const list = $('doc-list')
  const message = $('doc-list-message')
  const form = $('open-form')
  const input = /** @type {HTMLInputElement} */ ($('open-name'))
  const error = $('open-error')
  let timer = 0
  let lastDocs = null
  let withCurrent = true

  form.addEventListener('submit', (e) => {
    e.preventDefault()
    const name = input.value.trim()
    const problem = nameProblem(name)
    error.hidden = problem === null
    error.textContent = problem ?? ''
    if (problem === null) location.assign(docUrl(name, token))
  })
  input.addEventListener('input', () => { error.hidden = true })

  const showMessage = (text) => {
    message.hidden = text === null
    message.textContent = text ?? ''
  }

  const render = (docs) => {
    // The open document is listed even before it is stored (unless this
    // page may not open it).
    if (withCurrent && !docs.some((d) => d.name === current)) docs = [{ name: current, peers: 1, unsaved: true }, ...docs]
    list.replaceChildren(...docs.map((doc) => {
      const details = []
      if (doc.unsaved || !doc.updated) {
        details.push('new')
      } else {
        details.push(relativeTime(doc.updated))
        if (typeof doc.size === 'number') details.push(formatSize(doc.size))
      }
      const active = doc.name === current
      return h('li', null,
        h('a', {
          class: `doc-link${active ? ' active' : ''}`,
          href: docUrl(doc.name, token),
          'aria-current': active ? 'page' : null,
          title: doc.updated ? `${doc.name}\nlast change ${absoluteTime(doc.updated)}` : doc.name
        },
        h('span', { class: 'doc-name' }, doc.name),
        h('span', { class: 'doc-meta' },
          details.join(' · '),
          doc.peers > 0 ? h('span', { class: 'live-badge', title: `${doc.peers} connected` }, String(doc.peers)) : null)))
    }))
  }

  const refresh = async () => {
    clearTimeout(timer)
    // While the server is out of reach, asking it only fills the console
    // with failed requests; the list is refreshed when the connection is back.
    if (!isSynced()) return
    try {
      show(await api.listDocs())
      timer = setTimeout(refresh, REFRESH_MS)
    } catch (e) {
      if (lastDocs === null) render([])
      if (e.isAuth) {
        showMessage('The document list needs an access token.')
      } else if (e.status === 0) {
        showMessage('The server cannot be reached; the list will come back with it.')
      } else {
        // An older server without the API: say so once and stop asking.
        showMessage(`The document list is not available on this server (${e.message}).`)
      }
    }
  }

  /**
   * Shows a `GET /api/docs` answer (fetched here, or by the page as it
   * starts); `listCurrent: false` when the open document is not accessible.
   */
  const show = (body, { listCurrent = true } = {}) => {
    withCurrent = listCurrent
    const docs = Array.isArray(body?.docs) ? body.docs.filter((d) => typeof d?.name === 'string') : []
    docs.sort((a, b) => String(b.updated ?? '').localeCompare(String(a.updated ?? '')) || a.name.localeCompare(b.name))
    lastDocs = docs
    const entry = docs.find((d) => d.name === current)
    if (entry) onCurrent(entry)
    render(docs)
    showMessage(docs.length === 0 ? 'No stored documents yet.' : null)
  }

  /**
   * A document's live count of connections (the feed's `document.peers`):
   * shown in its entry at once. A document the list does not hold yet (a
   * new one, not stored) brings the whole list.
   */
  const setPeers = (name, count) => {
    if (lastDocs === null) return
    const doc = lastDocs.find((d) => d.name === name)
    if (doc === undefined) {
      if (count > 0) refresh()
      return
    }
    if (doc.peers === count) return
    doc.peers = count
    render(lastDocs)
  }

  // Soon after this document changes or someone comes or goes, so that its
  // own entry (size, last change, people) keeps up; at most every 2 s.
  let soon = 0
  const refreshSoon = () => {
    if (soon !== 0) return
    soon = setTimeout(() => {
      soon = 0
      refresh()
    }, 2000)
  }

  // Refresh when the tab comes back into view, not while hidden.
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible' && lastDocs !== null) refresh()
  })
  render([])
  return { refresh, refreshSoon, show, setPeers }
}
