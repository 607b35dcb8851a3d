// The rich-text editor: ProseMirror bound to a Y.XmlFragment by y-prosemirror,
// with remote cursors from awareness, a toolbar, Markdown-like input rules and
// collaborative undo (only your own changes are undone).

import { Schema } from 'prosemirror-model'
import { EditorState, Plugin } from 'prosemirror-state'
import { EditorView, Decoration, DecorationSet } from 'prosemirror-view'
import { schema as basicSchema } from 'prosemirror-schema-basic'
import { addListNodes, wrapInList, splitListItem, liftListItem, sinkListItem } from 'prosemirror-schema-list'
import { keymap } from 'prosemirror-keymap'
import { baseKeymap, toggleMark, setBlockType, wrapIn, lift, chainCommands, exitCode } from 'prosemirror-commands'
import { dropCursor } from 'prosemirror-dropcursor'
import { gapCursor } from 'prosemirror-gapcursor'
import {
  inputRules, wrappingInputRule, textblockTypeInputRule, smartQuotes, emDash, ellipsis
} from 'prosemirror-inputrules'
import {
  ySyncPlugin, yCursorPlugin, yUndoPlugin, undoCommand, redoCommand,
  yXmlFragmentToProseMirrorRootNode
} from 'y-prosemirror'
import { h, icon } from './ui.js'

/** The Y.XmlFragment the editor edits, under the name y-prosemirror uses by default. */
export const FRAGMENT = 'prosemirror'

export const schema = new Schema({
  nodes: addListNodes(basicSchema.spec.nodes.remove('image'), 'paragraph block*', 'block'),
  marks: basicSchema.spec.marks
})

const { nodes, marks } = schema

