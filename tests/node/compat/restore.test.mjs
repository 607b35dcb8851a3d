// Restore with two connected y-websocket clients: rich text with formatting,
// map keys, array items, and an XmlFragment shaped as y-prosemirror writes it
// (yjs 13); then text, map keys and array items once per client stack
// (stacks.mjs), @y/y 14 included.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
import { startWeft, waitFor } from '../weft.mjs'
import { STACKS } from '../stacks.mjs'

let server
const servers = []
after(() => Promise.all([server, ...servers].filter(Boolean).map((s) => s.cleanup())))

/**
 * A delta with adjacent runs of equal formatting merged: Yjs may split a run
 * at a formatting marker, which changes nothing a user can see.
 */
function delta (ytext) {
  const merged = []
  for (const op of ytext.toDelta()) {
    const last = merged[merged.length - 1]
    if (last && typeof op.insert === 'string' && typeof last.insert === 'string' &&
        JSON.stringify(last.attributes ?? null) === JSON.stringify(op.attributes ?? null)) {
      last.insert += op.insert
    } else {
      merged.push({ ...op })
    }
  }
  return merged
}

/** Everything a client holds, formatting included, as plain JSON. */
function snapshot (doc) {
  return {
    text: delta(doc.getText('text')),
    map: doc.getMap('map').toJSON(),
    array: doc.getArray('array').toJSON(),
    prosemirror: doc.getXmlFragment('prosemirror').toJSON(),
    // toJSON of XmlText drops formatting; keep the paragraphs' deltas too
    marks: doc.getXmlFragment('prosemirror').toArray()
      .map((el) => el.toArray().map((t) => (t instanceof Y.XmlText ? delta(t) : null)))
  }
}

function paragraph (text, attrs = {}, name = 'paragraph') {
  const el = new Y.XmlElement(name)
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v)
  const t = new Y.XmlText()
  el.insert(0, [t])
  return { el, t, text }
}

test('restore brings every kind of content back, and can be undone', async () => {
  server = await startWeft()
  const mk = () => {
    const doc = new Y.Doc()
    const p = new WebsocketProvider(server.ws, 'rich doc', doc, { WebSocketPolyfill: WebSocket, disableBc: true })
    return { doc, p }
  }
  const a = mk()
  const b = mk()
  try {
    await waitFor('sync', () => a.p.synced && b.p.synced)

    // the state to keep
    a.doc.transact(() => {
      const text = a.doc.getText('text')
      text.insert(0, 'Hello bold world')
      text.format(6, 4, { bold: true })
      a.doc.getMap('map').set('title', 'Plan')
      a.doc.getMap('map').set('count', 3)
      a.doc.getArray('array').push(['one', 'two', { three: 3 }])
      const fragment = a.doc.getXmlFragment('prosemirror')
      const h = paragraph('Heading', { level: 1 }, 'heading')
      const p1 = paragraph('First paragraph')
      fragment.insert(0, [h.el, p1.el])
      h.t.insert(0, h.text)
      p1.t.insert(0, p1.text)
      p1.t.format(0, 5, { strong: {} })
    })
    await waitFor('b has it', () => JSON.stringify(snapshot(b.doc)) === JSON.stringify(snapshot(a.doc)))
    const kept = snapshot(a.doc)

    const name = encodeURIComponent('rich doc')
    const res = await fetch(`${server.http}/api/docs/${name}/versions`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ label: 'kept' }), signal: AbortSignal.timeout(30_000)
    })
    assert.equal(res.status, 201)
    const version = await res.json()

    // edits on both clients
    b.doc.transact(() => {
      const text = b.doc.getText('text')
      text.delete(0, 6)
      text.format(0, 4, { bold: null, italic: true })
      text.insert(text.length, '!')
      b.doc.getMap('map').delete('count')
      b.doc.getMap('map').set('title', 'Changed')
      b.doc.getMap('map').set('new', true)
      b.doc.getArray('array').delete(0, 1)
      b.doc.getArray('array').push(['four'])
      const fragment = b.doc.getXmlFragment('prosemirror')
      const second = fragment.get(1)
      second.get(0).insert(5, ' edited')
      const extra = paragraph('Another one')
      fragment.insert(2, [extra.el])
      extra.t.insert(0, extra.text)
      fragment.get(0).setAttribute('level', 2)
    })
    a.doc.getText('text').insert(0, '>> ')
    await waitFor('clients converge on the edits', () =>
      JSON.stringify(snapshot(a.doc)) === JSON.stringify(snapshot(b.doc)) &&
      a.doc.getMap('map').get('new') === true && a.doc.getText('text').toString().startsWith('>> '))
    const edited = snapshot(a.doc)
    assert.notDeepEqual(edited, kept)

    const restore = await fetch(`${server.http}/api/docs/${name}/versions/${version.id}/restore`, { method: 'POST', signal: AbortSignal.timeout(30_000) })
    assert.equal(restore.status, 200)
    const { backup } = await restore.json()

    await waitFor('a holds the version', () => JSON.stringify(snapshot(a.doc)) === JSON.stringify(kept))
    await waitFor('b holds the version', () => JSON.stringify(snapshot(b.doc)) === JSON.stringify(kept))
    assert.deepEqual(snapshot(a.doc), kept)
    assert.deepEqual(snapshot(b.doc), kept)
    assert.equal(a.doc.getText('text').toString(), 'Hello bold world', 'no duplicated text')

    // undo the restore
    const undo = await fetch(`${server.http}/api/docs/${name}/versions/${backup.id}/restore`, { method: 'POST', signal: AbortSignal.timeout(30_000) })
    assert.equal(undo.status, 200)
    await waitFor('edits back at a', () => JSON.stringify(snapshot(a.doc)) === JSON.stringify(edited))
    await waitFor('edits back at b', () => JSON.stringify(snapshot(b.doc)) === JSON.stringify(edited))
  } finally {
    for (const c of [a, b]) {
      c.p.destroy()
      c.doc.destroy() // stops its awareness interval
    }
  }
})

