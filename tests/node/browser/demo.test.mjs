// The web demo in real headless Chromium against the real weft binary.
//
//   npm ci && node --test --test-concurrency=1 browser/      (in tests/node)
//
// Every page runs in its own browser context, as separate browsers would:
// pages meet only through weft. Every test has its own weft and database, so
// each stands alone (in any order, or alone with --test-name-pattern).
// Waits are on conditions with deadlines.
//
// The first test composes a screenshot of two pages co-editing into a
// temporary file; `scripts/screenshot.sh` runs it with WEFT_SCREENSHOT set
// to write the README's docs/screenshot.png instead.

import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import WebSocket from 'ws'
import {
  startWeft, waitFor, launchBrowser, openDemo, waitForState, waitForText, waitForExactText, typeAtEnd, editor, editorText,
  assertNoProblems, closeAll, DEADLINE, TEST,
  within
} from './support.mjs'

/** @type {import('playwright-core').Browser} */
let browser

// Every hook and test has a deadline (package.json: --test-timeout): a
// hang fails, naming what hung.
before(async () => {
  browser = await launchBrowser()
}, { timeout: 200_000 })

after(async () => {
  await within(browser?.close() ?? Promise.resolve(), 60_000, 'Chromium to close')
}, { timeout: 90_000 })

/** A weft of this test's own, removed when the test ends. */
const freshWeft = async (t, opts) => {
  const server = await startWeft(opts)
  t.after(() => server.cleanup())
  return server
}

const ADA = { name: 'Ada', color: '#e5484d' }
const GRACE = { name: 'Grace', color: '#3e63dd' }
const LINUS = { name: 'Linus', color: '#12a594' }

const docUrl = (server, name) => `${server.url}/?doc=${encodeURIComponent(name)}`

// Awareness states are renewed every 15 s; a person missing after a
// reconnection would come back with the next renewal. "At once" is well
// below that.
const PROMPTLY = 3000

/** Waits until `page` lists `name` among the people here, within PROMPTLY ms. */
const seesPromptly = (page, name) =>
  page.locator('#people .person-name', { hasText: name }).waitFor({ timeout: PROMPTLY })

test('two pages edit one document: text, formatting, carets with names, people lists; a later page sees it all', TEST, async (t) => {
  const weft = await freshWeft(t)
  const shot = { width: 1000, height: 660 }
  const ada = await openDemo(browser, docUrl(weft, 'launch-plan'), { ...ADA, viewport: shot })
  const grace = await openDemo(browser, docUrl(weft, 'launch-plan'), { ...GRACE, viewport: shot })
  const pages = [ada, grace]
  try {
    await typeAtEnd(ada, '# Launch plan\nShip the weft demo on Friday. Everyone who opens the link edits the same page.')
    await waitForText(grace, ['Launch plan', 'Ship the weft demo on Friday.'])
    await grace.locator('#editor h1', { hasText: 'Launch plan' }).waitFor({ timeout: DEADLINE })

    const adaCaret = grace.locator('#editor .remote-caret-label', { hasText: 'Ada' })
    await adaCaret.waitFor({ timeout: DEADLINE })
    assert.equal(await adaCaret.evaluate((el) => getComputedStyle(el).backgroundColor), 'rgb(229, 72, 77)')

    await typeAtEnd(grace, '\n- Write the README\nRecord a short screencast\nTell the Yjs community')
    await waitForText(ada, ['Write the README', 'Record a short screencast', 'Tell the Yjs community'])
    await ada.locator('#editor ul > li', { hasText: 'Record a short screencast' }).waitFor({ timeout: DEADLINE })
    await ada.locator('#editor .remote-caret-label', { hasText: 'Grace' }).waitFor({ timeout: DEADLINE })

    await ada.locator('#people .person-name', { hasText: 'Grace' }).waitFor({ timeout: DEADLINE })
    await grace.locator('#people .person-name', { hasText: 'Ada' }).waitFor({ timeout: DEADLINE })
    assert.equal(await ada.locator('#avatars .avatar').count(), 2)
    assert.equal(await editorText(ada), await editorText(grace))

    // The README's screenshot only when asked for (scripts/screenshot.sh).
    const scratch = mkdtempSync(join(tmpdir(), 'weft-shot-'))
    t.after(() => rmSync(scratch, { recursive: true, force: true }))
    const path = process.env.WEFT_SCREENSHOT || join(scratch, 'screenshot.png')
    await saveSideBySide(ada, grace, path)
    const png = readFileSync(path)
    assert.equal(png.subarray(1, 4).toString(), 'PNG')
    // IHDR: two windows side by side, with their frames and margins
    assert.deepEqual([png.readUInt32BE(16), png.readUInt32BE(20)], [2 * shot.width + 3 * 28, shot.height + 34 + 2 * 28])

    const linus = await openDemo(browser, docUrl(weft, 'launch-plan'), LINUS)
    pages.push(linus)
    await waitForText(linus, ['Launch plan', 'Tell the Yjs community'])
    assert.equal(await editorText(linus), await editorText(ada))
    await linus.locator('#editor h1', { hasText: 'Launch plan' }).waitFor({ timeout: DEADLINE })
    await ada.locator('#people .person-name', { hasText: 'Linus' }).waitFor({ timeout: DEADLINE })
    assertNoProblems(pages)
  } finally {
    await closeAll(pages)
  }
})

