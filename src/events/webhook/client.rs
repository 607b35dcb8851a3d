//! POSTs to a receiver: resolve and check the address (`target`), connect
//! to that address, TLS for https (rustls, webpki roots), HTTP/1.1 through
//! hyper's client connection, all under one deadline per attempt.
//!
//! One connection per subscription is kept open between deliveries
//! (HTTP/1.1 keep-alive, [`Link`]): a new connection per event cost more
//! than the signing, the request and the cursor together (bench/FINDINGS.md,
//! "Webhook cost"). What keeps it safe:
//! - at most one kept connection per subscription (its delivery task owns
//!   the [`Link`]; deliveries to one subscription are sequential), dropped
//!   after [`KEEP_IDLE`] unused or [`KEEP_FOR`] in all, so a name is
//!   resolved again now and then;
//! - every connection made is checked against the address rule, as
//!   before; a kept one only ever goes to the address checked when it was
//!   made;
//! - no redirect is followed; the response body is read (and discarded)
//!   only to reuse the connection, at most [`DRAIN_BYTES`] and within the
//!   attempt's deadline, else the connection is dropped: the status is the
//!   answer, and a receiver cannot make weft hold its bytes;
//! - a kept connection that fails before an answer (the receiver closed it
//!   while it was idle, as servers do after their keep-alive timeout) is
//!   replaced by a new one within the same attempt and deadline. The
//!   request may then reach the receiver twice, which at-least-once
//!   delivery allows (receivers deduplicate by `webhook-id`).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::{timeout_at, Instant};
use tokio_rustls::TlsConnector;
use tracing::debug;

use super::policy::retry_after;
use super::target::WebhookUrl;

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver answered with this status.
    Status(u16),
    /// The receiver answered 429 or 503 and asked, with `Retry-After`, to
    /// be tried again no sooner than this (see `policy::retry_after`).
    Later(u16, Duration),
    /// No answer: the connection failed or the deadline passed.
    NoAnswer(String),
    /// weft refused to post (the address rule): final, never retried.
    Refused(String),
}

/// What every attempt shares: TLS settings and the address rule.
#[derive(Clone)]
pub struct Client {
    tls: TlsConnector,
    allow_private: bool,
    user_agent: String,
}

impl Client {
    pub fn new(allow_private: bool) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Self {
            tls: TlsConnector::from(Arc::new(config)),
            allow_private,
            user_agent: format!("weft/{}", env!("CARGO_PKG_VERSION")),
        }
    }

    pub fn allow_private(&self) -> bool {
        self.allow_private
    }

    /// POSTs `body` with `headers` (besides content-type, user-agent and
    /// host) to `url`, within `deadline` for everything up to the status,
    /// on the connection `link` keeps if it has one.
    pub async fn post(
        &self,
        link: &mut Link,
        url: &WebhookUrl,
        headers: &[(&str, String)],
        body: Bytes,
        deadline: Duration,
    ) -> Outcome {
        let until = Instant::now() + deadline;
        let late = || Outcome::NoAnswer(format!("no answer within {} ms", deadline.as_millis()));
        if let Some(mut kept) = link.take(Instant::now()) {
            let request = match self.request(url, headers, body.clone()) {
                Ok(r) => r,
                Err(outcome) => return outcome,
            };
            match timeout_at(until, exchange(&mut kept.sender, request)).await {
                Err(_) => return late(),
                Ok(Ok(response)) => return answered(link, kept, response, until).await,
                Ok(Err(e)) => {
                    debug!(error = %e, "a kept webhook connection failed before answering; opening a new one")
                }
            }
        }
        let mut kept = match timeout_at(until, self.connect(url)).await {
            Err(_) => return late(),
            Ok(Err(outcome)) => return outcome,
            Ok(Ok(kept)) => kept,
        };
        let request = match self.request(url, headers, body) {
            Ok(r) => r,
            Err(outcome) => return outcome,
        };
        match timeout_at(until, exchange(&mut kept.sender, request)).await {
            Err(_) => late(),
            Ok(Err(e)) => Outcome::NoAnswer(e),
            Ok(Ok(response)) => answered(link, kept, response, until).await,
        }
    }

    fn request(
        &self,
        url: &WebhookUrl,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, Outcome> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(url.path_and_query())
            .header(header::HOST, url.authority())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::USER_AGENT, &self.user_agent);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        request
            .body(Full::new(body))
            .map_err(|e| Outcome::Refused(format!("cannot build the request: {e}")))
    }

    /// A new connection: resolve, check every address against the rule,
    /// connect, TLS for https, the HTTP/1.1 handshake; its I/O runs on a
    /// task of its own, ended with the [`Kept`].
    async fn connect(&self, url: &WebhookUrl) -> Result<Kept, Outcome> {
        let addrs = match url.resolve(self.allow_private).await {
            Ok(addrs) => addrs,
            Err(e) if e.contains("--webhook-allow-private") => return Err(Outcome::Refused(e)),
            Err(e) => return Err(Outcome::NoAnswer(e)),
        };
        let mut last = String::new();
        let mut stream = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = format!("cannot connect to {addr}: {e}"),
            }
        }
        let Some(stream) = stream else {
            return Err(Outcome::NoAnswer(last));
        };
        let _ = stream.set_nodelay(true);
        if url.is_https() {
            let name = rustls::pki_types::ServerName::try_from(url.host().to_string())
                .map_err(|e| Outcome::Refused(format!("'{}' is not a TLS server name: {e}", url.host())))?;
            let tls = self
                .tls
                .connect(name, stream)
                .await
                .map_err(|e| Outcome::NoAnswer(format!("TLS handshake with {} failed: {e}", url.host())))?;
            handshake(tls).await
        } else {
            handshake(stream).await
        }
        .map_err(Outcome::NoAnswer)
    }
}

