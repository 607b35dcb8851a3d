// Test harness shared by the Node tests (compat/ and browser/): starts the
// real weft binary on a port chosen by the OS with its own SQLite file, can
// restart it on the same database behind the same address, and waits on
// conditions with deadlines (never fixed sleeps). Every process, request
// and wait has a deadline: a hang fails the test instead of hanging it.
import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import net from 'node:net'
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
/** How long a process gets to exit, and a request to be answered. */
export const PROCESS_DEADLINE_MS = 30_000
export const REQUEST_DEADLINE_MS = 30_000

/** Rejects with `what` when `promise` has not settled within `ms`. */
export const within = (promise, ms, what) => {
  let timer
  const deadline = new Promise((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms)
  })
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer))
}

/**
 * A TCP relay on a port the OS picks, forwarding each connection to weft's
 * current port: clients (pages, providers) keep one address across
 * restarts, while every weft process gets a fresh port from the OS (a port
 * reused after a kill could meanwhile be someone else's). While weft is
 * down each new connection is reset, as a closed port refuses it.
 */
class Relay {
  constructor () {
    /** weft's port, or null while it is down */
    this.target = null
    this.sockets = new Set()
  }

  async listen () {
    this.server = net.createServer((client) => this.accept(client))
    await new Promise((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen(0, '127.0.0.1', resolve)
    })
    this.port = this.server.address().port
  }

  accept (client) {
    if (this.target === null) {
      client.resetAndDestroy()
      return
    }
    const upstream = net.connect(this.target, '127.0.0.1')
    for (const socket of [client, upstream]) {
      this.sockets.add(socket)
      socket.setNoDelay(true)
      socket.once('close', () => this.sockets.delete(socket))
    }
    // An end on one side ends the other once what came before it is
    // written (the last bytes are often a close frame); a reset (weft
    // killed with data unread, a page gone) resets the other.
    client.pipe(upstream)
    upstream.pipe(client)
    upstream.on('error', () => { if (!client.destroyed) client.resetAndDestroy() })
    client.on('error', () => { if (!upstream.destroyed) upstream.resetAndDestroy() })
  }

  async close () {
    this.target = null
    for (const socket of this.sockets) socket.destroy()
    await within(new Promise((resolve) => this.server.close(resolve)), PROCESS_DEADLINE_MS, 'the relay to close')
  }
}

/**
 * Starts weft and resolves once it listens. Options:
 * - `db`: database path (default: a fresh file in a temp directory that
 *   `cleanup()` removes)
 * - `args`: extra flags
 * - `log`: the log filter (default `info`)
 * - `env`: extra environment (e.g. `{ WEFT_AUTH_KEY: key }` for token mode).
 *   The caller's own WEFT_* variables are not passed on, so a developer's
 *   shell cannot change what the tests run against.
 * - `restartable`: clients connect through a relay that keeps their address
 *   across `restart()` (see Relay); needed to restart it.
 */
export async function startWeft ({ db, args = [], env = {}, log = 'info', restartable = false } = {}) {
  let dir = null
  if (!db) {
    dir = mkdtempSync(join(tmpdir(), 'weft-test-'))
    db = join(dir, 'weft.db')
  }
  const weft = new Weft({ db, dir, args, env, log })
  if (restartable) {
    weft.relay = new Relay()
    await weft.relay.listen()
  }
  await weft.spawn()
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
    /** the port weft itself listens on (a new one after each restart) */
    this.weftPort = 0
    /** @type {Relay | null} */
    this.relay = null
    this.child = null
    this.exited = null
    this.output = ''
  }

  /** The port clients use: the relay's when restartable, else weft's own. */
  get port () { return this.relay ? this.relay.port : this.weftPort }
  get addr () { return `127.0.0.1:${this.port}` }
  get ws () { return `ws://${this.addr}` }
  get http () { return `http://${this.addr}` }
  /** The web demo's address. */
  get url () { return this.http }

  /** Everything weft wrote to stderr so far (restarts included). */
  log () { return this.output }

  /** Starts weft on a port the OS picks; the relay, if any, follows it. */
  async spawn () {
    if (!existsSync(WEFT_BIN)) throw new Error(`no weft binary at ${WEFT_BIN}: run 'cargo build --release' or set WEFT_BIN`)
    const addr = '127.0.0.1:0'
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
    this.weftPort = await new Promise((resolvePort, reject) => {
      let pending = ''
      const timer = setTimeout(() => {
        child.kill('SIGKILL')
        reject(new Error(`weft did not start within ${STARTUP_MS} ms:\n${this.output}`))
      }, STARTUP_MS)
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
    if (this.relay) this.relay.target = this.weftPort
  }

  get running () {
    return this.child !== null && this.child.exitCode === null && this.child.signalCode === null
  }

  /** Sends `signal` and resolves with how it exited (at most PROCESS_DEADLINE_MS). */
  async #end (signal) {
    if (this.running) this.child.kill(signal)
    if (this.relay) this.relay.target = null
    return within(this.exited, PROCESS_DEADLINE_MS, `weft to exit after ${signal}`)
  }

  /** SIGKILL: nothing gets a chance to be saved. Resolves with how it exited. */
  async kill () { return this.#end('SIGKILL') }

  /** SIGTERM: graceful shutdown. Resolves with how it exited. */
  async stop () { return this.#end('SIGTERM') }

  /**
   * Kills it (if running) and starts it again on the same database, on a
   * new port the OS picks; its clients' address (the relay's) stays.
   */
  async restart () {
    if (!this.relay) throw new Error('restart needs startWeft({ restartable: true }): clients keep their address through its relay')
    await this.kill()
    await this.spawn()
  }

  /** Kills it and removes the temp directory it was given, if any. */
  async cleanup () {
    await this.kill()
    await this.relay?.close()
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
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(REQUEST_DEADLINE_MS)
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
    const timer = setTimeout(() => child.kill('SIGKILL'), PROCESS_DEADLINE_MS)
    const code = await new Promise((resolve) => child.once('close', resolve)).finally(() => clearTimeout(timer))
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
