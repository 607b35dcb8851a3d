//! One client connection, driven by one task that both reads and writes.
//!
//! Reading decodes each frame (on this connection's task, so decoding runs
//! in parallel across connections), checks awareness states (JSON, size),
//! counts every message and control frame against the rate limit, and hands
//! the messages to the document actor. Writing drains the peer's bounded
//! outbound queue into the socket, batching whatever is queued into one
//! flush, and only then frees the frames' place in the queue's byte budget.
//! Neither touches the document.
//!
//! One task, not a reader and a writer: every open connection pays for its
//! tasks, their futures and the lock a split socket needs between its
//! halves, and most connections are idle (bench/FINDINGS.md, *Memory per
//! connection*). The task polls both directions in one `select!`; while it
//! waits for room in the actor's mailbox, it keeps writing.
//!
//! The session is written over any [`Transport`] (a `Stream` of
//! [`Incoming`] and a `Sink` of [`Outgoing`]), not over axum's socket type:
//! `http/` adapts the WebSocket, and this module stays free of transport
//! details.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};
use tracing::{debug, info, warn, Instrument};

use crate::close::{self, CloseReason, Closer};
use crate::doc::{self, DocError, DocHandle, DocName, OutboxReceiver, PeerId, PeerLink, Registry, Waiting};
use crate::metrics::{Kick, Metrics};
use crate::protocol::{self, Inbound};
use crate::rate::{RateLimiter, SharedBucket};

/// Send a ping after this long without writing, so that proxies keep the
/// connection open and a vanished client is noticed.
const KEEPALIVE: Duration = Duration::from_secs(30);
/// Drop a connection that sent nothing (not even a pong) for this long.
const IDLE_LIMIT: Duration = Duration::from_secs(90);
/// How long closing may take: our close frame leaving, and what the client
/// sent before its close coming in, before the socket is dropped.
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
/// revocation, whichever comes first. One boxed future, so a connection
/// without a token pays nothing for it and one with a token a few words.
pub struct Lease(Pin<Box<dyn Future<Output = CloseReason> + Send>>);

impl Lease {
    pub fn new(expires: Instant, revoked: impl Future<Output = ()> + Send + 'static) -> Self {
        Self(Box::pin(async move {
            tokio::select! {
                _ = tokio::time::sleep_until(expires) => CloseReason::new(
                    close::TOKEN_EXPIRED,
                    "access token expired; reconnect with a new one",
                    Some(Kick::TokenExpired),
                ),
                _ = revoked => CloseReason::new(
                    close::TOKEN_REVOKED,
                    "access token revoked",
                    Some(Kick::TokenRevoked),
                ),
            }
        }))
    }

    async fn end(lease: Option<&mut Lease>) -> CloseReason {
        match lease {
            Some(lease) => lease.0.as_mut().await,
            None => std::future::pending().await,
        }
    }
}

/// A connection's transport: one object for both directions, so that one
/// task reads and writes it (no split halves, no second task).
pub trait Transport:
    Stream<Item = Result<Incoming, TransportError>> + Sink<Outgoing, Error = TransportError> + Unpin + Send
{
}

impl<T> Transport for T where
    T: Stream<Item = Result<Incoming, TransportError>> + Sink<Outgoing, Error = TransportError> + Unpin + Send
{
}

/// Why the connection ended.
enum Ending {
    /// The client sent its close frame; tungstenite has queued the answer.
    ClosedByClient,
    /// The client went away without one (EOF, socket error, idle).
    Gone(&'static str),
    /// The client sent something unacceptable, or its token ended; close
    /// with this reason.
    Refused(CloseReason),
    /// The server closed it: shutdown, or the actor let go of the peer
    /// (with the reason it gave, if any).
    Server(Option<CloseReason>),
}

/// Runs one connection to its end. A plain function returning the future,
/// not an `async fn` around it: each `async` layer stores its arguments
/// again beside the future it awaits, and this future lives as long as the
/// connection.
pub fn run<T: Transport>(
    transport: T,
    name: DocName,
    peer: PeerId,
    grant: Grant,
    ctx: SessionContext,
) -> impl Future<Output = ()> {
    let span = tracing::info_span!("conn", doc = %name, peer = %peer);
    session(transport, name, peer, grant, ctx).instrument(span)
}

/// Counts a connection as open while it lives.
struct Open<'a>(&'a Metrics);

