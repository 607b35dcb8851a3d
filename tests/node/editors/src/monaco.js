// Monaco bound to a Y.Text with y-monaco. The core editor only (no
// languages): y-monaco imports editor.api.js (under its old path, which
// build.mjs maps to today's), and so does this page. Its
// web worker is bundled beside it (monaco.worker.js) and loaded as a module.
import * as monaco from 'monaco-editor/editor/editor.api.js'
import { MonacoBinding } from 'y-monaco'
import { connect, bound } from './common.js'

self.MonacoEnvironment = {
  getWorker: () => new Worker(new URL('./monaco.worker.js', import.meta.url), { type: 'module' })
}

const { ydoc, awareness } = connect()
const ytext = ydoc.getText('monaco')
const editor = monaco.editor.create(document.getElementById('editor'), {
  value: '',
  language: 'plaintext',
  automaticLayout: true,
  minimap: { enabled: false },
  quickSuggestions: false,
  wordBasedSuggestions: 'off'
})
window.weft.editor = editor
window.weft.binding = new MonacoBinding(ytext, editor.getModel(), new Set([editor]), awareness)

// y-monaco marks remote selections with classes per client; their colour is
// the page's to give, from each client's awareness `user`.
const style = document.createElement('style')
document.head.append(style)
const paint = () => {
  const rules = []
  for (const [id, state] of awareness.getStates()) {
    const color = state.user?.color
    if (!color || !/^#[0-9a-fA-F]{3,8}$/.test(color)) continue
    rules.push(`.yRemoteSelection-${id} { background-color: ${color}33 }`)
    rules.push(`.yRemoteSelectionHead-${id} { border-left: 2px solid ${color} }`)
  }
  style.textContent = rules.join('\n')
}
awareness.on('change', paint)
paint()
bound()
