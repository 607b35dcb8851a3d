//! Sessions driven by channels, as the `Stream`/`Sink` design allows: no
//! socket, no HTTP, the in-memory store and tokio's paused clock, so that a
//! 90 s idle limit or a token's expiry runs at once. The WebSocket adapter
//! itself (`http/ws.rs`) is tested against the real binary in `tests/`.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{sink, stream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::sleep;
use yrs::{Doc, GetString, StateVector, Text, Transact};

use super::*;
use crate::doc::{DocConfig, DocName, PeerId, Registry};
use crate::metrics::Metrics;
use crate::protocol::{self, Inbound, UpdateKind};
use crate::rate::{ClientKey, RateBook, RateLimiter};
use crate::storage::flaky::FlakyStore;

/// The server: a registry over the in-memory store (which can hold its
/// writes back), and its shutdown.
struct Server {
    ctx: SessionContext,
    stop: watch::Sender<bool>,
    name: DocName,
    store: Arc<FlakyStore>,
}

impl Server {
    fn new() -> Self {
        let metrics = Arc::new(Metrics::default());
        let store = Arc::new(FlakyStore::default());
        let registry = Registry::new(store.clone(), DocConfig::default(), metrics.clone());
        let (stop, shutdown) = watch::channel(false);
        let ctx = SessionContext {
            registry,
            metrics,
            shutdown,
        };
        let name = DocName::parse("notes").unwrap();
        Self { ctx, stop, name, store }
    }

    fn grant() -> Grant {
        Grant {
            writable: true,
            lease: None,
            rate: None,
            encodes: None,
            user: None,
        }
    }

    /// A connection as the transport would hand it to `session::run`.
    fn connect(&self, peer: u64, grant: Grant) -> Client {
        let (to_server, from_client) = mpsc::channel::<Result<Incoming, TransportError>>(64);
        let (to_client, from_server) = mpsc::channel::<Outgoing>(1024);
        let incoming = Box::pin(stream::unfold(from_client, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }));
        let outgoing = Box::pin(sink::unfold(to_client, |tx, out: Outgoing| async move {
            tx.send(out).await.map_err(|_| "the client went away")?;
            Ok::<_, &str>(tx)
        }));
        let session = tokio::spawn(run(
            Duplex { incoming, outgoing },
            self.name.clone(),
            PeerId(peer),
            grant,
            self.ctx.clone(),
        ));
        Client {
            to_server,
            from_server,
            session,
        }
    }

    /// Peers of the document once its actor has handled what was sent to
    /// it so far (a leave is sent without waiting for an answer).
    async fn peers(&self) -> usize {
        let Some(handle) = self.ctx.registry.loaded(&self.name) else {
            return 0;
        };
        handle.ready().await.unwrap();
        handle.peers()
    }
}

/// A stream and a sink as one [`Transport`].
struct Duplex<S, K> {
    incoming: S,
    outgoing: K,
}

impl<S: Stream + Unpin, K: Unpin> Stream for Duplex<S, K> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        self.incoming.poll_next_unpin(cx)
    }
}

impl<S: Unpin, K: Sink<Outgoing, Error = &'static str> + Unpin> Sink<Outgoing> for Duplex<S, K> {
    type Error = TransportError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        self.outgoing.poll_ready_unpin(cx).map_err(gone)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Outgoing) -> Result<(), TransportError> {
        self.outgoing.start_send_unpin(item).map_err(gone)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        self.outgoing.poll_flush_unpin(cx).map_err(gone)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        self.outgoing.poll_close_unpin(cx).map_err(gone)
    }
}

fn gone(e: &'static str) -> TransportError {
    TransportError::Other(e.to_string())
}

/// The client's ends of a session.
struct Client {
    to_server: mpsc::Sender<Result<Incoming, TransportError>>,
    from_server: mpsc::Receiver<Outgoing>,
    session: JoinHandle<()>,
}

impl Client {
    async fn send(&self, frame: Bytes) {
        self.to_server.send(Ok(Incoming::Binary(frame))).await.unwrap();
    }

    /// The next thing the server sends, within `within`.
    async fn next(&mut self, within: Duration) -> Option<Outgoing> {
        tokio::time::timeout(within, self.from_server.recv())
            .await
            .ok()
            .flatten()
    }

