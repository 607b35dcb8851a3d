//! One POST to a receiver: resolve and check the address (`target`),
//! connect to that address, TLS for https (rustls, webpki roots), HTTP/1.1
//! through hyper's client connection, all under one deadline. A new
//! connection per attempt: deliveries to one subscription are sequential
//! and few, and nothing (no pool, no redirect) outlives the attempt. The
//! response body is never read: the status is the answer, so a receiver
//! cannot make weft hold its bytes.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, Method, Request};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

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
    /// host) to `url`, within `deadline` for everything up to the status.
    pub async fn post(&self, url: &WebhookUrl, headers: &[(&str, String)], body: Bytes, deadline: Duration) -> Outcome {
        match tokio::time::timeout(deadline, self.attempt(url, headers, body)).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::NoAnswer(format!("no answer within {} ms", deadline.as_millis())),
        }
    }

    async fn attempt(&self, url: &WebhookUrl, headers: &[(&str, String)], body: Bytes) -> Outcome {
        let addrs = match url.resolve(self.allow_private).await {
            Ok(addrs) => addrs,
            Err(e) if e.contains("--webhook-allow-private") => return Outcome::Refused(e),
            Err(e) => return Outcome::NoAnswer(e),
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
            return Outcome::NoAnswer(last);
        };
        let _ = stream.set_nodelay(true);
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(url.path_and_query())
            .header(header::HOST, url.authority())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::USER_AGENT, &self.user_agent);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let request = match request.body(Full::new(body)) {
            Ok(r) => r,
            Err(e) => return Outcome::Refused(format!("cannot build the request: {e}")),
        };
        let result = if url.is_https() {
            let name = match rustls::pki_types::ServerName::try_from(url.host().to_string()) {
                Ok(n) => n,
                Err(e) => return Outcome::Refused(format!("'{}' is not a TLS server name: {e}", url.host())),
            };
            match self.tls.connect(name, stream).await {
                Ok(tls) => send(tls, request).await,
                Err(e) => Err(format!("TLS handshake with {} failed: {e}", url.host())),
            }
        } else {
            send(stream, request).await
        };
        match result {
            Ok((status @ (429 | 503), Some(wait))) => Outcome::Later(status, wait),
            Ok((status, _)) => Outcome::Status(status),
            Err(e) => Outcome::NoAnswer(e),
        }
    }
}

/// Sends the request over `io` and returns the status and the wait its
/// `Retry-After` asks for, if any; the connection is dropped with the
/// response (its body unread).
async fn send<T>(io: T, request: Request<Full<Bytes>>) -> Result<(u16, Option<Duration>), String>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    let mut conn = std::pin::pin!(conn);
    let mut response = std::pin::pin!(sender.send_request(request));
    let status = |r: Result<hyper::Response<hyper::body::Incoming>, hyper::Error>| {
        r.map(|r| {
            let wait = r
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| retry_after(v, SystemTime::now()));
            (r.status().as_u16(), wait)
        })
        .map_err(|e| format!("request failed: {e}"))
    };
    tokio::select! {
        // The response first: a receiver that answers and closes (HTTP/1.0,
        // `Connection: close`) makes both ready at once, and an unbiased
        // choice took half of such answers for failures and sent them again.
        biased;
        r = &mut response => status(r),
        ended = &mut conn => {
            // The connection may have ended with the response in it: hyper
            // hands the response over before it reports the end.
            if let Some(r) = futures_util::FutureExt::now_or_never(&mut response) {
                return status(r);
            }
            Err(match ended {
                Ok(()) => "the receiver closed the connection before answering".to_string(),
                Err(e) => format!("connection failed: {e}"),
            })
        }
    }
}
