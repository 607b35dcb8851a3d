// Test support for the web demo: Debian's Chromium driven by playwright-core,
// and pages that remember what they printed to the console. The weft process
// itself is started by ../weft.mjs, shared with the compat tests.

import { chromium } from 'playwright-core'

import { within } from '../weft.mjs'

export { REPO, startWeft, waitFor, tokenClaims, within } from '../weft.mjs'

// Node 20 sometimes never finishes tearing down a browser test file's
// process: every test passed and was reported, 'exit' was emitted, and then
// node::FreeEnvironment spins in Environment::CleanupHandles at 100% CPU
// (gdb's stack) until the runner's --test-timeout (20 min) cancels the file.
// Seen 3 times in ~100 runs of browser/offline.test.mjs, Chromium gone by
// then. process.exit() from 'exit' ends the process there, before that
// teardown, with the same code; everything has been written by then (a
// pipe's writes are synchronous on Linux). Registered after the launch, so
// that playwright's own 'exit' handler (which kills a browser left open)
// runs first: listeners run in the order they were added.
let exitEarly = false

export const launchBrowser = async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_BIN || '/usr/bin/chromium',
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run'
    ]
  })
  if (!exitEarly) {
    exitEarly = true
    process.once('exit', (code) => process.exit(code))
  }
  return browser
}

/**
 * A page in its own browser context (its own localStorage, and no
 * BroadcastChannel shared with the others: they meet only through weft).
 * Console errors and uncaught exceptions are collected in `page.problems`,
 * every console message in `page.messages`, every HTTP request
 * (`GET /path`) in `page.requests`, and the address of every WebSocket the
 * page opened (or tried to) in `page.sockets`. Resolves once
 * the page is synced, unless `synced: false`.
 */
export const openDemo = async (browser, url, { name, color, viewport = { width: 1280, height: 800 }, synced = true } = {}) => {
  const context = await browser.newContext({ viewport })
  if (name || color) {
    // Only the first visit: what the user changes later must survive reloads.
    await context.addInitScript(([n, c]) => {
      if (n && localStorage.getItem('weft-demo:name') === null) localStorage.setItem('weft-demo:name', n)
      if (c && localStorage.getItem('weft-demo:color') === null) localStorage.setItem('weft-demo:color', c)
    }, [name ?? '', color ?? ''])
  }
  const page = await context.newPage()
  page.problems = []
  page.messages = []
  page.sockets = []
  page.on('console', (msg) => {
    page.messages.push(`console.${msg.type()}: ${msg.text()}`)
    if (msg.type() === 'error' || msg.type() === 'warning') page.problems.push(`console.${msg.type()}: ${msg.text()}`)
  })
  page.on('pageerror', (err) => page.problems.push(`uncaught: ${err.message}`))
  page.requests = []
  page.on('websocket', (ws) => page.sockets.push(ws.url()))
  page.on('request', (req) => page.requests.push(`${req.method()} ${new URL(req.url()).pathname}`))
  await page.goto(url)
  if (synced) await waitForState(page, 'synced')
  return page
}

export const DEADLINE = 15_000

/**
 * Each test's own deadline. package.json's --test-timeout is also the limit
 * for a whole file (Chromium's start, every test, the close), so it is set
 * far above the sum, and each test gets this one instead.
 */
export const TEST = { timeout: 150_000 }

/** Waits for the status indicator to say `state`. */
export const waitForState = (page, state, timeout = DEADLINE) =>
  page.waitForSelector(`#status[data-state="${state}"]`, { timeout })

export const editor = (page) => page.locator('#editor .ProseMirror')

/** The editor's text, blocks separated by newlines, without remote carets. */
export const editorText = (page) => editor(page).evaluate((el) => {
  const copy = el.cloneNode(true)
  copy.querySelectorAll('.remote-caret').forEach((caret) => caret.remove())
  return Array.from(copy.children, (block) => block.textContent).join('\n')
})

/** Waits until the live editor's text (carets aside) is exactly `expected`. */
export const waitForExactText = async (page, expected, timeout = DEADLINE) => {
  try {
    await page.waitForFunction((expected) => {
      const copy = document.querySelector('#editor .ProseMirror')?.cloneNode(true)
      copy?.querySelectorAll('.remote-caret').forEach((caret) => caret.remove())
      return copy != null && Array.from(copy.children, (block) => block.textContent).join('\n') === expected
    }, expected, { timeout, polling: 50 })
  } catch (e) {
    throw new Error(`editor never showed ${JSON.stringify(expected)} within ${timeout} ms; it shows ${JSON.stringify(await editorText(page))}`)
  }
}

/** Waits until the live editor's text contains every one of `needles`. */
export const waitForText = async (page, needles, timeout = DEADLINE) => {
  const list = Array.isArray(needles) ? needles : [needles]
  try {
    await page.waitForFunction((list) => {
      const copy = document.querySelector('#editor .ProseMirror')?.cloneNode(true)
      copy?.querySelectorAll('.remote-caret').forEach((caret) => caret.remove())
      const text = copy?.textContent ?? ''
      return list.every((n) => text.includes(n))
    }, list, { timeout, polling: 50 })
  } catch (e) {
    throw new Error(`editor never contained ${JSON.stringify(list)} within ${timeout} ms; it shows ${JSON.stringify(await editorText(page))}`)
  }
}

/** Puts the caret at the end of the document and types. */
export const typeAtEnd = async (page, text) => {
  await editor(page).click()
  await page.keyboard.press('Control+End')
  await page.keyboard.type(text)
}

/** Fails with every console error or uncaught exception the pages reported. */
export const assertNoProblems = (pages, allowed = []) => {
  const problems = pages.flatMap((p) => (p.problems ?? [])
    .filter((line) => !allowed.some((re) => re.test(line)))
    .map((line) => `${p.url()}: ${line}`))
  if (problems.length > 0) throw new Error(`the browser reported:\n  ${problems.join('\n  ')}`)
}

export const closeAll = async (pages) => {
  for (const page of pages) await within(page.context().close(), 30_000, 'a browser context to close')
}
