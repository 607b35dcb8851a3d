// Test harness shared by the Node tests (compat/ and browser/): starts the
// real weft binary on a port chosen by the OS with its own SQLite file, can
// restart it on the same port and database, and waits on conditions with
// deadlines (never fixed sleeps).
import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, dirname, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')

/** The weft binary: $WEFT_BIN, else the release build, else the debug build. */
export const WEFT_BIN = (() => {
  if (process.env.WEFT_BIN) return resolve(process.env.WEFT_BIN)
  const release = join(REPO, 'target', 'release', 'weft')
  return existsSync(release) ? release : join(REPO, 'target', 'debug', 'weft')
})()

const STARTUP_MS = 30_000

/**
 * Starts weft and resolves once it listens. Options:
 * - `db`: database path (default: a fresh file in a temp directory that
 *   `cleanup()` removes)
 * - `args`: extra flags
 * - `log`: the log filter (default `info`)
 * - `env`: extra environment (e.g. `{ WEFT_AUTH_KEY: key }` for token mode).
 *   The caller's own WEFT_* variables are not passed on, so a developer's
 *   shell cannot change what the tests run against.
 */
export async function startWeft ({ db, args = [], env = {}, log = 'info' } = {}) {
  let dir = null
  if (!db) {
    dir = mkdtempSync(join(tmpdir(), 'weft-test-'))
    db = join(dir, 'weft.db')
  }
  const weft = new Weft({ db, dir, args, env, log })
  await weft.spawn('127.0.0.1:0')
  return weft
}

/** A weft process. */
export class Weft {
  constructor ({ db, dir, args, env, log }) {
    this.db = db
    this.logFilter = log
    this.dir = dir
    this.args = args
    this.env = env
    this.port = 0
    this.child = null
    this.exited = null
    this.output = ''
  }

  get addr () { return `127.0.0.1:${this.port}` }
  get ws () { return `ws://${this.addr}` }
  get http () { return `http://${this.addr}` }
  /** The web demo's address. */
  get url () { return this.http }

  /** Everything weft wrote to stderr so far (restarts included). */
  log () { return this.output }

  async spawn (addr) {
    if (!existsSync(WEFT_BIN)) throw new Error(`no weft binary at ${WEFT_BIN}: run 'cargo build --release' or set WEFT_BIN`)
    const env = { ...process.env }
    for (const key of Object.keys(env)) if (key.startsWith('WEFT_') && key !== 'WEFT_BIN') delete env[key]
    Object.assign(env, this.env)
    const child = spawn(WEFT_BIN, ['--addr', addr, '--db', this.db, '--log', this.logFilter, '--log-format', 'plain', ...this.args], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env
    })
    this.child = child
    this.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })))
    child.stderr.setEncoding('utf8')
    this.port = await new Promise((resolvePort, reject) => {
      let pending = ''
      const timer = setTimeout(() => reject(new Error(`weft did not start within ${STARTUP_MS} ms:\n${this.output}`)), STARTUP_MS)
      const onData = (chunk) => {
        pending += chunk
        const m = /listening on ws:\/\/127\.0\.0\.1:(\d+)/.exec(pending)
        if (m) {
          clearTimeout(timer)
          child.stderr.off('data', onData)
          resolvePort(Number(m[1]))
        }
      }
      child.stderr.on('data', (chunk) => { this.output += chunk })
      child.stderr.on('data', onData)
      child.once('exit', (code, signal) => {
        clearTimeout(timer)
        reject(new Error(`weft exited (${code ?? signal}) before listening:\n${this.output}`))
      })
    })
  }

  get running () {
    return this.child !== null && this.child.exitCode === null && this.child.signalCode === null
  }

  /** SIGKILL: nothing gets a chance to be saved. Resolves with how it exited. */
  async kill () {
    if (this.running) this.child.kill('SIGKILL')
    return this.exited
  }

  /** SIGTERM: graceful shutdown. Resolves with how it exited. */
  async stop () {
    if (this.running) this.child.kill('SIGTERM')
    return this.exited
  }

  /** Kills it (if running) and starts it again on the same port and database. */
  async restart () {
    await this.kill()
    await this.spawn(this.addr)
  }

  /** Kills it and removes the temp directory it was given, if any. */
  async cleanup () {
    await this.kill()
    if (this.dir) rmSync(this.dir, { recursive: true, force: true })
  }

  /**
   * A JSON API call: `{ status, json, text }`. `token` goes along as a
   * bearer credential (a token, or the admin key).
   */
  async api (method, path, { body, token } = {}) {
    const headers = {}
    if (body !== undefined) headers['Content-Type'] = 'application/json'
    if (token) headers.Authorization = `Bearer ${token}`
    const response = await fetch(this.http + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body)
    })
    const text = await response.text()
    let json = null
    try { json = JSON.parse(text) } catch {}
    return { status: response.status, json, text }
  }

  /**
   * Mints a token as a server owner would, with `weft token` and the key
   * this server was started with (`env.WEFT_AUTH_KEY`).
   * @returns {Promise<string>}
   */
  async token ({ doc, perm, ttl = '10m', name }) {
    const key = this.env.WEFT_AUTH_KEY
    if (!key) throw new Error('this weft runs in open mode: start it with env { WEFT_AUTH_KEY }')
    const args = ['token', '--doc', doc, '--perm', perm, '--ttl', ttl]
    if (name) args.push('--name', name)
    const env = { ...process.env, WEFT_AUTH_KEY: key }
    delete env.WEFT_AUTH_KEY_FILE
    const child = spawn(WEFT_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'], env })
    let out = ''
    let err = ''
    child.stdout.setEncoding('utf8').on('data', (c) => { out += c })
    child.stderr.setEncoding('utf8').on('data', (c) => { err += c })
    const code = await new Promise((resolve) => child.once('close', resolve))
    if (code !== 0) throw new Error(`weft token failed (${code}): ${err}`)
    return out.trim()
  }
}

/** A token's claims (its middle part is base64url JSON). */
export const tokenClaims = (token) => JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8'))

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
