//! One client connection: a reader loop and a writer task.
//!
//! The reader decodes each frame (on this connection's task, so decoding runs
//! in parallel across connections), checks awareness states (JSON, size),
//! counts every message and control frame against the rate limit, and hands
//! the messages to the document actor. The writer drains the peer's bounded
//! outbound queue into the socket, batching whatever is queued into one
//! flush, and only then frees the frames' place in the queue's byte budget.
//! Neither touches the document.
//!
//! The session is written over any `Stream` of [`Incoming`] and `Sink` of
//! [`Outgoing`], not over axum's socket type: `http/` adapts the WebSocket,
//! and this module stays free of transport details.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn, Instrument};

use crate::close::{self, CloseReason, Closer};
use crate::doc::{self, DocError, DocHandle, DocName, OutboxReceiver, PeerId, PeerLink, Registry};
use crate::metrics::{Kick, Metrics};
use crate::protocol::{self, Inbound};
use crate::rate::{RateLimiter, SharedBucket};

/// Send a ping after this long without writing, so that proxies keep the
/// connection open and a vanished client is noticed.
const KEEPALIVE: Duration = Duration::from_secs(30);
/// Drop a connection that sent nothing (not even a pong) for this long.
const IDLE_LIMIT: Duration = Duration::from_secs(90);
/// How long a close frame may take to leave before the socket is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Most frames written between two flushes.
const WRITE_BATCH: usize = 256;

/// What the transport delivers.
#[derive(Debug)]
pub enum Incoming {
    Binary(Bytes),
    Text,
    /// A ping or pong: proof of life, nothing to process.
    Alive,
    Close,
}

/// What the session asks the transport to send.
#[derive(Debug)]
pub enum Outgoing {
    Binary(Bytes),
    Ping,
    Close(CloseReason),
}

/// Transport failures the session tells apart.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("frame over the size limit: {0}")]
    TooBig(String),
    #[error("{0}")]
    Other(String),
}

/// Everything a session needs besides its socket.
#[derive(Clone)]
pub struct SessionContext {
    pub registry: Registry,
    pub metrics: Arc<Metrics>,
    pub shutdown: watch::Receiver<bool>,
}

/// What this connection was granted at the upgrade.
pub struct Grant {
    /// May change the document; otherwise its updates are refused.
    pub writable: bool,
    /// When access ends, for connections holding a token.
    pub lease: Option<Lease>,
    /// Its message bucket (`None`: no limit), checked out of the client's
    /// rate book at the upgrade and given back when the connection ends.
    pub rate: Option<RateLimiter>,
    /// Its client's budget of encodings for step1 answers (`None`: no limit).
    pub encodes: Option<SharedBucket>,
    /// Whom its token names (`sub`, `name`), for events.
    pub user: Option<doc::User>,
}

/// The end of a token-bound connection: the token's expiry, or its
/// revocation, whichever comes first.
pub struct Lease {
    pub expires: tokio::time::Instant,
    pub revoked: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
}

impl Lease {
    async fn end(lease: Option<&mut Lease>) -> CloseReason {
        let Some(lease) = lease else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = tokio::time::sleep_until(lease.expires) => CloseReason::new(
                close::TOKEN_EXPIRED,
                "access token expired; reconnect with a new one",
                Some(Kick::TokenExpired),
            ),
            _ = &mut lease.revoked => CloseReason::new(
                close::TOKEN_REVOKED,
                "access token revoked",
                Some(Kick::TokenRevoked),
            ),
        }
    }
}

