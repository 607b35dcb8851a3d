// The real yjs and y-websocket npm packages against the weft binary.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
import { startWeft, waitFor } from '../weft.mjs'

const servers = []
after(() => Promise.all(servers.map((s) => s.cleanup())))

async function weft (opts) {
  const server = await startWeft(opts)
  servers.push(server)
  return server
}

function provider (server, room, doc = new Y.Doc(), opts = {}) {
  const p = new WebsocketProvider(server.ws, room, doc, {
    WebSocketPolyfill: WebSocket,
    disableBc: true,
    maxBackoffTime: 200,
    ...opts
  })
  // The provider's awareness runs an interval until its document is
  // destroyed; without this the test process never exits.
  const destroy = p.destroy.bind(p)
  p.destroy = () => { destroy(); doc.destroy() }
  return { doc, p }
}

const synced = (p) => waitFor('sync', () => p.synced)

test('two providers converge on text and map edits', async (t) => {
  const server = await weft()
  const a = provider(server, 'notes/today')
  const b = provider(server, 'notes/today')
  t.after(() => { a.p.destroy(); b.p.destroy() })
  await synced(a.p)
  await synced(b.p)
  a.doc.getText('t').insert(0, 'hello ')
  b.doc.getText('t').insert(0, 'world ')
  a.doc.getMap('m').set('from', 'a')
  b.doc.getMap('m').set('other', 42)
  await waitFor('convergence', () =>
    a.doc.getText('t').toString() === b.doc.getText('t').toString() &&
    a.doc.getText('t').length === 12 &&
    b.doc.getMap('m').get('from') === 'a' && a.doc.getMap('m').get('other') === 42)
  assert.equal(a.doc.getText('t').toString(), b.doc.getText('t').toString())
})

test('awareness propagates, and is removed when its provider leaves', async (t) => {
  const server = await weft()
  const a = provider(server, 'presence')
  const b = provider(server, 'presence')
  t.after(() => b.p.destroy())
  await synced(a.p)
  await synced(b.p)
  a.p.awareness.setLocalStateField('user', { name: 'alice', color: '#f00' })
  await waitFor('alice at b', () => b.p.awareness.getStates().get(a.doc.clientID)?.user?.name === 'alice')
  a.p.destroy()
  await waitFor('alice gone at b', () => !b.p.awareness.getStates().has(a.doc.clientID))
})

test('a provider whose socket is closed reconnects and catches up', async (t) => {
  const server = await weft()
  const a = provider(server, 'reconnect')
  const b = provider(server, 'reconnect')
  t.after(() => { a.p.destroy(); b.p.destroy() })
  await synced(a.p)
  await synced(b.p)
  a.doc.getText('t').insert(0, 'before ')
  await waitFor('first edit at b', () => b.doc.getText('t').toString() === 'before ')

  let reconnected = false
  b.p.on('status', ({ status }) => { if (status === 'connected') reconnected = true })
  b.p.ws.close() // the socket drops; the provider reconnects by itself
  await waitFor('b disconnected', () => !b.p.wsconnected)
  a.doc.getText('t').insert(7, 'missed ')
  b.doc.getText('t').insert(0, 'offline ')
  await waitFor('b back and synced', () => reconnected && b.p.synced, 15000)
  await waitFor('both converge', () =>
    a.doc.getText('t').toString() === b.doc.getText('t').toString() &&
    a.doc.getText('t').toString().includes('missed') && a.doc.getText('t').toString().includes('offline'))
})

test('content survives a SIGKILL and restart (Node client)', async (t) => {
  const first = await weft()
  const a = provider(first, 'durable')
  await synced(a.p)
  a.doc.getText('t').insert(0, 'kept after kill')
  a.doc.getMap('m').set('k', 'v')
  const b = provider(first, 'durable')
  await synced(b.p)
  // b has it from the server: it was stored before it was relayed
  await waitFor('b has the edit', () => b.doc.getText('t').toString() === 'kept after kill')
  a.p.destroy(); b.p.destroy()
  await first.kill()

  const second = await weft({ db: first.db })
  const c = provider(second, 'durable')
  t.after(() => c.p.destroy())
  await synced(c.p)
  assert.equal(c.doc.getText('t').toString(), 'kept after kill')
  assert.equal(c.doc.getMap('m').get('k'), 'v')
})

