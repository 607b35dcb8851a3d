// The web demo's copy of each document in the browser (IndexedDB, with
// y-indexeddb) and its service worker (which keeps the page itself), in real
// headless Chromium against the real weft binary: a tab reloaded while weft
// is down still shows the document and the edits it has not sent, which
// reach the server when it is back; a document deleted on the server is not
// brought back by a copy a browser kept.
//
//   WEFT_BIN=... node --test --test-concurrency=1 --test-timeout=1200000 browser/offline.test.mjs

import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import {
  startWeft, waitFor, launchBrowser, openDemo, waitForState, waitForText, waitForExactText, typeAtEnd,
  assertNoProblems, closeAll, DEADLINE, TEST, within
} from './support.mjs'

/** @type {import('playwright-core').Browser} */
let browser

before(async () => {
  browser = await launchBrowser()
}, { timeout: 200_000 })

after(async () => {
  await within(browser?.close() ?? Promise.resolve(), 60_000, 'Chromium to close')
}, { timeout: 90_000 })

const ADA = { name: 'Ada', color: '#e5484d' }
const GRACE = { name: 'Grace', color: '#3e63dd' }

const docUrl = (server, name) => `${server.url}/?doc=${encodeURIComponent(name)}`

/** Waits until weft has stored a document whose content includes `text`. */
const stored = (server, name, text) => waitFor(`weft to store ${JSON.stringify(text)} in ${name}`, async () =>
  JSON.stringify((await server.api('GET', `/api/docs/${encodeURIComponent(name)}`)).json?.content ?? '').includes(text), DEADLINE)

/**
 * The document is not back on the server: the page's connection keeps it
 * live (`created` null), but nothing is stored and the old text is not in it.
 */
const nothingBack = async (server, name, text) => {
  const { status, json } = await server.api('GET', `/api/docs/${encodeURIComponent(name)}`)
  assert.ok(status === 404 || (status === 200 && json.created === null && json.size === 0), `${status} ${JSON.stringify(json)}`)
  assert.ok(!JSON.stringify(json?.content ?? '').includes(text), JSON.stringify(json))
}

/** Waits until the page's service worker controls it (its cache of the page is then filled). */
const keptForReload = (page) =>
  page.waitForFunction(() => navigator.serviceWorker.controller !== null, null, { timeout: DEADLINE })

/** A mark the page keeps beside its copy of a document (local.js), read from IndexedDB. */
const localMark = (page, doc, key) => page.evaluate(([name, key]) => new Promise((resolve, reject) => {
  const open = indexedDB.open(name)
  open.onerror = () => reject(open.error)
  open.onsuccess = () => {
    const db = open.result
    if (!db.objectStoreNames.contains('custom')) {
      db.close()
      resolve(undefined)
      return
    }
    const get = db.transaction('custom', 'readonly').objectStore('custom').get(key)
    get.onsuccess = () => { db.close(); resolve(get.result) }
    get.onerror = () => { db.close(); reject(get.error) }
  }
}), [`weft-demo:${doc}`, key])

/** Whether the page's origin has an IndexedDB copy of `doc`. */
const hasCopy = (page, doc) => page.evaluate(async (name) =>
  (await indexedDB.databases()).some((d) => d.name === name), `weft-demo:${doc}`)

/**
 * Another tab of the same browser (same context: the same IndexedDB and
 * service worker), collecting problems as openDemo's pages do.
 */
const sameBrowserTab = async (page, url) => {
  const tab = await page.context().newPage()
  tab.problems = []
  /** Everything the tab said and asked, for the message of a failed wait (see `explained`). */
  tab.trail = []
  tab.on('console', (msg) => {
    tab.trail.push(`console.${msg.type()}: ${msg.text()}`)
    if (msg.type() === 'error' || msg.type() === 'warning') tab.problems.push(`console.${msg.type()}: ${msg.text()}`)
  })
  tab.on('request', (r) => tab.trail.push(`${r.method()} ${new URL(r.url()).pathname}${new URL(r.url()).search}`))
  tab.on('response', (r) => tab.trail.push(`→ ${r.status()} ${new URL(r.url()).pathname}`))
  tab.on('framenavigated', (f) => { if (f === tab.mainFrame()) tab.trail.push(`navigated ${f.url()}`) })
  tab.on('pageerror', (err) => tab.problems.push(`uncaught: ${err.message}`))
  await tab.goto(url)
  return tab
}

/**
 * Runs `wait`; when it fails, fails with what the tab showed, said and
 * asked, its copy's mark and what the server has, so that a failure seen
 * once (CI) says where the page went another way.
 */
const explained = async (tab, server, doc, wait) => {
  try {
    await wait()
  } catch (e) {
    const shown = await tab.evaluate(() => ({
      notice: document.getElementById('notice')?.textContent,
      status: document.getElementById('status-text')?.textContent
    })).catch((err) => `unreadable: ${err.message}`)
    const mark = await localMark(tab, doc, 'created').catch((err) => `unreadable: ${err.message}`)
    const onServer = await server.api('GET', `/api/docs/${encodeURIComponent(doc)}`).then((r) => `${r.status} ${r.text}`, (err) => err.message)
    e.message += `\n  page: ${tab.url()} ${JSON.stringify(shown)}\n  its copy's created mark: ${JSON.stringify(mark)}` +
      `\n  the server: ${onServer}\n  the tab's trail:\n    ${tab.trail.join('\n    ')}\n  weft's log (tail):\n${server.log().slice(-3000)}`
    throw e
  }
}

