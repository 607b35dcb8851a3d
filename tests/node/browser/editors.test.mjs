// Editors built on Yjs, unchanged, on weft: CodeMirror 6 (y-codemirror.next),
// Quill (y-quill with quill-cursors) and Monaco (y-monaco), each in real
// headless Chromium through the standard y-websocket provider and the real
// weft binary. The pages are ../editors (one per binding, bundled by its
// build.mjs into ../editors/dist, which scripts/test.sh builds first):
//
//   (cd editors && npm ci && node build.mjs)
//   WEFT_BIN=... node --test --test-concurrency=1 --test-timeout=1200000 browser/editors.test.mjs
//
// For each editor, two pages (each in its own browser context: they meet only
// through weft) edit one document with real keystrokes; each sees the
// other's text, and the other's selection and caret drawn by the binding from
// awareness; a page reloaded after the other left shows the text again, from
// weft alone.

import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, readFileSync } from 'node:fs'
import http from 'node:http'
import { extname, join, normalize, sep } from 'node:path'
import { REPO, startWeft, launchBrowser, assertNoProblems, closeAll, DEADLINE, TEST, within } from './support.mjs'

const DIST = join(REPO, 'tests', 'node', 'editors', 'dist')

/** @type {import('playwright-core').Browser} */
let browser
/** @type {http.Server} */
let pages
let pagesUrl

const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.ttf': 'font/ttf' }

before(async () => {
  if (!existsSync(join(DIST, 'codemirror.html'))) {
    throw new Error(`no editor pages in ${DIST}: run 'npm ci && node build.mjs' in tests/node/editors (scripts/test.sh does)`)
  }
  // The pages come from a server of their own on 127.0.0.1 (a loopback
  // origin, which weft in open mode accepts), as an application's would.
  pages = http.createServer((req, res) => {
    const path = normalize(join(DIST, decodeURIComponent(new URL(req.url, 'http://x').pathname)))
    if (!path.startsWith(DIST + sep) || !existsSync(path)) {
      res.writeHead(404).end()
      return
    }
    res.writeHead(200, { 'Content-Type': TYPES[extname(path)] ?? 'application/octet-stream' })
    res.end(readFileSync(path))
  })
  await new Promise((resolve) => pages.listen(0, '127.0.0.1', resolve))
  pagesUrl = `http://127.0.0.1:${pages.address().port}`
  browser = await launchBrowser()
}, { timeout: 200_000 })

after(async () => {
  await within(browser?.close() ?? Promise.resolve(), 60_000, 'Chromium to close')
  pages?.closeAllConnections()
  await new Promise((resolve) => (pages ? pages.close(resolve) : resolve()))
}, { timeout: 90_000 })

/**
 * Each editor: the element to click to type, the binding's marks of another
 * person's selection, caret and name, and how its visible text is read.
 */
const EDITORS = [
  {
    kind: 'codemirror',
    title: 'CodeMirror 6 with y-codemirror.next',
    input: '.cm-content',
    selection: '.cm-ySelection',
    caret: '.cm-ySelectionCaret',
    name: '.cm-ySelectionInfo' // shown on hover: present, not visible
  },
  {
    kind: 'quill',
    title: 'Quill with y-quill',
    input: '.ql-editor',
    selection: '.ql-cursor .ql-cursor-selection-block',
    caret: '.ql-cursor .ql-cursor-caret',
    name: '.ql-cursor .ql-cursor-name'
  },
  {
    kind: 'monaco',
    title: 'Monaco with y-monaco',
    input: '.monaco-editor .view-lines',
    selection: '.yRemoteSelection',
    caret: '.yRemoteSelectionHead',
    name: null // y-monaco draws no name
  }
]

/** The text an editor shows, lines joined by newlines, remote carets left out (runs in the page). */
const shownText = (kind) => {
  if (kind === 'codemirror') {
    return Array.from(document.querySelectorAll('.cm-content .cm-line'), (line) => {
      const copy = line.cloneNode(true)
      copy.querySelectorAll('.cm-ySelectionCaret').forEach((caret) => caret.remove())
      return copy.textContent
    }).join('\n')
  }
  if (kind === 'quill') return Array.from(document.querySelectorAll('.ql-editor > *'), (block) => block.textContent).join('\n')
  // Monaco renders the visible lines in any order, placed by `top`, with
  // spaces as U+00A0.
  return Array.from(document.querySelectorAll('.monaco-editor .view-lines .view-line'))
    .sort((a, b) => parseFloat(a.style.top) - parseFloat(b.style.top))
    .map((line) => line.textContent.replace(/\u00a0/g, ' '))
    .join('\n')
}

