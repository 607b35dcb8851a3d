// Builds the web demo into dist/, which is committed and embedded in the weft
// binary (see build.rs at the repository root).
//
//   node build.mjs           rebuild dist/
//   node build.mjs --check   rebuild in memory and fail if dist/ differs
//
// The output is a pure function of src/ and the locked dependencies: exact
// versions, content-hashed file names, no timestamps, no absolute paths.

import { build } from 'esbuild'
import { createHash } from 'node:crypto'
import { readFileSync, readdirSync, mkdirSync, rmSync, writeFileSync, existsSync } from 'node:fs'
import { dirname, join, relative, sep } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = dirname(fileURLToPath(import.meta.url))
const distDir = join(root, 'dist')
const check = process.argv.includes('--check')

/** Content-hashed name: favicon.svg → assets/favicon-1a2b3c4d.svg */
const hashedName = (name, bytes) => {
  const hash = createHash('sha256').update(bytes).digest('hex').slice(0, 8)
  const dot = name.lastIndexOf('.')
  return `assets/${name.slice(0, dot)}-${hash}${name.slice(dot)}`
}

/** The license texts of every package that ends up in the bundle. */
const licenses = (metafile) => {
  const packages = new Set()
  for (const input of Object.keys(metafile.inputs)) {
    const m = /(?:^|\/)node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(input)
    if (m) packages.add(m[1])
  }
  const parts = ['Third-party software bundled in the weft web demo.\n']
  for (const name of [...packages].sort()) {
    const dir = join(root, 'node_modules', name)
    const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'))
    const file = readdirSync(dir).sort().find((f) => /^(licen[sc]e|copying)(\.|$)/i.test(f))
    const text = file ? readFileSync(join(dir, file), 'utf8').trim() : `License: ${pkg.license ?? 'unknown'}`
    parts.push(`${'='.repeat(72)}\n${name} ${pkg.version}\n${'='.repeat(72)}\n${text}\n`)
  }
  return parts.join('\n')
}

/** @returns {Promise<Map<string, Buffer>>} dist-relative path → contents */
const buildAll = async () => {
  const result = await build({
    absWorkingDir: root,
    entryPoints: { app: 'src/main.js' },
    bundle: true,
    format: 'esm',
    target: ['es2020'],
    minify: true,
    legalComments: 'none', // collected into the licenses file instead
    outdir: 'dist',
    entryNames: 'assets/[name]-[hash]',
    assetNames: 'assets/[name]-[hash]',
    metafile: true,
    write: false,
    logLevel: 'warning'
  })
  const files = new Map()
  let js
  let css
  for (const out of result.outputFiles) {
    const path = relative(distDir, out.path).split(sep).join('/')
    files.set(path, Buffer.from(out.contents))
    if (path.endsWith('.js')) js = path
    if (path.endsWith('.css')) css = path
  }
  if (!js || !css) throw new Error('esbuild produced no JavaScript or no CSS')

  const favicon = readFileSync(join(root, 'src/favicon.svg'))
  const faviconPath = hashedName('favicon.svg', favicon)
  files.set(faviconPath, favicon)

  const licenseText = Buffer.from(licenses(result.metafile))
  const licensePath = hashedName('licenses.txt', licenseText)
  files.set(licensePath, licenseText)

  const template = readFileSync(join(root, 'src/index.html'), 'utf8')
  const html = template
    .replace('%JS%', `/${js}`)
    .replace('%CSS%', `/${css}`)
    .replace('%FAVICON%', `/${faviconPath}`)
    .replace('%LICENSES%', `/${licensePath}`)
  if (/%[A-Z]+%/.test(html)) throw new Error('index.html has a placeholder build.mjs does not fill')
  files.set('index.html', Buffer.from(html))

  // The service worker, at a fixed address (a browser checks that address
  // for a new worker); weft serves it with `Service-Worker-Allowed: /`.
  const assets = [...files.keys()].filter((p) => p.startsWith('assets/')).sort().map((p) => `/${p}`)
  const version = createHash('sha256').update(html).update(assets.join('\n')).digest('hex').slice(0, 8)
  const sw = readFileSync(join(root, 'src/sw.js'), 'utf8')
    .replace('%VERSION%', version)
    .replace('%ASSETS%', JSON.stringify(assets))
  if (/%[A-Z]+%/.test(sw)) throw new Error('sw.js has a placeholder build.mjs does not fill')
  files.set('assets/sw.js', Buffer.from(sw))
  return files
}

const listDir = (dir, prefix = '') => {
  if (!existsSync(dir)) return []
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory()
      ? listDir(join(dir, entry.name), `${prefix}${entry.name}/`)
      : [`${prefix}${entry.name}`])
}

const files = await buildAll()

if (check) {
  const problems = []
  const present = new Set(listDir(distDir))
  for (const [path, bytes] of files) {
    if (!present.has(path)) problems.push(`missing from dist: ${path}`)
    else if (!readFileSync(join(distDir, path)).equals(bytes)) problems.push(`differs from a fresh build: dist/${path}`)
  }
  for (const path of present) {
    if (!files.has(path)) problems.push(`not produced by the build: dist/${path}`)
  }
  if (problems.length > 0) {
    console.error(`web-demo/dist is out of date:\n  ${problems.join('\n  ')}\nRun 'npm run build' in web-demo/ and commit dist/.`)
    process.exit(1)
  }
  console.log(`web-demo/dist matches a fresh build (${files.size} files).`)
} else {
  rmSync(distDir, { recursive: true, force: true })
  for (const [path, bytes] of [...files].sort(([a], [b]) => a.localeCompare(b))) {
    mkdirSync(dirname(join(distDir, path)), { recursive: true })
    writeFileSync(join(distDir, path), bytes)
    console.log(`dist/${path}  ${(bytes.length / 1024).toFixed(1)} KiB`)
  }
}
