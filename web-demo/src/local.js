// The copy of the document this browser keeps (IndexedDB, with y-indexeddb),
// so that a page reloaded while the server cannot be reached still shows the
// document and the changes it has not sent, and sends them when the server
// is back (the sync handshake: an ordinary update).
//
// Beside the document's updates, the store keeps two marks of its own:
//   created  the server's creation time of the document, once it was seen
//            there: a copy of a document deleted since (or deleted and made
//            anew) is stale, and is dropped rather than sent back
//   sent     a snapshot (state vector and deletions) of what the server was
//            last known to have: a copy with more than that holds changes
//            made offline, which the status then counts as unsent

import * as Y from 'yjs'
import { IndexeddbPersistence, clearDocument } from 'y-indexeddb'
import { fromBase64, toBase64 } from 'lib0/buffer'

/** The IndexedDB database of one document (one per name, in this origin). */
export const storeName = (docName) => `weft-demo:${docName}`

/**
 * Keeps `ydoc` in IndexedDB. Returns null when this browser gives the page
 * no IndexedDB (some private modes): the page then works as before, online.
 * @param {string} docName
 * @param {Y.Doc} ydoc
 */
export const keepLocally = (docName, ydoc) => {
  let store
  try {
    if (typeof indexedDB === 'undefined') return null
    store = new IndexeddbPersistence(storeName(docName), ydoc)
  } catch {
    return null
  }
  let cleared = false
  /** Reads a mark, or undefined when the store cannot be read. */
  const mark = (key) => store.get(key).catch(() => undefined)
  const snapshot = () => toBase64(Y.encodeSnapshot(Y.snapshot(ydoc)))
  let sentTimer = null

  return {
    /** The origin of the updates the copy applies to `ydoc` as it loads. */
    origin: store,
    /**
     * Resolves once the copy is in `ydoc` (at once when there is none), or
     * when IndexedDB cannot be opened (the page then goes on without it;
     * `whenSynced` alone would never resolve).
     */
    loaded: store._db.then(() => store.whenSynced, () => undefined),
    /** The server's creation time of the document, as last seen; undefined if never. */
    created: () => mark('created'),
    /** Remembers the server's creation time of the document. */
    seenOnServer: (created) => {
      if (!cleared && typeof created === 'string') store.set('created', created).catch(() => {})
    },
    /**
     * The server has everything `ydoc` has: written a moment later, once for
     * a burst, if `connected()` still says so then. The snapshot is taken
     * then, so without that check an edit made offline within the moment
     * (the connection lost just after typing) was marked sent, and a reload
     * no longer counted it as unsent.
     * @param {() => boolean} connected
     */
    sent: (connected) => {
      if (cleared || sentTimer !== null) return
      sentTimer = setTimeout(() => {
        sentTimer = null
        if (!cleared && connected()) store.set('sent', snapshot()).catch(() => {})
      }, 200)
    },
    /** Whether the copy holds changes the server was not known to have. */
    unsent: async () => {
      const sent = await mark('sent')
      if (typeof sent !== 'string') return ydoc.store.clients.size > 0
      try {
        return !Y.equalSnapshots(Y.decodeSnapshot(fromBase64(sent)), Y.snapshot(ydoc))
      } catch {
        return true
      }
    },
    /** Stops keeping the copy and deletes it (the page keeps what it shows). */
    clear: async () => {
      if (cleared) return
      cleared = true
      clearTimeout(sentTimer)
      await store.destroy()
      await clearDocument(storeName(docName))
    }
  }
}
