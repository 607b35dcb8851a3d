// The real @hocuspocus/provider (4.x, pinned in package-lock.json) against
// weft's Hocuspocus endpoint, ws://host:port/hocuspocus: convergence, many
// documents over one socket, co-editing and awareness with a y-websocket
// client, tokens per document, sync statuses that mean "stored" (a SIGKILL
// right after unsyncedChanges reaches 0 loses nothing), stateless messages,
// and reconnecting after a restart.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
import { HocuspocusProvider, HocuspocusProviderWebsocket } from '@hocuspocus/provider'
import { startWeft, waitFor } from '../weft.mjs'

const servers = []
after(() => Promise.all(servers.map((s) => s.cleanup())))

async function weft (opts) {
  const server = await startWeft(opts)
  servers.push(server)
  return server
}

const KEY = 'hocuspocus-test-key-0123456789abcdef0123456789'

/** The provider's url for a weft: README's `ws://host:port/hocuspocus`. */
const url = (server) => `${server.ws}/hocuspocus`

/**
 * A HocuspocusProvider with its own Y.Doc; records what it is told
 * (authentication, closes, stateless messages). `websocketProvider` shares
 * one socket between providers.
 */
function hocus (server, name, { token, websocketProvider, sessionAwareness = false } = {}) {
  const doc = new Y.Doc()
  const seen = { authenticated: null, failed: null, closes: [], stateless: [] }
  const p = new HocuspocusProvider({
    ...(websocketProvider ? { websocketProvider } : { url: url(server), WebSocketPolyfill: WebSocket }),
    name,
    document: doc,
    token: token ?? null,
    sessionAwareness,
    onAuthenticated: ({ scope }) => { seen.authenticated = scope },
    onAuthenticationFailed: ({ reason }) => { seen.failed = reason },
    onClose: ({ event }) => { seen.closes.push(event.reason) },
    onStateless: ({ payload }) => { seen.stateless.push(payload) }
  })
  if (websocketProvider) p.attach()
  const text = () => doc.getText('t').toString()
  return { doc, p, seen, text, destroy: () => { p.destroy(); doc.destroy() } }
}

/** A socket that several providers share. */
const socket = (server) => new HocuspocusProviderWebsocket({ url: url(server), WebSocketPolyfill: WebSocket })

const synced = (c) => waitFor(`${c.p.configuration.name} synced`, () => c.p.isSynced, 15000)
const stored = (c) => waitFor(`${c.p.configuration.name}: no unsynced changes`, () => c.p.unsyncedChanges === 0, 15000)

test('two providers converge, and every edit is acknowledged', async (t) => {
  const server = await weft()
  const a = hocus(server, 'pair')
  const b = hocus(server, 'pair')
  t.after(() => { a.destroy(); b.destroy() })
  await synced(a); await synced(b)
  assert.equal(a.seen.authenticated, 'read-write')
  a.doc.getText('t').insert(0, 'hello ')
  b.doc.getText('t').insert(0, 'world ')
  await waitFor('both converge', () => a.text() === b.text() && a.text().length === 12)
  await stored(a); await stored(b)
  // forceSync (and forceSyncInterval) counts one unsynced change and sends a
  // step1: the server's step1 in answer draws the step2 that is acknowledged.
  a.p.forceSync()
  assert.equal(a.p.unsyncedChanges, 1)
  await stored(a)
})

