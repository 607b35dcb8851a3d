// The weft web demo: one shared document per page (/?doc=<name>), edited in
// ProseMirror, synced through weft with the standard y-websocket provider,
// or with @hocuspocus/provider when the URL says `?provider=hocuspocus`.
//
// The page first asks the server how it authenticates (GET /api/info). In
// open mode it connects at once. In token mode it needs ?token= in its URL:
// without one it explains how to get a link and connects to nothing; with one
// it asks the server whether the token is good for this document before
// connecting, so that a refusal comes with the server's reason rather than a
// socket that fails to open.

import 'prosemirror-view/style/prosemirror.css'
import 'prosemirror-gapcursor/style/gapcursor.css'
import './style.css'

import * as Y from 'yjs'
import { WebsocketProvider, messageAuth } from 'y-websocket'
import { readAuthMessage } from 'y-protocols/auth'
import { Api } from './api.js'
import { FRAGMENT, createEditor, mountToolbar } from './editor.js'
import { mountPresence } from './presence.js'
import { mountStatus } from './status.js'
import { mountDocs, DEFAULT_DOC, docUrl, nameProblem } from './docs.js'
import { mountVersions } from './versions.js'
import { followEvents } from './feed.js'
import { seedWelcome } from './welcome.js'
import { HocuspocusAdapter } from './hocuspocus.js'
import { keepLocally } from './local.js'
import { mountShare } from './share.js'
import { tokenClaims, patternMatches, showNoToken, showRefused, showWrongDocument } from './access.js'
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
// The brand goes to the welcome document, with this page's token.
$('brand').setAttribute('href', docUrl(DEFAULT_DOC, token))

const api = new Api(token)

