//! One connection of the Hocuspocus protocol (`@hocuspocus/provider`): one
//! socket, many documents.
//!
//! Every frame names its document (its *address*: the name, or `name \0
//! sessionId`). An address is attached once the provider has sent its token
//! for it and the [`Authorize`] hook granted it; each attachment is a peer
//! of that document's actor, with its own permission, token lease and
//! bounded queue, exactly like a y-websocket connection (the actor does not
//! know the difference, but for the sync statuses it sends a Hocuspocus
//! peer after each commit). What the provider sends to an address before
//! its token is kept, bounded in bytes per socket, and handed over once
//! it is attached.
//!
//! Tasks: the reader (this function's loop) decodes, rate-limits and routes
//! frames; one forwarder per attachment drains that peer's queue into the
//! shared socket, each frame behind its address, and ends the attachment
//! when the actor kicks the peer or its token ends. The socket is shared
//! under a mutex: a forwarder writes a batch and flushes before letting go,
//! so frames never interleave and the queue's byte budget counts a frame
//! until it is flushed, as on the y-websocket endpoint.
//!
//! How things end: a close frame from the provider (type 7) detaches one
//! document; a reason that asks the client to come back (too slow, storage
//! failed, shutdown) closes the whole socket with its code, since the
//! provider reconnects a socket but never a single document; any other
//! refusal (revoked or expired token, a refused update, a deleted document)
//! detaches that document with a close message and leaves the others.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn, Instrument};
use weft_core::hocuspocus::{self as hp, Frame, Message};

use forward::Forwarder;

use super::{AwarenessCheck, Incoming, Lease, Outgoing, SessionContext, TransportError, CLOSE_GRACE};
use crate::close::{self, CloseReason, Closer};
use crate::doc::{self, DocHandle, DocName, PeerId, PeerLink};
use crate::metrics::Kick;
use crate::rate::{RateLimiter, SharedBucket};

/// Send the provider a ping (one byte) after this long without one: the
/// provider closes a socket that heard nothing for 30 s
/// (`messageReconnectTimeout`), and browsers do not see WebSocket pings.
const PING_EVERY: Duration = Duration::from_secs(15);
/// Close a socket that sent nothing (the provider answers every ping) for
/// this long, or that attached no document this long after it opened;
/// Hocuspocus's own `timeout` is 60 s too.
const IDLE_LIMIT: Duration = Duration::from_secs(60);
/// Hocuspocus's "Connection Timeout" close code (`@hocuspocus/common`).
const CONNECTION_TIMEOUT: u16 = 4408;

/// What the provider may do with one document.
pub struct DocAccess {
    pub writable: bool,
    /// When access ends, for a token that expires or can be revoked.
    pub lease: Option<Lease>,
    /// Whom the token names, for events.
    pub user: Option<doc::User>,
}

/// Grants an address's document for the token the provider sent (token
/// checks, new-document allowance); `Err` is the reason for the provider's
/// `onAuthenticationFailed`. Implemented by `http/`, which knows tokens.
pub type Authorize = Arc<dyn Fn(DocName, String) -> BoxFuture<'static, Result<DocAccess, String>> + Send + Sync>;

/// Bounds on what one socket may hold.
#[derive(Debug, Clone, Copy)]
pub struct HocuspocusLimits {
    /// Documents attached or waiting for their token, per socket.
    pub max_docs: usize,
    /// Bytes of frames kept for documents still waiting for their token.
    pub max_pending_bytes: usize,
}

/// Everything one Hocuspocus socket needs besides the socket.
pub struct HocuspocusContext {
    pub ctx: SessionContext,
    pub authorize: Authorize,
    pub limits: HocuspocusLimits,
    /// Where attachments get their peer ids.
    pub next_peer: Arc<AtomicU64>,
    /// The socket's message bucket (`None`: no limit).
    pub rate: Option<RateLimiter>,
    /// Its client's budget of encodings for step1 answers.
    pub encodes: Option<SharedBucket>,
}

/// The socket, shared by the reader (pongs, auth answers) and the forwarders.
type SharedSink<K> = Arc<Mutex<K>>;

/// An attached document.
struct Attached {
    handle: DocHandle,
    peer: PeerId,
    forwarder: JoinHandle<()>,
}

/// An address's state on this socket.
enum Slot {
    /// Messages before its token, with their frames' bytes.
    Waiting(Vec<Message>, usize),
    Attached(Attached),
}