test('one socket, three documents; closing one leaves the others', async (t) => {
  const server = await weft()
  const ws = socket(server)
  const docs = ['one', 'two', 'three'].map((name) => hocus(server, name, { websocketProvider: ws }))
  const other = ['one', 'two', 'three'].map((name) => hocus(server, name))
  t.after(() => { for (const c of [...docs, ...other]) c.destroy(); ws.destroy() })
  for (const c of [...docs, ...other]) await synced(c)
  docs.forEach((c, i) => c.doc.getText('t').insert(0, `doc ${i}`))
  for (let i = 0; i < 3; i++) {
    await waitFor(`doc ${i} reaches its own document only`, () => other[i].text() === `doc ${i}`)
  }
  // The provider detaches 'one' (a close message); 'two' keeps working.
  docs[0].p.detach()
  other[0].doc.getText('t').insert(0, 'after detach ')
  docs[1].doc.getText('t').insert(0, 'still ')
  await waitFor('two still syncs over the shared socket', () => other[1].text() === 'still doc 1')
  assert.equal(docs[0].text(), 'doc 0', 'a detached document hears nothing more')
  const listed = await server.api('GET', '/api/docs/two')
  assert.equal(listed.status, 200)
})

test('session awareness: two providers of one document on one socket, each answered at its own address', async (t) => {
  const server = await weft()
  const ws = socket(server)
  const a = hocus(server, 'shared', { websocketProvider: ws, sessionAwareness: true })
  const b = hocus(server, 'shared', { websocketProvider: ws, sessionAwareness: true })
  t.after(() => { a.destroy(); b.destroy(); ws.destroy() })
  await synced(a); await synced(b)
  a.doc.getText('t').insert(0, 'from a ')
  await waitFor('b has it over the same socket', () => b.text() === 'from a ')
  b.doc.getText('t').insert(0, 'from b ')
  await waitFor('a has it', () => a.text() === 'from b from a ')
  await stored(a); await stored(b)
})

test('a Hocuspocus provider and a y-websocket provider co-edit, and see each other\'s awareness', async (t) => {
  const server = await weft()
  const h = hocus(server, 'mixed')
  const ydoc = new Y.Doc()
  const y = new WebsocketProvider(server.ws, 'mixed', ydoc, { WebSocketPolyfill: WebSocket, disableBc: true })
  t.after(() => { h.destroy(); y.destroy(); ydoc.destroy() })
  await synced(h)
  await waitFor('y-websocket synced', () => y.synced)
  h.doc.getText('t').insert(0, 'from hocuspocus ')
  ydoc.getText('t').insert(0, 'from y-websocket ')
  await waitFor('they converge', () => h.text() === ydoc.getText('t').toString() && h.text().length > 30)
  h.p.setAwarenessField('user', { name: 'hocus' })
  y.awareness.setLocalStateField('user', { name: 'ywebsocket' })
  const names = (awareness) => [...awareness.getStates().values()].map((s) => s.user?.name).filter(Boolean).sort()
  await waitFor('y-websocket sees both', () => names(y.awareness).join() === 'hocus,ywebsocket')
  await waitFor('hocuspocus sees both', () => names(h.p.awareness).join() === 'hocus,ywebsocket')
})

test('token mode: read-write, readonly, refused; the socket stays usable for the others', async (t) => {
  const server = await weft({ env: { WEFT_AUTH_KEY: KEY } })
  const write = await server.token({ doc: 'team/*', perm: 'write' })
  const read = await server.token({ doc: 'team/*', perm: 'read' })
  const ws = socket(server)
  const editor = hocus(server, 'team/plan', { token: write, websocketProvider: ws })
  const reader = hocus(server, 'team/plan', { token: read })
  const outsider = hocus(server, 'elsewhere', { token: write, websocketProvider: ws })
  const nobody = hocus(server, 'team/plan', { token: 'not-a-token' })
  t.after(() => { for (const c of [editor, reader, outsider, nobody]) c.destroy(); ws.destroy() })
  await synced(editor); await synced(reader)
  assert.equal(editor.seen.authenticated, 'read-write')
  assert.equal(reader.seen.authenticated, 'readonly')
  await waitFor('the other document is refused', () => outsider.seen.failed)
  assert.match(outsider.seen.failed, /elsewhere/)
  await waitFor('a bad token is refused', () => nobody.seen.failed)
  editor.doc.getText('t').insert(0, 'written ')
  await waitFor('the reader sees it', () => reader.text() === 'written ')
  await stored(editor)
  // A readonly provider's edit is refused: never applied, and never counted as stored.
  reader.doc.getText('t').insert(0, 'nope ')
  await waitFor('the refusal arrives', () => reader.p.unsyncedChanges === 1)
  editor.doc.getText('t').insert(0, 'more ')
  // The reader keeps its refused "nope " locally; where it sorts against
  // "more " depends on the two random client ids, so it is taken out.
  await waitFor('the editor still edits on the shared socket', () => reader.text().replace('nope ', '') === 'more written ')
  assert.equal(editor.text(), 'more written ', 'the readonly edit reached nobody')
})

