// What happens elsewhere, as it happens: the server's event feed
// (GET /api/events, Server-Sent Events). The document list follows documents
// created, edited and deleted, and the Versions panel this document's
// versions taken and restored, at once instead of at their next refresh.
// `document.peers` (a document's live count of connections, sent at most
// once a second per document and never stored) keeps each entry's count of
// people in step with the other tabs.
//
// In token mode the page's own token goes along (an EventSource cannot send
// headers): the feed shows only the documents that token opens, which is
// what the page's document list shows already, so nothing leaks. The
// browser reconnects by itself, resuming after the last event it saw.

const TYPES = [
  'document.created', 'document.updated', 'document.deleted',
  'version.created', 'version.restored', 'document.peers'
]

/**
 * Calls `onDocs(type)` for documents created, changed or deleted,
 * `onPeers(name, count)` when a document's number of connections changes,
 * and `onVersions()` when this document's versions change. Returns a
 * function that stops listening.
 * @param {{ token: string | null, docName: string, onDocs: (type: string) => void,
 *   onPeers: (name: string, count: number) => void, onVersions: () => void }} options
 */
export const followEvents = ({ token, docName, onDocs, onPeers, onVersions }) => {
  if (typeof EventSource === 'undefined') return () => {}
  const params = new URLSearchParams({ types: TYPES.join(',') })
  if (token) params.set('token', token)
  const source = new EventSource(`/api/events?${params}`)
  source.onmessage = (message) => {
    let event
    try {
      event = JSON.parse(message.data)
    } catch {
      return
    }
    if (typeof event?.type !== 'string') return
    if (event.type === 'document.peers') {
      const count = event.data?.peers
      if (typeof event.document === 'string' && Number.isInteger(count)) onPeers(event.document, count)
    } else if (event.type.startsWith('version.')) {
      if (event.document === docName) onVersions()
    } else {
      onDocs(event.type)
    }
  }
  return () => source.close()
}