/// Why a forwarder ended.
struct Ended {
    address: Arc<str>,
    peer: PeerId,
    /// Close the whole socket with this (the client should come back).
    socket: Option<CloseReason>,
}

/// Runs one Hocuspocus socket to its end.
pub async fn run<S, K>(stream: S, sink: K, socket: u64, hctx: HocuspocusContext)
where
    S: Stream<Item = Result<Incoming, TransportError>> + Unpin + Send,
    K: Sink<Outgoing> + Unpin + Send + 'static,
    K::Error: std::fmt::Display,
{
    let span = tracing::info_span!("hocuspocus", socket);
    async move {
        let metrics = hctx.ctx.metrics.clone();
        metrics.connections_open.fetch_add(1, Relaxed);
        metrics.connections_total.fetch_add(1, Relaxed);
        Socket::new(sink, hctx).serve(stream).await;
        metrics.connections_open.fetch_sub(1, Relaxed);
    }
    .instrument(span)
    .await
}

struct Socket<K> {
    sink: SharedSink<K>,
    hctx: HocuspocusContext,
    slots: HashMap<Arc<str>, Slot>,
    pending_bytes: usize,
    awareness: AwarenessCheck,
    ended_tx: mpsc::UnboundedSender<Ended>,
    ended_rx: mpsc::UnboundedReceiver<Ended>,
    /// A document was attached at least once (the idle rule changes then).
    authenticated: bool,
}

