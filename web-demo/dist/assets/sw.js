// The demo's service worker: it keeps the page itself (index.html and its
// hashed assets) so that a tab reloaded while the server cannot be reached
// still opens, and shows this browser's copy of the document (local.js).
// Nothing else goes through it: the API, the event feed and the WebSocket
// go to the server as before.
//
// build.mjs fills in the asset list; the list's hash names the cache, so a
// new weft binary (a new demo) brings a new worker, which drops the old
// cache once it takes over.

const CACHE = 'weft-demo-b770989c'
const ASSETS = ["/assets/app-2ER2TUKU.css","/assets/app-YAKXOVZE.js","/assets/favicon-063a9b12.svg","/assets/licenses-5c549889.txt"]

self.addEventListener('install', (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(['/', ...ASSETS])).then(() => self.skipWaiting()))
})

self.addEventListener('activate', (event) => {
  event.waitUntil(caches.keys()
    .then((keys) => Promise.all(keys.filter((k) => k.startsWith('weft-demo-') && k !== CACHE).map((k) => caches.delete(k))))
    .then(() => self.clients.claim()))
})

self.addEventListener('fetch', (event) => {
  const { request } = event
  if (request.method !== 'GET') return
  const url = new URL(request.url)
  if (url.origin !== self.location.origin) return
  if (request.mode === 'navigate' && url.pathname === '/') {
    // The server's page when it answers (a newer demo, its headers), the
    // kept one when it cannot be reached.
    event.respondWith(fetch(request).catch(() => caches.open(CACHE)
      .then((cache) => cache.match('/', { ignoreSearch: true }))
      .then((kept) => kept ?? Response.error())))
  } else if (ASSETS.includes(url.pathname)) {
    // Hashed names: a kept copy is the same file.
    event.respondWith(caches.open(CACHE)
      .then((cache) => cache.match(request))
      .then((kept) => kept ?? fetch(request)))
  }
})