const waitForShown = async (page, kind, expected, timeout = DEADLINE) => {
  try {
    await page.waitForFunction(([kind, expected]) => window.shownText(kind) === expected, [kind, expected], { timeout, polling: 50 })
  } catch (e) {
    throw new Error(`the ${kind} page never showed ${JSON.stringify(expected)} within ${timeout} ms; it shows ${JSON.stringify(await page.evaluate(shownText, kind))}`)
  }
}

/** Opens an editor page in its own browser context; resolves once it is synced and bound. */
const openEditor = async (weft, kind, doc, { name, color }) => {
  const context = await browser.newContext({ viewport: { width: 1000, height: 500 } })
  await context.addInitScript({ content: `window.shownText = ${shownText}` })
  const page = await context.newPage()
  page.problems = []
  page.on('console', (msg) => {
    if (msg.type() === 'error' || msg.type() === 'warning') page.problems.push(`console.${msg.type()}: ${msg.text()}`)
  })
  page.on('pageerror', (err) => page.problems.push(`uncaught: ${err.message}`))
  const query = new URLSearchParams({ server: weft.ws, doc, name, color })
  await page.goto(`${pagesUrl}/${kind}.html?${query}`)
  await waitForReady(page)
  return page
}

const waitForReady = (page) =>
  page.waitForSelector('html[data-synced="true"][data-bound="true"]', { state: 'attached', timeout: DEADLINE })

const ADA = { name: 'Ada', color: '#e5484d' }
const GRACE = { name: 'Grace', color: '#3e63dd' }

for (const editor of EDITORS) {
  test(`${editor.title}: two pages co-edit, see each other's selection and caret, and a reload shows the text from weft`, TEST, async (t) => {
    const weft = await startWeft()
    t.after(() => weft.cleanup())
    const doc = `${editor.kind}/notes`
    const ada = await openEditor(weft, editor.kind, doc, ADA)
    const grace = await openEditor(weft, editor.kind, doc, GRACE)
    const all = [ada, grace]
    try {
      await ada.click(editor.input)
      await ada.keyboard.type('Hello from Ada')
      await waitForShown(grace, editor.kind, 'Hello from Ada')

      await grace.click(editor.input)
      await grace.keyboard.press('Control+End')
      await grace.keyboard.type(', and Grace')
      await waitForShown(ada, editor.kind, 'Hello from Ada, and Grace')

      // Ada selects "Hello": Grace's editor draws that selection and Ada's
      // caret at its end, from Ada's awareness state.
      await ada.keyboard.press('Control+Home')
      for (let i = 0; i < 'Hello'.length; i++) await ada.keyboard.press('Shift+ArrowRight')
      await grace.locator(editor.selection).first().waitFor({ timeout: DEADLINE })
      await grace.locator(editor.caret).first().waitFor({ timeout: DEADLINE })
      if (editor.name) await grace.locator(editor.name, { hasText: 'Ada' }).waitFor({ state: 'attached', timeout: DEADLINE })
      if (editor.kind === 'codemirror') {
        assert.equal(await grace.locator(editor.selection).first().textContent(), 'Hello')
      }
      // And the other way: Grace's caret (after her text) in Ada's page.
      await ada.locator(editor.caret).first().waitFor({ timeout: DEADLINE })
      if (editor.name) await ada.locator(editor.name, { hasText: 'Grace' }).waitFor({ state: 'attached', timeout: DEADLINE })

      // Ada leaves: her selection goes from Grace's page; Grace's page,
      // reloaded, gets the text back from weft alone.
      await closeAll([ada])
      await grace.locator(editor.selection).first().waitFor({ state: 'detached', timeout: DEADLINE })
      await grace.reload()
      await waitForReady(grace)
      await waitForShown(grace, editor.kind, 'Hello from Ada, and Grace')
      assertNoProblems(all)
    } finally {
      await closeAll(all.filter((page) => !page.isClosed()))
    }
  })
}
