// CodeMirror 6 bound to a Y.Text with y-codemirror.next (yCollab: text,
// remote selections and carets from awareness, shared undo).
import { EditorView, keymap } from '@codemirror/view'
import { EditorState } from '@codemirror/state'
import { defaultKeymap } from '@codemirror/commands'
import { yCollab, yUndoManagerKeymap } from 'y-codemirror.next'
import { connect, bound } from './common.js'

const { ydoc, awareness } = connect()
const ytext = ydoc.getText('codemirror')
const view = new EditorView({
  state: EditorState.create({
    doc: ytext.toString(),
    extensions: [keymap.of([...yUndoManagerKeymap, ...defaultKeymap]), yCollab(ytext, awareness)]
  }),
  parent: document.getElementById('editor')
})
window.weft.view = view
bound()
