//! Live peer counts: `document.peers` on the feed, never stored.
//!
//! `peer.joined` and `peer.left` are events in the outbox, written with a
//! commit each, so they are off by default (`--events-peers`). A page that
//! lists documents only needs each document's current count, and only
//! while it is looking: a count that is lost (a consumer not connected, a
//! restart) is worth nothing later, since the next one replaces it. So the
//! count goes out on a channel of its own, beside the outbox: each loaded
//! document reports its count as it changes (`doc::Peers`), and one task
//! sends each document's latest count at most once per [`EVERY`], so a
//! class joining at once costs a message or two, not one per joiner. It is
//! never written to the outbox and never reaches a webhook; `GET
//! /api/events` sends it to subscribers that ask for it by type
//! (`http/events.rs`), as a message without an `id:` (there is nothing to
//! resume).
//!
//! The counts are this node's connections, as `GET /api/docs` shows them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::{broadcast, Notify};

use crate::clock::now_ms;
use crate::event::rfc3339;
use crate::name::DocName;

/// The type name consumers ask for and see.
pub const TYPE: &str = "document.peers";
/// At most one count per document per this long; the first change after a
/// quiet spell goes out at once.
pub const EVERY: Duration = Duration::from_secs(1);
/// Counts the channel holds for a slow subscriber; one that falls further
/// behind skips to the newest (a count replaces the ones before it).
const CHANNEL: usize = 1024;

/// One document's count, as sent: its envelope rendered once for every
/// subscriber.
#[derive(Debug)]
pub struct PeerCount {
    pub document: DocName,
    pub peers: usize,
    /// `{"type":"document.peers","time":…,"document":…,"data":{"peers":n}}`
    pub body: String,
}

/// The handle every document actor reports to; cheap to clone.
#[derive(Clone)]
pub struct PeerCounts {
    inner: Arc<Inner>,
    /// Stops the task when the last handle goes.
    _owner: Arc<Owner>,
}

struct Owner(Arc<Inner>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.closed.store(true, Relaxed);
        self.0.wake.notify_one();
    }
}

struct Inner {
    /// Counts changed since the last send, by document (at most one entry
    /// per loaded document).
    changed: Mutex<HashMap<DocName, usize>>,
    wake: Notify,
    sent: broadcast::Sender<Arc<PeerCount>>,
    closed: AtomicBool,
}

impl PeerCounts {
    /// Starts the sending task; it ends when the last handle is dropped.
    pub fn start() -> Self {
        let (sent, _) = broadcast::channel(CHANNEL);
        let inner = Arc::new(Inner {
            changed: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            sent,
            closed: AtomicBool::new(false),
        });
        tokio::spawn(send(inner.clone()));
        Self {
            _owner: Arc::new(Owner(inner.clone())),
            inner,
        }
    }

    /// `doc` has `peers` connections now. Never waits: a lock held for a
    /// map insert.
    pub fn report(&self, doc: &DocName, peers: usize) {
        self.inner.changed.lock().unwrap().insert(doc.clone(), peers);
        self.inner.wake.notify_one();
    }

    /// The counts sent from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<PeerCount>> {
        self.inner.sent.subscribe()
    }
}

impl std::fmt::Debug for PeerCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerCounts")
    }
}

/// Sends what changed, then waits [`EVERY`] before sending again: each
/// document's count goes out at most once per period, the latest one.
async fn send(inner: Arc<Inner>) {
    // The last count sent per document, so that a join and a leave within
    // one period send nothing. Documents back at 0 are forgotten, so this
    // holds only documents with peers.
    let mut last: HashMap<DocName, usize> = HashMap::new();
    loop {
        inner.wake.notified().await;
        if inner.closed.load(Relaxed) {
            return;
        }
        let changed = std::mem::take(&mut *inner.changed.lock().unwrap());
        let time = rfc3339(now_ms());
        for (document, peers) in changed {
            let before = if peers == 0 {
                last.remove(&document)
            } else {
                last.insert(document.clone(), peers)
            };
            if before.unwrap_or(0) == peers {
                continue;
            }
            let body = json!({
                "type": TYPE,
                "time": time,
                "document": document.as_str(),
                "data": { "peers": peers },
            })
            .to_string();
            // No subscriber: nothing to do.
            let _ = inner.sent.send(Arc::new(PeerCount { document, peers, body }));
        }
        tokio::time::sleep(EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> DocName {
        DocName::parse(s).unwrap()
    }

    /// The first change goes out at once; changes within the next period
    /// go out together after it, as the latest count only.
    #[tokio::test(start_paused = true)]
    async fn counts_are_sent_at_most_once_per_period() {
        let counts = PeerCounts::start();
        let mut rx = counts.subscribe();
        counts.report(&name("a"), 1);
        let first = rx.recv().await.unwrap();
        assert_eq!((first.document.as_str(), first.peers), ("a", 1));
        let v: serde_json::Value = serde_json::from_str(&first.body).unwrap();
        assert_eq!(v["type"], "document.peers");
        assert_eq!(v["document"], "a");
        assert_eq!(v["data"]["peers"], 1);
        assert!(v.get("id").is_none(), "not an outbox event: nothing to resume");

        let before = tokio::time::Instant::now();
        for n in 2..=200 {
            counts.report(&name("a"), n);
        }
        let next = rx.recv().await.unwrap();
        assert_eq!(next.peers, 200, "only the latest count");
        assert!(before.elapsed() >= EVERY - Duration::from_millis(1));
        assert!(rx.try_recv().is_err(), "one message for 199 changes");
    }

    /// A join and a leave within one period send nothing.
    #[tokio::test(start_paused = true)]
    async fn a_count_back_where_it_was_is_not_sent() {
        let counts = PeerCounts::start();
        let mut rx = counts.subscribe();
        counts.report(&name("a"), 1);
        assert_eq!(rx.recv().await.unwrap().peers, 1);
        counts.report(&name("a"), 2);
        counts.report(&name("a"), 1);
        counts.report(&name("b"), 1);
        let next = rx.recv().await.unwrap();
        assert_eq!((next.document.as_str(), next.peers), ("b", 1));
        counts.report(&name("a"), 0);
        assert_eq!(rx.recv().await.unwrap().peers, 0);
    }
}
