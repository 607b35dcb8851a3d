// Small DOM helpers. Everything user-supplied goes in through textContent,
// never innerHTML.

/** @returns {HTMLElement} */
export const $ = (id) => {
  const el = document.getElementById(id)
  if (el === null) throw new Error(`#${id} is missing from index.html`)
  return el
}

/**
 * Creates an element: h('li', { class: 'x', onclick }, 'text', child).
 * @param {string} tag
 * @param {Record<string, any> | null} [attrs]
 * @param {...(Node | string | null | undefined | false)} children
 */
export const h = (tag, attrs, ...children) => {
  const el = document.createElement(tag)
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value == null || value === false) continue
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value)
    } else if (key === 'dataset') {
      Object.assign(el.dataset, value)
    } else {
      el.setAttribute(key, value === true ? '' : String(value))
    }
  }
  for (const child of children) {
    if (child == null || child === false) continue
    el.append(child)
  }
  return el
}

const SVG_NS = 'http://www.w3.org/2000/svg'

/** A 20×20 stroked icon from one or more path strings. */
export const icon = (...paths) => {
  const svg = document.createElementNS(SVG_NS, 'svg')
  svg.setAttribute('viewBox', '0 0 20 20')
  svg.setAttribute('aria-hidden', 'true')
  for (const d of paths) {
    const path = document.createElementNS(SVG_NS, 'path')
    path.setAttribute('d', d)
    svg.append(path)
  }
  return svg
}

/** Shows a short message at the bottom of the window. */
export const toast = (message, { kind = 'info', timeout = 4000 } = {}) => {
  const el = h('div', { class: `toast toast-${kind}`, role: kind === 'error' ? 'alert' : 'status' }, message)
  $('toasts').append(el)
  setTimeout(() => {
    el.classList.add('leaving')
    setTimeout(() => el.remove(), 250)
  }, timeout)
}

/**
 * Asks for confirmation in a modal dialog. Resolves true on OK.
 * @param {{ title: string, body: string, ok: string, danger?: boolean }} opts
 */
export const confirmDialog = ({ title, body, ok, danger = false }) => {
  const dialog = /** @type {HTMLDialogElement} */ ($('confirm-dialog'))
  $('confirm-title').textContent = title
  $('confirm-body').textContent = body
  const okButton = $('confirm-ok')
  okButton.textContent = ok
  okButton.classList.toggle('danger', danger)
  dialog.returnValue = ''
  dialog.showModal()
  okButton.focus()
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true })
  })
}

const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' })
const timeFormat = new Intl.DateTimeFormat(undefined, { timeStyle: 'short' })

/** "just now", "5 min ago", "14:05", "3 Nov 2026, 14:05". */
export const relativeTime = (iso, now = Date.now()) => {
  const t = Date.parse(iso)
  if (Number.isNaN(t)) return ''
  const seconds = Math.round((now - t) / 1000)
  if (seconds < 45) return 'just now'
  if (seconds < 45 * 60) return `${Math.max(1, Math.round(seconds / 60))} min ago`
  const then = new Date(t)
  if (new Date(now).toDateString() === then.toDateString()) return `today, ${timeFormat.format(then)}`
  return dateFormat.format(then)
}

export const absoluteTime = (iso) => {
  const t = Date.parse(iso)
  return Number.isNaN(t) ? '' : dateFormat.format(new Date(t))
}

/** 1234 → "1.2 KB". */
export const formatSize = (bytes) => {
  if (typeof bytes !== 'number' || !Number.isFinite(bytes)) return ''
  if (bytes < 1000) return `${bytes} B`
  if (bytes < 1e6) return `${(bytes / 1e3).toFixed(1)} KB`
  return `${(bytes / 1e6).toFixed(1)} MB`
}

/** Two letters for an avatar: "Quiet Heron" → "QH", "ana" → "AN". */
export const initials = (name) => {
  const words = name.trim().split(/\s+/).filter(Boolean)
  if (words.length === 0) return '?'
  const chars = words.length === 1 ? Array.from(words[0]).slice(0, 2) : [Array.from(words[0])[0], Array.from(words[1])[0]]
  return chars.join('').toUpperCase()
}
