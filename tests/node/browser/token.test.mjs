// The web demo against weft in token mode, in real headless Chromium.
//
// Tokens are minted as an owner would, with `weft token` and the server's
// key; the admin key (accepted as a bearer credential) checks and changes
// things behind the pages' backs through the API. Every test has its own
// weft and database, so each stands alone.

import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import {
  startWeft, tokenClaims, waitFor, launchBrowser, openDemo, waitForState, waitForText, typeAtEnd, editor, editorText,
  assertNoProblems, closeAll, DEADLINE, TEST,
  within
} from './support.mjs'

const KEY = 'browser-test-key-0123456789abcdef'

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

/** A weft in token mode of this test's own, removed when the test ends. */
const freshWeft = async (t, opts = {}) => {
  const server = await startWeft({ ...opts, env: { WEFT_AUTH_KEY: KEY } })
  t.after(() => server.cleanup())
  return server
}

/**
 * Short-lived tokens without a race against the machine: a test whose token
 * must expire only once its page reached some state (open, edited, the
 * server stopped) gets a token of `ttl` seconds and reports whether the
 * state came in time (`ready(token)` is true while at least a second is
 * left). If not, the machine was slower than the lifetime: the attempt is
 * discarded, nothing asserted after that state has run, and the scenario
 * runs again, fresh, with twice the lifetime.
 */
const withExpiringToken = async (scenario) => {
  for (let ttl = 4; ttl <= 64; ttl *= 2) {
    const ready = (token) => Date.now() < tokenClaims(token).exp * 1000 - 1000
    if (await scenario(`${ttl}s`, ready) !== TOO_SLOW) return
  }
  throw new Error('even a 64 s token expired before its page was ready')
}
const TOO_SLOW = Symbol('too slow')

const ADA = { name: 'Ada', color: '#e5484d' }
const GRACE = { name: 'Grace', color: '#3e63dd' }
/** A browser whose user calls themselves something else than their link does. */
const LINUS_ELSEWHERE = { name: 'Someone', color: '#12a594' }

const pageUrl = (server, doc, token) => {
  const params = new URLSearchParams({ doc })
  if (token) params.set('token', token)
  return `${server.url}/?${params}`
}

/** The document's content as the server has it, asked with the admin key. */
const content = async (weft, doc) => {
  const res = await weft.api('GET', `/api/docs/${encodeURIComponent(doc)}`, { token: KEY })
  assert.equal(res.status, 200, res.text)
  return res.json.content
}

/** Types `text` into `doc` with the admin key, and waits until it is stored. */
const seed = async (weft, doc, text) => {
  const page = await openDemo(browser, pageUrl(weft, doc, KEY), GRACE)
  try {
    await typeAtEnd(page, text)
    await waitFor(`'${text}' stored`, async () => JSON.stringify(await content(weft, doc)).includes(text), DEADLINE)
  } finally {
    await closeAll([page])
  }
}

/**
 * Lets `page` write and read the clipboard (granted as a user would, by the
 * browser), and returns a reader of what it holds.
 */
const clipboard = async (page, weft) => {
  await page.context().grantPermissions(['clipboard-read', 'clipboard-write'], { origin: weft.url })
  return () => page.evaluate(() => navigator.clipboard.readText())
}

/** What Chromium itself reports for a request the server refused. */
const refusedRequest = (status) => new RegExp(`^console\\.error: Failed to load resource: the server responded with a status of ${status}`)