    /// The messages of the next binary frame.
    async fn next_messages(&mut self) -> Vec<Inbound> {
        match self.next(Duration::from_secs(1)).await {
            Some(Outgoing::Binary(frame)) => protocol::decode_frame(&frame).unwrap(),
            other => panic!("expected a binary frame, got {other:?}"),
        }
    }

    /// The code of the close frame the server sends next, skipping frames.
    async fn close_code(&mut self, within: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + within;
        while let Ok(Some(out)) = tokio::time::timeout_at(deadline, self.from_server.recv()).await {
            if let Outgoing::Close(reason) = out {
                return Some(reason.code);
            }
        }
        None
    }
}

/// Waits for `done`, failing with `what` at `deadline`.
async fn until(deadline: tokio::time::Instant, what: &str, done: impl Fn() -> bool) {
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        sleep(Duration::from_millis(1)).await;
    }
}

fn update_frame(client: u64, s: &str) -> Bytes {
    let doc = Doc::with_client_id(client);
    let text = doc.get_or_insert_text("t");
    let mut txn = doc.transact_mut();
    text.push(&mut txn, s);
    protocol::encode_update(&txn.encode_update_v1())
}

fn step1_frame() -> Bytes {
    protocol::encode_step1(&StateVector::default())
}

/// The y-websocket handshake over channels: step1 first, step2 for the
/// client's step1, and updates relayed to the other session.
#[tokio::test(start_paused = true)]
async fn sessions_sync_and_relay_over_channels() {
    let server = Server::new();
    let mut a = server.connect(1, Server::grant());
    assert!(matches!(a.next_messages().await[..], [Inbound::SyncStep1(_)]));
    a.send(step1_frame()).await;
    match &a.next_messages().await[..] {
        [Inbound::Update(step2)] => assert_eq!(step2.kind, UpdateKind::Step2),
        other => panic!("expected step2, got {other:?}"),
    }

    let mut b = server.connect(2, Server::grant());
    b.next_messages().await; // its step1
    b.send(update_frame(7, "hello")).await;
    match &a.next_messages().await[..] {
        [Inbound::Update(update)] => assert_eq!(update.kind, UpdateKind::Update),
        other => panic!("expected the update, got {other:?}"),
    }
    assert_eq!(server.peers().await, 2);

    // A close from the client ends its session and its place in the document.
    b.to_server.send(Ok(Incoming::Close)).await.unwrap();
    b.session.await.unwrap();
    assert_eq!(server.peers().await, 1);
}

/// An undecodable frame closes its connection with 4400; the document and
/// the other session carry on.
#[tokio::test(start_paused = true)]
async fn an_undecodable_frame_closes_only_its_session() {
    let server = Server::new();
    let mut good = server.connect(1, Server::grant());
    let mut bad = server.connect(2, Server::grant());
    good.next_messages().await;
    bad.send(Bytes::from_static(&[0, 1])).await;
    assert_eq!(bad.close_code(Duration::from_secs(1)).await, Some(close::BAD_MESSAGE));
    // It waits for the client's close for a moment, then ends anyway.
    bad.session.await.unwrap();
    assert_eq!(server.peers().await, 1);
    let mut c = server.connect(3, Server::grant());
    c.next_messages().await;
    c.send(update_frame(7, "still here")).await;
    assert!(matches!(good.next_messages().await[..], [Inbound::Update(_)]));
}

/// A quiet connection is pinged every 30 s; one that sends nothing at all
/// for 90 s is dropped and leaves the document.
#[tokio::test(start_paused = true)]
async fn a_silent_client_is_pinged_then_dropped() {
    let server = Server::new();
    let mut client = server.connect(1, Server::grant());
    client.next_messages().await;
    for _ in 0..2 {
        assert!(matches!(
            client.next(Duration::from_secs(31)).await,
            Some(Outgoing::Ping)
        ));
    }
    sleep(Duration::from_secs(29)).await;
    assert_eq!(server.peers().await, 1, "not before 90 s");
    tokio::time::timeout(Duration::from_secs(2), &mut client.session)
        .await
        .expect("dropped after 90 s of silence")
        .unwrap();
    assert_eq!(server.peers().await, 0);
}

