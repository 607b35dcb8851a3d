//! The feed of events: what the outbox holds, as it grows.
//!
//! Events are written by the stores, in the transaction of the change they
//! report (`storage::outbox`); this layer only reads them back. [`Feed`]
//! knows the highest committed event seq (`latest`), from the store's
//! writer in-process and, in cluster mode, by polling the store, since
//! other nodes write to it too. One pump task reads each new stretch of the
//! outbox once and broadcasts it to the subscribers of `GET /api/events`
//! (a bounded channel); a subscriber that falls behind reads the outbox
//! itself from its cursor instead of making the channel buffer for it
//! ([`Subscription`]). The webhooks wake on `latest` and read the outbox
//! with their own cursors; they set the floor below which nothing is
//! pruned. A pruning task drops events older than `--events-retention`.
//! Beside the outbox, [`PeerCounts`] sends documents' live peer counts
//! (`document.peers`), which are never stored (`peers.rs`).
//!
//! A layer beside `broker`: `doc` may use it, it uses `storage` and the
//! leaves.

use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tracing::{debug, warn};

use crate::clock::now_ms;
use crate::name::DocName;
use crate::storage::{BoxFuture, DocStore, StoreError, StoredEvent};

/// Renders a document's content as JSON (`doc::content`, through the
/// registry): given by the wiring, since this layer sits below `doc`.
pub type ContentSource = Arc<dyn Fn(DocName) -> BoxFuture<'static, Result<serde_json::Value, String>> + Send + Sync>;

/// Events read from the outbox at once, by the pump and by a subscriber
/// catching up: what bounds a subscriber's memory.
pub const PAGE: usize = 256;
/// Events the broadcast channel holds for subscribers; one that falls
/// further behind reads the outbox instead.
const BROADCAST: usize = 1024;
/// How often a clustered node asks the store for other nodes' events.
pub const CLUSTER_POLL: Duration = Duration::from_millis(500);
/// How often old events are pruned (at most; never more often than the
/// retention itself).
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// How the feed runs, from the configuration.
#[derive(Debug, Clone)]
pub struct FeedConfig {
    /// Events older than this are pruned (once delivered).
    pub retention: Duration,
    /// Cluster mode: poll the store this often for other nodes' events.
    pub poll: Option<Duration>,
}

/// The feed's handle: cheap to clone.
#[derive(Clone)]
pub struct Feed {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn DocStore>,
    latest: watch::Sender<i64>,
    events: broadcast::Sender<Arc<StoredEvent>>,
    /// No event above this is pruned: the lowest webhook cursor.
    floor: AtomicI64,
    content: OnceLock<ContentSource>,
    /// `document.peers`: live counts beside the outbox, never stored.
    peers: PeerCounts,
}

impl Feed {
    /// Starts the feed's tasks (they end when the last handle is dropped
    /// and the store's signal closes, or with the runtime).
    pub async fn start(store: Arc<dyn DocStore>, config: FeedConfig) -> Result<Feed, StoreError> {
        // Subscribed before the first read, so that no commit falls between.
        let committed = store.committed_events();
        let first = store.last_event_seq().await?;
        let (latest, _) = watch::channel(first);
        let (events, _) = broadcast::channel(BROADCAST);
        let feed = Feed {
            inner: Arc::new(Inner {
                store,
                latest,
                events,
                floor: AtomicI64::new(i64::MAX),
                content: OnceLock::new(),
                peers: PeerCounts::start(),
            }),
        };
        tokio::spawn(follow(Arc::downgrade(&feed.inner), committed, config.poll));
        tokio::spawn(pump(Arc::downgrade(&feed.inner), feed.latest(), first));
        tokio::spawn(prune(Arc::downgrade(&feed.inner), config.retention));
        Ok(feed)
    }

    /// The highest committed event seq known to this node.
    pub fn latest(&self) -> watch::Receiver<i64> {
        self.inner.latest.subscribe()
    }

    /// The lowest cursor of every webhook subscription: nothing above it is
    /// pruned, whatever its age.
    pub fn set_delivery_floor(&self, seq: i64) {
        self.inner.floor.store(seq, Relaxed);
    }

    /// The live peer counts (`document.peers`): documents report to it,
    /// `GET /api/events` sends what it sends.
    pub fn peer_counts(&self) -> &PeerCounts {
        &self.inner.peers
    }

    pub fn store(&self) -> &Arc<dyn DocStore> {
        &self.inner.store
    }

    /// Set once by the wiring (`server.rs`): how [`content`](Self::content)
    /// renders a document.
    pub fn set_content_source(&self, source: ContentSource) {
        let _ = self.inner.content.set(source);
    }

    /// A document's content as JSON, as `GET /api/docs/{name}` shows it
    /// (for webhooks subscribed with `?content=1`). Loads the document if
    /// it is not loaded.
    pub async fn content(&self, doc: DocName) -> Result<serde_json::Value, String> {
        match self.inner.content.get() {
            Some(source) => source(doc).await,
            None => Err("no content source wired".into()),
        }
    }

    /// Events after `after`, as they come (see [`Subscription`]).
    pub fn subscribe(&self, after: i64) -> Subscription {
        Subscription {
            store: self.inner.store.clone(),
            live: self.inner.events.subscribe(),
            cursor: after,
            catching_up: true,
        }
    }

