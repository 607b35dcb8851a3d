// JSON objects in a document keep the key order their client wrote, in
// everything weft sends or stores: the relay, the full state a late joiner
// gets (encoded afresh; over y-websocket and over Hocuspocus), the HTTP
// update route, a compaction snapshot, a version, and the document loaded
// again after a SIGKILL. yrs holds such
// objects in a hash map and writes their keys in hash order, differently
// per process (docs/upstream/yrs-any-map-key-order.md); weft puts back the
// bytes the client sent (weft_core::originals). Restore is the exception:
// it writes the version's values anew (README, guarantees).
import { test, describe, after } from 'node:test'
import assert from 'node:assert/strict'
import WebSocket from 'ws'
import { HocuspocusProvider } from '@hocuspocus/provider'
import { startWeft, waitFor } from '../weft.mjs'
import { STACKS, Y3 } from '../stacks.mjs'

const servers = []
after(() => Promise.all(servers.map((s) => s.cleanup())))

async function weft (opts) {
  const server = await startWeft(opts)
  servers.push(server)
  return server
}

function provider ({ Y, Provider }, server, room) {
  const doc = new Y.Doc()
  const p = new Provider(server.ws, room, doc, { WebSocketPolyfill: WebSocket, disableBc: true, maxBackoffTime: 200 })
  const destroy = p.destroy.bind(p)
  p.destroy = () => { destroy(); doc.destroy() }
  return { doc, p }
}

/** Objects with enough keys, in no sorted order, that a hash order practically never matches. */
const OBJECT = { i: 1, tag: 'x', zeta: true, alpha: null, mid: 'm', b2: 2, a1: 1, q: [3, 2, 1], nested: { z: 1, a: 2, k: { y: 0, b: 1 } }, last: 'end' }
const ITEM = { kind: 'card', title: 'T', done: false, assignee: { name: 'n', id: 7 }, at: 1700000000000 }

/** What the document holds, as the strings an application would compare. */
function written (stack, doc) {
  return {
    map: JSON.stringify(stack.map(doc, 'm').get('k')),
    array: stack.array(doc, 'a').toArray().map((item) => JSON.stringify(item))
  }
}

const WANT = { map: JSON.stringify(OBJECT), array: [JSON.stringify(ITEM), JSON.stringify(OBJECT)] }

async function metric (server, name) {
  const text = await (await fetch(`${server.http}/metrics`, { signal: AbortSignal.timeout(30_000) })).text()
  return Number(new RegExp(`^${name} (\\d+)`, 'm').exec(text)?.[1] ?? 0)
}

/** A client that joins now, once synced, and what it got. */
async function joiner (stack, server, room) {
  const c = provider(stack, server, room)
  try {
    await waitFor('the joiner synced', () => c.p.synced && stack.map(c.doc, 'm').get('k') !== undefined)
    return written(stack, c.doc)
  } finally {
    c.p.destroy()
  }
}

/** What a @hocuspocus/provider (built on yjs 13) that joins now gets. */
async function hocuspocusJoiner (server, room) {
  const doc = new Y3.Y.Doc()
  const p = new HocuspocusProvider({ url: `${server.ws}/hocuspocus`, WebSocketPolyfill: WebSocket, name: room, document: doc })
  try {
    await waitFor('the Hocuspocus joiner synced', () => p.isSynced && Y3.map(doc, 'm').get('k') !== undefined)
    return written(Y3, doc)
  } finally {
    p.destroy()
    doc.destroy()
  }
}

for (const stack of STACKS) {
  describe(stack.name, () => {
    test('objects keep their key order through the relay, a late join, the update route, compaction, a version and a restart', async (t) => {
      const first = await weft({ args: ['--compact-updates', '2'] })
      const room = 'key order'
      const a = provider(stack, first, room)
      const b = provider(stack, first, room)
      t.after(() => { a.p.destroy(); b.p.destroy() })
      await waitFor('sync', () => a.p.synced && b.p.synced)
      stack.map(a.doc, 'm').set('k', OBJECT)
      stack.array(a.doc, 'a').insert(0, [ITEM, OBJECT])
      await waitFor('relayed', () => b.doc && stack.array(b.doc, 'a').length === 2)
      assert.deepEqual(written(stack, b.doc), WANT, 'the relay')

      // Enough edits that the kept full state is dropped (and the log is
      // compacted): the next joiner gets a fresh encoding.
      const text = stack.text(a.doc, 't')
      for (let i = 0; i < 40; i++) text.insert(text.length, 'edit ')
      await waitFor('the edits stored and compacted', async () => await metric(first, 'weft_compactions_total') >= 1, 20_000)
      assert.deepEqual(await joiner(stack, first, room), WANT, 'a late joiner after a compaction')
      assert.deepEqual(await hocuspocusJoiner(first, room), WANT, 'a Hocuspocus joiner')

      const res = await fetch(`${first.http}/api/docs/${encodeURIComponent(room)}/update`, { signal: AbortSignal.timeout(30_000) })
      assert.equal(res.status, 200)
      const fetched = new stack.Y.Doc()
      stack.Y.applyUpdate(fetched, new Uint8Array(await res.arrayBuffer()))
      assert.deepEqual(written(stack, fetched), WANT, 'GET /api/docs/{name}/update')

      const made = await fetch(`${first.http}/api/docs/${encodeURIComponent(room)}/versions`, {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"label":"v"}', signal: AbortSignal.timeout(30_000)
      })
      const version = await made.json()
      assert.ok(made.status === 201 || made.status === 200, JSON.stringify(version))
      const state = await fetch(`${first.http}/api/docs/${encodeURIComponent(room)}/versions/${version.id}/update`, { signal: AbortSignal.timeout(30_000) })
      const versioned = new stack.Y.Doc()
      stack.Y.applyUpdate(versioned, new Uint8Array(await state.arrayBuffer()))
      assert.deepEqual(written(stack, versioned), WANT, 'a version')

      a.p.destroy(); b.p.destroy()
      await first.kill()
      const second = await weft({ db: first.db })
      assert.deepEqual(await joiner(stack, second, room), WANT, 'loaded again after a SIGKILL')
    })
  })
}
