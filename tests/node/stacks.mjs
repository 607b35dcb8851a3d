// The client stacks the compatibility tests run against, each test once per
// stack: y-websocket 3.x with yjs 13 (what most applications run), and
// @y/websocket 4.x with @y/y 14 (the release candidates on npm, pinned in
// package.json). Both speak the same wire protocol (y-sync + awareness,
// updates in Yjs's v1 encoding, one message per frame); what differs is the
// document API: yjs 13 has Y.Text and Y.Map, @y/y 14 one type for all
// (`doc.get(name)`: text is `insert`/`delete`/`toString`, a map is
// `setAttr`/`getAttr`). `text`, `map` and `array` hide that difference, so
// one test body serves both.
import { readFileSync } from 'node:fs'
import * as Y13 from 'yjs'
import { WebsocketProvider as Provider3 } from 'y-websocket'
import * as Y14 from '@y/y'
import { WebsocketProvider as Provider4 } from '@y/websocket'

const version = (pkg) =>
  JSON.parse(readFileSync(new URL(`./node_modules/${pkg}/package.json`, import.meta.url), 'utf8')).version

/** A map of @y/y 14 (a type's attributes) with yjs 13's Y.Map methods. */
const attrs = (type) => ({
  set: (key, value) => type.setAttr(key, value),
  get: (key) => type.getAttr(key),
  entries: () => type.attrEntries(),
  toJSON: () => type.getAttrs()
})

export const Y3 = {
  name: `y-websocket ${version('y-websocket')} + yjs ${version('yjs')}`,
  Y: Y13,
  Provider: Provider3,
  text: (doc, name) => doc.getText(name),
  map: (doc, name) => doc.getMap(name),
  array: (doc, name) => doc.getArray(name)
}

export const Y4 = {
  name: `@y/websocket ${version('@y/websocket')} + @y/y ${version('@y/y')}`,
  Y: Y14,
  Provider: Provider4,
  text: (doc, name) => doc.get(name),
  map: (doc, name) => attrs(doc.get(name)),
  array: (doc, name) => doc.get(name)
}

export const STACKS = [Y3, Y4]
