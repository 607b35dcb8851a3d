// Sharing a document. Copy link never hands out this page's own token: in
// token mode that token acts as its holder (whoever has it writes as them,
// and revoking it would lock them out too). So:
//   - open mode: the page's link (there is no token);
//   - token mode: the link without the token, and a word that the other
//     person needs a link of their own;
//   - token mode with the admin key (the page's "token" is the server's key):
//     a dialog that mints a new token for this document through
//     POST /api/tokens, with the permission, lifetime and name chosen here,
//     and copies a link holding that one.

import { docUrl } from './docs.js'
import { $, toast, absoluteTime } from './ui.js'

/** Copies `text`; false when the browser would not (the caller shows it instead). */
const copy = async (text) => {
  try {
    await navigator.clipboard.writeText(text)
    return true
  } catch {
    return false
  }
}

const absolute = (path) => new URL(path, location.href).href

/**
 * @param {{ api: import('./api.js').Api, docName: string,
 *           mode: () => 'open' | 'token' | 'admin' }} opts
 */
export const mountShare = ({ api, docName, mode }) => {
  const dialog = /** @type {HTMLDialogElement} */ ($('share-dialog'))
  const form = /** @type {HTMLFormElement} */ ($('share-form'))
  const ttl = /** @type {HTMLSelectElement} */ ($('share-ttl'))
  const name = /** @type {HTMLInputElement} */ ($('share-name'))
  const result = $('share-result')
  const linkField = /** @type {HTMLInputElement} */ ($('share-link'))
  const note = $('share-note')
  const error = $('share-error')
  const create = /** @type {HTMLButtonElement} */ ($('share-create'))
  const plainLink = absolute(docUrl(docName, null))

  $('share-intro').textContent = `A new link to “${docName}”, with a token of its own: you can revoke it without affecting anyone else’s.`

  const perm = () => /** @type {'read' | 'write'} */ (
    /** @type {HTMLInputElement | null} */ (form.querySelector('input[name="share-perm"]:checked'))?.value === 'read' ? 'read' : 'write')

  const showError = (text) => {
    error.hidden = text === null
    error.textContent = text ?? ''
  }

  /** A change of choices makes the link shown stale: ask again. */
  const reset = () => {
    result.hidden = true
    linkField.value = ''
    create.textContent = 'Create link'
    create.dataset.state = 'create'
    showError(null)
  }
  form.addEventListener('input', (e) => { if (e.target !== linkField) reset() })

  // Create link is the form's submit button, so that Enter in the name field
  // creates the link rather than closing the dialog.
  form.addEventListener('submit', async (e) => {
    e.preventDefault()
    if (create.disabled) return
    if (create.dataset.state === 'copy') {
      toast(await copy(linkField.value) ? 'Link copied.' : linkField.value, { kind: 'success' })
      return
    }
    create.disabled = true
    showError(null)
    const chosen = name.value.replace(/\s+/g, ' ').trim()
    try {
      const minted = await api.mintToken({
        doc: docName,
        perm: perm(),
        ttl_secs: Number(ttl.value),
        ...(chosen ? { name: chosen } : {})
      })
      if (typeof minted?.token !== 'string') throw new Error('the server answered without a token')
      linkField.value = absolute(docUrl(docName, minted.token))
      note.textContent = `Whoever opens it can ${perm() === 'read' ? 'read' : 'edit'} “${docName}”` +
        `${chosen ? ` as ${chosen}` : ''} until ${absoluteTime(minted.expires)}. ` +
        `To end it sooner, revoke token ${minted.token_id} (POST /api/tokens/revoke).`
      result.hidden = false
      create.textContent = 'Copy link'
      create.dataset.state = 'copy'
      linkField.select()
      if (await copy(linkField.value)) toast('New link created and copied.', { kind: 'success' })
    } catch (e) {
      showError(`Could not create a link: ${e.message}.`)
    } finally {
      create.disabled = false
    }
  })

  $('share-close').addEventListener('click', () => dialog.close())

  $('share-plain').addEventListener('click', async () => {
    const copied = await copy(plainLink)
    dialog.close()
    toast(copied ? 'Link without a token copied: it opens the document only for someone who has access of their own.' : plainLink, { timeout: 8000 })
  })

  /** What the Copy link button does. */
  const share = async () => {
    switch (mode()) {
      case 'admin':
        reset()
        dialog.showModal()
        create.focus()
        return
      case 'token': {
        const copied = await copy(plainLink)
        toast(copied
          ? 'Link copied, without your access token: whoever opens it needs a link of their own from the document’s owner. Yours acts as you; keep it to yourself.'
          : `${plainLink} — this link has no token: whoever opens it needs a link of their own from the document’s owner.`,
        { timeout: 8000 })
        return
      }
      default: {
        const link = absolute(docUrl(docName, null))
        toast(await copy(link) ? 'Link copied. Open it in another tab or send it to someone.' : link, { kind: 'success', timeout: 8000 })
      }
    }
  }
  return { share }
}
