// The demo with @hocuspocus/provider instead of y-websocket (`?provider=hocuspocus`):
// weft's Hocuspocus endpoint serves the same documents. The rest of the page
// was written against y-websocket's provider, so this wraps a
// HocuspocusProvider in the part of that interface the page uses: the
// `status`, `sync`, `connection-close` and `closed` events, `wsconnected`,
// `synced`, `ws`, `awareness`, `connect()` and `disconnect()`.
import { ObservableV2 } from 'lib0/observable'
import { HocuspocusProvider } from '@hocuspocus/provider'

/** y-websocket's close codes for a document the server closed, by Hocuspocus's reason. */
const CLOSE_CODES = { Unauthorized: 4401, Forbidden: 4403 }

export class HocuspocusAdapter extends ObservableV2 {
  /**
   * @param {string} url the endpoint, `ws(s)://host/hocuspocus`
   * @param {string} name the document's name
   * @param {import('yjs').Doc} doc
   * @param {{ token: string | null, onReadOnly: () => void }} opts
   */
  constructor (url, name, doc, { token, onReadOnly }) {
    super()
    this.wsconnected = false
    this.synced = false
    /** Unused: y-websocket's hook, assigned to by the page. */
    this.messageHandlers = []
    this.provider = new HocuspocusProvider({
      url,
      name,
      document: doc,
      token: token ?? '',
      autoConnect: false,
      onStatus: ({ status }) => {
        this.wsconnected = status === 'connected'
        if (!this.wsconnected) this.setSynced(false)
        this.emit('status', [{ status }])
      },
      onSynced: ({ state }) => this.setSynced(state),
      onDisconnect: ({ event }) => this.emit('connection-close', [event, this]),
      onAuthenticated: ({ scope }) => { if (scope === 'readonly') onReadOnly() },
      onAuthenticationFailed: ({ reason }) => this.end({ code: 4403, reason }),
      // A close message for this document (the socket's own closes come
      // with their WebSocket code): its token expired or was revoked.
      onClose: ({ event }) => {
        if (event.code === 1000 && event.reason) this.end({ code: CLOSE_CODES[event.reason] ?? 4400, reason: event.reason })
      }
    })
  }

  setSynced (state) {
    if (this.synced === state) return
    this.synced = state
    this.emit('sync', [state])
  }

  /** The server will not have this page any more: stop, as y-websocket does after a 44xx. */
  end (event) {
    this.disconnect()
    this.emit('closed', [event])
  }

  get awareness () { return this.provider.awareness }
  get ws () { return this.provider.configuration.websocketProvider.webSocket }
  connect () { this.provider.connect() }
  disconnect () { this.provider.disconnect() }
}
