// What every page shares: one Y.Doc on weft through the standard
// y-websocket provider, a name and colour in awareness (the field `user`, as
// y-codemirror.next, y-quill and the demo read it), and marks the tests wait
// on. The URL says where and who:
//
//   ?server=ws://127.0.0.1:PORT&doc=NAME&name=Ada&color=%23d9480f
//
// `data-synced` on <html> is "true" once the provider has the server's state;
// `data-bound` once the editor is bound to the shared type.

import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'

export const connect = () => {
  const params = new URLSearchParams(location.search)
  const server = params.get('server')
  const docName = params.get('doc')
  if (!server || !docName) throw new Error('the page needs ?server=ws://host:port&doc=name')
  const ydoc = new Y.Doc()
  // BroadcastChannel off: two pages meet only through weft.
  const provider = new WebsocketProvider(server, encodeURIComponent(docName), ydoc, { disableBc: true })
  const color = params.get('color') || '#1971c2'
  provider.awareness.setLocalStateField('user', {
    name: params.get('name') || 'Anonymous',
    color,
    colorLight: `${color}33`
  })
  provider.on('sync', (synced) => { document.documentElement.dataset.synced = String(synced) })
  // For a look from the console; the tests read the editors' DOM.
  window.weft = { ydoc, provider }
  return { ydoc, provider, awareness: provider.awareness, params }
}

export const bound = () => { document.documentElement.dataset.bound = 'true' }