    /// Whether a consumer that last saw `seq` can resume without a gap:
    /// the event itself is still in the outbox (pruning removes the
    /// oldest first, so then everything after it is there too). `Err`
    /// holds the first seq still there, if any.
    pub async fn resumable(&self, seq: i64) -> Result<Result<(), Option<i64>>, StoreError> {
        if seq <= 0 {
            return Ok(Ok(()));
        }
        let found = self.inner.store.events_after(seq - 1, 1).await?;
        Ok(match found.first() {
            Some(e) if e.seq == seq => Ok(()),
            Some(e) => Err(Some(e.seq)),
            None => Err(None),
        })
    }
}

fn raise(latest: &watch::Sender<i64>, seq: i64) {
    latest.send_if_modified(|known| {
        let newer = seq > *known;
        if newer {
            *known = seq;
        }
        newer
    });
}

/// Keeps `latest` up to date: from this process's writer, and in cluster
/// mode from the store itself.
async fn follow(inner: std::sync::Weak<Inner>, mut committed: watch::Receiver<i64>, poll: Option<Duration>) {
    if let Some(inner) = inner.upgrade() {
        raise(&inner.latest, *committed.borrow_and_update());
    }
    let mut tick = tokio::time::interval(poll.unwrap_or(Duration::from_secs(3600)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            changed = committed.changed() => {
                if changed.is_err() {
                    return;
                }
                let seq = *committed.borrow_and_update();
                let Some(inner) = inner.upgrade() else { return };
                raise(&inner.latest, seq);
            }
            _ = tick.tick(), if poll.is_some() => {
                let Some(inner) = inner.upgrade() else { return };
                match inner.store.last_event_seq().await {
                    Ok(seq) => raise(&inner.latest, seq),
                    Err(e) => debug!(error = %e, "could not poll the outbox"),
                }
            }
        }
    }
}

/// Reads each new stretch of the outbox once and broadcasts it.
async fn pump(inner: std::sync::Weak<Inner>, mut latest: watch::Receiver<i64>, mut cursor: i64) {
    loop {
        let target = *latest.borrow_and_update();
        let Some(inner) = inner.upgrade() else { return };
        while cursor < target {
            match inner.store.events_after(cursor, PAGE).await {
                Ok(page) if page.is_empty() => break,
                Ok(page) => {
                    for event in page {
                        cursor = event.seq;
                        // No subscriber: nothing to do.
                        let _ = inner.events.send(Arc::new(event));
                    }
                }
                Err(e) => {
                    // Subscribers read the outbox themselves when they
                    // miss something; the next change tries again.
                    warn!(error = %e, "could not read the outbox for the feed");
                    break;
                }
            }
        }
        drop(inner);
        if latest.changed().await.is_err() {
            return;
        }
    }
}

/// Drops events past the retention, never above the delivery floor.
async fn prune(inner: std::sync::Weak<Inner>, retention: Duration) {
    let mut tick = tokio::time::interval(PRUNE_EVERY.min(retention.max(Duration::from_secs(1))));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let floor = inner.floor.load(Relaxed);
        let before = now_ms() - retention.as_millis() as i64;
        match inner.store.prune_events(floor, before).await {
            Ok(0) => {}
            Ok(n) => debug!(pruned = n, "old events pruned"),
            Err(e) => warn!(error = %e, "could not prune old events"),
        }
    }
}

/// One consumer's view of the feed: events after its cursor, in order,
/// each once. It takes them from the broadcast while it keeps up; when it
/// lags (or at first) it reads the outbox a page at a time, so what it
/// holds is bounded by [`PAGE`] and the broadcast's capacity, never by how
/// far behind it is.
pub struct Subscription {
    store: Arc<dyn DocStore>,
    live: broadcast::Receiver<Arc<StoredEvent>>,
    cursor: i64,
    catching_up: bool,
}

impl Subscription {
    /// The seq of the last event handed out.
    pub fn cursor(&self) -> i64 {
        self.cursor
    }

    /// The next events (at least one); `Ok(None)` when the feed has
    /// stopped.
    pub async fn next(&mut self) -> Result<Option<Vec<Arc<StoredEvent>>>, StoreError> {
        loop {
            if self.catching_up {
                let page = self.store.events_after(self.cursor, PAGE).await?;
                if page.len() < PAGE {
                    // Caught up: whatever commits from now on is in the
                    // broadcast, which this subscriber joined before reading.
                    self.catching_up = false;
                }
                if let Some(last) = page.last() {
                    self.cursor = last.seq;
                    return Ok(Some(page.into_iter().map(Arc::new).collect()));
                }
                continue;
            }
            match self.live.recv().await {
                Ok(event) if event.seq <= self.cursor => continue,
                Ok(event) => {
                    self.cursor = event.seq;
                    let mut batch = vec![event];
                    while batch.len() < PAGE {
                        match self.live.try_recv() {
                            Ok(event) if event.seq <= self.cursor => {}
                            Ok(event) => {
                                self.cursor = event.seq;
                                batch.push(event);
                            }
                            Err(broadcast::error::TryRecvError::Lagged(_)) => {
                                self.catching_up = true;
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    return Ok(Some(batch));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Fell behind: read the outbox from the cursor, drop
                    // what the channel still holds for it as it comes.
                    self.catching_up = true;
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(None),
            }
        }
    }
}

mod peers;
pub mod webhook;

pub use peers::{PeerCount, PeerCounts, TYPE as PEER_COUNTS};

#[cfg(test)]
mod tests;
