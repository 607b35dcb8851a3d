//! The Hocuspocus session driven by channels on tokio's paused clock: its
//! pings, idle limits and per-document token ends run at once. The real
//! provider against the real binary is `tests/node/compat/hocuspocus.test.mjs`.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{sink, stream, FutureExt};
use tokio::sync::{mpsc, watch};
use yrs::encoding::write::Write;

use super::*;
use crate::doc::{DocConfig, Registry};
use crate::metrics::Metrics;
use crate::storage::MemoryStore;

/// A socket's two ends, as the transport would hand them to `run`; the
/// document `expiring` is granted with a token that ends after 10 s.
struct Client {
    to_server: mpsc::Sender<Result<Incoming, TransportError>>,
    from_server: mpsc::Receiver<Outgoing>,
    _stop: watch::Sender<bool>,
}

fn connect() -> Client {
    let metrics = Arc::new(Metrics::default());
    let registry = Registry::new(Arc::new(MemoryStore::default()), DocConfig::default(), metrics.clone());
    let (stop, shutdown) = watch::channel(false);
    let authorize: Authorize = Arc::new(|name: DocName, _token: String| {
        async move {
            let lease = (name.as_str() == "expiring").then(|| {
                Lease::new(
                    tokio::time::Instant::now() + Duration::from_secs(10),
                    std::future::pending(),
                )
            });
            Ok(DocAccess {
                writable: true,
                lease,
                user: None,
            })
        }
        .boxed()
    });
    let hctx = HocuspocusContext {
        ctx: SessionContext {
            registry,
            metrics,
            shutdown,
        },
        authorize,
        limits: HocuspocusLimits {
            max_docs: 4,
            max_pending_bytes: 1 << 16,
        },
        next_peer: Arc::new(AtomicU64::new(1)),
        rate: None,
        encodes: None,
    };
    let (to_server, from_client) = mpsc::channel::<Result<Incoming, TransportError>>(64);
    let (to_client, from_server) = mpsc::channel::<Outgoing>(1024);
    let incoming = Box::pin(stream::unfold(from_client, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    let outgoing = Box::pin(sink::unfold(to_client, |tx, out: Outgoing| async move {
        tx.send(out).await.map_err(|_| "the client went away")?;
        Ok::<_, &str>(tx)
    }));
    tokio::spawn(run(incoming, outgoing, 1, hctx));
    Client {
        to_server,
        from_server,
        _stop: stop,
    }
}

fn auth(address: &str) -> Bytes {
    let mut body = vec![hp::AUTH as u8, hp::AUTH_TOKEN as u8];
    body.write_string("");
    body.write_string("4.8.0");
    hp::address(address, &body)
}

impl Client {
    async fn send(&self, frame: Bytes) {
        self.to_server.send(Ok(Incoming::Binary(frame))).await.unwrap();
    }

    /// What the server sends next, within `within` (of paused time).
    async fn next(&mut self, within: Duration) -> Option<Outgoing> {
        tokio::time::timeout(within, self.from_server.recv())
            .await
            .ok()
            .flatten()
    }

    /// Skips frames until one equals `want`; false if none came in `within`.
    async fn until(&mut self, want: &Bytes, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while let Ok(Some(out)) = tokio::time::timeout_at(deadline, self.from_server.recv()).await {
            if matches!(&out, Outgoing::Binary(frame) if frame == want) {
                return true;
            }
        }
        false
    }
}

#[tokio::test(start_paused = true)]
async fn pings_every_15_s_and_closes_a_silent_socket_after_60_s() {
    let mut client = connect();
    client.send(auth("notes")).await;
    assert!(
        client
            .until(&hp::address("notes", &hp::authenticated(true)), Duration::from_secs(1))
            .await
    );
    assert!(
        client.until(&hp::ping(), Duration::from_secs(16)).await,
        "a ping within 15 s"
    );
    // The client answers the ping: its 60 s start again.
    client.send(hp::pong()).await;
    let answered = tokio::time::Instant::now();
    let close = loop {
        match client.next(Duration::from_secs(120)).await {
            Some(Outgoing::Close(reason)) => break reason,
            Some(_) => continue,
            None => panic!("no close"),
        }
    };
    assert_eq!(close.code, CONNECTION_TIMEOUT);
    let silent = answered.elapsed();
    assert!(
        silent >= IDLE_LIMIT && silent < IDLE_LIMIT + Duration::from_secs(1),
        "{silent:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_socket_that_never_attaches_is_closed_even_while_it_talks() {
    let mut client = connect();
    let opened = tokio::time::Instant::now();
    // Frames for a document whose token never comes: they refresh nothing.
    for _ in 0..10 {
        client.send(hp::address("waiting", &[hp::QUERY_AWARENESS as u8])).await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        if client.to_server.is_closed() {
            break;
        }
    }
    let close = loop {
        match client.next(Duration::from_secs(120)).await {
            Some(Outgoing::Close(reason)) => break reason,
            Some(_) => continue,
            None => panic!("no close"),
        }
    };
    assert_eq!(close.code, CONNECTION_TIMEOUT);
    assert!(
        opened.elapsed() < IDLE_LIMIT + Duration::from_secs(11),
        "{:?}",
        opened.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn an_expired_token_closes_its_document_only() {
    let mut client = connect();
    client.send(auth("expiring")).await;
    client.send(auth("kept")).await;
    assert!(
        client
            .until(&hp::address("kept", &hp::authenticated(true)), Duration::from_secs(1))
            .await
    );
    let closed = hp::address("expiring", &hp::close("Unauthorized"));
    assert!(
        client.until(&closed, Duration::from_secs(11)).await,
        "the expiring document is closed"
    );
    // The other one still answers: a step1 gets step1 then step2.
    let step1 = hp::address("kept", &crate::protocol::encode_step1(&yrs::StateVector::default()));
    client.send(step1.clone()).await;
    assert!(
        client.until(&step1, Duration::from_secs(1)).await,
        "kept still attached"
    );
    // And the expired one is attached no more: its messages wait for a token.
    client.send(hp::address("expiring", &[hp::QUERY_AWARENESS as u8])).await;
    assert!(!client.until(&closed, Duration::from_secs(1)).await);
}