test('token mode without a token: a message says what is needed, nothing connects, nothing is logged', TEST, async (t) => {
  const weft = await freshWeft(t)
  const page = await openDemo(browser, pageUrl(weft, 'plan'), { ...ADA, synced: false })
  try {
    const gate = page.locator('#gate')
    await gate.waitFor({ timeout: DEADLINE })
    assert.equal(await page.textContent('#gate-title'), 'This document needs an access link')
    const text = await gate.textContent()
    assert.match(text, /Open the link you were given/)
    assert.match(text, /ask the document’s owner for one/)
    assert.match(text, /weft token --doc plan --perm write/)
    // Where the key is: the page cannot know which of the two the server
    // was started with, so it names both (this one runs with WEFT_AUTH_KEY).
    assert.match(text, /--auth-key-file/)
    assert.match(text, /WEFT_AUTH_KEY\b/)
    assert.equal(await editor(page).isVisible(), false)
    assert.equal(await page.locator('#toolbar').isVisible(), false)
    assert.equal(await page.locator('#status').isVisible(), false)
    assert.equal(await page.locator('#notice').isVisible(), false)

    // Nothing more happens once the page has settled: no socket, no request
    // but the public /api/info, not a line in the console.
    await page.waitForLoadState('networkidle')
    assert.deepEqual(page.sockets, [])
    assert.deepEqual(page.requests.filter((r) => r.includes('/api/')), ['GET /api/info'])
    assert.deepEqual(page.messages, [])
    assert.deepEqual(page.problems, [])
  } finally {
    await closeAll([page])
  }
})

test('a write token: editing works and reaches a second page; the picker lists what the token opens and keeps it', TEST, async (t) => {
  const weft = await freshWeft(t)
  // Something the token must not see.
  await seed(weft, 'secret', 'Not for team A.')

  const adaToken = await weft.token({ doc: 'team-a/*', perm: 'write' })
  const graceToken = await weft.token({ doc: 'team-a/plan', perm: 'write' })
  const ada = await openDemo(browser, pageUrl(weft, 'team-a/plan', adaToken), ADA)
  const grace = await openDemo(browser, pageUrl(weft, 'team-a/plan', graceToken), GRACE)
  const pages = [ada, grace]
  try {
    await typeAtEnd(ada, 'Written with a token.')
    await waitForText(grace, 'Written with a token.')
    await typeAtEnd(grace, ' And answered.')
    await waitForText(ada, 'Written with a token. And answered.')
    assert.equal(await ada.locator('#readonly-badge').isVisible(), false)
    await grace.locator('#people .person-name', { hasText: 'Ada' }).waitFor({ timeout: DEADLINE })

    // A version, named through the API the page uses with its token.
    await ada.fill('#version-label', 'Team draft')
    await ada.click('#save-version')
    await ada.locator('#version-list .version-label', { hasText: 'Team draft' }).waitFor({ timeout: DEADLINE })

    // The picker: what the server lists for this token, links keeping it.
    const link = ada.locator('#doc-list a', { hasText: 'team-a/plan' })
    await link.waitFor({ timeout: DEADLINE })
    assert.equal(new URL(await link.getAttribute('href'), weft.url).searchParams.get('token'), adaToken)
    assert.equal(await ada.locator('#doc-list a', { hasText: 'secret' }).count(), 0)

    // Another document under the pattern opens (and is created) from the picker.
    await ada.fill('#open-name', 'team-a/notes')
    await Promise.all([ada.waitForURL((u) => u.searchParams.get('doc') === 'team-a/notes'), ada.click('#open-form button[type=submit]')])
    assert.equal(new URL(ada.url()).searchParams.get('token'), adaToken)
    await waitForState(ada, 'synced')
    await typeAtEnd(ada, 'Notes.')
    await waitFor('the new document stored', async () => JSON.stringify(await content(weft, 'team-a/notes')).includes('Notes.'))
    assertNoProblems(pages)
  } finally {
    await closeAll(pages)
  }
})