// One Y.Doc per page. The room is percent-encoded so that any document name
// (spaces, '?', '#', '/') survives the trip in the URL path; weft decodes it.
// BroadcastChannel is off: two tabs of one browser then sync through weft,
// which is what the demo is here to show. Nothing connects before boot()
// below has decided that it may.
const ydoc = new Y.Doc()
const serverUrl = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}`
const provider = params.get('provider') === 'hocuspocus'
  ? new HocuspocusAdapter(`${serverUrl}/hocuspocus`, docName, ydoc, {
    token,
    onReadOnly: () => becomeReadOnly('Your link lets you read this document, not change it.')
  })
  : new WebsocketProvider(serverUrl, encodeURIComponent(docName), ydoc, {
    params: token ? { token } : {},
    disableBc: true,
    connect: false
  })

/** The token's claims, when it has readable ones (the admin key has none). */
const claims = token ? tokenClaims(token) : null

// This browser's copy of the document (local.js): loaded at once, before
// the server is asked anything, so that a page opened while the server is
// down shows the document and can be edited. A read-only link changes
// nothing and keeps no copy.
const local = claims?.perm === 'read' ? null : keepLocally(docName, ydoc)
/** sessionStorage: the name of a document whose stale copy was just dropped (see dropStaleCopy). */
const DROPPED = 'weft-demo:dropped'
/** sessionStorage, which a browser may refuse the page (it then says nothing). */
const session = {
  get: (key) => { try { return sessionStorage.getItem(key) } catch { return null } },
  set: (key, value) => { try { sessionStorage.setItem(key, value) } catch {} },
  remove: (key) => { try { sessionStorage.removeItem(key) } catch {} }
}
if (session.get(DROPPED) === docName) {
  session.remove(DROPPED)
  showNotice(`This browser’s copy of “${docName.slice(0, 80)}” was dropped: the document was deleted on the server after this browser last had it. What the server has now is shown.`)
}

// A token may name its holder (`weft token --name Ada`): others see that name.
const { me } = mountPresence(provider, { tokenName: typeof claims?.name === 'string' ? claims.name : null })

/** @type {ReturnType<typeof mountVersions> | null} */
let versions = null
/** @type {ReturnType<typeof mountDocs> | null} */
let docs = null

/** @type {{ update: () => void } | null} */
let toolbar = null
const editor = createEditor($('editor'), ydoc.getXmlFragment(FRAGMENT), provider.awareness, () => toolbar?.update())
const view = editor.view
toolbar = mountToolbar($('toolbar'), view)

// ------------------------------------------------------------ access

let tokenMode = false
/**
 * The page's "token" is the server's key itself (the admin credential): the
 * server accepted it, and it is no JWT.
 */
let admin = false
/** Set once the page connects: what goes wrong before is boot()'s to explain. */
let started = false
let readOnly = false
/** Set once this page's access ended: the editor stays readable, not editable. */
let accessEnded = false

const canWrite = () => !readOnly && !accessEnded

const updateEditable = () => {
  editor.setEditable(canWrite())
  document.body.classList.toggle('read-only', !canWrite())
  versions?.render()
}

/** The page may read, not write: from the token, or from a refusal. */
const becomeReadOnly = (why) => {
  if (readOnly) return
  readOnly = true
  const badge = $('readonly-badge')
  badge.hidden = false
  badge.title = why
  updateEditable()
  status.render() // its tooltip tells a reader what is true for them
}

/** The server no longer lets this page in: say why, and stop trying. */
const endAccess = (reason) => {
  if (accessEnded) return
  accessEnded = true
  stopEventsForGood()
  status.end(reason)
  updateEditable()
}

// A read-only token's edit is refused by the server with a permission-denied
// message; y-websocket would only log it. Shown instead.
provider.messageHandlers[messageAuth] = (_encoder, decoder) => {
  readAuthMessage(decoder, ydoc, (_doc, reason) => {
    becomeReadOnly(`Your link lets you read this document, not change it (${reason}).`)
    showNotice(`Your link lets you read this document, not change it: the server refused a change (${reason}). Reload to see the document as it is.`)
  })
}

api.onAuthError = (error, { write }) => {
  if (!tokenMode || !started || accessEnded) return
  if (error.status === 401) {
    endAccess(error.message)
  } else if (write && error.status === 403) {
    becomeReadOnly(`Your link lets you read this document, not change it (${error.message}).`)
    toast(`Your link can only read: ${error.message}.`, { kind: 'error' })
  }
}

// The default document explains the demo on a first visit. Only once the
// server's state is in (an empty page before that proves nothing), and only
// by a page that may write.
if (docName === DEFAULT_DOC) {
  const seed = (synced) => {
    if (!synced) return
    provider.off('sync', seed)
    if (canWrite()) seedWelcome(ydoc)
  }
  provider.on('sync', seed)
}

// ------------------------------------------------------------ panels

const setPreviewing = (on) => {
  document.body.classList.toggle('previewing', on)
  if (!on) view.focus()
}

let lastState = ''

/** Why the server ended the session, by close code, for the notice. */
const endedBecause = ({ code, reason }) => {
  switch (code) {
    case 0:
      if (!token) return switchedToTokens()
      return `Your access to this document ended: the server refused this link’s token (${reason}). Ask the owner for a new link. The text stays here to read; it no longer updates.`
    case 4401:
      return 'Your access to this document expired. Ask the owner for a new link. The text stays here to read; it no longer updates, and changes can no longer be made.'
    case 4403:
      return 'Your access to this document was revoked. The text stays here to read; it no longer updates, and changes can no longer be made.'
    case 4404:
      return 'This document was deleted on the server, and the copy this browser kept of it with it. The text stays on this page until you leave or reload it; edits made now stay here only.'
    default:
      return `The server ended this session${reason ? `: ${reason}` : ''}. Edits made now stay in this tab only; reload the page to connect again.`
  }
}

/**
 * The page opened while the server ran in open mode, and the server now wants
 * tokens (restarted with a key): its sockets are refused with 401, and they
 * always will be.
 */
const switchedToTokens = () => {
  const n = status.unsent()
  const lost = n === 0
    ? 'Everything made here had reached it. '
    : `${n === 1 ? 'The change' : `The ${n} changes`} made here since the connection dropped did not reach it and cannot: copy what you need from this page before you close or reload it. `
  return 'This server now asks for an access link, and this page has none: it was switched to token mode after the page was opened. ' +
    lost + 'To go on, open the document with a link that has a token (the server’s owner makes one with weft token).'
}

// Changes made elsewhere (another page, the API, another server of a
// cluster) reach the lists at once through the server's event feed. It is
// opened once the page is in (synced: the server let it connect, so its
// token is good), and closed when its access ends, so that a page without
// access asks the feed for nothing.
/** @type {(() => void) | null} */
let stopEvents = null
const startEvents = () => {
  if (stopEvents !== null) return
  stopEvents = followEvents({
    token,
    docName,
    // A document that comes or goes changes the list now; edits change an
    // entry's details, refreshed at most every 2 s; a count of people is
    // shown as it comes.
    onDocs: (type) => (type === 'document.created' || type === 'document.deleted' ? docs?.refresh() : docs?.refreshSoon()),
    onPeers: (name, count) => docs?.setPeers(name, count),
    onVersions: () => versions?.refresh()
  })
}
const stopEventsForGood = () => {
  stopEvents?.()
  stopEvents = () => {}
}

const status = mountStatus(provider, ydoc, {
  canWrite,
  localOrigin: local?.origin,
  onChange: (state) => {
    versions?.updateSaveButton()
    if (state === 'closed' && lastState !== 'closed') {
      const closed = status.closedBy() ?? { code: -1, reason: '' }
      if (closed.code === 4401 || closed.code === 4403) {
        stopEventsForGood()
        accessEnded = true
        updateEditable()
      }
      // Deleted: a copy kept here would bring the document back the next
      // time this browser opens it.
      if (closed.code === 4404) local?.clear()
      showNotice(endedBecause(closed), 'error')
    }
    // Connected (again): the server knows the document now; lists may be stale.
    if (state === 'synced' && lastState !== 'synced') {
      startEvents()
      docs?.refresh()
      versions?.refresh()
    }
    lastState = state
  }
})
const isSynced = () => status.state() === 'synced'

docs = mountDocs(api, docName, token, isSynced, (entry) => local?.seenOnServer(entry.created))
// What the server has: everything, once synced and while connected (an
// update made then is sent at once).
const connected = () => provider.wsconnected && provider.synced
provider.on('sync', (synced) => { if (synced) local?.sent(connected) })
ydoc.on('update', () => { if (connected()) local?.sent(connected) })
local?.loaded.then(() => local.unsent()).then((unsent) => { if (unsent) status.carry() })
ydoc.on('update', () => docs?.refreshSoon())
provider.awareness.on('change', ({ added, removed }) => {
  if (added.length + removed.length > 0) docs?.refreshSoon()
})
// Versions saved, restored or deleted here: the other pages on this document
// learn it through this page's awareness state (a counter), and refresh their
// lists at once instead of at their next poll.
let versionChanges = 0
versions = mountVersions({
  api,
  docName,
  me,
  isSynced,
  canWrite,
  setPreviewing,
  onChange: () => provider.awareness.setLocalStateField('versionsChanged', ++versionChanges)
})
/** The last counter seen from each other client. */
const versionMarks = new Map()
provider.awareness.on('change', ({ added, updated, removed }) => {
  for (const id of removed) versionMarks.delete(id)
  let changed = false
  for (const id of [...added, ...updated]) {
    if (id === provider.awareness.clientID) continue
    const mark = provider.awareness.getStates().get(id)?.versionsChanged
    if (mark === undefined) continue
    // A client seen for the first time changed nothing since this page's list.
    if (versionMarks.has(id) && versionMarks.get(id) !== mark) changed = true
    versionMarks.set(id, mark)
  }
  if (changed) versions?.refresh()
})

// Copy link: never this page's own token (see share.js).
const share = mountShare({ api, docName, mode: () => (admin ? 'admin' : tokenMode ? 'token' : 'open') })
$('copy-link').addEventListener('click', () => share.share())

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

// Leaving with changes the server has not seen loses them, unless this
// browser keeps a copy: ask first.
window.addEventListener('beforeunload', (e) => {
  if (status.unsent() > 0 && canWrite() && local === null) {
    e.preventDefault()
  }
})

// ------------------------------------------------------------ start

/** `GET /api/info`, asked again while the server cannot be reached. */
const serverInfo = async () => {
  for (let attempt = 0; ; attempt++) {
    try {
      return await api.info()
    } catch (e) {
      // An older weft without /api/info: it has no token mode either.
      if (e.status !== 0) return null
    }
    // The page may be up (kept by the service worker) and its copy shown:
    // the status says offline rather than connecting.
    status.unreachable()
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, Math.min(500 * 2 ** attempt, 5000))
      window.addEventListener('online', () => { clearTimeout(timer); resolve() }, { once: true })
    })
  }
}

/**
 * Asks the server whether this page's token opens this document:
 * `{ docs }` (the documents it opens) when it does, `{ refused }` (an
 * ApiError with the server's reason) when it does not, `{}` when the server
 * could not say.
 */
const checkAccess = async () => {
  let list
  try {
    list = await api.listDocs()
  } catch (e) {
    return e.isAuth ? { refused: e } : {}
  }
  // The token is good. Whether it covers this document, its claims say; the
  // server has just accepted them, signature and all. Its own words for a
  // refusal come from the document itself.
  if (typeof claims?.doc === 'string' && !patternMatches(claims.doc, docName)) {
    try {
      await api.getDoc(docName)
    } catch (e) {
      if (e.isAuth) return { refused: e, docs: list }
    }
  }
  return { docs: list }
}

// A socket that fails to open, in token mode, may be a refused token (expired
// or revoked while this page was away). Browsers hide the status of a refused
// upgrade: the API tells, and then the page stops trying.
//
// A page that started in open mode asks /api/info instead: a server
// restarted in token mode refuses every socket without a token, and the page
// says so rather than promising to sync.
let lastCheck = 0
provider.on('connection-close', (event) => {
  if (!started || accessEnded || event === null || provider.wsconnected) return
  if (Date.now() - lastCheck < 4000) return
  lastCheck = Date.now()
  const check = () => checkAccess().then(({ refused }) => {
    if (refused) endAccess(refused.message)
  })
  if (tokenMode) {
    check()
    return
  }
  api.info().then((info) => {
    if (info?.auth !== 'token' || tokenMode || accessEnded) return
    tokenMode = true
    if (token) check()
    else endAccess('the server now asks for an access link, and this page’s address has none')
  }, () => {})
})

const boot = async () => {
  const info = await serverInfo()
  tokenMode = info?.auth === 'token'
  if (!tokenMode) {
    start()
    return
  }
  if (!token) {
    showNoToken(docName)
    return
  }
  if (claims?.perm === 'read') becomeReadOnly('Your link lets you read this document, not change it.')
  const { refused, docs: list } = await checkAccess()
  if (refused?.status === 403 && list) {
    docs.show(list, { listCurrent: false })
    showWrongDocument(docName, refused.message, { docs: Array.isArray(list?.docs) ? list.docs : [], claims, token })
    return
  }
  if (refused) {
    showRefused(docName, refused.message)
    return
  }
  admin = claims === null
  if (list) docs.show(list)
  start()
}

/**
 * A copy this browser kept of a document the server has deleted since (it
 * no longer has it, or has another of that name, made later) would bring
 * the deleted text back: it is dropped, and the page loads again without
 * it. A copy never seen on the server (a document made here, not yet sent)
 * is kept.
 * @returns {Promise<boolean>} whether the page is reloading
 */
const dropStaleCopy = async () => {
  const seen = await local?.created()
  if (seen === undefined) return false
  let now
  try {
    now = (await api.getDoc(docName))?.created ?? null
  } catch (e) {
    if (e.status !== 404) return false
    now = null
  }
  if (now === seen) return false
  await local.clear()
  session.set(DROPPED, docName)
  location.reload()
  return true
}

const start = async () => {
  await local?.loaded
  if (await dropStaleCopy()) return
  started = true
  status.start()
}

// The page itself is kept for reloads while the server is down (sw.js).
// Browsers give service workers only to secure pages (https, or
// localhost/127.0.0.1): elsewhere the page works as before, online.
navigator.serviceWorker?.register('/assets/sw.js', { scope: '/' }).catch(() => {})

boot()