for (const stack of STACKS) {
  test(`restore with ${stack.name} clients: text, map keys, array items`, async () => {
    const weft = await startWeft()
    servers.push(weft)
    const mk = () => {
      const doc = new stack.Y.Doc()
      const p = new stack.Provider(weft.ws, 'plain doc', doc, { WebSocketPolyfill: WebSocket, disableBc: true })
      return { doc, p }
    }
    /** What a client holds, comparable as JSON (objects compared as values). */
    const held = (doc) => ({
      text: stack.text(doc, 'text').toString(),
      map: Object.fromEntries([...stack.map(doc, 'map').entries()].sort(([x], [y]) => (x < y ? -1 : 1))),
      array: stack.array(doc, 'array').toArray()
    })
    const a = mk()
    const b = mk()
    try {
      await waitFor('sync', () => a.p.synced && b.p.synced)
      a.doc.transact(() => {
        stack.text(a.doc, 'text').insert(0, 'Hello world')
        stack.map(a.doc, 'map').set('title', 'Plan')
        stack.map(a.doc, 'map').set('card', { z: 1, a: { y: 2, b: 3 } })
        stack.array(a.doc, 'array').insert(0, ['one', { three: 3, two: 2 }])
      })
      await waitFor('b has it', () => JSON.stringify(held(b.doc)) === JSON.stringify(held(a.doc)))
      const kept = held(a.doc)
      const name = encodeURIComponent('plain doc')
      const res = await fetch(`${weft.http}/api/docs/${name}/versions`, {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}', signal: AbortSignal.timeout(30_000)
      })
      assert.equal(res.status, 201)
      const version = await res.json()

      b.doc.transact(() => {
        stack.text(b.doc, 'text').delete(0, 6)
        stack.map(b.doc, 'map').set('title', 'Changed')
        stack.map(b.doc, 'map').set('card', { other: true })
        stack.array(b.doc, 'array').delete(0, 1)
        stack.array(b.doc, 'array').insert(1, ['four'])
      })
      await waitFor('a has the edits', () => stack.text(a.doc, 'text').toString() === 'world')
      assert.notDeepEqual(held(a.doc), kept)

      const restore = await fetch(`${weft.http}/api/docs/${name}/versions/${version.id}/restore`, { method: 'POST', signal: AbortSignal.timeout(30_000) })
      assert.equal(restore.status, 200)
      // Equal as values: restore writes objects anew, and yrs writes their
      // keys in its own order (README, guarantees).
      await waitFor('a holds the version', () => { try { assert.deepEqual(held(a.doc), kept); return true } catch { return false } })
      await waitFor('b holds the version', () => { try { assert.deepEqual(held(b.doc), kept); return true } catch { return false } })
    } finally {
      for (const c of [a, b]) c.p.destroy()
      for (const c of [a, b]) c.doc.destroy()
    }
  })
}