test('a new name reaches the others at once and is remembered across reloads', TEST, async (t) => {
  const weft = await freshWeft(t)
  const ada = await openDemo(browser, docUrl(weft, 'names'), ADA)
  const grace = await openDemo(browser, docUrl(weft, 'names'), GRACE)
  try {
    await typeAtEnd(ada, 'Hello')
    await grace.locator('#editor .remote-caret-label', { hasText: 'Ada' }).waitFor({ timeout: DEADLINE })

    await ada.fill('#my-name', 'Ada Lovelace')
    await grace.locator('#people .person-name', { hasText: 'Ada Lovelace' }).waitFor({ timeout: DEADLINE })
    // Typing the name took the focus from the editor, so the caret left;
    // back in the editor, it carries the new name.
    await typeAtEnd(ada, ', world')
    await grace.locator('#editor .remote-caret-label', { hasText: 'Ada Lovelace' }).waitFor({ timeout: DEADLINE })

    await ada.reload()
    await waitForState(ada, 'synced')
    assert.equal(await ada.inputValue('#my-name'), 'Ada Lovelace')
    await grace.locator('#people .person-name', { hasText: 'Ada Lovelace' }).waitFor({ timeout: DEADLINE })
    assertNoProblems([ada, grace])
  } finally {
    await closeAll([ada, grace])
  }
})

test('the document picker lists stored documents, opens or creates one by name, and the link names the document', TEST, async (t) => {
  const weft = await freshWeft(t)
  // A stored document to find in the list.
  const writer = await openDemo(browser, docUrl(weft, 'launch-plan'), GRACE)
  await typeAtEnd(writer, 'Ship the weft demo on Friday.')
  await waitFor('the document stored', async () =>
    JSON.stringify((await weft.api('GET', '/api/docs/launch-plan')).json?.content ?? null).includes('Friday'), DEADLINE)
  await closeAll([writer])

  const page = await openDemo(browser, weft.url + '/', ADA)
  const pages = [page]
  try {
    assert.equal(await page.textContent('#doc-title'), 'welcome')
    assert.equal(await page.title(), 'welcome · weft')

    // Stored documents, with a link each.
    await page.locator('#doc-list a', { hasText: 'launch-plan' }).waitFor({ timeout: DEADLINE })

    // A reserved name is refused before anything is asked of the server.
    await page.fill('#open-name', 'api/secret')
    await page.click('#open-form button[type=submit]')
    await page.locator('#open-error', { hasText: 'reserved' }).waitFor({ timeout: DEADLINE })
    assert.equal(new URL(page.url()).searchParams.get('doc'), null)

    // Any other name opens (and so creates) that document; the URL names it.
    const name = 'notes/2026 plan: what & why?'
    await page.fill('#open-name', name)
    await Promise.all([page.waitForURL((u) => u.searchParams.get('doc') === name), page.click('#open-form button[type=submit]')])
    await waitForState(page, 'synced')
    assert.equal(await page.textContent('#doc-title'), name)
    await typeAtEnd(page, 'Only in this document.')

    // The copied link opens the same document in another browser.
    const other = await openDemo(browser, page.url(), GRACE)
    pages.push(other)
    await waitForText(other, 'Only in this document.')
    await other.locator('#doc-list a[aria-current=page]', { hasText: name }).waitFor({ timeout: DEADLINE })

    // Picking a listed document navigates to it.
    await Promise.all([
      other.waitForURL((u) => u.searchParams.get('doc') === 'launch-plan'),
      other.locator('#doc-list a', { hasText: 'launch-plan' }).click()
    ])
    await waitForState(other, 'synced')
    await waitForText(other, 'Ship the weft demo on Friday.')
    assert.ok(!(await editorText(other)).includes('Only in this document.'))
    assertNoProblems(pages)
  } finally {
    await closeAll(pages)
  }
})