const buildInputRules = () => inputRules({
  rules: [
    ...smartQuotes, ellipsis, emDash,
    wrappingInputRule(/^\s*>\s$/, nodes.blockquote),
    wrappingInputRule(/^\s*([-+*])\s$/, nodes.bullet_list),
    wrappingInputRule(/^(\d+)\.\s$/, nodes.ordered_list, (m) => ({ order: +m[1] }),
      (m, node) => node.childCount + node.attrs.order === +m[1]),
    textblockTypeInputRule(/^```$/, nodes.code_block),
    textblockTypeInputRule(/^(#{1,3})\s$/, nodes.heading, (m) => ({ level: m[1].length }))
  ]
})

const hardBreak = chainCommands(exitCode, (state, dispatch) => {
  dispatch?.(state.tr.replaceSelectionWith(nodes.hard_break.create()).scrollIntoView())
  return true
})

const buildKeymap = () => keymap({
  'Mod-z': undoCommand,
  'Mod-y': redoCommand,
  'Shift-Mod-z': redoCommand,
  'Mod-b': toggleMark(marks.strong),
  'Mod-i': toggleMark(marks.em),
  'Mod-`': toggleMark(marks.code),
  'Mod-Enter': hardBreak,
  'Shift-Enter': hardBreak,
  Enter: splitListItem(nodes.list_item),
  Tab: sinkListItem(nodes.list_item),
  'Shift-Tab': liftListItem(nodes.list_item),
  'Mod-[': liftListItem(nodes.list_item),
  'Mod-]': sinkListItem(nodes.list_item),
  'Shift-Ctrl-0': setBlockType(nodes.paragraph),
  'Shift-Ctrl-1': setBlockType(nodes.heading, { level: 1 }),
  'Shift-Ctrl-2': setBlockType(nodes.heading, { level: 2 }),
  'Shift-Ctrl-3': setBlockType(nodes.heading, { level: 3 }),
  'Shift-Ctrl-8': wrapInList(nodes.bullet_list),
  'Shift-Ctrl-9': wrapInList(nodes.ordered_list),
  'Ctrl->': wrapIn(nodes.blockquote)
})

/** Shows a hint in an empty document: `text()` when it is drawn. */
const placeholder = (text) => new Plugin({
  props: {
    decorations (state) {
      const doc = state.doc
      const empty = doc.childCount === 1 && doc.firstChild.isTextblock && doc.firstChild.content.size === 0
      if (!empty) return null
      return DecorationSet.create(doc, [
        Decoration.node(0, doc.firstChild.nodeSize, { class: 'is-empty', 'data-placeholder': text() })
      ])
    }
  }
})

/**
 * Remote carets: a thin bar in the user's colour with their name above it.
 *
 * y-prosemirror keys each caret widget by client ID, so ProseMirror keeps the
 * same DOM node when that user renames themselves or changes colour; the
 * carets are therefore kept here and updated from awareness directly.
 * @param {import('y-protocols/awareness').Awareness} awareness
 */
const remoteCarets = (awareness) => {
  /** @type {Map<number, HTMLElement>} */
  const carets = new Map()
  const paint = (caret, user) => {
    caret.style.setProperty('--user-color', user.color)
    caret.firstElementChild.textContent = user.name
  }
  awareness.on('change', () => {
    const states = awareness.getStates()
    for (const [clientId, caret] of carets) {
      const user = states.get(clientId)?.user
      if (user == null) carets.delete(clientId)
      else paint(caret, user)
    }
  })
  return (user, clientId) => {
    const caret = document.createElement('span')
    caret.className = 'remote-caret'
    const label = document.createElement('span')
    label.className = 'remote-caret-label'
    caret.append(label)
    caret.prepend('\u2060')
    caret.append('\u2060')
    paint(caret, user)
    carets.set(clientId, caret)
    return caret
  }
}

const selectionBuilder = (user) => ({
  class: 'remote-selection',
  style: `background-color: ${user.color}33`
})

/** Only peers that say who they are get a caret. */
const awarenessStateFilter = (myId, clientId, state) => myId !== clientId && state?.user != null

/** Calls back after every state change (to refresh the toolbar). */
const onUpdate = (callback) => new Plugin({
  view: (view) => {
    callback(view)
    return { update: (view) => callback(view) }
  }
})

/**
 * The live editor. `setEditable(false)` makes it read-only (a read-only
 * link, or access that ended); remote changes keep showing.
 * @param {HTMLElement} mount
 * @param {import('yjs').XmlFragment} fragment
 * @param {import('y-protocols/awareness').Awareness} awareness
 * @param {(view: EditorView) => void} onStateChange
 */
export const createEditor = (mount, fragment, awareness, onStateChange = () => {}) => {
  let editable = true
  const state = EditorState.create({
    schema,
    plugins: [
      ySyncPlugin(fragment),
      yCursorPlugin(awareness, { cursorBuilder: remoteCarets(awareness), selectionBuilder, awarenessStateFilter }),
      yUndoPlugin(),
      buildInputRules(),
      buildKeymap(),
      keymap(baseKeymap),
      dropCursor({ color: 'var(--accent)', width: 2 }),
      gapCursor(),
      placeholder(() => editable ? 'Start writing. Open this page in a second tab to edit together.' : 'This document is empty.'),
      onUpdate(onStateChange)
    ]
  })
  const view = new EditorView(mount, {
    state,
    editable: () => editable,
    attributes: () => ({
      'aria-label': 'Document text',
      'aria-multiline': 'true',
      'aria-readonly': String(!editable),
      role: 'textbox',
      spellcheck: 'true'
    })
  })
  const setEditable = (on) => {
    if (on === editable) return
    editable = on
    if (!on) view.dom.blur()
    view.setProps({}) // redraws the placeholder and attributes
  }
  return { view, setEditable }
}

/**
 * A read-only view of a fragment's content (a version being previewed).
 * @param {HTMLElement} mount
 * @param {import('yjs').XmlFragment} fragment
 */
export const createPreview = (mount, fragment) => {
  const doc = yXmlFragmentToProseMirrorRootNode(fragment, schema)
  return new EditorView(mount, {
    state: EditorState.create({ schema, doc }),
    editable: () => false,
    attributes: { 'aria-label': 'Version preview (read-only)', 'aria-readonly': 'true' }
  })
}

// ---------------------------------------------------------------- toolbar

const isMarkActive = (state, type) => {
  const { from, $from, to, empty } = state.selection
  if (empty) return !!type.isInSet(state.storedMarks || $from.marks())
  return state.doc.rangeHasMark(from, to, type)
}

const isBlockActive = (state, type, attrs = {}) => {
  const { $from, to } = state.selection
  if (to > $from.end()) return false
  const parent = $from.parent
  return parent.type === type && Object.entries(attrs).every(([k, v]) => parent.attrs[k] === v)
}

const isWrappedIn = (state, type) => {
  const { $from } = state.selection
  for (let d = $from.depth; d > 0; d--) {
    if ($from.node(d).type === type) return true
  }
  return false
}

/** Toggles a list: lifts out of it when already inside. */
const toggleList = (type) => (state, dispatch, view) => {
  if (isWrappedIn(state, type)) return liftListItem(nodes.list_item)(state, dispatch, view)
  return wrapInList(type)(state, dispatch, view)
}

const toggleBlockquote = (state, dispatch, view) =>
  isWrappedIn(state, nodes.blockquote) ? lift(state, dispatch, view) : wrapIn(nodes.blockquote)(state, dispatch, view)

const toggleBlock = (type, attrs) => (state, dispatch, view) =>
  isBlockActive(state, type, attrs)
    ? setBlockType(nodes.paragraph)(state, dispatch, view)
    : setBlockType(type, attrs)(state, dispatch, view)

const mac = typeof navigator !== 'undefined' && /Mac|iP(hone|[oa]d)/.test(navigator.platform)
const mod = mac ? '⌘' : 'Ctrl+'

const ICONS = {
  bold: ['M6 4h5a3 3 0 0 1 0 6H6zM6 10h6a3 3 0 0 1 0 6H6z'],
  italic: ['M12 4H8.5M11.5 16H8M11 4l-2 12'],
  code: ['M7 6l-4 4 4 4M13 6l4 4-4 4'],
  bullet: ['M8 5.5h9M8 10h9M8 14.5h9', 'M4 5.5h.01M4 10h.01M4 14.5h.01'],
  ordered: ['M8.5 5.5H17M8.5 10H17M8.5 14.5H17', 'M3.5 4.5l1-.5v3.5M3.5 12.5c.3-.6 1.8-.8 1.8.2 0 .8-1.8 1.3-1.8 2.3h2'],
  quote: ['M5 6.5h3.5v4H5zM5 10.5c0 2 .8 3 2.5 3.5M11.5 6.5H15v4h-3.5zM11.5 10.5c0 2 .8 3 2.5 3.5'],
  codeBlock: ['M3.5 4.5h13v11h-13z', 'M8 8.5l-2 1.5 2 1.5M12 8.5l2 1.5-2 1.5'],
  undo: ['M7.5 5L4 8.5 7.5 12', 'M4.5 8.5H12a4 4 0 0 1 0 8H9'],
  redo: ['M12.5 5L16 8.5 12.5 12', 'M15.5 8.5H8a4 4 0 0 0 0 8h3']
}

/**
 * Builds the formatting toolbar for a view and keeps its buttons' states
 * (active, disabled) in step with the selection.
 * @param {HTMLElement} container
 * @param {EditorView} view
 */
export const mountToolbar = (container, view) => {
  /** @type {{ el: HTMLElement, command: any, active?: (s: any) => boolean }[]} */
  const items = []
  const button = (label, shortcut, iconPaths, command, active) => {
    const el = h('button', {
      type: 'button',
      class: 'tool',
      title: shortcut ? `${label} (${shortcut})` : label,
      'aria-label': label,
      'aria-pressed': active ? 'false' : null,
      onmousedown: (e) => e.preventDefault(), // keep the editor's selection
      onclick: () => {
        command(view.state, view.dispatch, view)
        view.focus()
      }
    }, typeof iconPaths === 'string' ? h('span', { class: 'tool-text' }, iconPaths) : icon(...iconPaths))
    items.push({ el, command, active })
    return el
  }
  const sep = () => h('span', { class: 'tool-sep', 'aria-hidden': 'true' })

  const blockSelect = h('select', {
    class: 'block-select',
    'aria-label': 'Text style',
    onchange: (e) => {
      const value = e.target.value
      const command = value === 'p' ? setBlockType(nodes.paragraph) : setBlockType(nodes.heading, { level: Number(value.slice(1)) })
      command(view.state, view.dispatch, view)
      view.focus()
    }
  },
  h('option', { value: 'p' }, 'Text'),
  h('option', { value: 'h1' }, 'Heading 1'),
  h('option', { value: 'h2' }, 'Heading 2'),
  h('option', { value: 'h3' }, 'Heading 3'),
  h('option', { value: 'other', disabled: true, hidden: true }, '—'))

  container.replaceChildren(
    blockSelect,
    sep(),
    button('Bold', `${mod}B`, ICONS.bold, toggleMark(marks.strong), (s) => isMarkActive(s, marks.strong)),
    button('Italic', `${mod}I`, ICONS.italic, toggleMark(marks.em), (s) => isMarkActive(s, marks.em)),
    button('Code', `${mod}\``, ICONS.code, toggleMark(marks.code), (s) => isMarkActive(s, marks.code)),
    sep(),
    button('Bulleted list', null, ICONS.bullet, toggleList(nodes.bullet_list), (s) => isWrappedIn(s, nodes.bullet_list)),
    button('Numbered list', null, ICONS.ordered, toggleList(nodes.ordered_list), (s) => isWrappedIn(s, nodes.ordered_list)),
    button('Quote', null, ICONS.quote, toggleBlockquote, (s) => isWrappedIn(s, nodes.blockquote)),
    button('Code block', null, ICONS.codeBlock, toggleBlock(nodes.code_block), (s) => isBlockActive(s, nodes.code_block)),
    h('span', { class: 'tool-spacer' }),
    button('Undo', `${mod}Z`, ICONS.undo, undoCommand),
    button('Redo', mac ? '⇧⌘Z' : 'Ctrl+Y', ICONS.redo, redoCommand)
  )

  const update = () => {
    const state = view.state
    for (const { el, command, active } of items) {
      el.disabled = !command(state, undefined, view)
      if (active) {
        const on = active(state)
        el.classList.toggle('active', on)
        el.setAttribute('aria-pressed', String(on))
      }
    }
    const parent = state.selection.$from.parent
    blockSelect.value = parent.type === nodes.paragraph
      ? 'p'
      : parent.type === nodes.heading ? `h${parent.attrs.level}` : 'other'
    blockSelect.disabled = blockSelect.value === 'other' && !setBlockType(nodes.paragraph)(state)
  }
  update()
  return { update }
}
