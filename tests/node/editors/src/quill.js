// Quill 2 bound to a Y.Text with y-quill; remote carets and selections are
// drawn by quill-cursors from awareness.
import 'quill/dist/quill.snow.css'
import Quill from 'quill'
import QuillCursors from 'quill-cursors'
import { QuillBinding } from 'y-quill'
import { connect, bound } from './common.js'

Quill.register('modules/cursors', QuillCursors)

const { ydoc, awareness } = connect()
const quill = new Quill(document.getElementById('editor'), {
  theme: 'snow',
  modules: { cursors: true, toolbar: false, history: { userOnly: true } }
})
window.weft.binding = new QuillBinding(ydoc.getText('quill'), quill, awareness)
window.weft.quill = quill
bound()