test('versions: name the current state, preview it read-only, restore it on every page; ids, whole labels on hover', TEST, async (t) => {
  const weft = await freshWeft(t)
  const ada = await openDemo(browser, docUrl(weft, 'versions'), ADA)
  const grace = await openDemo(browser, docUrl(weft, 'versions'), GRACE)
  const pages = [ada, grace]
  try {
    await ada.locator('#versions.open').waitFor({ timeout: DEADLINE }) // open by default on a wide window
    await ada.locator('#version-message', { hasText: 'No versions yet' }).waitFor({ timeout: DEADLINE })

    await typeAtEnd(ada, 'The first draft.')
    await waitForText(grace, 'The first draft.')
    await ada.fill('#version-label', 'First draft')
    await ada.click('#save-version')
    await ada.locator('#version-list .version-label', { hasText: 'First draft' }).waitFor({ timeout: DEADLINE })
    await ada.locator('.toast', { hasText: 'Saved “First draft”' }).waitFor({ timeout: DEADLINE })

    await typeAtEnd(ada, ' Second thoughts that go too far.')
    await waitForText(grace, 'Second thoughts that go too far.')

    // Preview: a read-only view of the version; the live editor steps aside.
    await ada.locator('#version-list .version-open', { hasText: 'First draft' }).click()
    const preview = ada.locator('#preview .ProseMirror')
    await preview.waitFor({ timeout: DEADLINE })
    assert.equal(await preview.textContent(), 'The first draft.')
    assert.equal(await preview.getAttribute('contenteditable'), 'false')
    assert.equal(await ada.locator('#editor').isVisible(), false)
    await ada.locator('#preview-banner', { hasText: 'First draft' }).waitFor({ timeout: DEADLINE })

    // Back to the document and into the preview again.
    await ada.click('#preview-close')
    await editor(ada).waitFor({ state: 'visible', timeout: DEADLINE })
    await ada.locator('#version-list .version-open', { hasText: 'First draft' }).click()
    await preview.waitFor({ timeout: DEADLINE })

    // Restore asks first; cancelling changes nothing.
    await ada.click('#preview-restore')
    await ada.locator('#confirm-dialog[open]').waitFor({ timeout: DEADLINE })
    await ada.click('#confirm-dialog button[value=cancel]')
    await ada.locator('#confirm-dialog').waitFor({ state: 'hidden', timeout: DEADLINE })
    assert.ok((await editorText(grace)).includes('Second thoughts'))

    // Grace's list was just loaded (closing and opening the panel loads
    // it), so her next poll is 15 s away: the restore must reach her list
    // sooner, through Ada's awareness state.
    const requests = grace.requests.length
    await grace.click('#toggle-versions')
    await grace.click('#toggle-versions')
    await waitFor("Grace's list to load", () => grace.requests.slice(requests).includes('GET /api/docs/versions/versions'), DEADLINE)
    const graceLoaded = Date.now()

    await ada.click('#preview-restore')
    await ada.click('#confirm-ok')
    const toast = ada.locator('.toast', { hasText: /Restored|Could not restore/ })
    await toast.waitFor({ timeout: DEADLINE })
    const toastText = await toast.textContent() ?? ''
    assert.match(toastText, /Restored “First draft”\. The state before it is kept as #\d+, “Before restoring version \d+ \(First draft\)”/)
    const backupId = /kept as #(\d+)/.exec(toastText)[1]

    // Both pages converge on the version, without reloading.
    for (const page of pages) await waitForExactText(page, 'The first draft.')
    await editor(ada).waitFor({ state: 'visible', timeout: DEADLINE })
    // The state before the restore is kept as a version, on both pages.
    await ada.waitForFunction(() => document.querySelectorAll('#version-list .version').length >= 2, null, { timeout: DEADLINE })
    await grace.locator(`#version-list .version[data-id="${backupId}"]`)
      .waitFor({ timeout: Math.max(graceLoaded + 12_000 - Date.now(), 1) })

    // The versions show their ids, which the backup's label refers to, and
    // the whole label on hover.
    const draftId = await ada.locator('#version-list .version', { has: ada.getByText('First draft', { exact: true }) }).getAttribute('data-id')
    assert.match(toastText, new RegExp(`Before restoring version ${draftId} \\(First draft\\)`))
    for (const id of [draftId, backupId]) {
      assert.match(await ada.locator(`#version-list .version[data-id="${id}"] .version-meta`).textContent(), new RegExp(`^#${id} · `))
    }
    assert.match(await ada.locator(`#version-list .version[data-id="${backupId}"] .version-open`).getAttribute('title'),
      new RegExp(`^Before restoring version ${draftId} \\(First draft\\)\\n`))
    // The editor still works after a restore.
    await typeAtEnd(grace, ' And after.')
    await waitForText(ada, 'The first draft. And after.')

    // Deleting a version asks first, then removes it from the list only.
    const count = await ada.locator('#version-list .version').count()
    const first = ada.locator('#version-list .version', { has: ada.getByText('First draft', { exact: true }) })
    await first.hover()
    await first.locator('.version-delete').click()
    await ada.locator('#confirm-dialog[open]', { hasText: 'Delete “First draft”?' }).waitFor({ timeout: DEADLINE })
    await ada.click('#confirm-ok')
    await ada.waitForFunction((n) => document.querySelectorAll('#version-list .version').length === n - 1, count, { timeout: DEADLINE })
    assert.equal(await first.count(), 0)
    await waitForText(ada, 'The first draft. And after.')

    // A label longer than the panel is cut with an ellipsis; hovering shows it whole.
    const long = 'Before restoring the draft that everyone reviewed on Tuesday, with the comments from legal and the new title'
    await ada.fill('#version-label', long)
    await ada.click('#save-version')
    const text = ada.locator('#version-list .version-text', { hasText: long })
    await text.waitFor({ timeout: DEADLINE })
    const cut = await text.evaluate((el) => ({
      overflowing: el.scrollWidth > el.clientWidth,
      textOverflow: getComputedStyle(el).textOverflow,
      overflow: getComputedStyle(el).overflowX,
      display: getComputedStyle(el).display
    }))
    assert.deepEqual(cut, { overflowing: true, textOverflow: 'ellipsis', overflow: 'hidden', display: 'block' })
    assert.ok((await text.locator('xpath=ancestor::button[1]').getAttribute('title')).startsWith(`${long}\n`))
    assertNoProblems(pages)
  } finally {
    await closeAll(pages)
  }
})

test('offline: a page keeps editing without its connection and merges when it is back', TEST, async (t) => {
  const weft = await freshWeft(t)
  const ada = await openDemo(browser, docUrl(weft, 'offline'), ADA)
  const grace = await openDemo(browser, docUrl(weft, 'offline'), GRACE)
  try {
    await typeAtEnd(ada, 'Shared start.')
    await waitForText(grace, 'Shared start.')

    await ada.context().setOffline(true)
    await waitForState(ada, 'offline')
    await typeAtEnd(ada, ' Written offline by Ada.')
    await ada.locator('#status-text', { hasText: 'unsent' }).waitFor({ timeout: DEADLINE })
    await typeAtEnd(grace, ' Written online by Grace.')
    await waitForState(grace, 'synced')
    assert.ok(!(await editorText(grace)).includes('Written offline'), 'an offline edit reached the server')
    // Offline, Ada no longer claims to see anyone else.
    await ada.waitForFunction(() => document.querySelectorAll('#people .person').length === 1, null, { timeout: DEADLINE })

    await ada.context().setOffline(false)
    await waitForState(ada, 'synced')
    const both = ['Shared start.', 'Written offline by Ada.', 'Written online by Grace.']
    await waitForText(ada, both)
    await waitForText(grace, both)
    assert.equal(await editorText(ada), await editorText(grace))
    // Each sees the other again at once, not after an awareness renewal.
    await seesPromptly(grace, 'Ada')
    await seesPromptly(ada, 'Grace')
    // A request already under way (the list's refresh, the feed) when the
    // network is cut is reported once by Chromium (seen once in a full run);
    // the page asks nothing more while offline: no second one.
    const cut = /Failed to load resource: net::ERR_INTERNET_DISCONNECTED/
    assert.ok(ada.problems.filter((line) => cut.test(line)).length <= 1, ada.problems.join('\n'))
    assertNoProblems([ada, grace], [cut])
  } finally {
    await closeAll([ada, grace])
  }
})

test('server killed and restarted: pages say offline, keep their edits, and sync them when it is back', TEST, async (t) => {
  // Restarted on a new port the OS picks; the pages keep their address
  // through the harness's relay.
  const server = await freshWeft(t, { restartable: true })
  const url = `${server.url}/?doc=restart`
  const ada = await openDemo(browser, url, ADA)
  const grace = await openDemo(browser, url, GRACE)
  try {
    await typeAtEnd(ada, 'Before the crash.')
    await waitForText(grace, 'Before the crash.')

    await server.kill()
    await waitForState(ada, 'offline')
    await waitForState(grace, 'offline')
    await typeAtEnd(ada, ' During the outage.')
    await ada.locator('#status-text', { hasText: 'unsent' }).waitFor({ timeout: DEADLINE })
    assert.ok((await editorText(ada)).includes('During the outage.'))

    await server.restart()
    await waitForState(ada, 'synced', 30_000)
    await waitForState(grace, 'synced', 30_000)
    await waitForText(grace, ['Before the crash.', 'During the outage.'])
    assert.equal(await editorText(ada), await editorText(grace))
    // The new server knows nobody's awareness clock; the pages knew each
    // other's: they see each other again at once all the same.
    await seesPromptly(grace, 'Ada')
    await seesPromptly(ada, 'Grace')

    // And it was stored: a fresh page after another crash still has it.
    await server.restart()
    const linus = await openDemo(browser, url, LINUS)
    await waitForText(linus, ['Before the crash.', 'During the outage.'])
    await closeAll([linus])
    // While the server is down, Chromium reports the failed reconnection
    // attempts itself, and a list request that raced with the kill (with the
    // harness's relay in between, an unreachable server shows as a reset or
    // an unconnected socket, not a refusal), and the event feed's stream cut
    // short by the kill (incomplete chunked encoding); nothing else may appear.
    assertNoProblems([ada, grace], [
      /WebSocket connection to 'ws:\/\/127\.0\.0\.1:\d+\/restart' failed/,
      /Failed to load resource: net::ERR_(CONNECTION_(REFUSED|RESET|CLOSED)|EMPTY_RESPONSE|SOCKET_NOT_CONNECTED|INCOMPLETE_CHUNKED_ENCODING)/
    ])
  } finally {
    await closeAll([ada, grace])
  }
})

test('a document deleted through the API: the page says it was disconnected and stops reconnecting', TEST, async (t) => {
  const weft = await freshWeft(t)
  const page = await openDemo(browser, docUrl(weft, 'doomed'), ADA)
  try {
    await typeAtEnd(page, 'Soon gone.')
    const deleted = await weft.api('DELETE', '/api/docs/doomed')
    assert.equal(deleted.status, 200, deleted.text)
    await waitForState(page, 'closed')
    assert.equal(await page.textContent('#status-text'), 'Disconnected')
    assert.match(await page.getAttribute('#status', 'title') ?? '', /closed this session/)
    await page.locator('#notice', { hasText: 'This document was deleted on the server' }).waitFor({ timeout: DEADLINE })
    assertNoProblems([page])
  } finally {
    await closeAll([page])
  }
})

test('changes made through the API reach the page at once through the event feed: versions, a restore\'s backup, a deleted document', TEST, async (t) => {
  const weft = await freshWeft(t)
  const ada = await openDemo(browser, docUrl(weft, 'fed'), ADA)
  const other = await openDemo(browser, docUrl(weft, 'elsewhere'), GRACE)
  try {
    await ada.locator('#versions.open').waitFor({ timeout: DEADLINE })
    await typeAtEnd(ada, 'Told by the feed.')
    await typeAtEnd(other, 'Soon deleted.')
    await closeAll([other])
    // Nothing on the page asks for these: its lists poll every 10 and 15 s,
    // and no other page's awareness says a thing. PROMPTLY is well below.
    await ada.locator('#doc-list .doc-name', { hasText: 'elsewhere' }).waitFor({ timeout: DEADLINE })
    const named = await weft.api('POST', '/api/docs/fed/versions', { body: { label: 'Named by the API' } })
    assert.equal(named.status, 201, named.text)
    await ada.locator('#version-list .version-label', { hasText: 'Named by the API' }).waitFor({ timeout: PROMPTLY })
    await typeAtEnd(ada, ' More.')
    // Stored, so that the restore has something to back up.
    await waitFor('the edit stored', async () => JSON.stringify((await weft.api('GET', '/api/docs/fed')).json?.content ?? '').includes('More.'))
    const restored = await weft.api('POST', `/api/docs/fed/versions/${named.json.id}/restore`, { body: {} })
    assert.equal(restored.status, 200, restored.text)
    await ada.locator('#version-list .version-label', { hasText: 'Before restoring' }).waitFor({ timeout: PROMPTLY })
    const deleted = await weft.api('DELETE', '/api/docs/elsewhere')
    assert.equal(deleted.status, 200, deleted.text)
    await ada.locator('#doc-list .doc-name', { hasText: 'elsewhere' }).waitFor({ state: 'detached', timeout: PROMPTLY })
    assertNoProblems([ada])
  } finally {
    await closeAll([ada, other])
  }
})

test('peer counts of other documents reach every page at once, without --events-peers and without a list refresh', TEST, async (t) => {
  const weft = await freshWeft(t)
  const ada = await openDemo(browser, docUrl(weft, 'here'), ADA)
  const grace = await openDemo(browser, docUrl(weft, 'here'), GRACE)
  let third = null
  try {
    // Stored, so listed: README's hand-written update ("Hello from curl").
    const hello = Buffer.from('\x01\x01\x01\x00\x04\x01\x04text\x0fHello from curl\x00', 'latin1')
    const stored = await fetch(`${weft.url}/api/docs/elsewhere/update`, {
      method: 'POST', headers: { 'Content-Type': 'application/octet-stream' }, body: hello
    })
    assert.ok(stored.ok, await stored.text())
    const badge = (page) => page.locator('#doc-list a', { hasText: 'elsewhere' }).locator('.live-badge')
    for (const page of [ada, grace]) {
      await page.locator('#doc-list .doc-name', { hasText: 'elsewhere' }).waitFor({ timeout: DEADLINE })
      assert.equal(await badge(page).count(), 0)
    }
    // The list is fetched every 10 s: what a page fetched after the third
    // client joined says nothing about the push. Count the fetches.
    const fetches = (page) => page.requests.filter((r) => r === 'GET /api/docs').length
    const before = [fetches(ada), fetches(grace)]
    third = new WebSocket(`${weft.ws}/elsewhere`)
    await new Promise((resolve, reject) => { third.onopen = resolve; third.onerror = reject })
    for (const page of [ada, grace]) {
      await badge(page).filter({ hasText: '1' }).waitFor({ timeout: PROMPTLY })
    }
    assert.deepEqual([fetches(ada), fetches(grace)], before, 'the count came by the feed, not by a refresh')
    third.close()
    for (const page of [ada, grace]) await badge(page).waitFor({ state: 'detached', timeout: PROMPTLY })
    assertNoProblems([ada, grace])
  } finally {
    third?.close()
    await closeAll([ada, grace])
  }
})

test('the welcome document explains itself once, even to two pages opened at the same moment', TEST, async (t) => {
  const server = await freshWeft(t)
  const pages = []
  try {
    pages.push(...await Promise.all([
      openDemo(browser, server.url + '/', ADA),
      openDemo(browser, server.url + '/', GRACE)
    ]))
    for (const page of pages) await waitForText(page, ['Welcome to weft', 'Things to try'])
    // Both pages sent the same seed: it is there once.
    for (const page of pages) {
      assert.equal(await page.locator('#editor h1').count(), 1)
      assert.equal(await page.locator('#editor ul > li').count(), 4)
    }
    assert.equal(await editorText(pages[0]), await editorText(pages[1]))

    // Emptied on purpose, it stays empty for the next visitor.
    await editor(pages[0]).click()
    await pages[0].keyboard.press('Control+A')
    await pages[0].keyboard.press('Backspace')
    await waitForExactText(pages[1], '')
    const later = await openDemo(browser, server.url + '/', LINUS)
    pages.push(later)
    await later.locator('#editor p.is-empty[data-placeholder]').waitFor({ timeout: DEADLINE })
    assert.equal(await editorText(later), '')
    assertNoProblems(pages)
  } finally {
    await closeAll(pages)
  }
})

test('a narrow window: no sideways scrolling, panels as drawers, editing works', TEST, async (t) => {
  const weft = await freshWeft(t)
  const page = await openDemo(browser, docUrl(weft, 'narrow'), { ...LINUS, viewport: { width: 375, height: 740 } })
  try {
    const overflow = () => page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth)
    assert.equal(await overflow(), 0)
    assert.equal(await page.locator('#sidebar').isVisible(), false)
    assert.equal(await page.locator('#versions').isVisible(), false)
    // The toolbar scrolls sideways rather than being squeezed.
    const toolbar = await page.locator('#toolbar').boundingBox()
    assert.ok(toolbar && toolbar.height >= 32 && toolbar.width <= 375, `toolbar ${JSON.stringify(toolbar)}`)

    await page.click('#open-sidebar')
    await page.locator('#sidebar.open').waitFor({ timeout: DEADLINE })
    await page.waitForFunction(() => {
      const r = document.getElementById('sidebar').getBoundingClientRect()
      return r.left >= 0 && r.right <= window.innerWidth
    }, null, { timeout: DEADLINE })
    await page.locator('#my-name').waitFor({ state: 'visible', timeout: DEADLINE })
    await page.click('#scrim', { position: { x: 360, y: 400 } })
    await page.locator('#sidebar:not(.open)').waitFor({ state: 'attached', timeout: DEADLINE })
    await page.locator('#my-name').waitFor({ state: 'hidden', timeout: DEADLINE })

    await page.click('#toggle-versions')
    await page.locator('#versions').waitFor({ state: 'visible', timeout: DEADLINE })
    const box = await page.locator('#versions').boundingBox()
    assert.ok(box && box.x >= 0 && box.x + box.width <= 375, `versions panel off screen: ${JSON.stringify(box)}`)
    await page.click('#close-versions')
    await page.locator('#versions').waitFor({ state: 'hidden', timeout: DEADLINE })

    await typeAtEnd(page, 'Typed on a phone-sized screen, long enough to wrap over several lines of the page.')
    await waitForText(page, 'Typed on a phone-sized screen')
    assert.equal(await overflow(), 0)
    assertNoProblems([page])
  } finally {
    await closeAll([page])
  }
})

