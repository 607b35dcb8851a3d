// Builds the editor pages into dist/ (not committed: scripts/test.sh builds
// them after `npm ci`, before the browser tests). One page per binding:
// dist/<name>.html loads dist/<name>.js (and dist/<name>.css when the page
// has styles); Monaco's web worker is dist/monaco.worker.js.
//
//   node build.mjs

import { build } from 'esbuild'
import { readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = dirname(fileURLToPath(import.meta.url))
const dist = join(root, 'dist')
const pages = { codemirror: 'CodeMirror 6', quill: 'Quill', monaco: 'Monaco' }

rmSync(dist, { recursive: true, force: true })
await build({
  absWorkingDir: root,
  entryPoints: {
    ...Object.fromEntries(Object.keys(pages).map((name) => [name, `src/${name}.js`])),
    'monaco.worker': 'monaco-editor/editor/editor.worker.js'
  },
  // y-monaco 0.1.6 imports 'monaco-editor/esm/vs/editor/editor.api.js', a
  // path that monaco-editor 0.56 and later no longer export (their exports
  // map turns it into esm/vs/esm/vs/...): any bundler then fails to resolve
  // it. The same file is now 'monaco-editor/editor/editor.api.js'.
  alias: { 'monaco-editor/esm/vs/editor/editor.api.js': 'monaco-editor/editor/editor.api.js' },
  bundle: true,
  format: 'esm',
  target: ['es2022'],
  outdir: 'dist',
  loader: { '.ttf': 'file' },
  logLevel: 'warning'
})

const template = readFileSync(join(root, 'src/page.html'), 'utf8')
for (const [name, title] of Object.entries(pages)) {
  let html = template.replaceAll('%NAME%', name).replaceAll('%TITLE%', title)
  if (!existsSync(join(dist, `${name}.css`))) html = html.replace(/^<link rel="stylesheet".*\n/m, '')
  writeFileSync(join(dist, `${name}.html`), html)
}
console.log(`editor pages built in ${dist}: ${Object.keys(pages).map((n) => `${n}.html`).join(', ')}`)