/// How long a kept connection may sit unused: below the 5 s after which
/// Node's HTTP server closes an idle one, so that weft seldom sends on a
/// connection the receiver is closing.
pub const KEEP_IDLE: Duration = Duration::from_secs(4);
/// How long a connection is used in all, however busy: the receiver's name
/// is resolved (and its addresses checked) again at least this often.
pub const KEEP_FOR: Duration = Duration::from_secs(60);
/// The most of a response body read to reuse its connection; a longer
/// body closes the connection instead.
pub const DRAIN_BYTES: usize = 64 * 1024;

/// One subscription's kept connection, if any (owned by its delivery
/// task, so at most one per subscription).
#[derive(Default)]
pub struct Link {
    kept: Option<Kept>,
}

impl Link {
    /// The kept connection, if it can carry a request: open, ready, and
    /// within its idle and total limits.
    fn take(&mut self, now: Instant) -> Option<Kept> {
        let kept = self.kept.take()?;
        let usable = kept.sender.is_ready()
            && !kept.sender.is_closed()
            && now.duration_since(kept.idle_since) < KEEP_IDLE
            && now.duration_since(kept.opened) < KEEP_FOR;
        usable.then_some(kept)
    }

    /// Whether a connection is kept (tests).
    pub fn is_kept(&self) -> bool {
        self.kept.is_some()
    }
}

/// An open HTTP/1.1 connection: the request side and the task doing its
/// I/O, aborted when this is dropped (the connection closes with it).
struct Kept {
    sender: SendRequest<Full<Bytes>>,
    _io: AbortOnDrop,
    opened: Instant,
    idle_since: Instant,
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn handshake<T>(io: T) -> Result<Kept, String>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    let io = tokio::spawn(async move {
        if let Err(e) = conn.await {
            debug!(error = %e, "webhook connection ended");
        }
    });
    let now = Instant::now();
    Ok(Kept {
        sender,
        _io: AbortOnDrop(io),
        opened: now,
        idle_since: now,
    })
}

/// Sends the request and waits for the response's head. The connection's
/// task hands a response over before it reports the connection's end, so
/// a receiver that answers and closes at once (HTTP/1.0, `Connection:
/// close`) is taken at its answer.
async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> Result<hyper::Response<Incoming>, String> {
    sender.ready().await.map_err(|e| format!("connection failed: {e}"))?;
    sender.send_request(request).await.map_err(|e| {
        if e.is_incomplete_message() || e.is_canceled() {
            "the receiver closed the connection before answering".to_string()
        } else {
            format!("request failed: {e}")
        }
    })
}

/// The outcome of an answer; the connection is kept for the next request
/// when the body (at most [`DRAIN_BYTES`]) ends before the deadline and
/// the receiver keeps the connection open.
async fn answered(link: &mut Link, mut kept: Kept, response: hyper::Response<Incoming>, until: Instant) -> Outcome {
    let status = response.status().as_u16();
    let wait = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| retry_after(v, SystemTime::now()));
    let outcome = match (status, wait) {
        (429 | 503, Some(wait)) => Outcome::Later(status, wait),
        _ => Outcome::Status(status),
    };
    let body = response.into_body();
    if matches!(timeout_at(until, drain(body)).await, Ok(true)) && !kept.sender.is_closed() {
        kept.idle_since = Instant::now();
        link.kept = Some(kept);
    }
    outcome
}

/// Reads a body to its end and drops it; `false` past [`DRAIN_BYTES`] or
/// on an error.
async fn drain(mut body: Incoming) -> bool {
    if body.size_hint().lower() > DRAIN_BYTES as u64 {
        return false;
    }
    let mut read = 0;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { return false };
        if let Some(data) = frame.data_ref() {
            read += data.len();
            if read > DRAIN_BYTES {
                return false;
            }
        }
    }
    true
}
