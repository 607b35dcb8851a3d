// The version panel: list a document's versions, name the current state as a
// version, preview one read-only, restore it (after a confirmation) or delete it.
// With read-only access only the list and the preview remain.
//
// A preview is the version's full state (GET …/versions/{id}/update) applied to
// a fresh Y.Doc and rendered in a second, read-only ProseMirror view. A restore
// is done by the server as a normal CRDT update, so every open editor, this one
// included, converges on it without reloading.

import * as Y from 'yjs'
import { FRAGMENT, createPreview } from './editor.js'
import { $, h, icon, toast, confirmDialog, relativeTime, absoluteTime, formatSize } from './ui.js'

const REFRESH_MS = 15_000
const WIDE = '(min-width: 1200px)'

const versionTitle = (v) => {
  const label = typeof v.label === 'string' ? v.label.trim() : ''
  if (label !== '') return label
  return v.kind === 'auto' ? 'Automatic snapshot' : 'Untitled version'
}

/**
 * `onChange` is called after this page saved, restored or deleted a version,
 * so that the page can tell its peers (their lists are otherwise refreshed
 * every 15 s).
 * @param {{ api: import('./api.js').Api, docName: string, me: { name: string },
 *           isSynced: () => boolean, canWrite: () => boolean,
 *           setPreviewing: (on: boolean) => void, onChange?: () => void }} opts
 */