test('a document outside the token: the page shows the server’s reason and the documents the token opens', TEST, async (t) => {
  const weft = await freshWeft(t)
  await seed(weft, 'team-a/plan', 'Written with a token.')
  await seed(weft, 'secret', 'Not for team A.')
  const token = await weft.token({ doc: 'team-a/*', perm: 'write' })
  const page = await openDemo(browser, pageUrl(weft, 'secret', token), { ...ADA, synced: false })
  try {
    await page.locator('#gate').waitFor({ timeout: DEADLINE })
    assert.equal(await page.textContent('#gate-title'), 'Your link does not open “secret”')
    await page.locator('#gate .gate-reason', { hasText: "token is for 'team-a/*', not for 'secret'" }).waitFor({ timeout: DEADLINE })
    // It lists what the token opens, with the token kept.
    const link = page.locator('#gate .gate-docs a', { hasText: 'team-a/plan' })
    await link.waitFor({ timeout: DEADLINE })
    assert.equal(new URL(await link.getAttribute('href'), weft.url).searchParams.get('token'), token)
    await page.locator('#doc-list a', { hasText: 'team-a/plan' }).waitFor({ timeout: DEADLINE })
    assert.equal(await page.locator('#doc-list a', { hasText: 'secret' }).count(), 0)
    assert.equal(await editor(page).isVisible(), false)
    assert.equal(await page.locator('#notice').isVisible(), false, 'the gate says it all')
    assert.deepEqual(page.sockets, [], 'no WebSocket to a document the token does not open')

    // One click on the list and the page works.
    await Promise.all([page.waitForURL((u) => u.searchParams.get('doc') === 'team-a/plan'), link.click()])
    await waitForState(page, 'synced')
    await waitForText(page, 'Written with a token.')
    // The refusal is the one line the browser itself logs.
    assertNoProblems([page], [refusedRequest(403)])
    assert.equal(page.problems.length, 1, page.problems.join('\n'))
  } finally {
    await closeAll([page])
  }
})

test('a token for one document, opening another: the reason and the document it opens, nothing stray', TEST, async (t) => {
  const weft = await freshWeft(t)
  // A token for exactly one document (no pattern), that is not stored yet.
  const token = await weft.token({ doc: 'team-a/plan', perm: 'write' })
  const page = await openDemo(browser, pageUrl(weft, 'secret', token), { ...ADA, synced: false })
  try {
    await page.locator('#gate').waitFor({ timeout: DEADLINE })
    assert.equal(await page.textContent('#gate-title'), 'Your link does not open “secret”')
    await page.locator('#gate .gate-reason', { hasText: "token is for 'team-a/plan', not for 'secret'" }).waitFor({ timeout: DEADLINE })
    const link = page.locator('#gate .gate-docs a', { hasText: 'team-a/plan' })
    await link.waitFor({ timeout: DEADLINE })
    assert.equal(new URL(await link.getAttribute('href'), weft.url).searchParams.get('token'), token)
    // Every part of the explanation is an element: no stray text (the parts
    // this case has no use for once showed as a line reading "null").
    const stray = await page.locator('#gate-body').evaluate((el) =>
      Array.from(el.childNodes).filter((n) => n.nodeType !== Node.ELEMENT_NODE).map((n) => n.textContent))
    assert.deepEqual(stray, [])
    assert.doesNotMatch(await page.locator('#gate').innerText(), /\bnull\b|\bundefined\b/)
    assert.deepEqual(page.sockets, [])
    assertNoProblems([page], [refusedRequest(403)])
  } finally {
    await closeAll([page])
  }
})

test('Copy link with a token copies the link without it; the token’s name is the name others see', TEST, async (t) => {
  const weft = await freshWeft(t)
  const adaToken = await weft.token({ doc: 'plan', perm: 'write', name: 'Ada Lovelace' })
  const graceToken = await weft.token({ doc: 'plan', perm: 'write' })
  // Ada's browser remembers another name ('Ada'): the token's wins.
  const ada = await openDemo(browser, pageUrl(weft, 'plan', adaToken), ADA)
  const grace = await openDemo(browser, pageUrl(weft, 'plan', graceToken), GRACE)
  const pages = [ada, grace]
  try {
    assert.equal(await ada.inputValue('#my-name'), 'Ada Lovelace')
    assert.equal(await ada.locator('#my-name').getAttribute('readonly'), '', 'the token names its holder')
    await grace.locator('#people .person-name', { hasText: 'Ada Lovelace' }).waitFor({ timeout: DEADLINE })
    await typeAtEnd(ada, 'Signed, Ada.')
    await grace.locator('#editor .remote-caret-label', { hasText: 'Ada Lovelace' }).waitFor({ timeout: DEADLINE })
    // The name is the token's, not remembered for pages without one.
    assert.equal(await ada.evaluate(() => localStorage.getItem('weft-demo:name')), 'Ada')

    const read = await clipboard(ada, weft)
    await ada.click('#copy-link')
    await ada.locator('.toast', { hasText: 'without your access token' }).waitFor({ timeout: DEADLINE })
    assert.match(await ada.locator('.toast').last().textContent(), /needs a link of their own/)
    const copied = new URL(await read())
    assert.equal(copied.origin, weft.url)
    assert.equal(copied.searchParams.get('doc'), 'plan')
    assert.equal(copied.searchParams.get('token'), null, `the copied link hands out Ada's token: ${copied}`)
    assert.ok(!copied.href.includes(adaToken))
    assertNoProblems(pages)
  } finally {
    await closeAll(pages)
  }
})

