// Test harness shared by the Node tests: starts the real weft binary on a
// port chosen by the OS with its own SQLite file, and waits on conditions
// with deadlines (never fixed sleeps).
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
export const WEFT_BIN = process.env.WEFT_BIN || join(root, 'target', 'release', 'weft')

/**
 * Starts weft. Options: `db` (path; a fresh temp file by default), `args`
 * (extra flags). Resolves once it listens.
 */
export async function startWeft ({ db, args = [] } = {}) {
  let dir = null
  if (!db) {
    dir = mkdtempSync(join(tmpdir(), 'weft-test-'))
    db = join(dir, 'weft.db')
  }
  const proc = spawn(WEFT_BIN, ['--addr', '127.0.0.1:0', '--db', db, '--log', 'info', ...args], {
    stdio: ['ignore', 'ignore', 'pipe']
  })
  let log = ''
  const addr = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`weft did not start:\n${log}`)), 30000)
    proc.stderr.on('data', (chunk) => {
      log += chunk
      const m = /listening on ws:\/\/(\S+)/.exec(log)
      if (m) {
        clearTimeout(timer)
        resolve(m[1])
      }
    })
    proc.on('exit', (code) => reject(new Error(`weft exited with ${code}:\n${log}`)))
  })
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })))
  return {
    addr,
    ws: `ws://${addr}`,
    http: `http://${addr}`,
    db,
    log: () => log,
    /** SIGKILL: nothing gets a chance to be saved. */
    async kill () {
      proc.kill('SIGKILL')
      return exited
    },
    /** SIGTERM: graceful shutdown. */
    async stop () {
      proc.kill('SIGTERM')
      return exited
    },
    cleanup () {
      proc.kill('SIGKILL')
      if (dir) rmSync(dir, { recursive: true, force: true })
    }
  }
}

/** Resolves when `cond()` is truthy; rejects after `timeout` ms. */
export async function waitFor (what, cond, timeout = 10000) {
  const deadline = Date.now() + timeout
  for (;;) {
    const value = await cond()
    if (value) return value
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}
