// The real Yjs clients against the weft binary: every test runs once per
// client stack (stacks.mjs: y-websocket 3.x + yjs 13, @y/websocket 4.x +
// @y/y 14).
import { test, describe, after } from 'node:test'
import assert from 'node:assert/strict'
import WebSocket from 'ws'
import { STACKS } from '../stacks.mjs'
import { startWeft, waitFor } from '../weft.mjs'

const servers = []
after(() => Promise.all(servers.map((s) => s.cleanup())))

async function weft (opts) {
  const server = await startWeft(opts)
  servers.push(server)
  return server
}

function provider ({ Y, Provider }, server, room, doc = new Y.Doc(), opts = {}) {
  const p = new Provider(server.ws, room, doc, {
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

for (const stack of STACKS) {
  const { Y, text, map } = stack
  describe(stack.name, () => {
    test('two providers converge on text and map edits', async (t) => {
      const server = await weft()
      const a = provider(stack, server, 'notes/today')
      const b = provider(stack, server, 'notes/today')
      t.after(() => { a.p.destroy(); b.p.destroy() })
      await synced(a.p)
      await synced(b.p)
      text(a.doc, 't').insert(0, 'hello ')
      text(b.doc, 't').insert(0, 'world ')
      map(a.doc, 'm').set('from', 'a')
      map(b.doc, 'm').set('other', 42)
      await waitFor('convergence', () =>
        text(a.doc, 't').toString() === text(b.doc, 't').toString() &&
        text(a.doc, 't').length === 12 &&
        map(b.doc, 'm').get('from') === 'a' && map(a.doc, 'm').get('other') === 42)
      assert.equal(text(a.doc, 't').toString(), text(b.doc, 't').toString())
    })

    test('awareness propagates, and is removed when its provider leaves', async (t) => {
      const server = await weft()
      const a = provider(stack, server, 'presence')
      const b = provider(stack, server, 'presence')
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
      const a = provider(stack, server, 'reconnect')
      const b = provider(stack, server, 'reconnect')
      t.after(() => { a.p.destroy(); b.p.destroy() })
      await synced(a.p)
      await synced(b.p)
      text(a.doc, 't').insert(0, 'before ')
      await waitFor('first edit at b', () => text(b.doc, 't').toString() === 'before ')

      let reconnected = false
      b.p.on('status', ({ status }) => { if (status === 'connected') reconnected = true })
      b.p.ws.close() // the socket drops; the provider reconnects by itself
      await waitFor('b disconnected', () => !b.p.wsconnected)
      text(a.doc, 't').insert(7, 'missed ')
      text(b.doc, 't').insert(0, 'offline ')
      await waitFor('b back and synced', () => reconnected && b.p.synced, 15000)
      await waitFor('both converge', () =>
        text(a.doc, 't').toString() === text(b.doc, 't').toString() &&
        text(a.doc, 't').toString().includes('missed') && text(a.doc, 't').toString().includes('offline'))
    })

    test('content survives a SIGKILL and restart (Node client)', async (t) => {
      const first = await weft()
      const a = provider(stack, first, 'durable')
      await synced(a.p)
      text(a.doc, 't').insert(0, 'kept after kill')
      map(a.doc, 'm').set('k', 'v')
      const b = provider(stack, first, 'durable')
      await synced(b.p)
      // b has it from the server: it was stored before it was relayed
      await waitFor('b has the edit', () => text(b.doc, 't').toString() === 'kept after kill')
      a.p.destroy(); b.p.destroy()
      await first.kill()

      const second = await weft({ db: first.db })
      const c = provider(stack, second, 'durable')
      t.after(() => c.p.destroy())
      await synced(c.p)
      assert.equal(text(c.doc, 't').toString(), 'kept after kill')
      assert.equal(map(c.doc, 'm').get('k'), 'v')
    })

    test('HTTP API sees what providers wrote, and a posted update reaches them', async (t) => {
      const server = await weft()
      const a = provider(stack, server, 'api doc')
      t.after(() => a.p.destroy())
      await synced(a.p)
      text(a.doc, 't').insert(0, 'from provider')
      const name = encodeURIComponent('api doc')
      await waitFor('stored', async () => {
        const res = await fetch(`${server.http}/api/docs/${name}/update`, { signal: AbortSignal.timeout(30_000) })
        if (res.status !== 200) return false
        const doc = new Y.Doc()
        Y.applyUpdate(doc, new Uint8Array(await res.arrayBuffer()))
        return text(doc, 't').toString() === 'from provider'
      })
      const other = new Y.Doc()
      map(other, 'm').set('posted', true)
      const res = await fetch(`${server.http}/api/docs/${name}/update`, {
        method: 'POST',
        headers: { 'content-type': 'application/octet-stream' },
        body: Y.encodeStateAsUpdate(other),
        signal: AbortSignal.timeout(30_000)
      })
      assert.equal(res.status, 200)
      await waitFor('posted update at the provider', () => map(a.doc, 'm').get('posted') === true)
    })

    test('a document far larger than one WebSocket frame syncs whole (weft fragments large messages)', async (t) => {
      const server = await weft()
      const a = provider(stack, server, 'big')
      t.after(() => a.p.destroy())
      await synced(a.p)
      // 1 MiB of text: its step2 leaves weft as 16 fragments of 64 KiB.
      const content = 'y'.repeat(1 << 20)
      text(a.doc, 't').insert(0, content)
      const b = provider(stack, server, 'big')
      t.after(() => b.p.destroy())
      await synced(b.p)
      await waitFor('the whole document', () => text(b.doc, 't').length === content.length)
      // and a large relayed update, fragmented too
      text(a.doc, 't').insert(0, 'z'.repeat(200 * 1024))
      await waitFor('the large update', () => text(b.doc, 't').length === content.length + 200 * 1024)
      assert.equal(text(b.doc, 't').toString(), text(a.doc, 't').toString())
    })

    test('a burst of edits reaches a reader whole when weft joins them into fewer frames, keys in the order written', async (t) => {
      const server = await weft()
      const a = provider(stack, server, 'burst')
      const b = provider(stack, server, 'burst')
      t.after(() => { a.p.destroy(); b.p.destroy() })
      await synced(a.p)
      await synced(b.p)
      const ytext = text(a.doc, 't')
      const ymap = map(a.doc, 'm')
      // One transaction, so one update and one frame, per edit: about 1,150
      // messages, under the default burst of 2,000 (`--rate-burst`).
      for (let i = 0; i < 1000; i++) {
        ytext.insert(ytext.length, `${i % 10}`)
        if (i % 100 === 0) ymap.set(`k${i}`, { i, tag: 'x', nested: { z: 1, a: 2 } })
        if (i % 7 === 0) ytext.delete(0, 1)
      }
      const want = ytext.toString()
      await waitFor('reader has every edit', () => text(b.doc, 't').toString() === want, 20000)
      for (const [key, value] of ymap.entries()) {
        assert.equal(JSON.stringify(map(b.doc, 'm').get(key)), JSON.stringify(value), `map ${key} at the reader`)
      }
      const metrics = await (await fetch(`${server.http}/metrics`)).text()
      const joined = Number(/^weft_updates_joined_total (\d+)/m.exec(metrics)?.[1] ?? 0)
      assert.ok(joined > 0, `a burst of 1,000 edits should reach the actor many to a batch and be relayed joined (weft_updates_joined_total ${joined})`)
    })
  })
}
