//! The accept loop. weft drives hyper itself, as axum's `serve-with-hyper`
//! example does, for what `axum::serve` does not expose: connections are
//! counted against the caps as they are accepted, a request head must arrive
//! within `--header-read-timeout-ms`, and a write the client does not read
//! fails after `--idle-timeout-ms`.
//!
//! Without these, a TCP connection that sent nothing, or its request a byte
//! at a time, stayed open for 300 s and more, and 20,020 idle connections
//! used up 20,000 file descriptors: `/healthz` stopped answering.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use super::limits::{Accepted, Admission, Limits};
use super::ApiError;
use crate::metrics::Metrics;

/// After an accept error other than a vanished client (out of descriptors,
/// most likely), wait this long before accepting again rather than spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// A connection over a cap only ever gets one short answer: it has this
/// long to ask (whatever --header-read-timeout-ms says).
const REFUSAL_HEADER_READ: Duration = Duration::from_secs(2);

/// How the accept loop treats connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// `--header-read-timeout-ms`; `None`: no limit.
    pub header_read: Option<Duration>,
    /// `--idle-timeout-ms`, for writes the client does not read.
    pub write_stall: Option<Duration>,
}

/// Serves `app` on `listener` until `shutdown` resolves; then stops
/// accepting, lets every HTTP connection finish its request, and returns.
/// WebSocket sessions are not waited for: they end on the application's own
/// shutdown signal.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Arc<Limits>,
    conn_limits: ConnLimits,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    // Dropping the sender tells every connection to finish what it is doing
    // and close.
    let (stop_tx, stop_rx) = watch::channel(());
    // Every connection task holds a sender: when the last one is dropped,
    // `recv` answers `None` and every connection has finished.
    let (open_tx, mut open_rx) = mpsc::channel::<Infallible>(1);
    let mut shutdown = pin!(shutdown);
    loop {
        let (tcp, remote) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        // y-sync frames are small and latency-bound: with Nagle's algorithm a
        // second small write waits for the client's delayed ACK (40 ms on Linux).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let (admission, refusal) = match limits.accept(remote.ip()) {
            Accepted::Serve(admission) => (admission, None),
            Accepted::Refuse(admission, refusal) => {
                metrics.requests_refused.fetch_add(1, Ordering::Relaxed);
                (admission, Some(refusal))
            }
            Accepted::Close => {
                metrics.requests_refused.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%remote, "connection closed at once: over every cap");
                continue;
            }
        };
        let io = TokioIo::new(Conn::new(tcp, admission, conn_limits.write_stall));
        let mut stop = stop_rx.clone();
        let open = open_tx.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let _open = open;
            let mut builder = http1::Builder::new();
            builder.timer(TokioTimer::new());
            match refusal {
                None => {
                    builder.header_read_timeout(conn_limits.header_read);
                    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                        request.extensions_mut().insert(ConnectInfo(remote));
                        app.clone().oneshot(request.map(axum::body::Body::new))
                    });
                    let conn = builder.serve_connection(io, service).with_upgrades();
                    let mut conn = pin!(conn);
                    tokio::select! {
                        result = conn.as_mut() => log_end(result),
                        _ = stop.changed() => {
                            conn.as_mut().graceful_shutdown();
                            log_end(conn.await);
                        }
                    }
                }
                Some(refusal) => {
                    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                        std::future::ready(Ok::<_, Infallible>(refuse(&request, &refusal)))
                    });
                    let timeout = conn_limits
                        .header_read
                        .map_or(REFUSAL_HEADER_READ, |t| t.min(REFUSAL_HEADER_READ));
                    builder.keep_alive(false).header_read_timeout(timeout);
                    log_end(builder.serve_connection(io, service).await);
                }
            }
        });
    }
    // New clients are refused at once rather than left in the backlog.
    drop(listener);
    drop(stop_tx);
    drop(open_tx);
    let _ = open_rx.recv().await;
}

/// A connection over a cap still answers `/healthz` (a monitor should see a
/// busy server, not a dead one), and everything else with its refusal.
fn refuse<B>(request: &hyper::Request<B>, refusal: &ApiError) -> Response {
    if request.uri().path() == "/healthz" {
        return super::healthz_response();
    }
    ApiError::new(refusal.status, refusal.message.clone()).into_response()
}

fn log_end(result: Result<(), hyper::Error>) {
    if let Err(e) = result {
        // hyper's message names the step ("error writing a body to
        // connection"); its source says why.
        let mut why = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            why.push_str(": ");
            why.push_str(&cause.to_string());
            source = cause.source();
        }
        tracing::debug!(error = %why, "connection ended");
    }
}

/// Errors that concern one connection only: the client went away before
/// it was accepted.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

/// An accepted socket. It holds its place under the connection caps for as
/// long as it is open, also once it is a WebSocket (hyper hands this same
/// object to the upgraded connection), and fails a write that has made no
/// progress for the stall limit: a client that stopped reading would
/// otherwise keep its response, and its descriptor, forever.
struct Conn {
    tcp: TcpStream,
    _admission: Admission,
    stall: Option<Duration>,
    /// Armed while a write is waiting for the client.
    timer: Option<Pin<Box<Sleep>>>,
    waiting: bool,
}

impl Conn {
    fn new(tcp: TcpStream, admission: Admission, stall: Option<Duration>) -> Self {
        Self {
            tcp,
            _admission: admission,
            stall,
            timer: None,
            waiting: false,
        }
    }

    /// After a write returned `Pending`: fails once it has waited too long.
    fn poll_stall<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let Some(stall) = self.stall else {
            return Poll::Pending;
        };
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        if !self.waiting {
            self.waiting = true;
            timer.as_mut().reset(Instant::now() + stall);
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn progress<T>(&mut self, result: Poll<io::Result<T>>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match result {
            Poll::Pending => self.poll_stall(cx),
            ready => {
                self.waiting = false;
                ready
            }
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.tcp).poll_write(cx, buf);
        this.progress(result, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs);
        this.progress(result, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}