test('token mode: a revoked token and an expired token close their document with the provider\'s reasons', async (t) => {
  const server = await weft({ env: { WEFT_AUTH_KEY: KEY } })
  const revoked = await server.token({ doc: 'gone', perm: 'write' })
  const keep = await server.token({ doc: 'kept', perm: 'write' })
  const shortLived = await server.token({ doc: 'short', perm: 'write', ttl: '3s' })
  const ws = socket(server)
  const a = hocus(server, 'gone', { token: revoked, websocketProvider: ws })
  const b = hocus(server, 'kept', { token: keep, websocketProvider: ws })
  const c = hocus(server, 'short', { token: shortLived })
  t.after(() => { a.destroy(); b.destroy(); c.destroy(); ws.destroy() })
  await synced(a); await synced(b); await synced(c)
  const jti = JSON.parse(Buffer.from(revoked.split('.')[1], 'base64url')).jti
  const res = await server.api('POST', '/api/tokens/revoke', { body: { token_id: jti }, token: KEY })
  assert.equal(res.status, 200, res.text)
  await waitFor('the revoked document is closed', () => a.seen.closes.includes('Forbidden'))
  await waitFor('the expired document is closed', () => c.seen.closes.includes('Unauthorized'), 15000)
  b.doc.getText('t').insert(0, 'kept')
  await stored(b)
  const doc = await server.api('GET', '/api/docs/kept', { token: KEY })
  assert.equal(doc.status, 200)
})

test('unsyncedChanges reaches 0 only once the edit is stored: SIGKILL right then loses nothing', async (t) => {
  const first = await weft()
  const a = hocus(first, 'durable')
  await synced(a)
  await stored(a)
  for (let i = 0; i < 20; i++) a.doc.getText('t').insert(a.text().length, `edit ${i}; `)
  await stored(a)
  await first.kill()
  a.destroy()
  const second = await weft({ db: first.db })
  const b = hocus(second, 'durable')
  t.after(() => b.destroy())
  await synced(b)
  assert.equal(b.text(), Array.from({ length: 20 }, (_, i) => `edit ${i}; `).join(''))
})

test('stateless messages: provider to provider, and from the HTTP API; broadcast-stateless is refused', async (t) => {
  const server = await weft()
  const a = hocus(server, 'events')
  const b = hocus(server, 'events')
  t.after(() => { a.destroy(); b.destroy() })
  await synced(a); await synced(b)
  a.p.sendStateless('{"ping":1}')
  await waitFor('b hears it', () => b.seen.stateless.includes('{"ping":1}'))
  assert.deepEqual(a.seen.stateless, [], 'not echoed to its sender')
  const res = await server.api('POST', '/api/docs/events/stateless', { body: { payload: 'from the server' } })
  assert.equal(res.status, 200, res.text)
  assert.deepEqual(res.json, { sent: 2 })
  await waitFor('both hear the API', () =>
    a.seen.stateless.includes('from the server') && b.seen.stateless.includes('from the server'))
  // A raw client sends broadcast-stateless (6): the socket is closed with 4400.
  const raw = new WebSocket(url(server))
  await new Promise((resolve, reject) => { raw.once('open', resolve); raw.once('error', reject) })
  const closed = new Promise((resolve) => raw.once('close', (code) => resolve(code)))
  raw.send(Uint8Array.from([6, ...Buffer.from('events'), 6, 1, 0x78]))
  assert.equal(await closed, 4400)
})