test('Copy link with the admin key mints a share link with the permission, lifetime and name chosen', TEST, async (t) => {
  const weft = await freshWeft(t)
  await seed(weft, 'plan', 'Shared by the owner.')
  // The owner opens the page with the server's key in place of a token.
  const owner = await openDemo(browser, pageUrl(weft, 'plan', KEY), GRACE)
  const pages = [owner]
  try {
    const read = await clipboard(owner, weft)
    await owner.click('#copy-link')
    const dialog = owner.locator('#share-dialog[open]')
    await dialog.waitFor({ timeout: DEADLINE })
    await owner.check('#share-dialog input[name="share-perm"][value="read"]')
    await owner.selectOption('#share-ttl', '3600')
    await owner.fill('#share-name', 'Linus')
    await owner.click('#share-create')
    await owner.locator('#share-result').waitFor({ timeout: DEADLINE })
    const minted = Math.floor(Date.now() / 1000)

    const link = new URL(await owner.inputValue('#share-link'))
    assert.equal(await read(), link.href, 'the new link is copied')
    assert.equal(link.searchParams.get('doc'), 'plan')
    const token = link.searchParams.get('token')
    assert.ok(token && token !== KEY, `the link must hold a new token, not the key: ${link}`)
    const claims = tokenClaims(token)
    assert.equal(claims.doc, 'plan')
    assert.equal(claims.perm, 'read')
    assert.equal(claims.name, 'Linus')
    assert.ok(Math.abs(claims.exp - (minted + 3600)) <= 120, `expires at ${claims.exp}, not an hour after ${minted}`)
    assert.match(await owner.textContent('#share-note'), /Whoever opens it can read “plan” as Linus until/)
    assert.match(await owner.textContent('#share-note'), new RegExp(claims.jti))

    // The link works as chosen: read-only, with the name given.
    const linus = await openDemo(browser, link.href, LINUS_ELSEWHERE)
    pages.push(linus)
    await waitForText(linus, 'Shared by the owner.')
    await linus.locator('#readonly-badge').waitFor({ timeout: DEADLINE })
    assert.equal(await linus.inputValue('#my-name'), 'Linus')
    await owner.locator('#people .person-name', { hasText: 'Linus' }).waitFor({ timeout: DEADLINE })

    // Changing a choice asks for a new link; the plain link has no token.
    await owner.check('#share-dialog input[name="share-perm"][value="write"]')
    assert.equal(await owner.locator('#share-result').isVisible(), false)
    await owner.click('#share-plain')
    await owner.locator('#share-dialog').waitFor({ state: 'hidden', timeout: DEADLINE })
    const plain = new URL(await read())
    assert.equal(plain.searchParams.get('doc'), 'plan')
    assert.equal(plain.searchParams.get('token'), null)
    assertNoProblems(pages)
  } finally {
    await closeAll(pages)
  }
})

