// The connection indicator. It says what is true, from the provider's own
// events:
//   connecting  no connection yet, first attempt under way
//   syncing     connected, the server's state not yet received
//   synced      connected and caught up; local edits go out as they are made
//   offline     no connection (lost, refused, or the browser is offline);
//               edits stay in this tab (and in this browser's copy of the
//               document) and are sent when it reconnects
//   closed      the server ended the session for good (document deleted,
//               access expired or revoked)

import { $ } from './ui.js'

/**
 * @param {import('y-websocket').WebsocketProvider} provider
 * @param {import('yjs').Doc} ydoc
 * @param {{ onChange?: (state: string) => void, canWrite?: () => boolean, localOrigin?: any }} [hooks]
 *   `canWrite`: whether this page may change the document (a read-only link
 *   may not): the indicator then says what is true for a reader.
 *   `localOrigin`: the origin of updates loaded from this browser's copy,
 *   which are no new changes (see `carry` for the unsent ones among them).
 */
export const mountStatus = (provider, ydoc, { onChange = () => {}, canWrite = () => true, localOrigin = null } = {}) => {
  const root = $('status')
  const text = $('status-text')
  let everConnected = false
  let failures = 0
  let unsent = 0
  /** This browser's copy holds changes from an earlier visit not known to have reached the server. */
  let carried = false
  let started = false
  /** @type {{ code: number, reason: string } | null} */
  let closed = null

  const state = () => {
    if (closed) return 'closed'
    if (provider.wsconnected && provider.synced) return 'synced'
    if (provider.wsconnected) return 'syncing'
    if (everConnected || failures > 0 || !navigator.onLine) return 'offline'
    return 'connecting'
  }

  const render = () => {
    const s = state()
    const pending = unsent === 0 && carried
      ? 'changes kept in this browser from an earlier visit'
      : unsent === 1 ? '1 change not sent yet' : `${unsent} changes not sent yet`
    let label
    let title
    switch (s) {
      case 'synced':
        label = 'Synced'
        title = canWrite()
          ? 'Connected to weft: your changes reach everyone as you type.'
          : 'Connected to weft: everyone’s changes reach you as they are made. Your link lets you read this document, not change it.'
        break
      case 'syncing':
        label = 'Syncing…'
        title = canWrite()
          ? 'Connected; exchanging changes with the server.'
          : 'Connected; receiving the document from the server.'
        break
      case 'offline':
        label = unsent > 0 ? `Offline · ${unsent} unsent` : carried ? 'Offline · unsent' : 'Offline'
        title = `No connection to the server${navigator.onLine ? '' : ' (this browser is offline)'}. ` +
          (canWrite()
            ? `Keep editing: ${unsent > 0 || carried ? pending + '; they' : 'changes'} will sync when the connection is back. Reconnecting…`
            : 'Other people’s changes will show again when the connection is back. Reconnecting…')
        break
      case 'closed':
        label = CLOSED_LABELS[closed?.code] ?? 'Disconnected'
        title = closed?.code === 0
          ? `This page has no access to the document any more: ${closed.reason}.`
          : `The server closed this session${closed?.reason ? `: ${closed.reason}` : ''}${closed?.code ? ` (code ${closed.code})` : ''}. Reload to try again.`
        break
      default:
        label = 'Connecting…'
        title = 'Connecting to the server.'
    }
    root.dataset.state = s
    root.title = title
    text.textContent = label
    onChange(s)
  }

  provider.on('status', ({ status }) => {
    if (status === 'connected') {
      everConnected = true
      failures = 0
    }
    render()
  })
  provider.on('connection-close', () => {
    if (!provider.wsconnected) failures++
    render()
  })
  provider.on('connection-error', () => {
    failures++
    render()
  })
  provider.on('sync', (synced) => {
    // The sync handshake sends the server everything it lacks, including
    // changes made while offline.
    if (synced) {
      unsent = 0
      carried = false
    }
    render()
  })
  provider.on('closed', (event) => {
    closed = event
    render()
  })
  ydoc.on('update', (_update, origin) => {
    if (origin !== provider && origin !== localOrigin && !(provider.wsconnected && provider.synced)) {
      unsent++
      render()
    }
  })

  // The browser knows about a lost network long before a silent socket times
  // out (30 s): drop the connection at once and try again when it is back.
  //
  // Closing the socket first keeps y-websocket's disconnect() from sending
  // this user's "gone" awareness state into the dead network: it would arrive
  // only once the network is back, at the clock the user's state has, and
  // hide the user again from everyone until the next renewal. A dropped
  // socket is what the server knows how to mark and revive.
  const drop = () => {
    if (provider.ws?.readyState === WebSocket.OPEN) provider.ws.close()
    provider.disconnect()
  }
  window.addEventListener('offline', () => {
    if (started) drop()
    render()
  })
  window.addEventListener('online', () => {
    if (started && !closed) provider.connect()
    render()
  })

  /** Connects, once the page knows it may. */
  const start = () => {
    started = true
    if (navigator.onLine) provider.connect()
    render()
  }

  /**
   * Ends the session from this side, for good: the server refused this page's
   * access (`code` 0: no close code was involved).
   */
  const end = (reason) => {
    closed = { code: 0, reason }
    drop()
    render()
  }

  /** The server could not be reached before connecting (the page's first questions failed). */
  const unreachable = () => {
    failures++
    render()
  }

  /** This browser's copy, loaded, holds changes the server was not known to have. */
  const carry = () => {
    if (provider.wsconnected && provider.synced) return
    carried = true
    render()
  }

  render()
  return { state, render, start, end, carry, unreachable, unsent: () => unsent, closedBy: () => closed }
}

/** What the indicator says when the server ended the session, by close code. */
const CLOSED_LABELS = {
  0: 'No access',
  4401: 'Access expired',
  4403: 'Access revoked'
}