impl<'a> Open<'a> {
    fn count(metrics: &'a Metrics) -> Self {
        metrics.connections_open.fetch_add(1, Relaxed);
        metrics.connections_total.fetch_add(1, Relaxed);
        Self(metrics)
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.connections_open.fetch_sub(1, Relaxed);
    }
}

/// The connection's state is built here, outside the `async` block, and
/// the block only borrows it: a value moved from an argument into a local
/// inside an `async fn` takes its room twice in the future.
fn session<T: Transport>(
    transport: T,
    name: DocName,
    peer: PeerId,
    grant: Grant,
    ctx: SessionContext,
) -> impl Future<Output = ()> {
    let SessionContext {
        registry,
        metrics,
        mut shutdown,
    } = ctx;
    let config = registry.config();
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
    let mut conn = Conn {
        transport,
        writer: Writer::new(outbox_rx),
        reader: Reader::new(peer, metrics.clone(), rate, config.max_awareness_state),
        read_by: Instant::now() + IDLE_LIMIT,
        unsent: None,
    };
    // Made here, so that the block holds a pointer and not the join's
    // arguments (the link, the name, the registry) for the connection's life.
    let joining = Box::pin(join(registry, name, link));
    async move {
        let _open = Open::count(&metrics);
        // The join and the close are boxed: they are short, and an `async`
        // block is as large as its largest await, so inline they would grow
        // the future every idle connection keeps for its whole life.
        let handle = match joining.await {
            Ok(handle) => handle,
            Err(reason) => {
                let close = conn.transport.send(Outgoing::Close(reason));
                let _ = Box::pin(tokio::time::timeout(CLOSE_GRACE, close)).await;
                return;
            }
        };
        info!(writable, "joined");
        let timer = pin!(tokio::time::sleep(KEEPALIVE));
        let ending = conn.serve(&handle, &closer, &mut shutdown, lease.as_mut(), timer).await;
        Box::pin(conn.finish(ending, &handle)).await;
    }
}

