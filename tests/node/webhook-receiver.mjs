// A webhook receiver for tests/webhooks.rs: verifies every request with the
// `standardwebhooks` npm package (an implementation independent of weft's)
// and prints one JSON line per request on stdout.
//
// Control (not webhooks): POST /_config {path, secret?, fail?, status?,
// hang?, redirect?} sets how requests to `path` are answered:
//   secret    the whsec_ secret to verify with (else "verified": null)
//   fail      answer 500 to the first `fail` attempts of each webhook-id
//   fail_status  the status of those answers instead of 500 (429, 503, ...)
//   retry_after  with them, a `Retry-After` header: this value as given, or
//             {"in": N}, an HTTP-date N seconds from the answer
//   status    answer this status always (after `fail`)
//   hang      never answer (the socket stays open)
//   redirect  answer 302 to `redirect` (a path on this receiver)
// Each line has `received_ms` (this process's clock) for timing checks.
// The first line printed is {"listening": PORT}.
import http from 'node:http';
import { Webhook } from 'standardwebhooks';

const configs = new Map();
const attempts = new Map();
const hanging = [];

function print(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const body = Buffer.concat(chunks).toString('utf8');
    const path = req.url;
    if (path === '/_config') {
      const c = JSON.parse(body);
      configs.set(c.path, c);
      res.writeHead(200).end('{}');
      return;
    }
    const c = configs.get(path) || {};
    const id = req.headers['webhook-id'];
    const n = (attempts.get(path + ' ' + id) || 0) + 1;
    attempts.set(path + ' ' + id, n);
    let verified = null;
    let error = null;
    if (c.secret) {
      try {
        new Webhook(c.secret).verify(body, {
          'webhook-id': req.headers['webhook-id'],
          'webhook-timestamp': req.headers['webhook-timestamp'],
          'webhook-signature': req.headers['webhook-signature'],
        });
        verified = true;
      } catch (e) {
        verified = false;
        error = String(e && e.message || e);
      }
    }
    let status = 200;
    if (c.hang) status = 0;
    else if (c.redirect) status = 302;
    else if (c.fail && n <= c.fail) status = c.fail_status || 500;
    else if (c.status) status = c.status;
    let type = null;
    try { type = JSON.parse(body).type; } catch { /* not JSON */ }
    print({
      path, id, attempt: n, status, verified, error, type, received_ms: Date.now(),
      timestamp: req.headers['webhook-timestamp'],
      content_type: req.headers['content-type'],
      user_agent: req.headers['user-agent'],
      body,
    });
    if (status === 0) {
      hanging.push(res);
      return;
    }
    if (status === 302) {
      res.writeHead(302, { location: c.redirect }).end();
      return;
    }
    const headers = { 'content-type': 'text/plain' };
    if (c.retry_after !== undefined && c.fail && n <= c.fail) {
      headers['retry-after'] = typeof c.retry_after === 'object'
        ? new Date(Date.now() + c.retry_after.in * 1000).toUTCString()
        : String(c.retry_after);
    }
    res.writeHead(status, headers).end(status === 200 ? 'ok' : 'no');
  });
});

server.listen(0, '127.0.0.1', () => print({ listening: server.address().port }));
// The test ends this process by closing its stdin (or killing it).
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
