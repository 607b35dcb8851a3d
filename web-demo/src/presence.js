// Who you are (a name and a colour kept in localStorage) and who else is here
// (the awareness states of the document's other peers).

import { $, h, initials } from './ui.js'

const NAME_KEY = 'weft-demo:name'
const COLOR_KEY = 'weft-demo:color'
const MAX_NAME = 40

// Saturated enough for white text, distinct from one another.
export const COLORS = ['#e5484d', '#d6409f', '#8e4ec6', '#3e63dd', '#0090ff', '#12a594', '#30a46c', '#f76b15', '#a18072', '#e54666']

const ADJECTIVES = ['Quiet', 'Brave', 'Curious', 'Gentle', 'Lively', 'Patient', 'Swift', 'Sunny', 'Clever', 'Calm', 'Bold', 'Merry']
const ANIMALS = ['Heron', 'Otter', 'Fox', 'Lynx', 'Wren', 'Badger', 'Falcon', 'Hare', 'Seal', 'Ibex', 'Moth', 'Crane']

const pick = (list) => list[Math.floor(Math.random() * list.length)]

const storage = {
  get (key) {
    try { return localStorage.getItem(key) } catch { return null }
  },
  set (key, value) {
    try { localStorage.setItem(key, value) } catch {}
  }
}

const cleanName = (name) => name.replace(/\s+/g, ' ').trim().slice(0, MAX_NAME)

/** The local user, created on first visit and remembered. */
export const loadIdentity = () => {
  let name = cleanName(storage.get(NAME_KEY) ?? '')
  if (name === '') {
    name = `${pick(ADJECTIVES)} ${pick(ANIMALS)}`
    storage.set(NAME_KEY, name)
  }
  let color = storage.get(COLOR_KEY) ?? ''
  if (!/^#[0-9a-f]{6}$/i.test(color)) {
    color = pick(COLORS)
    storage.set(COLOR_KEY, color)
  }
  return { name, color }
}

/**
 * Publishes the local user in awareness, lets them rename themselves, and
 * renders everyone present (sidebar list and header avatars).
 *
 * `tokenName`: the name the page's access token gives its holder (its `name`
 * claim). The server's owner chose it, so it is the name others see, and the
 * field shows it without letting it be changed; it is not remembered as the
 * name for pages opened without it.
 * @param {import('y-websocket').WebsocketProvider} provider
 * @param {{ tokenName?: string | null }} [opts]
 */
export const mountPresence = (provider, { tokenName = null } = {}) => {
  const awareness = provider.awareness
  const me = loadIdentity()
  const fixedName = typeof tokenName === 'string' ? cleanName(tokenName) : ''
  if (fixedName !== '') me.name = fixedName
  awareness.setLocalStateField('user', me)

  // When the connection drops, y-websocket forgets the other people's states
  // but keeps their clocks. What the server says about them next (a restarted
  // server: their states at the clocks already seen) would be ignored as old
  // until their next renewal, up to 15 s later. Forget the clocks too.
  provider.on('status', ({ status }) => {
    if (status !== 'disconnected') return
    for (const id of [...awareness.meta.keys()]) {
      if (id !== awareness.clientID && !awareness.states.has(id)) awareness.meta.delete(id)
    }
  })

  const input = /** @type {HTMLInputElement} */ ($('my-name'))
  const swatch = $('my-swatch')
  input.value = me.name
  swatch.style.background = me.color
  if (fixedName !== '') {
    input.readOnly = true
    input.title = 'Your name comes from your access link.'
  }

  const rename = (raw, { persist }) => {
    if (fixedName !== '') return
    const name = cleanName(raw)
    if (name === '') return
    me.name = name
    awareness.setLocalStateField('user', { ...me })
    if (persist) storage.set(NAME_KEY, name)
  }
  input.addEventListener('input', () => rename(input.value, { persist: true }))
  input.addEventListener('change', () => { input.value = me.name })
  input.addEventListener('keydown', (e) => { if (e.key === 'Enter') input.blur() })
  swatch.title = 'Click to change your colour'
  swatch.addEventListener('click', (e) => {
    e.preventDefault()
    me.color = COLORS[(COLORS.indexOf(me.color) + 1) % COLORS.length]
    swatch.style.background = me.color
    storage.set(COLOR_KEY, me.color)
    awareness.setLocalStateField('user', { ...me })
  })

  const render = () => {
    /** @type {{ id: number, name: string, color: string, self: boolean }[]} */
    const people = []
    awareness.getStates().forEach((state, id) => {
      const user = state?.user
      if (!user || typeof user.name !== 'string') return
      const color = /^#[0-9a-f]{6}$/i.test(user.color) ? user.color : '#888888'
      people.push({ id, name: cleanName(user.name) || 'Anonymous', color, self: id === awareness.clientID })
    })
    people.sort((a, b) => (b.self - a.self) || a.name.localeCompare(b.name) || a.id - b.id)

    $('people').replaceChildren(...people.map((p) =>
      h('li', { class: 'person', dataset: { client: String(p.id) } },
        avatar(p, 'small'),
        h('span', { class: 'person-name' }, p.name),
        p.self ? h('span', { class: 'muted small' }, 'you') : null)))

    const shown = people.slice(0, 4)
    const avatars = shown.map((p) => h('li', null, avatar(p, 'large')))
    if (people.length > shown.length) {
      avatars.push(h('li', null, h('span', { class: 'avatar avatar-more', title: people.slice(4).map((p) => p.name).join(', ') }, `+${people.length - shown.length}`)))
    }
    $('avatars').replaceChildren(...avatars)
    $('avatars').setAttribute('aria-label', `${people.length} ${people.length === 1 ? 'person' : 'people'} here: ${people.map((p) => p.name).join(', ')}`)
  }
  awareness.on('change', render)
  render()
  return { me }
}

const avatar = (person, size) => {
  const el = h('span', {
    class: `avatar avatar-${size}`,
    title: person.self ? `${person.name} (you)` : person.name
  }, initials(person.name))
  el.style.background = person.color
  return el
}