/// Joins the document as `link`; on failure, the reason to close with.
async fn join(registry: Registry, name: DocName, link: PeerLink) -> Result<DocHandle, CloseReason> {
    let joined = registry
        .with_doc(&name, |handle| {
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

/// A connection: its transport and both directions' state, driven by one
/// task.
struct Conn<T> {
    transport: T,
    writer: Writer,
    reader: Reader,
    /// The client must send something (a pong will do) by then.
    read_by: Instant,
    /// A frame still waiting for room in the actor's mailbox when the
    /// server closed the connection: it goes in first while closing, or
    /// the client's later frames would be applied without it.
    unsent: Option<Waiting>,
}

impl<T: Transport> Conn<T> {
    /// Reads and writes until the connection ends.
    async fn serve(
        &mut self,
        handle: &DocHandle,
        closer: &Closer,
        shutdown: &mut watch::Receiver<bool>,
        lease: Option<&mut Lease>,
        mut timer: Pin<&mut Sleep>,
    ) -> Ending {
        let mut lease_end = pin!(Lease::end(lease));
        let now = Instant::now();
        self.read_by = now + IDLE_LIMIT;
        self.writer.ping_at = now + KEEPALIVE;
        loop {
            let item = tokio::select! {
                // A close must win even while a write is stuck on a slow
                // socket: the write is abandoned mid-way if need be.
                biased;
                reason = closer.closed() => return Ending::Server(Some(reason)),
                _ = shutdown.wait_for(|stop| *stop) => return Ending::Server(Some(CloseReason::going_away())),
                reason = &mut lease_end => return Ending::Refused(reason),
                step = poll_fn(|cx| self.poll_step(cx, timer.as_mut())) => match step {
                    Step::Read(item) => item,
                    Step::Idle => return Ending::Gone("nothing received for 90 s"),
                    Step::Wrote(ending) => return ending.unwrap_or_else(|| Ending::Server(closer.take())),
                },
            };
            self.read_by = Instant::now() + IDLE_LIMIT;
            let messages = match self.reader.accept(item) {
                Ok(Some(messages)) => messages,
                Ok(None) => continue,
                Err(ending) => return ending,
            };
            // The actor's mailbox may be full: keep writing while waiting
            // for room, or this peer's queue could fill behind its own read,
            // and keep listening for a close.
            if let Some(mut waiting) = handle.messages_or_wait(self.reader.peer, messages) {
                let sent = loop {
                    tokio::select! {
                        biased;
                        reason = closer.closed() => {
                            self.unsent = Some(waiting);
                            return Ending::Server(Some(reason));
                        }
                        _ = shutdown.wait_for(|stop| *stop) => {
                            self.unsent = Some(waiting);
                            return Ending::Server(Some(CloseReason::going_away()));
                        }
                        reason = &mut lease_end => return Ending::Refused(reason),
                        sent = &mut waiting => break sent,
                        () = poll_fn(|cx| self.writer.poll(cx, &mut self.transport)), if self.writer.end.is_none() => {}
                    }
                };
                if sent.is_err() {
                    // The actor closed its mailbox: it let go of its peers,
                    // giving them a reason if it had one (shutdown, deletion,
                    // a failed store).
                    return match closer.take() {
                        Some(reason) => Ending::Server(Some(reason)),
                        None => Ending::Gone("document closed"),
                    };
                }
                // The wait was the server's, not the client's silence.
                self.read_by = Instant::now() + IDLE_LIMIT;
            }
        }
    }

    /// Makes progress on the timer, writing, then reading: a frame read,
    /// the end of the writer, or the client's silence.
    fn poll_step(&mut self, cx: &mut Context<'_>, mut timer: Pin<&mut Sleep>) -> Poll<Step> {
        // One timer for the idle limit and the keepalive ping: it fires at
        // the earlier of the two, and is moved on then rather than at every
        // frame read or written.
        while timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            if now >= self.read_by {
                return Poll::Ready(Step::Idle);
            }
            if now >= self.writer.ping_at {
                self.writer.ping = true;
                self.writer.ping_at = now + KEEPALIVE;
            }
            timer.as_mut().reset(self.read_by.min(self.writer.ping_at));
        }
        if self.writer.poll(cx, &mut self.transport).is_ready() {
            return Poll::Ready(Step::Wrote(self.writer.end.take().flatten()));
        }
        self.transport.poll_next_unpin(cx).map(Step::Read)
    }

    /// Leaves the document and closes the connection as `ending` says.
    async fn finish(&mut self, ending: Ending, handle: &DocHandle) {
        let peer = self.reader.peer;
        match ending {
            Ending::Refused(reason) => {
                warn!(code = reason.code, reason = %reason.reason, "closing the connection");
                if let Some(kick) = reason.kick {
                    self.reader.metrics.kick(kick);
                }
                handle.leave(peer).await;
                // Nothing more from this client is applied, but its side is
                // read (and dropped) until its close comes back: a socket
                // closed with unread data ends with a reset, which can
                // destroy our close frame before the client reads it.
                let _ = tokio::time::timeout(CLOSE_GRACE, async {
                    let mut close = Closing::Send(Some(reason));
                    while let Some(Ok(item)) = poll_fn(|cx| self.poll_next_closing(cx, &mut close)).await {
                        if matches!(item, Incoming::Close) {
                            break;
                        }
                    }
                    poll_fn(|cx| self.poll_closed(cx, &mut close)).await;
                })
                .await;
                info!("left");
            }
            Ending::ClosedByClient => {
                handle.leave(peer).await;
                // The answer to the client's close leaves with a flush.
                let _ = tokio::time::timeout(CLOSE_GRACE, self.transport.close()).await;
                info!(why = "closed by the client", "left");
            }
            Ending::Gone(why) => {
                handle.leave(peer).await;
                info!(why, "left");
            }
            Ending::Server(reason) => {
                // Frames the client sent before it saw our close frame are
                // still in flight: they are applied until its close comes
                // back, as the WebSocket closing handshake intends, while
                // the close goes out.
                let _ = tokio::time::timeout(CLOSE_GRACE, async {
                    let mut close = Closing::Send(reason);
                    let mut unsent = self.unsent.take();
                    loop {
                        if let Some(waiting) = unsent.take() {
                            if self.deliver(waiting, &mut close).await.is_err() {
                                break;
                            }
                        }
                        let Some(item) = poll_fn(|cx| self.poll_next_closing(cx, &mut close)).await else {
                            break;
                        };
                        match self.reader.accept(Some(item)) {
                            Ok(Some(messages)) => unsent = handle.messages_or_wait(peer, messages),
                            Ok(None) => {}
                            Err(_) => break,
                        }
                    }
                    poll_fn(|cx| self.poll_closed(cx, &mut close)).await;
                })
                .await;
                handle.leave(peer).await;
                info!("left (closed by the server)");
            }
        }
    }

    /// Waits for room in the actor's mailbox while our close keeps going
    /// out (a close stuck behind a full socket is not left half-written).
    async fn deliver(&mut self, mut waiting: Waiting, close: &mut Closing) -> Result<(), DocError> {
        loop {
            tokio::select! {
                biased;
                sent = &mut waiting => return sent,
                () = poll_fn(|cx| self.poll_closed(cx, close)), if !matches!(close, Closing::Done) => {}
            }
        }
    }

    /// The next thing the client sends, while our close goes out in the
    /// same polls (a close stuck behind a full socket does not stop the
    /// reading).
    fn poll_next_closing(
        &mut self,
        cx: &mut Context<'_>,
        close: &mut Closing,
    ) -> Poll<Option<Result<Incoming, TransportError>>> {
        let _ = self.poll_closed(cx, close);
        self.transport.poll_next_unpin(cx)
    }

    /// Hands over our close frame (with its reason, if any) and flushes it;
    /// `Ready` once it is out or cannot go out.
    fn poll_closed(&mut self, cx: &mut Context<'_>, close: &mut Closing) -> Poll<()> {
        loop {
            match close {
                Closing::Send(reason) => {
                    let Some(reason) = reason.take() else {
                        *close = Closing::Flush;
                        continue;
                    };
                    match self.transport.poll_ready_unpin(cx) {
                        Poll::Ready(Ok(())) => {}
                        Poll::Ready(Err(_)) => {
                            *close = Closing::Done;
                            continue;
                        }
                        Poll::Pending => {
                            *close = Closing::Send(Some(reason));
                            return Poll::Pending;
                        }
                    }
                    // Refused when the client's close came first: the
                    // flush still sends tungstenite's answer to it.
                    let _ = self.transport.start_send_unpin(Outgoing::Close(reason));
                    *close = Closing::Flush;
                }
                // Sends a close frame of its own when none was handed over.
                Closing::Flush => {
                    let _ = ready!(self.transport.poll_close_unpin(cx));
                    *close = Closing::Done;
                }
                Closing::Done => return Poll::Ready(()),
            }
        }
    }
}

/// Where our side of the closing handshake is.
enum Closing {
    /// The close frame is to be handed over (`None`: one without a reason).
    Send(Option<CloseReason>),
    Flush,
    Done,
}

/// What one poll of a connection brought.
enum Step {
    Read(Option<Result<Incoming, TransportError>>),
    /// Nothing was received for `IDLE_LIMIT`.
    Idle,
    /// The writer ended: `None` when the actor let go of the peer.
    Wrote(Option<Ending>),
}

/// The writing half: drains the peer's queue into the transport, batching
/// whatever is queued into one flush, and only then frees the frames'
/// place in the queue's byte budget.
struct Writer {
    outbox: OutboxReceiver,
    /// The frames being written; `fed` of them handed to the transport.
    batch: Vec<Bytes>,
    fed: usize,
    /// A ping is due (nothing was written for `KEEPALIVE`), and when the
    /// next one will be.
    ping: bool,
    ping_at: Instant,
    /// Whether a flush is owed: set once something was handed over.
    flushing: bool,
    /// Set when the writer is done: `Some(None)` the actor let go of the
    /// peer, `Some(Some(_))` the transport failed.
    end: Option<Option<Ending>>,
}

impl Writer {
    fn new(outbox: OutboxReceiver) -> Self {
        Self {
            outbox,
            batch: Vec::new(),
            fed: 0,
            ping: false,
            flushing: false,
            ping_at: Instant::now() + KEEPALIVE,
            end: None,
        }
    }

    /// Writes until nothing is queued; `Ready` once the writer is done
    /// (see `end`). Hands back to the caller after each flush, so that a
    /// peer with a busy queue still has its side read.
    fn poll<T: Transport>(&mut self, cx: &mut Context<'_>, transport: &mut T) -> Poll<()> {
        if self.end.is_some() {
            return Poll::Ready(());
        }
        match self.poll_write(cx, transport) {
            Poll::Ready(Ok(())) => self.end = Some(None),
            Poll::Ready(Err(e)) => {
                debug!(error = %e, "write failed");
                self.end = Some(Some(Ending::Gone("write failed")));
            }
            Poll::Pending => return Poll::Pending,
        }
        Poll::Ready(())
    }

    /// `Ready(Ok)` when the queue is closed and drained.
    fn poll_write<T: Transport>(
        &mut self,
        cx: &mut Context<'_>,
        transport: &mut T,
    ) -> Poll<Result<(), TransportError>> {
        if !self.flushing {
            match self.outbox.poll_recv_many(cx, &mut self.batch, WRITE_BATCH) {
                Poll::Ready(0) => return Poll::Ready(Ok(())),
                Poll::Ready(_) => {}
                Poll::Pending if self.ping => {}
                Poll::Pending => return Poll::Pending,
            }
            self.flushing = true;
        }
        while self.fed < self.batch.len() {
            ready!(transport.poll_ready_unpin(cx))?;
            transport.start_send_unpin(Outgoing::Binary(self.batch[self.fed].clone()))?;
            self.fed += 1;
        }
        if self.ping {
            ready!(transport.poll_ready_unpin(cx))?;
            transport.start_send_unpin(Outgoing::Ping)?;
            self.ping = false;
        }
        ready!(transport.poll_flush_unpin(cx))?;
        // Until written, the frames are still held (by the socket's buffer,
        // or here): they count against the queue's budget until now.
        self.outbox.written(&self.batch);
        // Between batches an idle connection holds no room for frames.
        self.batch = Vec::new();
        self.fed = 0;
        self.flushing = false;
        self.ping_at = Instant::now() + KEEPALIVE;
        // Let the reader have its turn before the next batch.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// The reading half's checks: decoding, the rate limit, awareness states.
struct Reader {
    peer: PeerId,
    metrics: Arc<Metrics>,
    rate: Option<RateLimiter>,
    awareness: AwarenessCheck,
}

impl Reader {
    fn new(peer: PeerId, metrics: Arc<Metrics>, rate: Option<RateLimiter>, max_awareness_state: usize) -> Self {
        Self {
            peer,
            metrics,
            rate,
            awareness: AwarenessCheck {
                max_state: max_awareness_state,
                warned: false,
            },
        }
    }

    /// What to do with one item from the transport: messages for the
    /// actor, nothing (a ping), or the end of the connection.
    fn accept(&mut self, item: Option<Result<Incoming, TransportError>>) -> Result<Option<Vec<Inbound>>, Ending> {
        match item {
            None => Err(Ending::Gone("connection closed")),
            Some(Ok(Incoming::Binary(frame))) => {
                let mut messages = match protocol::decode_frame(&frame) {
                    Ok(messages) => messages,
                    Err(e) => {
                        self.metrics.updates_refused.fetch_add(1, Relaxed);
                        return Err(Ending::Refused(CloseReason::new(
                            close::BAD_MESSAGE,
                            format!("bad message: {e}"),
                            Some(Kick::BadMessage),
                        )));
                    }
                };
                if self.rate.as_mut().is_some_and(|r| !r.take(messages.len())) {
                    return Err(Ending::Refused(rate_limited()));
                }
                self.awareness.check(&mut messages);
                Ok(Some(messages))
            }
            Some(Ok(Incoming::Text)) => Err(Ending::Refused(CloseReason::new(
                close::TEXT_FRAME,
                "text frames are not part of the y-websocket protocol",
                Some(Kick::TextFrame),
            ))),
            // Pings cost a pong each and count like messages (a y-websocket
            // client sends none; browsers answer our pings).
            Some(Ok(Incoming::Alive)) => {
                if self.rate.as_mut().is_some_and(|r| !r.take(1)) {
                    return Err(Ending::Refused(rate_limited()));
                }
                Ok(None)
            }
            Some(Ok(Incoming::Close)) => Err(Ending::ClosedByClient),
            Some(Err(TransportError::TooBig(detail))) => Err(Ending::Refused(CloseReason::new(
                close::TOO_BIG,
                detail,
                Some(Kick::TooBig),
            ))),
            Some(Err(TransportError::Other(e))) => {
                debug!(error = %e, "transport error");
                Err(Ending::Gone("transport error"))
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

pub mod hocuspocus;

#[cfg(test)]
mod tests;