/**
 * Two screenshots side by side in window frames, composed by the browser
 * itself (no image library needed), for the README.
 */
const saveSideBySide = async (left, right, path) => {
  const [a, b] = await Promise.all([left.screenshot(), right.screenshot()])
  const { width, height } = left.viewportSize()
  const frame = (png, url) => `
    <figure>
      <div class="bar"><i></i><i></i><i></i><span>${url}</span></div>
      <img src="data:image/png;base64,${png.toString('base64')}" width="${width}" height="${height}">
    </figure>`
  const gap = 28
  const barHeight = 34
  const context = await browser.newContext({
    viewport: { width: 2 * width + 3 * gap, height: height + barHeight + 2 * gap },
    deviceScaleFactor: 1
  })
  try {
    const page = await context.newPage()
    const shownUrl = '127.0.0.1:1234/?doc=launch-plan'
    await page.setContent(`<!doctype html><style>
      html, body { margin: 0; height: 100%; }
      body { display: flex; gap: ${gap}px; align-items: center; justify-content: center;
             background: linear-gradient(135deg, #e4e4f7, #f4f1ec); font: 13px system-ui, sans-serif; }
      figure { margin: 0; border-radius: 10px; overflow: hidden; background: #fff;
               box-shadow: 0 10px 30px rgba(30, 30, 60, .18), 0 0 0 1px rgba(30, 30, 60, .08); }
      .bar { height: ${barHeight}px; display: flex; align-items: center; gap: 7px; padding: 0 12px; background: #ececf0; }
      .bar i { width: 11px; height: 11px; border-radius: 50%; background: #d0d0d8; }
      .bar span { margin-left: 14px; padding: 3px 12px; border-radius: 6px; background: #fff; color: #555; }
      img { display: block; }
    </style>${frame(a, shownUrl)}${frame(b, shownUrl)}`)
    await page.waitForFunction(() => Array.from(document.images).every((img) => img.complete && img.naturalWidth > 0))
    await page.screenshot({ path })
  } finally {
    await context.close()
  }
}