test('providers reconnect after the server restarts and keep editing', async (t) => {
  const server = await weft({ restartable: true })
  const a = hocus(server, 'restart')
  const b = hocus(server, 'restart')
  t.after(() => { a.destroy(); b.destroy() })
  await synced(a); await synced(b)
  a.doc.getText('t').insert(0, 'before ')
  await stored(a)
  await server.restart()
  await waitFor('a reconnected', () => a.p.isSynced && a.p.configuration.websocketProvider.status === 'connected', 20000)
  a.doc.getText('t').insert(a.text().length, 'after')
  await waitFor('b has both', () => b.text() === 'before after', 20000)
  await stored(a)
})

/** lib0's varString: a varUint length (these are all < 128 bytes) and UTF-8. */
const varString = (s) => { const b = Buffer.from(s); assert.ok(b.length < 128); return [b.length, ...b] }
/** A raw client of the endpoint: its frames, and how it was closed. */
async function rawClient (server) {
  const ws = new WebSocket(url(server))
  const frames = []
  ws.on('message', (data) => frames.push(new Uint8Array(data)))
  const closed = new Promise((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })))
  await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject) })
  return { ws, frames, closed }
}
const auth = (address, token = '') => Uint8Array.from([...varString(address), 2, 0, ...varString(token), ...varString('4.8.0')])
/** Whether a frame `address · auth · <kind>` came (1 PermissionDenied, 2 Authenticated). */
const authAnswer = (frames, address, kind) => {
  const head = Buffer.from([...varString(address), 2, kind])
  return frames.some((f) => Buffer.from(f.slice(0, head.length)).equals(head))
}
const denied = (frames, address) => authAnswer(frames, address, 1)

test('hostile input: documents per socket, bytes before the token, pings, bad frames, reserved names', async (t) => {
  const server = await weft({ args: ['--hocuspocus-max-docs', '2', '--hocuspocus-pending-bytes', '1000'] })
  // Two documents attach; a third is refused, and the socket stays.
  const a = await rawClient(server)
  t.after(() => a.ws.terminate())
  a.ws.send(auth('d1')); a.ws.send(auth('d2')); a.ws.send(auth('d3'))
  await waitFor('the third is refused', () => denied(a.frames, 'd3'))
  assert.ok(!denied(a.frames, 'd1') && !denied(a.frames, 'd2'))
  // A ping (one byte, no address) is answered with a pong.
  a.ws.send(Uint8Array.from([9]))
  await waitFor('a pong', () => a.frames.some((f) => f.length === 1 && f[0] === 10))
  // An invalid document name is refused by name, and the socket stays.
  a.ws.send(auth('hocuspocus'))
  await waitFor('a reserved name is refused', () => denied(a.frames, 'hocuspocus'))
  // Closing a document (type 7) makes room for another.
  a.ws.send(Uint8Array.from([...varString('d1'), 7]))
  a.ws.send(auth('d4'))
  await waitFor('d4 fits once d1 is closed', () => authAnswer(a.frames, 'd4', 2))
  // More than --hocuspocus-pending-bytes before a token: closed with 1009.
  const b = await rawClient(server)
  t.after(() => b.ws.terminate())
  const awareness = Uint8Array.from([...varString('waiting'), 1, 100, ...new Uint8Array(100)])
  for (let i = 0; i < 11; i++) b.ws.send(awareness)
  assert.equal((await b.closed).code, 1009)
  // An undecodable frame: closed with 4400 and the reason.
  const c = await rawClient(server)
  c.ws.send(Uint8Array.from([...varString('x'), 0, 1, 50, 1]))
  const bad = await c.closed
  assert.equal(bad.code, 4400)
  assert.match(bad.reason, /bad message/)
  // The server still serves.
  const d = hocus(server, 'after')
  t.after(() => d.destroy())
  await synced(d)
})
