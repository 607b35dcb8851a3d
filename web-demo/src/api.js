// The weft HTTP API. Every error is JSON {"error": "..."}; names in paths are
// percent-encoded. A token from the page's URL goes along as a bearer token.

export class ApiError extends Error {
  /** @param {number} status  0 when the server could not be reached */
  constructor (status, message) {
    super(message)
    this.name = 'ApiError'
    this.status = status
  }

  /** The server wants a (better) token. */
  get isAuth () {
    return this.status === 401 || this.status === 403
  }
}

export class Api {
  /** @param {string | null} token */
  constructor (token) {
    this.token = token
    /**
     * Called whenever a request is refused for lack of rights; `write` says
     * whether the request would have changed something.
     */
    this.onAuthError = (/** @type {ApiError} */ _error, /** @type {{ write: boolean }} */ _request) => {}
  }

  docPath (name) {
    return `/api/docs/${encodeURIComponent(name)}`
  }

  async request (method, path, { body, binary = false } = {}) {
    const headers = {}
    if (this.token) headers.Authorization = `Bearer ${this.token}`
    if (body !== undefined) headers['Content-Type'] = 'application/json'
    let response
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store'
      })
    } catch {
      throw new ApiError(0, 'the server cannot be reached')
    }
    if (!response.ok) {
      const error = new ApiError(response.status, await errorMessage(response))
      if (error.isAuth) this.onAuthError(error, { write: method !== 'GET' })
      throw error
    }
    if (binary) return new Uint8Array(await response.arrayBuffer())
    if (response.status === 204) return null
    const text = await response.text()
    if (text === '') return null
    try {
      return JSON.parse(text)
    } catch {
      throw new ApiError(response.status, 'the server answered with something that is not JSON')
    }
  }

  /** What the server is and how it authenticates (public, needs no token). */
  info () {
    return this.request('GET', '/api/info')
  }

  getDoc (name) {
    return this.request('GET', this.docPath(name))
  }

  listDocs () {
    return this.request('GET', '/api/docs')
  }

  listVersions (name) {
    return this.request('GET', `${this.docPath(name)}/versions`)
  }

  createVersion (name, label) {
    return this.request('POST', `${this.docPath(name)}/versions`, { body: { label } })
  }

  versionUpdate (name, id) {
    return this.request('GET', `${this.docPath(name)}/versions/${encodeURIComponent(id)}/update`, { binary: true })
  }

  restoreVersion (name, id) {
    return this.request('POST', `${this.docPath(name)}/versions/${encodeURIComponent(id)}/restore`)
  }

  /**
   * A new signed token (admin key only): `{ token, token_id, expires }`.
   * @param {{ doc: string, perm: 'read' | 'write', ttl_secs: number, name?: string }} request
   */
  mintToken (request) {
    return this.request('POST', '/api/tokens', { body: request })
  }

  deleteVersion (name, id) {
    return this.request('DELETE', `${this.docPath(name)}/versions/${encodeURIComponent(id)}`)
  }
}

/** The server's own words for a failed response, or the status line. */
const errorMessage = async (response) => {
  try {
    const json = await response.json()
    if (json && typeof json.error === 'string' && json.error !== '') return json.error
  } catch {}
  return `HTTP ${response.status}${response.statusText ? ' ' + response.statusText : ''}`
}