test('a page opened before the server switched to token mode says so, instead of promising to sync', TEST, async (t) => {
  // Open mode first; restarted (on a new port, the page keeps its address
  // through the harness's relay) with a key.
  const server = await startWeft({ restartable: true })
  t.after(() => server.cleanup())
  const page = await openDemo(browser, pageUrl(server, 'switch'), ADA)
  try {
    await typeAtEnd(page, 'Before the switch.')
    await waitFor('the edit stored', async () =>
      (await server.api('GET', '/api/docs/switch')).text.includes('Before the switch.'), DEADLINE)
    await server.kill()
    await waitForState(page, 'offline')
    await typeAtEnd(page, ' Typed while it was down.')
    await page.locator('#status-text', { hasText: 'unsent' }).waitFor({ timeout: DEADLINE })

    server.env = { WEFT_AUTH_KEY: KEY }
    await server.restart()
    assert.equal((await server.api('GET', '/api/info')).json.auth, 'token')

    await waitForState(page, 'closed', 30_000)
    assert.equal(await page.textContent('#status-text'), 'No access')
    const notice = page.locator('#notice')
    await notice.waitFor({ timeout: DEADLINE })
    const text = await notice.textContent()
    assert.match(text, /This server now asks for an access link, and this page has none/)
    assert.match(text, /did not reach it/)
    assert.doesNotMatch(text, /will sync/)
    assert.doesNotMatch(await page.getAttribute('#status', 'title'), /will sync|Reconnecting/)
    // The text stays to copy; the editor no longer takes edits it cannot send.
    assert.equal(await editor(page).getAttribute('contenteditable'), 'false')
    assert.ok((await editorText(page)).includes('Typed while it was down.'))

    // And it stopped trying: a page with a token meanwhile connects and syncs.
    const attempts = page.sockets.length
    const fresh = await openDemo(browser, pageUrl(server, 'switch', await server.token({ doc: 'switch', perm: 'read' })), GRACE)
    await waitForText(fresh, 'Before the switch.')
    await closeAll([fresh])
    assert.equal(page.sockets.length, attempts)
    assertNoProblems([page], [
      /WebSocket connection to 'ws:\/\/127\.0\.0\.1:\d+\/switch' failed/,
      /Failed to load resource: net::ERR_(CONNECTION_(REFUSED|RESET|CLOSED)|EMPTY_RESPONSE|SOCKET_NOT_CONNECTED|INCOMPLETE_CHUNKED_ENCODING)/,
      refusedRequest(401)
    ])
  } finally {
    await closeAll([page])
  }
})

test('a token the server refuses: the page gives its reason and connects to nothing', TEST, async (t) => {
  const weft = await freshWeft(t)
  const expired = await weft.token({ doc: 'team-a/*', perm: 'write', ttl: '1s' })
  await waitFor('the token to expire', () => Date.now() > (tokenClaims(expired).exp + 1) * 1000, 5000)
  const [head, , signature] = expired.split('.')
  const forgedPayload = Buffer.from(JSON.stringify({ ...tokenClaims(expired), exp: 4102444800 })).toString('base64url')
  const cases = [
    [expired, 'token expired'],
    [`${head}.${forgedPayload}.${signature}`, 'token signature does not match'],
    ['not-a-token', 'malformed token']
  ]
  for (const [token, reason] of cases) {
    const page = await openDemo(browser, pageUrl(weft, 'team-a/plan', token), { ...ADA, synced: false })
    try {
      await page.locator('#gate').waitFor({ timeout: DEADLINE })
      assert.equal(await page.textContent('#gate-title'), 'The access token in this link was refused')
      await page.locator('#gate .gate-reason', { hasText: reason }).waitFor({ timeout: DEADLINE })
      assert.match(await page.textContent('#gate'), /Ask whoever gave you the link for a new one/)
      assert.equal(await page.locator('#notice').isVisible(), false, 'the gate says it all')
      await page.waitForLoadState('networkidle')
      assert.deepEqual(page.sockets, [])
      assertNoProblems([page], [refusedRequest(401)])
      assert.equal(page.problems.length, 1, page.problems.join('\n'))
    } finally {
      await closeAll([page])
    }
  }
})