/// Why the reader stopped.
enum ReadEnd {
    /// The client went away (close frame, EOF, socket error, idle).
    Gone(&'static str),
    /// The client sent something unacceptable; close with this reason.
    Refused(CloseReason),
}

/// Runs one connection to its end.
pub async fn run<S, K>(stream: S, sink: K, name: DocName, peer: PeerId, grant: Grant, ctx: SessionContext)
where
    S: Stream<Item = Result<Incoming, TransportError>> + Unpin + Send,
    K: Sink<Outgoing> + Unpin + Send + 'static,
    K::Error: std::fmt::Display,
{
    let span = tracing::info_span!("conn", doc = %name, peer = %peer);
    async move {
        ctx.metrics.connections_open.fetch_add(1, Relaxed);
        ctx.metrics.connections_total.fetch_add(1, Relaxed);
        session(stream, sink, name, peer, grant, &ctx).await;
        ctx.metrics.connections_open.fetch_sub(1, Relaxed);
    }
    .instrument(span)
    .await
}

async fn session<S, K>(mut stream: S, mut sink: K, name: DocName, peer: PeerId, grant: Grant, ctx: &SessionContext)
where
    S: Stream<Item = Result<Incoming, TransportError>> + Unpin + Send,
    K: Sink<Outgoing> + Unpin + Send + 'static,
    K::Error: std::fmt::Display,
{
    let config = ctx.registry.config();
    let Grant {
        writable,
        mut lease,
        rate,
        encodes,
        user,
    } = grant;
    let (outbox, outbox_rx) = doc::outbox(config.peer_queue, config.peer_queue_bytes);
    let closer = Closer::new();
    let link = PeerLink {
        id: peer,
        outbox,
        closer: closer.clone(),
        writable,
        encodes,
        hocuspocus: false,
        user,
    };
    let handle = match join(&ctx.registry, &name, link).await {
        Ok(handle) => handle,
        Err(reason) => {
            let _ = tokio::time::timeout(CLOSE_GRACE, sink.send(Outgoing::Close(reason))).await;
            return;
        }
    };
    info!(writable, "joined");

    let mut writer = tokio::spawn(write_loop(sink, outbox_rx, closer.clone(), ctx.shutdown.clone()).in_current_span());
    let read = read_loop(
        &mut stream,
        &handle,
        peer,
        &ctx.metrics,
        rate,
        config.max_awareness_state,
    );
    let ended = read_until_end(read, &mut writer, lease.as_mut()).await;
    if let Some(ReadEnd::Refused(reason)) = &ended {
        warn!(code = reason.code, reason = %reason.reason, "closing the connection");
        if let Some(kick) = reason.kick {
            ctx.metrics.kick(kick);
        }
        // Before leaving: the actor then drops this peer's queue, which ends
        // the writer, and a writer that ends before it has the reason closes
        // the socket without a close frame (the client would see a bare
        // disconnect and no reason).
        closer.close(reason.clone());
    }
    handle.leave(peer).await;
    match ended {
        Some(ReadEnd::Refused(_)) => {
            // Nothing more from this client is applied, but its side is
            // read (and dropped) until its close comes back: a socket closed
            // with unread data ends with a reset, which can destroy our
            // close frame before the client reads it.
            let _ = tokio::time::timeout(CLOSE_GRACE, async {
                let _ = tokio::join!(&mut writer, skip_until_close(&mut stream));
            })
            .await;
            writer.abort();
            info!("left");
        }
        Some(ReadEnd::Gone(why)) => {
            writer.abort();
            info!(why, "left");
        }
        None => info!("left (closed by the server)"),
    }
}

/// Joins the document as `link`; on failure, the reason to close with.
async fn join(registry: &Registry, name: &DocName, link: PeerLink) -> Result<DocHandle, CloseReason> {
    let joined = registry
        .with_doc(name, |handle| {
            let link = link.clone();
            async move { handle.join(link).await.map(|()| handle) }
        })
        .await;
    joined.map_err(|e| {
        warn!(error = %e, "could not join the document");
        match e {
            DocError::ShuttingDown => CloseReason::going_away(),
            other => CloseReason::new(close::STORAGE_FAILED, other.to_string(), None),
        }
    })
}

/// Reads until the client goes or is refused, or its token ends; `None`
/// when the server closed the connection (the writer ended: shutdown, or
/// the actor let go of the peer). Then frames the client sent before it saw
/// our close frame are still in flight, and they are still applied until
/// its close comes back, as the WebSocket closing handshake intends.
async fn read_until_end(
    read: impl Future<Output = ReadEnd>,
    writer: &mut JoinHandle<()>,
    lease: Option<&mut Lease>,
) -> Option<ReadEnd> {
    let mut read = pin!(read);
    let ended = tokio::select! {
        end = &mut read => Some(end),
        _ = writer => None,
        reason = Lease::end(lease) => Some(ReadEnd::Refused(reason)),
    };
    if ended.is_none() {
        let _ = tokio::time::timeout(CLOSE_GRACE, &mut read).await;
    }
    ended
}

/// Reads and drops what the client sends until its close frame.
async fn skip_until_close<S>(stream: &mut S)
where
    S: Stream<Item = Result<Incoming, TransportError>> + Unpin,
{
    while let Some(Ok(item)) = stream.next().await {
        if matches!(item, Incoming::Close) {
            break;
        }
    }
}

async fn read_loop<S>(
    stream: &mut S,
    handle: &DocHandle,
    peer: PeerId,
    metrics: &Metrics,
    mut rate: Option<RateLimiter>,
    max_awareness_state: usize,
) -> ReadEnd
where
    S: Stream<Item = Result<Incoming, TransportError>> + Unpin,
{
    let mut awareness = AwarenessCheck {
        max_state: max_awareness_state,
        warned: false,
    };
    loop {
        let item = match tokio::time::timeout(IDLE_LIMIT, stream.next()).await {
            Err(_) => return ReadEnd::Gone("nothing received for 90 s"),
            Ok(None) => return ReadEnd::Gone("connection closed"),
            Ok(Some(item)) => item,
        };
        match item {
            Ok(Incoming::Binary(frame)) => {
                let mut messages = match protocol::decode_frame(&frame) {
                    Ok(messages) => messages,
                    Err(e) => {
                        metrics.updates_refused.fetch_add(1, Relaxed);
                        return ReadEnd::Refused(CloseReason::new(
                            close::BAD_MESSAGE,
                            format!("bad message: {e}"),
                            Some(Kick::BadMessage),
                        ));
                    }
                };
                if rate.as_mut().is_some_and(|r| !r.take(messages.len())) {
                    return ReadEnd::Refused(rate_limited());
                }
                awareness.check(&mut messages);
                if handle.messages(peer, messages).await.is_err() {
                    return ReadEnd::Gone("document closed");
                }
            }
            Ok(Incoming::Text) => {
                return ReadEnd::Refused(CloseReason::new(
                    close::TEXT_FRAME,
                    "text frames are not part of the y-websocket protocol",
                    Some(Kick::TextFrame),
                ))
            }
            // Pings cost a pong each and count like messages (a
            // y-websocket client sends none; browsers answer our pings).
            Ok(Incoming::Alive) => {
                if rate.as_mut().is_some_and(|r| !r.take(1)) {
                    return ReadEnd::Refused(rate_limited());
                }
            }
            Ok(Incoming::Close) => return ReadEnd::Gone("closed by the client"),
            Err(TransportError::TooBig(detail)) => {
                return ReadEnd::Refused(CloseReason::new(close::TOO_BIG, detail, Some(Kick::TooBig)))
            }
            Err(TransportError::Other(e)) => {
                debug!(error = %e, "transport error");
                return ReadEnd::Gone("transport error");
            }
        }
    }
}

fn rate_limited() -> CloseReason {
    CloseReason::new(
        close::RATE_LIMITED,
        "too many messages: slow down",
        Some(Kick::RateLimited),
    )
}

/// Drops awareness states nobody should see: not JSON (y-websocket clients
/// throw on them), too large, or with a clock yrs cannot count past. The
/// connection stays; the first drop is logged at warn, later ones at debug.
struct AwarenessCheck {
    max_state: usize,
    warned: bool,
}

impl AwarenessCheck {
    fn check(&mut self, messages: &mut [Inbound]) {
        for message in messages {
            let Inbound::Awareness(update) = message else { continue };
            update.clients.retain(|client, entry| match doc::check_state(entry, self.max_state) {
                Ok(()) => true,
                Err(e) => {
                    if self.warned {
                        debug!(client = client.get(), error = %e, "awareness state dropped");
                    } else {
                        self.warned = true;
                        warn!(client = client.get(), error = %e, "awareness state dropped (logged once per connection)");
                    }
                    false
                }
            });
        }
    }
}

/// Writes queued frames until the queue closes (the actor let go of this
/// peer) or a close is requested (by the actor, the reader, or shutdown).
async fn write_loop<K>(mut sink: K, mut outbox: OutboxReceiver, closer: Closer, mut shutdown: watch::Receiver<bool>)
where
    K: Sink<Outgoing> + Unpin,
    K::Error: std::fmt::Display,
{
    let close = tokio::select! {
        // A close must win even while a write is stuck on a slow socket, so
        // the pump runs inside the select and is dropped mid-write if need be.
        biased;
        reason = closer.closed() => Some(reason),
        _ = shutdown.wait_for(|stop| *stop) => Some(CloseReason::going_away()),
        end = pump(&mut sink, &mut outbox) => match end {
            // The actor let go of this peer; when it did so to kick it, the
            // reason was sent just before.
            Ok(()) => closer.take(),
            Err(e) => {
                debug!(error = %e, "write failed");
                return;
            }
        },
    };
    if let Some(reason) = close {
        let _ = tokio::time::timeout(CLOSE_GRACE, sink.send(Outgoing::Close(reason))).await;
    }
    let _ = tokio::time::timeout(CLOSE_GRACE, sink.close()).await;
}

async fn pump<K>(sink: &mut K, outbox: &mut OutboxReceiver) -> Result<(), K::Error>
where
    K: Sink<Outgoing> + Unpin,
{
    let mut batch: Vec<Bytes> = Vec::with_capacity(16);
    loop {
        match tokio::time::timeout(KEEPALIVE, outbox.recv_many(&mut batch, WRITE_BATCH)).await {
            Err(_) => {
                sink.send(Outgoing::Ping).await?;
                continue;
            }
            Ok(0) => return Ok(()),
            Ok(_) => {}
        }
        for frame in &batch {
            sink.feed(Outgoing::Binary(frame.clone())).await?;
        }
        sink.flush().await?;
        // Until written, the frames are still held (by the socket's
        // buffer, or here): they count against the queue's budget until now.
        outbox.written(&batch);
        batch.clear();
    }
}

pub mod hocuspocus;

#[cfg(test)]
mod tests;