test('HTTP API sees what providers wrote, and a posted update reaches them', async (t) => {
  const server = await weft()
  const a = provider(server, 'api doc')
  t.after(() => a.p.destroy())
  await synced(a.p)
  a.doc.getText('t').insert(0, 'from provider')
  const name = encodeURIComponent('api doc')
  await waitFor('stored', async () => {
    const res = await fetch(`${server.http}/api/docs/${name}/update`, { signal: AbortSignal.timeout(30_000) })
    if (res.status !== 200) return false
    const doc = new Y.Doc()
    Y.applyUpdate(doc, new Uint8Array(await res.arrayBuffer()))
    return doc.getText('t').toString() === 'from provider'
  })
  const other = new Y.Doc()
  other.getMap('m').set('posted', true)
  const res = await fetch(`${server.http}/api/docs/${name}/update`, {
    method: 'POST',
    headers: { 'content-type': 'application/octet-stream' },
    body: Y.encodeStateAsUpdate(other),
    signal: AbortSignal.timeout(30_000)
  })
  assert.equal(res.status, 200)
  await waitFor('posted update at the provider', () => a.doc.getMap('m').get('posted') === true)
})

test('a document far larger than one WebSocket frame syncs whole (weft fragments large messages)', async (t) => {
  const server = await weft()
  const a = provider(server, 'big')
  t.after(() => a.p.destroy())
  await synced(a.p)
  // 1 MiB of text: its step2 leaves weft as 16 fragments of 64 KiB.
  const text = 'y'.repeat(1 << 20)
  a.doc.getText('t').insert(0, text)
  const b = provider(server, 'big')
  t.after(() => b.p.destroy())
  await synced(b.p)
  await waitFor('the whole document', () => b.doc.getText('t').length === text.length)
  // and a large relayed update, fragmented too
  a.doc.getText('t').insert(0, 'z'.repeat(200 * 1024))
  await waitFor('the large update', () => b.doc.getText('t').length === text.length + 200 * 1024)
  assert.equal(b.doc.getText('t').toString(), a.doc.getText('t').toString())
})

test('a burst of edits reaches a reader whole when weft joins them into fewer frames, keys in the order written', async (t) => {
  const server = await weft()
  const a = provider(server, 'burst')
  const b = provider(server, 'burst')
  t.after(() => { a.p.destroy(); b.p.destroy() })
  await synced(a.p)
  await synced(b.p)
  const text = a.doc.getText('t')
  const map = a.doc.getMap('m')
  // One transaction, so one update and one frame, per edit: about 1,150
  // messages, under the default burst of 2,000 (`--rate-burst`).
  for (let i = 0; i < 1000; i++) {
    text.insert(text.length, `${i % 10}`)
    if (i % 100 === 0) map.set(`k${i}`, { i, tag: 'x', nested: { z: 1, a: 2 } })
    if (i % 7 === 0) text.delete(0, 1)
  }
  const want = text.toString()
  await waitFor('reader has every edit', () => b.doc.getText('t').toString() === want, 20000)
  for (const [key, value] of map.entries()) {
    assert.equal(JSON.stringify(b.doc.getMap('m').get(key)), JSON.stringify(value), `map ${key} at the reader`)
  }
  const metrics = await (await fetch(`${server.http}/metrics`)).text()
  const joined = Number(/^weft_updates_joined_total (\d+)/m.exec(metrics)?.[1] ?? 0)
  assert.ok(joined > 0, `a burst of 1,000 edits should reach the actor many to a batch and be relayed joined (weft_updates_joined_total ${joined})`)
})
