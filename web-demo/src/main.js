// The weft web demo: one shared document per page (/?doc=<name>), edited in
// ProseMirror, synced through weft with the standard y-websocket provider.

import 'prosemirror-view/style/prosemirror.css'
import 'prosemirror-gapcursor/style/gapcursor.css'
import './style.css'

import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import { Api } from './api.js'
import { FRAGMENT, createEditor, mountToolbar } from './editor.js'
import { mountPresence } from './presence.js'
import { mountStatus } from './status.js'
import { mountDocs, DEFAULT_DOC, docUrl, nameProblem } from './docs.js'
import { mountVersions } from './versions.js'
import { seedWelcome } from './welcome.js'
import { $, toast } from './ui.js'

const params = new URLSearchParams(location.search)
const token = params.get('token') || null
const notice = $('notice')

const showNotice = (text, kind = 'warning') => {
  notice.hidden = false
  notice.dataset.kind = kind
  notice.textContent = text
}

let docName = params.get('doc') ?? DEFAULT_DOC
const problem = nameProblem(docName)
if (problem !== null) {
  showNotice(`“${docName.slice(0, 80)}” cannot be a document name: ${problem} Showing “${DEFAULT_DOC}” instead.`)
  docName = DEFAULT_DOC
  history.replaceState(null, '', docUrl(docName, token))
}

document.title = `${docName} · weft`
const title = $('doc-title')
title.textContent = docName
title.title = docName

const api = new Api(token)
api.onAuthError = (error) => {
  showNotice(token
    ? `The access token in this link was refused (${error.message}). Ask for a new link.`
    : 'This server needs an access token: open the link you were given, which ends in ?token=…', 'error')
}

// One Y.Doc per page. The room is percent-encoded so that any document name
// (spaces, '?', '#', '/') survives the trip in the URL path; weft decodes it.
// BroadcastChannel is off: two tabs of one browser then sync through weft,
// which is what the demo is here to show.
const ydoc = new Y.Doc()
const serverUrl = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}`
const provider = new WebsocketProvider(serverUrl, encodeURIComponent(docName), ydoc, {
  params: token ? { token } : {},
  disableBc: true
})

const { me } = mountPresence(provider)

// The default document explains the demo on a first visit. Only once the
// server's state is in: an empty page before that proves nothing.
if (docName === DEFAULT_DOC) {
  const seed = (synced) => {
    if (!synced) return
    provider.off('sync', seed)
    seedWelcome(ydoc)
  }
  provider.on('sync', seed)
}

/** @type {{ update: () => void } | null} */
let toolbar = null
const view = createEditor($('editor'), ydoc.getXmlFragment(FRAGMENT), provider.awareness, () => toolbar?.update())
toolbar = mountToolbar($('toolbar'), view)

const setPreviewing = (on) => {
  document.body.classList.toggle('previewing', on)
  if (!on) view.focus()
}

/** @type {ReturnType<typeof mountVersions> | null} */
let versions = null
/** @type {ReturnType<typeof mountDocs> | null} */
let docs = null
let lastState = ''
const status = mountStatus(provider, ydoc, {
  onChange: (state) => {
    versions?.updateSaveButton()
    if (state === 'closed' && lastState !== 'closed') {
      const reason = status.closedBy()?.reason
      showNotice(`The server ended this session${reason ? `: ${reason}` : ''}. Edits made now stay in this tab only; reload the page to connect again.`, 'error')
    }
    // Connected (again): the server knows the document now; lists may be stale.
    if (state === 'synced' && lastState !== 'synced') {
      docs?.refresh()
      versions?.refresh()
    }
    lastState = state
  }
})
const isSynced = () => status.state() === 'synced'

docs = mountDocs(api, docName, token, isSynced)
ydoc.on('update', () => docs?.refreshSoon())
provider.awareness.on('change', ({ added, removed }) => {
  if (added.length + removed.length > 0) docs?.refreshSoon()
})
versions = mountVersions({
  api,
  docName,
  me,
  isSynced,
  setPreviewing
})

// Copy link: the page's own URL names the document.
$('copy-link').addEventListener('click', async () => {
  const link = new URL(docUrl(docName, token), location.href).href
  try {
    await navigator.clipboard.writeText(link)
    toast('Link copied. Open it in another tab or send it to someone.', { kind: 'success' })
  } catch {
    toast(link, { timeout: 8000 })
  }
})

// The sidebar is a drawer on narrow screens.
const sidebar = $('sidebar')
const scrim = $('scrim')
const openSidebar = $('open-sidebar')
const setDrawer = (open) => {
  sidebar.classList.toggle('open', open)
  document.body.classList.toggle('sidebar-open', open)
  openSidebar.setAttribute('aria-expanded', String(open))
}
openSidebar.addEventListener('click', () => setDrawer(!sidebar.classList.contains('open')))
scrim.addEventListener('click', () => {
  setDrawer(false)
  versions?.close()
})
document.addEventListener('keydown', (e) => {
  if (e.key === 'Escape' && sidebar.classList.contains('open')) setDrawer(false)
})

// Leaving with changes the server has not seen loses them: ask first.
window.addEventListener('beforeunload', (e) => {
  if (status.unsent() > 0) {
    e.preventDefault()
  }
})
