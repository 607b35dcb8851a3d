// The first text of the default document, so that a first visit explains
// itself.
//
// Two tabs opened at once on a fresh server would both find the document
// empty. So the text is written by a fixed Yjs client whose ID is a hash of
// the text: every page makes the very same update (same items, same IDs),
// and Yjs applies it once however many pages send it. It is applied only to
// an empty document; a document emptied on purpose stays empty, since its
// deleted items already carry those IDs.

import * as Y from 'yjs'
import { Node } from 'prosemirror-model'
import { prosemirrorToYXmlFragment } from 'y-prosemirror'
import { FRAGMENT, schema } from './editor.js'

const p = (...content) => ({ type: 'paragraph', content })
const text = (t, marks) => (marks ? { type: 'text', text: t, marks: marks.map((type) => ({ type })) } : { type: 'text', text: t })
const item = (...content) => ({ type: 'list_item', content: [p(...content)] })

const WELCOME = {
  type: 'doc',
  content: [
    { type: 'heading', attrs: { level: 1 }, content: [text('Welcome to weft')] },
    p(text('This page is a shared document, kept by the weft server you are running. Open the same address in a second tab or another browser and type: each change appears everywhere at once, with each person’s caret and name.')),
    { type: 'heading', attrs: { level: 2 }, content: [text('Things to try')] },
    {
      type: 'bullet_list',
      content: [
        item(text('Rename yourself', ['strong']), text(' in the sidebar: the others see the new name at once.')),
        item(text('Go offline', ['strong']), text(' and keep typing. The status says what is waiting; your edits merge when the connection is back.')),
        item(text('Name a version', ['strong']), text(' in the Versions panel, change things, then preview it and restore it.')),
        item(text('Open another document', ['strong']), text(' by name. The address names the document, so a copied link opens the same one.'))
      ]
    },
    p(text('Markdown-style shortcuts work: '), text('#', ['code']), text(' for a heading, '), text('-', ['code']), text(' for a list, '), text('>', ['code']), text(' for a quote.'))
  ]
}

/** 32-bit FNV-1a of a string, never 0. */
const hash = (s) => {
  let h = 0x811c9dc5
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i)
    h = Math.imul(h, 0x01000193) >>> 0
  }
  return h || 1
}

/** Fills an empty document with the welcome text. */
export const seedWelcome = (ydoc) => {
  if (ydoc.getXmlFragment(FRAGMENT).length > 0) return
  const seed = new Y.Doc()
  seed.clientID = hash(JSON.stringify(WELCOME))
  prosemirrorToYXmlFragment(Node.fromJSON(schema, WELCOME), seed.getXmlFragment(FRAGMENT))
  Y.applyUpdate(ydoc, Y.encodeStateAsUpdate(seed))
  seed.destroy()
}
