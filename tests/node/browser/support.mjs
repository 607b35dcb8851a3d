// Test support for the web demo: the real weft binary on a free port with its
// own SQLite file, Debian's Chromium driven by playwright-core, and pages that
// remember what they printed to the console.

import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { chromium } from 'playwright-core'

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../../..')

/** The weft binary: $WEFT_BIN, else the release build, else the debug build. */
export const weftBin = () => {
  if (process.env.WEFT_BIN) return resolve(process.env.WEFT_BIN)
  const release = join(REPO, 'target/release/weft')
  return existsSync(release) ? release : join(REPO, 'target/debug/weft')
}

const STARTUP_MS = 30_000

/** A weft process. `restart()` brings it back on the same port and database. */
export class Weft {
  static async start () {
    const dir = mkdtempSync(join(tmpdir(), 'weft-demo-test-'))
    const weft = new Weft(dir)
    await weft.spawn('127.0.0.1:0')
    return weft
  }

  constructor (dir) {
    this.dir = dir
    this.db = join(dir, 'weft.db')
    this.log = ''
    this.port = 0
    this.child = null
  }

  get url () {
    return `http://127.0.0.1:${this.port}`
  }

  async spawn (addr) {
    const bin = weftBin()
    if (!existsSync(bin)) throw new Error(`no weft binary at ${bin}: run 'cargo build --release' or set WEFT_BIN`)
    const env = { ...process.env }
    for (const key of Object.keys(env)) if (key.startsWith('WEFT_') && key !== 'WEFT_BIN') delete env[key]
    const child = spawn(bin, ['--addr', addr, '--db', this.db, '--log', 'info', '--log-format', 'plain'], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env
    })
    this.child = child
    const port = await new Promise((resolvePort, reject) => {
      const timer = setTimeout(() => reject(new Error(`weft did not start within ${STARTUP_MS} ms:\n${this.log}`)), STARTUP_MS)
      child.stderr.setEncoding('utf8')
      let pending = ''
      child.stderr.on('data', (chunk) => {
        this.log += chunk
        pending += chunk
        const m = /listening on ws:\/\/127\.0\.0\.1:(\d+)/.exec(pending)
        if (m) {
          clearTimeout(timer)
          pending = ''
          resolvePort(Number(m[1]))
        }
      })
      child.on('exit', (code, signal) => {
        clearTimeout(timer)
        reject(new Error(`weft exited (${code ?? signal}) before listening:\n${this.log}`))
      })
    })
    this.port = port
  }

  /** SIGKILL: the process gets no chance to save anything more. */
  async kill () {
    const child = this.child
    if (!child || child.exitCode !== null || child.signalCode !== null) return
    const exited = new Promise((r) => child.once('exit', r))
    child.kill('SIGKILL')
    await exited
  }

  /** Starts again on the same port and database. */
  async restart () {
    await this.kill()
    await this.spawn(`127.0.0.1:${this.port}`)
  }

  async stop () {
    await this.kill()
    rmSync(this.dir, { recursive: true, force: true })
  }

  /** A JSON API call from the test itself. */
  async api (method, path, body) {
    const response = await fetch(this.url + path, {
      method,
      headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body)
    })
    const text = await response.text()
    let json = null
    try { json = JSON.parse(text) } catch {}
    return { status: response.status, json, text }
  }
}

export const launchBrowser = () => chromium.launch({
  executablePath: process.env.CHROMIUM_BIN || '/usr/bin/chromium',
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
    '--disable-sync', '--no-first-run'
  ]
})

/**
 * A page in its own browser context (its own localStorage, and no
 * BroadcastChannel shared with the others: they meet only through weft).
 * Console errors and uncaught exceptions are collected in `page.problems`.
 */
export const openDemo = async (browser, url, { name, color, viewport = { width: 1280, height: 800 } } = {}) => {
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
  page.on('console', (msg) => {
    if (msg.type() === 'error' || msg.type() === 'warning') page.problems.push(`console.${msg.type()}: ${msg.text()}`)
  })
  page.on('pageerror', (err) => page.problems.push(`uncaught: ${err.message}`))
  await page.goto(url)
  await waitForState(page, 'synced')
  return page
}

export const DEADLINE = 15_000

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
  for (const page of pages) await page.context().close()
}