// While weft is down, Chromium reports the failed attempts itself (sockets,
// the API, the feed, the page's own address that the service worker then
// answers from its cache); with the harness's relay in between, an
// unreachable server shows as a reset or a closed connection.
const WHILE_DOWN = [
  /WebSocket connection to 'ws:\/\/127\.0\.0\.1:\d+\/[^']*' failed/,
  /Failed to load resource: net::ERR_(CONNECTION_(REFUSED|RESET|CLOSED)|EMPTY_RESPONSE|SOCKET_NOT_CONNECTED|INCOMPLETE_CHUNKED_ENCODING|FAILED)/
]

test('a tab reloaded while weft is down shows the document and its unsent edit, which reaches another browser when weft is back', TEST, async (t) => {
  // Restarted on a new port the OS picks; the page keeps its address
  // through the harness's relay, as it would keep a server's.
  const server = await startWeft({ restartable: true })
  t.after(() => server.cleanup())
  const doc = 'field-notes'
  const ada = await openDemo(browser, docUrl(server, doc), ADA)
  const pages = [ada]
  try {
    await typeAtEnd(ada, 'Kept on the server.')
    await stored(server, doc, 'Kept on the server.')
    await keptForReload(ada)

    await server.kill()
    await waitForState(ada, 'offline')
    await typeAtEnd(ada, ' Written while weft was down.')
    const both = ['Kept on the server.', 'Written while weft was down.']

    // A second tab of this browser, opened now: the page comes from the
    // service worker, the text (the unsent edit too) from this browser's
    // copy, since the tabs share nothing else (no BroadcastChannel).
    const second = await sameBrowserTab(ada, docUrl(server, doc))
    pages.push(second)
    await waitForText(second, both)
    await second.close()

    // The tab itself, reloaded: the same, and it says the edit is unsent.
    await ada.reload()
    await waitForText(ada, both)
    await ada.locator('#status-text', { hasText: 'unsent' }).waitFor({ timeout: DEADLINE })
    assert.equal(server.running, false)

    // weft is back on the same database: the edit reaches it, and another
    // browser.
    await server.restart()
    await waitForState(ada, 'synced', 30_000)
    await ada.locator('#status-text', { hasText: 'Synced' }).waitFor({ timeout: DEADLINE })
    await stored(server, doc, 'Written while weft was down.')
    const grace = await openDemo(browser, docUrl(server, doc), GRACE)
    pages.push(grace)
    await waitForText(grace, both)
    assertNoProblems(pages, WHILE_DOWN)
  } finally {
    await closeAll(pages.filter((p) => !p.isClosed()))
  }
})

test('a document deleted on the server: the page drops its copy, and a reload brings nothing back', TEST, async (t) => {
  const server = await startWeft()
  t.after(() => server.cleanup())
  const doc = 'doomed-copy'
  const ada = await openDemo(browser, docUrl(server, doc), ADA)
  try {
    await typeAtEnd(ada, 'Soon deleted everywhere.')
    await stored(server, doc, 'Soon deleted everywhere.')
    assert.equal(await hasCopy(ada, doc), true)
    const deleted = await server.api('DELETE', `/api/docs/${doc}`)
    assert.equal(deleted.status, 200, deleted.text)
    await waitForState(ada, 'closed')
    await waitFor('the copy to be deleted', () => hasCopy(ada, doc).then((has) => !has), DEADLINE)

    await ada.reload()
    await waitForState(ada, 'synced')
    await waitForExactText(ada, '')
    await nothingBack(server, doc, 'Soon deleted')
    assertNoProblems([ada])
  } finally {
    await closeAll([ada])
  }
})

test('a copy kept of a document deleted while the page was away is dropped, not sent back', TEST, async (t) => {
  const server = await startWeft()
  t.after(() => server.cleanup())
  const doc = 'stale-copy'
  const ada = await openDemo(browser, docUrl(server, doc), ADA)
  const pages = [ada]
  try {
    await typeAtEnd(ada, 'Written before the deletion.')
    await stored(server, doc, 'Written before the deletion.')
    const created = (await server.api('GET', `/api/docs/${doc}`)).json.created
    await waitFor('the copy to know the document on the server', async () => (await localMark(ada, doc, 'created')) === created, DEADLINE)

    // The tab is closed (its browser keeps the copy); the document is deleted.
    // Only once weft has seen the tab leave: a page still closing when the
    // deletion comes gets its 4404 and drops its copy itself (as the test
    // above wants), which is not this test's case (seen once in ~12 runs).
    await ada.close()
    await waitFor('weft to see the closed tab leave', async () =>
      (await server.api('GET', `/api/docs/${doc}`)).json?.peers === 0, DEADLINE)
    const deleted = await server.api('DELETE', `/api/docs/${doc}`)
    assert.equal(deleted.status, 200, deleted.text)

    const again = await sameBrowserTab(ada, docUrl(server, doc))
    pages.push(again)
    await explained(again, server, doc, () => again.locator('#notice', { hasText: 'was dropped' }).waitFor({ timeout: DEADLINE }))
    await waitForState(again, 'synced')
    await waitForExactText(again, '')
    await nothingBack(server, doc, 'Written before')
    assert.equal(await localMark(again, doc, 'created'), undefined)
    // The page's own question (GET /api/docs/stale-copy, 404) is logged by Chromium.
    assertNoProblems(pages, [/Failed to load resource: the server responded with a status of 404/])
  } finally {
    await closeAll([ada]) // its context, with the tab opened again
  }
})