test('a read-only token: a badge, a status that says what a reader gets, an editor that cannot change the document, versions to preview only', TEST, async (t) => {
  const weft = await freshWeft(t)
  const writeToken = await weft.token({ doc: 'handbook', perm: 'write' })
  const readToken = await weft.token({ doc: 'handbook', perm: 'read' })
  const writer = await openDemo(browser, pageUrl(weft, 'handbook', writeToken), GRACE)
  const pages = [writer]
  try {
    await typeAtEnd(writer, 'Rules of the house.')
    await writer.fill('#version-label', 'First rules')
    await writer.click('#save-version')
    await writer.locator('#version-list .version-label', { hasText: 'First rules' }).waitFor({ timeout: DEADLINE })

    const reader = await openDemo(browser, pageUrl(weft, 'handbook', readToken), ADA)
    pages.push(reader)
    await waitForText(reader, 'Rules of the house.')
    const badge = reader.locator('#readonly-badge')
    await badge.waitFor({ timeout: DEADLINE })
    assert.equal((await badge.textContent()).trim(), 'Read-only')
    assert.equal(await editor(reader).getAttribute('contenteditable'), 'false')
    assert.equal(await reader.locator('#toolbar').isVisible(), false)
    // The status tooltip tells a reader what is true for them.
    await waitForState(reader, 'synced')
    const tooltip = await reader.getAttribute('#status', 'title')
    assert.doesNotMatch(tooltip, /your changes/i)
    assert.match(tooltip, /everyone’s changes reach you/)
    assert.match(tooltip, /lets you read this document, not change it/)
    assert.match(await writer.getAttribute('#status', 'title'), /your changes reach everyone as you type/)

    // Typing changes nothing: not the page, not the server, not the writer.
    const before = JSON.stringify(await content(weft, 'handbook'))
    await editor(reader).click()
    await reader.keyboard.press('Control+End')
    await reader.keyboard.type('EVIL')
    await reader.keyboard.press('Enter')
    await reader.keyboard.press('Control+a')
    await reader.keyboard.press('Backspace')
    assert.equal(await editorText(reader), 'Rules of the house.')
    // A new name goes out on the reader's socket after anything the typing
    // could have sent: once the writer sees it, the server has had it all.
    await reader.fill('#my-name', 'Ada reading')
    await writer.locator('#people .person-name', { hasText: 'Ada reading' }).waitFor({ timeout: DEADLINE })
    assert.equal(JSON.stringify(await content(weft, 'handbook')), before)
    assert.equal(await editorText(writer), 'Rules of the house.')
    // The writer's edits still reach the reader.
    await typeAtEnd(writer, ' Be kind.')
    await waitForText(reader, 'Rules of the house. Be kind.')

    // Versions: listed and previewed; naming, restoring and deleting are not offered.
    await reader.locator('#version-list .version-label', { hasText: 'First rules' }).waitFor({ timeout: DEADLINE })
    assert.equal(await reader.locator('#save-form').isVisible(), false)
    await reader.locator('#version-list .version-open', { hasText: 'First rules' }).click()
    const preview = reader.locator('#preview .ProseMirror')
    await preview.waitFor({ timeout: DEADLINE })
    assert.equal(await preview.textContent(), 'Rules of the house.')
    assert.equal(await reader.locator('#preview-restore').isVisible(), false)
    await reader.locator('#version-list .version').first().hover()
    assert.equal(await reader.locator('#version-list .version-delete').first().isVisible(), false)
    await reader.click('#preview-close')
    await editor(reader).waitFor({ state: 'visible', timeout: DEADLINE })

    assertNoProblems(pages)
  } finally {
    await closeAll(pages)
  }
})

test('a token revoked while its page is open: the page says access was revoked and stops', TEST, async (t) => {
  const weft = await freshWeft(t)
  const token = await weft.token({ doc: 'team-a/plan', perm: 'write' })
  const page = await openDemo(browser, pageUrl(weft, 'team-a/plan', token), ADA)
  try {
    await typeAtEnd(page, ' Before the revocation.')
    const revoked = await weft.api('POST', '/api/tokens/revoke', { token: KEY, body: { token_id: tokenClaims(token).jti } })
    assert.equal(revoked.status, 200, revoked.text)

    await waitForState(page, 'closed')
    assert.equal(await page.textContent('#status-text'), 'Access revoked')
    await page.locator('#notice', { hasText: 'Your access to this document was revoked' }).waitFor({ timeout: DEADLINE })
    assert.equal(await editor(page).getAttribute('contenteditable'), 'false')
    assert.ok((await editorText(page)).includes('Before the revocation.'), 'the text stays readable')

    // The server refuses the token from now on; the page does not ask again.
    const refused = await weft.api('GET', '/api/docs', { token })
    assert.equal(refused.status, 401)
    assert.equal(refused.json.error, 'token has been revoked')
    assert.equal(page.sockets.length, 1)
    assertNoProblems([page])
  } finally {
    await closeAll([page])
  }
})