/// Shutdown closes every session with 1001.
#[tokio::test(start_paused = true)]
async fn shutdown_closes_with_going_away() {
    let server = Server::new();
    let mut client = server.connect(1, Server::grant());
    client.next_messages().await;
    server.stop.send(true).unwrap();
    assert_eq!(client.close_code(Duration::from_secs(1)).await, Some(close::GOING_AWAY));
}

/// A frame waiting for room in a full mailbox when the server shuts down
/// still goes in, before the frames the client sent after it: dropping it
/// would leave those waiting for it in the document forever.
#[tokio::test(start_paused = true)]
async fn a_frame_waiting_for_the_mailbox_is_kept_through_shutdown() {
    let server = Server::new();
    let mut client = server.connect(1, Server::grant());
    client.next_messages().await;
    // One client's edits, each after the one before.
    let doc = Doc::with_client_id(9);
    let text = doc.get_or_insert_text("t");
    let frames: Vec<Bytes> = (0..300)
        .map(|i| {
            let mut txn = doc.transact_mut();
            text.push(&mut txn, &format!("{i} "));
            protocol::encode_update(&txn.encode_update_v1())
        })
        .collect();
    let expected = text.get_string(&doc.transact());

    // The actor stops in the first edit's write; the next 256 fill its
    // mailbox and one waits for room in the session.
    server.store.hold_appends.send_replace(true);
    client.send(frames[0].clone()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    until(deadline, "the first edit reached the store", || {
        server.store.appends.load(std::sync::atomic::Ordering::SeqCst) > 0
    })
    .await;
    for frame in &frames[1..258] {
        client.send(frame.clone()).await;
    }
    until(deadline, "the session read every frame sent", || {
        client.to_server.capacity() == client.to_server.max_capacity()
    })
    .await;
    for frame in &frames[258..] {
        client.send(frame.clone()).await;
    }
    // Shutdown while the frame waits; the store goes on at the same moment.
    server.stop.send(true).unwrap();
    server.store.hold_appends.send_replace(false);
    assert_eq!(client.close_code(Duration::from_secs(5)).await, Some(close::GOING_AWAY));
    client.to_server.send(Ok(Incoming::Close)).await.unwrap();
    client.session.await.unwrap();

    let handle = server.ctx.registry.loaded(&server.name).expect("still loaded");
    handle.ready().await.unwrap();
    let got = server.store.stored_text(&server.name).await;
    assert_eq!(got, expected, "every edit stored, in order");
}

/// A token's connection ends with 4401 when the token expires, and at once
/// with 4403 when it is revoked.
#[tokio::test(start_paused = true)]
async fn a_lease_ends_the_session_when_the_token_does() {
    let server = Server::new();
    let lease = |expires_in: Duration, revoked: tokio::sync::oneshot::Receiver<()>| Grant {
        lease: Some(Lease::new(tokio::time::Instant::now() + expires_in, async move {
            let _ = revoked.await;
        })),
        ..Server::grant()
    };
    let (_keep, never) = tokio::sync::oneshot::channel();
    // (Within the 90 s a silent client is allowed.)
    let mut expiring = server.connect(1, lease(Duration::from_secs(60), never));
    expiring.next_messages().await;
    assert_eq!(expiring.close_code(Duration::from_secs(59)).await, None);
    assert_eq!(
        expiring.close_code(Duration::from_secs(2)).await,
        Some(close::TOKEN_EXPIRED)
    );

    let (revoke, revoked) = tokio::sync::oneshot::channel();
    let mut client = server.connect(2, lease(Duration::from_secs(3600), revoked));
    client.next_messages().await;
    revoke.send(()).unwrap();
    assert_eq!(
        client.close_code(Duration::from_secs(1)).await,
        Some(close::TOKEN_REVOKED)
    );
}

/// Messages beyond the connection's bucket close it with 4429.
#[tokio::test(start_paused = true)]
async fn a_flooding_client_is_closed() {
    let server = Server::new();
    let book = Arc::new(RateBook::new(0.001, 5.0, 16));
    let key = ClientKey {
        ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        token: None,
    };
    let grant = Grant {
        rate: Some(RateLimiter::from_book(book, key)),
        encodes: None,
        ..Server::grant()
    };
    let mut client = server.connect(1, grant);
    client.next_messages().await;
    for _ in 0..6 {
        client.send(step1_frame()).await;
    }
    assert_eq!(
        client.close_code(Duration::from_secs(1)).await,
        Some(close::RATE_LIMITED)
    );
}
