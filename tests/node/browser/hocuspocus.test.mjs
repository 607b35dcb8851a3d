// The web demo with either provider (`?provider=hocuspocus` picks
// @hocuspocus/provider and weft's /hocuspocus endpoint), in real headless
// Chromium: a page on each co-edits one document and sees the other person.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import {
  startWeft, launchBrowser, openDemo, waitForText, typeAtEnd, editorText, assertNoProblems, closeAll, DEADLINE, TEST,
  within
} from './support.mjs'

/** @type {import('playwright-core').Browser} */
let browser

before(async () => {
  browser = await launchBrowser()
}, { timeout: 200_000 })

after(async () => {
  await within(browser?.close() ?? Promise.resolve(), 60_000, 'Chromium to close')
}, { timeout: 90_000 })

const docUrl = (server, name, provider) =>
  `${server.url}/?doc=${encodeURIComponent(name)}${provider ? `&provider=${provider}` : ''}`

test('a Hocuspocus page and a y-websocket page co-edit one document and see each other', TEST, async (t) => {
  const weft = await startWeft()
  t.after(() => weft.cleanup())
  const ada = await openDemo(browser, docUrl(weft, 'both-providers', 'hocuspocus'), { name: 'Ada', color: '#e5484d' })
  const grace = await openDemo(browser, docUrl(weft, 'both-providers'), { name: 'Grace', color: '#3e63dd' })
  const pages = [ada, grace]
  try {
    await typeAtEnd(ada, 'Written over Hocuspocus.')
    await waitForText(grace, ['Written over Hocuspocus.'])
    await typeAtEnd(grace, ' And over y-websocket.')
    await waitForText(ada, ['Written over Hocuspocus. And over y-websocket.'])
    await ada.locator('#people .person-name', { hasText: 'Grace' }).waitFor({ timeout: DEADLINE })
    await grace.locator('#people .person-name', { hasText: 'Ada' }).waitFor({ timeout: DEADLINE })
    assert.equal(await editorText(ada), await editorText(grace))
    assert.ok(ada.sockets.length > 0 && ada.sockets.every((url) => new URL(url).pathname === '/hocuspocus'), `${ada.sockets}`)
    assert.ok(grace.sockets.every((url) => new URL(url).pathname === '/both-providers'), `${grace.sockets}`)
    assertNoProblems(pages)
  } finally {
    await closeAll(pages)
  }
})