test('a token that expires on an open page: the page says access expired', TEST, async (t) => {
  const weft = await freshWeft(t)
  await withExpiringToken(async (ttl, ready) => {
    const token = await weft.token({ doc: 'team-a/plan', perm: 'write', ttl })
    const page = await openDemo(browser, pageUrl(weft, 'team-a/plan', token), { ...ADA, synced: false })
    try {
      // The state first: open and synced while the token is good.
      const synced = await waitForState(page, 'synced', Math.max(tokenClaims(token).exp * 1000 - 1000 - Date.now(), 1))
        .then(() => true, () => false)
      if (!synced || !ready(token)) return TOO_SLOW
      // Then the expiry, however long the rest of the lifetime is.
      await waitForState(page, 'closed', tokenClaims(token).exp * 1000 - Date.now() + DEADLINE)
      assert.equal(await page.textContent('#status-text'), 'Access expired')
      await page.locator('#notice', { hasText: 'Your access to this document expired' }).waitFor({ timeout: DEADLINE })
      assert.equal(await editor(page).getAttribute('contenteditable'), 'false')
      assert.equal(page.sockets.length, 1)
      assertNoProblems([page])
    } finally {
      await closeAll([page])
    }
  })
})

test('a token that expired while the server was down: back, the page learns why its socket is refused and stops', TEST, async (t) => {
  await withExpiringToken(async (ttl, ready) => {
    // Restarted on a new port the OS picks; the page keeps its address
    // through the harness's relay.
    const server = await startWeft({ env: { WEFT_AUTH_KEY: KEY }, restartable: true })
    const token = await server.token({ doc: 'outage', perm: 'write', ttl })
    const page = await openDemo(browser, pageUrl(server, 'outage', token), { ...ADA, synced: false })
    try {
      // The state first, while the token is good: open, an edit stored,
      // the server down.
      const left = () => Math.max(tokenClaims(token).exp * 1000 - 1000 - Date.now(), 1)
      if (!await waitForState(page, 'synced', left()).then(() => true, () => false)) return TOO_SLOW
      await typeAtEnd(page, 'Before the outage.')
      const stored = await waitFor('the edit stored', async () =>
        (await server.api('GET', '/api/docs/outage', { token: KEY })).text.includes('Before the outage.'), left())
        .then(() => true, () => false)
      if (!stored || !ready(token)) return TOO_SLOW
      await server.kill()
      if (!ready(token)) return TOO_SLOW
      await waitForState(page, 'offline')
      // Then the expiry, while it is down.
      await waitFor('the token to expire', () => Date.now() > (tokenClaims(token).exp + 1) * 1000, 70_000)
      await server.restart()

      await waitForState(page, 'closed', 30_000)
      assert.equal(await page.textContent('#status-text'), 'No access')
      await page.locator('#notice', { hasText: 'the server refused this link’s token (token expired)' }).waitFor({ timeout: DEADLINE })
      assert.equal(await editor(page).getAttribute('contenteditable'), 'false')

      // It stopped: a fresh page with a fresh token connects and syncs, and
      // meanwhile the refused one made no new attempt.
      const attempts = page.sockets.length
      const fresh = await openDemo(browser, pageUrl(server, 'outage', await server.token({ doc: 'outage', perm: 'read' })), GRACE)
      await waitForText(fresh, 'Before the outage.')
      await closeAll([fresh])
      assert.equal(page.sockets.length, attempts)
      // While the server was down Chromium reports the failed attempts itself
      // (through the harness's relay: refused, reset, or never connected);
      // then the refused socket and the one request that learnt why.
      assertNoProblems([page], [
        /WebSocket connection to 'ws:\/\/127\.0\.0\.1:\d+\/outage\?token=[^']*' failed/,
        /Failed to load resource: net::ERR_(CONNECTION_(REFUSED|RESET|CLOSED)|EMPTY_RESPONSE|SOCKET_NOT_CONNECTED|INCOMPLETE_CHUNKED_ENCODING)/,
        refusedRequest(401)
      ])
    } finally {
      await closeAll([page])
      await server.cleanup()
    }
  })
})