export const mountVersions = ({ api, docName, me, isSynced, canWrite, setPreviewing, onChange = () => {} }) => {
  const panel = $('versions')
  const toggle = $('toggle-versions')
  const list = $('version-list')
  const message = $('version-message')
  const form = /** @type {HTMLFormElement} */ ($('save-form'))
  const labelInput = /** @type {HTMLInputElement} */ ($('version-label'))
  const saveButton = /** @type {HTMLButtonElement} */ ($('save-version'))
  const banner = $('preview-banner')
  const previewMount = $('preview')

  /** @type {any[] | null} */
  let versions = null
  let available = true
  let open = false
  let timer = 0
  let busy = false
  /** @type {{ version: any, view: import('prosemirror-view').EditorView } | null} */
  let preview = null
  let previewToken = 0

  const showMessage = (text) => {
    message.hidden = text === null
    message.textContent = text ?? ''
  }

  const updateSaveButton = () => {
    const synced = isSynced()
    saveButton.disabled = busy || !available || !synced
    labelInput.disabled = !available
    saveButton.title = !available
      ? 'Versions are not available on this server'
      : synced ? 'Save the current state as a named version' : 'Connect to the server to save a version'
  }

  const render = () => {
    if (versions === null) return
    list.replaceChildren(...versions.map((v) => {
      const selected = preview?.version.id === v.id
      // The id: a restore's backup is labelled "Before restoring version N
      // (…)", and N is this number.
      const meta = [`#${v.id}`, relativeTime(v.created), formatSize(v.size)].filter(Boolean).join(' · ')
      const title = versionTitle(v)
      return h('li', { class: `version${selected ? ' selected' : ''}`, dataset: { id: String(v.id), kind: v.kind ?? '' } },
        h('button', {
          type: 'button',
          class: 'version-open',
          // The whole label, which the list may cut short with an ellipsis.
          title: `${title}\nVersion ${v.id}, ${absoluteTime(v.created)}. Click to preview it.`,
          'aria-pressed': String(selected),
          onclick: () => (selected ? closePreview() : openPreview(v))
        },
        h('span', { class: 'version-label' },
          h('span', { class: 'version-text' }, title),
          v.kind === 'auto' ? h('span', { class: 'kind-badge' }, 'auto') : null),
        h('span', { class: 'version-meta' }, meta)),
        h('button', {
          type: 'button',
          class: 'icon-button version-delete',
          title: 'Delete this version',
          'aria-label': `Delete version ${v.id}, ${title}`,
          onclick: () => remove(v)
        }, icon('M4.5 6h11M8 6V4.5h4V6M6 6l.7 9.5h6.6L14 6')))
    }))
    showMessage(versions.length === 0 ? (canWrite() ? 'No versions yet. Name the current state to keep it.' : 'No versions yet.') : null)
  }

  const load = async () => {
    clearTimeout(timer)
    // The server knows the document once this page is connected to it; until
    // then (and while offline) there is nothing to ask.
    if (!isSynced()) {
      if (versions === null) showMessage('Versions appear once connected.')
      updateSaveButton()
      return
    }
    try {
      const body = await api.listVersions(docName)
      versions = Array.isArray(body?.versions) ? body.versions : []
      available = true
      render()
    } catch (e) {
      if (e.status === 404) {
        // A document that is not stored yet has no versions.
        versions = []
        available = true
        render()
      } else {
        versions = versions ?? []
        list.replaceChildren()
        available = e.status === 0 || e.isAuth ? available : false
        showMessage(e.isAuth
          ? 'Versions need an access token with the rights to see them.'
          : e.status === 0
            ? 'The server cannot be reached.'
            : `Versions are not available on this server (${e.message}).`)
      }
    }
    updateSaveButton()
    if (open && available && document.visibilityState === 'visible') timer = setTimeout(load, REFRESH_MS)
  }

  const setOpen = (value) => {
    open = value
    panel.classList.toggle('open', value)
    document.body.classList.toggle('versions-open', value)
    toggle.setAttribute('aria-expanded', String(value))
    toggle.classList.toggle('active', value)
    if (value) load()
    else clearTimeout(timer)
  }

  toggle.addEventListener('click', () => setOpen(!open))
  $('close-versions').addEventListener('click', () => setOpen(false))

  form.addEventListener('submit', async (e) => {
    e.preventDefault()
    if (saveButton.disabled || !canWrite()) return
    const label = labelInput.value.trim() || `Saved by ${me.name}`
    busy = true
    updateSaveButton()
    try {
      const version = await api.createVersion(docName, label)
      labelInput.value = ''
      toast(`Saved “${versionTitle(version ?? { label })}”.`, { kind: 'success' })
      onChange()
      await load()
    } catch (err) {
      toast(`Could not save the version: ${err.message}.`, { kind: 'error' })
    } finally {
      busy = false
      updateSaveButton()
    }
  })

  const openPreview = async (version) => {
    const token = ++previewToken
    let update
    try {
      update = await api.versionUpdate(docName, version.id)
    } catch (e) {
      toast(`Could not open the version: ${e.message}.`, { kind: 'error' })
      return
    }
    if (token !== previewToken) return // another preview was asked for meanwhile
    const ydoc = new Y.Doc()
    try {
      Y.applyUpdate(ydoc, update)
    } catch {
      toast('This version could not be read.', { kind: 'error' })
      return
    }
    preview?.view.destroy()
    previewMount.replaceChildren()
    const view = createPreview(previewMount, ydoc.getXmlFragment(FRAGMENT))
    ydoc.destroy()
    preview = { version, view }
    $('preview-title').textContent = versionTitle(version)
    $('preview-title').title = versionTitle(version)
    $('preview-meta').textContent = `${version.kind === 'auto' ? 'Automatic snapshot' : 'Version'} #${version.id} from ${absoluteTime(version.created)} · read-only`
    banner.hidden = false
    previewMount.hidden = false
    setPreviewing(true)
    render()
    if (!window.matchMedia(WIDE).matches) setOpen(false)
  }

  const closePreview = () => {
    previewToken++
    if (preview === null) return
    preview.view.destroy()
    preview = null
    previewMount.replaceChildren()
    previewMount.hidden = true
    banner.hidden = true
    setPreviewing(false)
    render()
  }

  $('preview-close').addEventListener('click', closePreview)
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && preview !== null && !$('confirm-dialog').hasAttribute('open')) closePreview()
  })

  $('preview-restore').addEventListener('click', async () => {
    if (preview === null || !canWrite()) return
    const version = preview.version
    const ok = await confirmDialog({
      title: `Restore “${versionTitle(version)}”?`,
      body: 'The document goes back to this version for everyone editing it. ' +
        'Its current state is saved as a version first, so nothing is lost.',
      ok: 'Restore'
    })
    if (!ok) return
    const button = /** @type {HTMLButtonElement} */ ($('preview-restore'))
    button.disabled = true
    try {
      const result = await api.restoreVersion(docName, version.id)
      closePreview()
      const backup = result?.backup
      toast(backup
        ? `Restored “${versionTitle(version)}”. The state before it is kept as #${backup.id}, “${versionTitle(backup)}”.`
        : `Restored “${versionTitle(version)}”.`, { kind: 'success', timeout: 6000 })
      onChange()
      if (open) await load()
    } catch (e) {
      toast(`Could not restore: ${e.message}.`, { kind: 'error' })
    } finally {
      button.disabled = false
    }
  })

  const remove = async (version) => {
    if (!canWrite()) return
    const ok = await confirmDialog({
      title: `Delete “${versionTitle(version)}”?`,
      body: 'The version is removed for everyone. The document itself does not change.',
      ok: 'Delete',
      danger: true
    })
    if (!ok) return
    try {
      await api.deleteVersion(docName, version.id)
      if (preview?.version.id === version.id) closePreview()
      toast(`Deleted “${versionTitle(version)}”.`)
      onChange()
      await load()
    } catch (e) {
      toast(`Could not delete the version: ${e.message}.`, { kind: 'error' })
    }
  }

  // Relative times go stale: redraw them now and then.
  setInterval(() => { if (open) render() }, 30_000)
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible' && open) load()
  })

  setOpen(window.matchMedia(WIDE).matches)
  updateSaveButton()
  return { updateSaveButton, render, refresh: () => open && load(), close: () => setOpen(false) }
}
