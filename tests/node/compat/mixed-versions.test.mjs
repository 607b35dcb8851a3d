// A y-websocket 3.x client (yjs 13) and an @y/websocket 4.x client (@y/y
// 14) co-editing one document through weft: the two stacks speak the same
// wire protocol (v1 updates, the same awareness encoding), so each sees the
// other's edits and presence, and a late joiner of either kind gets all of
// it, before and after weft restarts.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import WebSocket from 'ws'
import { startWeft, waitFor } from '../weft.mjs'
import { Y3, Y4 } from '../stacks.mjs'

const servers = []
after(() => Promise.all(servers.map((s) => s.cleanup())))

async function weft (opts) {
  const server = await startWeft(opts)
  servers.push(server)
  return server
}

function provider (stack, server, room) {
  const doc = new stack.Y.Doc()
  const p = new stack.Provider(server.ws, room, doc, { WebSocketPolyfill: WebSocket, disableBc: true, maxBackoffTime: 200 })
  const destroy = p.destroy.bind(p)
  p.destroy = () => { destroy(); doc.destroy() }
  return { stack, doc, p, text: () => stack.text(doc, 't').toString(), map: () => stack.map(doc, 'm') }
}

/** Everything a client holds of the shared document, comparable across stacks. */
const seen = (c) => ({
  text: c.text(),
  three: JSON.stringify(c.map().get('three')),
  four: JSON.stringify(c.map().get('four')),
  items: c.stack.array(c.doc, 'a').toArray().map((x) => JSON.stringify(x)).sort()
})

test('a 3.x and a 4.x client co-edit one document; late joiners of both kinds get everything', async (t) => {
  const first = await weft()
  const room = 'mixed/clients'
  const three = provider(Y3, first, room)
  const four = provider(Y4, first, room)
  t.after(() => { three.p.destroy(); four.p.destroy() })
  await waitFor('both synced', () => three.p.synced && four.p.synced)

  three.doc.transact(() => {
    Y3.text(three.doc, 't').insert(0, 'three ')
    three.map().set('three', { from: 'yjs 13', z: 1, a: 2 })
    Y3.array(three.doc, 'a').insert(0, [{ by: 3 }])
  })
  four.doc.transact(() => {
    Y4.text(four.doc, 't').insert(0, 'four ')
    four.map().set('four', { from: '@y/y 14', z: 1, a: 2 })
    Y4.array(four.doc, 'a').insert(0, [{ by: 4 }])
  })
  await waitFor('each sees the other', () =>
    three.text().length === 11 && four.text() === three.text() &&
    three.map().get('four') !== undefined && four.map().get('three') !== undefined &&
    Y3.array(three.doc, 'a').length === 2 && Y4.array(four.doc, 'a').length === 2)
  const want = seen(three)
  assert.deepEqual(seen(four), want)
  assert.equal(want.three, JSON.stringify({ from: 'yjs 13', z: 1, a: 2 }))
  assert.equal(want.four, JSON.stringify({ from: '@y/y 14', z: 1, a: 2 }))

  // Presence both ways (the same awareness encoding in both stacks).
  three.p.awareness.setLocalStateField('user', { name: 'three' })
  four.p.awareness.setLocalStateField('user', { name: 'four' })
  await waitFor('awareness both ways', () =>
    three.p.awareness.getStates().get(four.doc.clientID)?.user?.name === 'four' &&
    four.p.awareness.getStates().get(three.doc.clientID)?.user?.name === 'three')

  // Late joiners of each kind: the content, and both clients' presence.
  for (const stack of [Y3, Y4]) {
    const late = provider(stack, first, room)
    await waitFor(`a late ${stack.name} joiner`, () =>
      late.p.synced && late.text() === want.text &&
      late.p.awareness.getStates().get(three.doc.clientID)?.user?.name === 'three' &&
      late.p.awareness.getStates().get(four.doc.clientID)?.user?.name === 'four')
    assert.deepEqual(seen(late), want, stack.name)
    // and its edit reaches both
    stack.map(late.doc, 'm').set(`late ${stack === Y3 ? 3 : 4}`, true)
    const key = `late ${stack === Y3 ? 3 : 4}`
    await waitFor(`${key} at both`, () => three.map().get(key) === true && four.map().get(key) === true)
    late.p.destroy()
  }

  // A nested type made by @y/y 14 (one type for everything) is written
  // with a legacy type ref, XmlFragment when unnamed (@y/y
  // src/ytype.js, `_legacyTypeRef`): weft stores and relays it like any
  // other, and a yjs 13 client reads it as a Y.XmlFragment, not as a map or
  // an array. That is the clients' difference, not the server's.
  const nested = new Y4.Y.Type()
  four.doc.get('nested').setAttr('inner', nested)
  nested.insert(0, ['x', 'y'])
  await waitFor('the nested type at the 3.x client', () =>
    three.doc.getMap('nested').get('inner')?.length === 2)
  assert.ok(three.doc.getMap('nested').get('inner') instanceof Y3.Y.XmlFragment)

  // After a SIGKILL and a restart, fresh clients of each kind load it all.
  three.p.destroy(); four.p.destroy()
  await first.kill()
  const second = await weft({ db: first.db })
  for (const stack of [Y3, Y4]) {
    const late = provider(stack, second, room)
    await waitFor(`a ${stack.name} client after the restart`, () => late.p.synced && late.text() === want.text)
    assert.deepEqual(seen(late), want, stack.name)
    assert.equal(late.map().get('late 3'), true)
    assert.equal(late.map().get('late 4'), true)
    late.p.destroy()
  }
})