impl<K> Socket<K>
where
    K: Sink<Outgoing> + Unpin + Send + 'static,
    K::Error: std::fmt::Display,
{
    fn new(sink: K, hctx: HocuspocusContext) -> Self {
        let (ended_tx, ended_rx) = mpsc::unbounded_channel();
        let max_state = hctx.ctx.registry.config().max_awareness_state;
        Self {
            sink: Arc::new(Mutex::new(sink)),
            hctx,
            slots: HashMap::new(),
            pending_bytes: 0,
            awareness: AwarenessCheck {
                max_state,
                warned: false,
            },
            ended_tx,
            ended_rx,
            authenticated: false,
        }
    }

    async fn serve<S>(mut self, mut stream: S)
    where
        S: Stream<Item = Result<Incoming, TransportError>> + Unpin + Send,
    {
        let ended = self.read(&mut stream).await;
        for (_, slot) in self.slots.drain() {
            if let Slot::Attached(a) = slot {
                a.forwarder.abort();
                a.handle.leave(a.peer).await;
            }
        }
        match ended {
            Err(reason) => {
                warn!(code = reason.code, reason = %reason.reason, "closing the connection");
                if let Some(kick) = reason.kick {
                    self.hctx.ctx.metrics.kick(kick);
                }
                let sink = self.sink.clone();
                let _ = tokio::time::timeout(CLOSE_GRACE, async move {
                    let mut sink = sink.lock().await;
                    let _ = sink.send(Outgoing::Close(reason)).await;
                    drop(sink);
                    super::skip_until_close(&mut stream).await;
                })
                .await;
                info!("left");
            }
            Ok(why) => info!(why, "left"),
        }
        let _ = tokio::time::timeout(CLOSE_GRACE, async { self.sink.lock().await.close().await }).await;
    }

    /// Reads until the client goes (`Ok`) or the socket must be closed.
    async fn read<S>(&mut self, stream: &mut S) -> Result<&'static str, CloseReason>
    where
        S: Stream<Item = Result<Incoming, TransportError>> + Unpin + Send,
    {
        let opened = tokio::time::Instant::now();
        let mut last_heard = opened;
        let mut ping = tokio::time::interval_at(opened + PING_EVERY, PING_EVERY);
        let mut shutdown = self.hctx.ctx.shutdown.clone();
        loop {
            let deadline = if self.authenticated { last_heard } else { opened } + IDLE_LIMIT;
            let item = tokio::select! {
                item = stream.next() => item,
                Some(ended) = self.ended_rx.recv() => {
                    self.ended(ended).await?;
                    continue;
                }
                _ = ping.tick() => {
                    self.send(hp::ping()).await;
                    continue;
                }
                _ = stopping(&mut shutdown) => return Err(CloseReason::going_away()),
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(CloseReason::new(CONNECTION_TIMEOUT, "Connection Timeout", None));
                }
            };
            last_heard = tokio::time::Instant::now();
            match item {
                None => return Ok("connection closed"),
                Some(Ok(Incoming::Binary(frame))) => self.frame(frame).await?,
                Some(Ok(Incoming::Alive)) => self.take(1)?,
                Some(Ok(Incoming::Text)) => {
                    return Err(CloseReason::new(
                        close::TEXT_FRAME,
                        "text frames are not part of the Hocuspocus protocol",
                        Some(Kick::TextFrame),
                    ))
                }
                Some(Ok(Incoming::Close)) => return Ok("closed by the client"),
                Some(Err(TransportError::TooBig(detail))) => {
                    return Err(CloseReason::new(close::TOO_BIG, detail, Some(Kick::TooBig)))
                }
                Some(Err(TransportError::Other(e))) => {
                    debug!(error = %e, "transport error");
                    return Ok("transport error");
                }
            }
        }
    }

    fn take(&mut self, messages: usize) -> Result<(), CloseReason> {
        if self.hctx.rate.as_mut().is_some_and(|r| !r.take(messages)) {
            return Err(super::rate_limited());
        }
        Ok(())
    }

    async fn frame(&mut self, frame: Bytes) -> Result<(), CloseReason> {
        self.take(1)?;
        let size = frame.len();
        let (address, message) = match hp::decode(&frame) {
            Ok(Frame::Doc { address, message }) => (address, message),
            Ok(Frame::Ping) => {
                self.send(hp::pong()).await;
                return Ok(());
            }
            Ok(Frame::Pong) => return Ok(()),
            Err(e) => {
                self.hctx.ctx.metrics.updates_refused.fetch_add(1, Relaxed);
                return Err(CloseReason::new(
                    close::BAD_MESSAGE,
                    format!("bad message: {e}"),
                    Some(Kick::BadMessage),
                ));
            }
        };
        let address: Arc<str> = address.into();
        match self.slots.get_mut(&address) {
            Some(Slot::Attached(a)) => {
                let (handle, peer) = (a.handle.clone(), a.peer);
                self.deliver(&address, &handle, peer, message).await;
            }
            Some(Slot::Waiting(..)) if matches!(message, Message::Auth { .. }) => {
                let Message::Auth { token } = message else {
                    unreachable!()
                };
                self.attach(address, token).await;
            }
            Some(Slot::Waiting(queued, bytes)) => {
                if matches!(message, Message::Close) {
                    let freed = *bytes;
                    self.slots.remove(&address);
                    self.pending_bytes -= freed;
                    return Ok(());
                }
                self.pending_bytes += size;
                if self.pending_bytes > self.hctx.limits.max_pending_bytes {
                    return Err(self.too_much_pending());
                }
                *bytes += size;
                queued.push(message);
            }
            None => {
                if self.slots.len() >= self.hctx.limits.max_docs {
                    let reason = format!(
                        "too many documents on one connection: at most {} (--hocuspocus-max-docs)",
                        self.hctx.limits.max_docs
                    );
                    self.deny(&address, &reason).await;
                    return Ok(());
                }
                match message {
                    Message::Auth { token } => {
                        self.slots.insert(address.clone(), Slot::Waiting(Vec::new(), 0));
                        self.attach(address, token).await;
                    }
                    // Nothing to close; anything else waits for the token.
                    Message::Close => {}
                    message => {
                        self.pending_bytes += size;
                        if self.pending_bytes > self.hctx.limits.max_pending_bytes {
                            return Err(self.too_much_pending());
                        }
                        self.slots.insert(address, Slot::Waiting(vec![message], size));
                    }
                }
            }
        }
        Ok(())
    }

    fn too_much_pending(&self) -> CloseReason {
        CloseReason::new(
            close::TOO_BIG,
            format!(
                "more than {} bytes sent for documents not yet authenticated (--hocuspocus-pending-bytes)",
                self.hctx.limits.max_pending_bytes
            ),
            Some(Kick::TooBig),
        )
    }

    /// A message for an attached document.
    async fn deliver(&mut self, address: &Arc<str>, handle: &DocHandle, peer: PeerId, message: Message) {
        let sent = match message {
            Message::Sync(inbound) => {
                let mut messages = vec![inbound];
                self.awareness.check(&mut messages);
                handle.messages(peer, messages).await
            }
            Message::Stateless(payload) => handle.peer_stateless(peer, payload).await,
            Message::Close => {
                debug!(%address, %peer, "document closed by the provider");
                self.detach(address).await;
                return;
            }
            // A second token for an attached document (Hocuspocus logs
            // and skips it too), or a type a client does not send.
            Message::Auth { .. } | Message::Ignored(_) => return,
        };
        if sent.is_err() {
            // The actor is gone (the document was deleted or unloaded
            // under us): the attachment ends with it.
            self.detach(address).await;
            self.send(hp::address(address, &hp::close("Server closed the connection")))
                .await;
        }
    }

    /// Checks the token and attaches the address's document; on refusal,
    /// tells the provider why and forgets what the address sent.
    async fn attach(&mut self, address: Arc<str>, token: String) {
        let (queued, bytes) = match self.slots.remove(&address) {
            Some(Slot::Waiting(queued, bytes)) => (queued, bytes),
            _ => (Vec::new(), 0),
        };
        self.pending_bytes -= bytes;
        let name = match DocName::parse(hp::doc_part(&address)) {
            Ok(name) => name,
            Err(e) => return self.deny(&address, &e.to_string()).await,
        };
        let access = match (self.hctx.authorize)(name.clone(), token).await {
            Ok(access) => access,
            Err(reason) => {
                info!(doc = %name, %reason, "document refused");
                return self.deny(&address, &reason).await;
            }
        };
        let config = self.hctx.ctx.registry.config();
        let (outbox, outbox_rx) = doc::outbox(config.peer_queue, config.peer_queue_bytes);
        let closer = Closer::new();
        let peer = PeerId(self.hctx.next_peer.fetch_add(1, Relaxed));
        // First in the peer's queue, so before the actor's step1.
        let _ = outbox.try_send(hp::authenticated(access.writable));
        let link = PeerLink {
            id: peer,
            outbox,
            closer: closer.clone(),
            writable: access.writable,
            encodes: self.hctx.encodes.clone(),
            hocuspocus: true,
            user: access.user.clone(),
        };
        let handle = match super::join(self.hctx.ctx.registry.clone(), name.clone(), link).await {
            Ok(handle) => handle,
            Err(reason) => return self.deny(&address, &reason.reason).await,
        };
        info!(doc = %name, %peer, writable = access.writable, "attached");
        self.authenticated = true;
        let forwarder = Forwarder {
            sink: self.sink.clone(),
            address: address.clone(),
            peer,
            outbox: outbox_rx,
            closer,
            lease: access.lease,
            ended: self.ended_tx.clone(),
            metrics: self.hctx.ctx.metrics.clone(),
        };
        let forwarder = tokio::spawn(forwarder.run().in_current_span());
        self.slots.insert(
            address.clone(),
            Slot::Attached(Attached {
                handle: handle.clone(),
                peer,
                forwarder,
            }),
        );
        for message in queued {
            self.deliver(&address, &handle, peer, message).await;
            if !matches!(self.slots.get(&address), Some(Slot::Attached(a)) if a.peer == peer) {
                break;
            }
        }
    }

    /// PermissionDenied for one address; the socket stays.
    async fn deny(&mut self, address: &str, reason: &str) {
        self.send(hp::address(address, &hp::permission_denied(reason))).await;
    }

    /// Ends an attachment: the peer leaves its document.
    async fn detach(&mut self, address: &Arc<str>) {
        if let Some(Slot::Attached(a)) = self.slots.remove(address) {
            a.forwarder.abort();
            a.handle.leave(a.peer).await;
        }
    }

    /// A forwarder ended: its attachment goes; the socket too when the
    /// reason asks the client to come back.
    async fn ended(&mut self, ended: Ended) -> Result<(), CloseReason> {
        let current = matches!(self.slots.get(&ended.address), Some(Slot::Attached(a)) if a.peer == ended.peer);
        if current {
            self.detach(&ended.address).await;
        }
        match ended.socket {
            // The actor counted its kick already.
            Some(reason) => Err(CloseReason { kick: None, ..reason }),
            None => Ok(()),
        }
    }

    async fn send(&self, frame: Bytes) {
        let mut sink = self.sink.lock().await;
        if let Err(e) = sink.send(Outgoing::Binary(frame)).await {
            debug!(error = %e, "write failed");
        }
    }
}

/// Resolves when shutdown begins (the guard `wait_for` returns is not
/// `Send`, so it is dropped here).
async fn stopping(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

mod forward;
#[cfg(test)]
mod tests;
