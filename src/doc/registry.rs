//! `Registry`: document name → the actor that holds it.
//!
//! Actors are spawned on first use and remove themselves after their last
//! peer left and the grace period passed, through a callback the registry
//! hands them (the actor knows nothing of the registry). The registry also
//! supervises every actor task: one that panics is removed here. The map sits behind a std `Mutex`:
//! every critical section is a hash lookup or insert, never an `.await`, so a
//! blocking lock is both correct and cheaper than an async one.
//!
//! An actor that is unloading may still be reached through a handle taken
//! just before it left the map; it then answers `DocError::Unloaded`, and
//! [`Registry::with_doc`] simply asks again, which spawns a fresh actor that
//! loads what the old one stored.
//!
//! A client's request for a document that is not loaded may be refused
//! with `DocError::Busy` while too many loads are in flight
//! ([`Registry::with_doc_or_shed`], see `loading`).

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use tracing::{error, Instrument};

use super::actor::{self, Shared};
use super::handle::{self, DocHandle};
use super::loading::{Loading, Loads, Shed};
use super::{DocConfig, DocError, DocMeta, DocName, VersionMeta};
use crate::broker::Broker;
use crate::events::PeerCounts;
use crate::metrics::Metrics;
use crate::storage::{DocStore, StoreError};

/// A loaded document: its actor's handle, and which actor it is. A name
/// maps to a new actor after the old one left, and an old actor that
/// leaves late must not remove its successor.
struct Slot {
    generation: u64,
    handle: DocHandle,
}

struct Inner {
    docs: Mutex<HashMap<DocName, Slot>>,
    next_generation: AtomicU64,
    shutting_down: AtomicBool,
    loads: Arc<Loads>,
}

impl Inner {
    /// Removes `name` if it still maps to the actor of that generation.
    fn remove(&self, name: &DocName, generation: u64) {
        let mut docs = self.docs.lock().unwrap();
        if docs.get(name).is_some_and(|slot| slot.generation == generation) {
            docs.remove(name);
        }
    }
}

fn storage(e: StoreError) -> DocError {
    DocError::Storage(e.to_string())
}

/// Attempts of [`Registry::with_doc`] before it gives up.
const RETRIES: u64 = 20;

#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
    shared: Shared,
    /// Where actors report their peer counts as they change.
    live: Option<PeerCounts>,
}

impl Registry {
    pub fn new(store: Arc<dyn DocStore>, config: DocConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            inner: Arc::new(Inner {
                docs: Mutex::new(HashMap::new()),
                next_generation: AtomicU64::new(1),
                shutting_down: AtomicBool::new(false),
                loads: Loads::new(config.max_loading, metrics.clone()),
            }),
            shared: Shared {
                store,
                config: Arc::new(config),
                metrics,
                broker: None,
            },
            live: None,
        }
    }

    /// Actors report their peer counts here as they change (the feed's
    /// `document.peers`).
    pub fn with_peer_counts(mut self, live: PeerCounts) -> Self {
        self.live = Some(live);
        self
    }

    /// Loads every document with edits no `document.updated` reported
    /// (weft was killed before their report), so that each reports them
    /// (see `actor/events.rs`). Not in cluster mode, whose store does not
    /// hold the updates themselves.
    pub async fn report_unreported(&self) {
        if self.shared.broker.is_some() {
            return;
        }
        let names = match self.shared.store.unreported().await {
            Ok(names) => names,
            Err(e) => {
                tracing::warn!(error = %e, "could not find documents with unreported edits");
                return;
            }
        };
        if !names.is_empty() {
            tracing::info!(documents = names.len(), "reporting edits made before the last stop");
        }
        for name in names {
            if let Err(e) = self.with_doc(&name, |handle| async move { handle.ready().await }).await {
                tracing::warn!(doc = %name, error = %e, "could not load a document to report its edits");
            }
        }
    }

    /// Cluster mode: documents' updates go through Redis Streams.
    pub fn with_broker(mut self, broker: Arc<Broker>) -> Self {
        self.shared.broker = Some(broker);
        self
    }

    /// Cluster mode: another node deleted `name`; if it is loaded here, its
    /// peers are disconnected (4404) and it unloads without saving.
    pub async fn evict(&self, name: &DocName) {
        let handle = self
            .inner
            .docs
            .lock()
            .unwrap()
            .get(name)
            .map(|slot| slot.handle.clone());
        if let Some(handle) = handle {
            handle.evict().await;
        }
    }

    /// The cluster's broker, when in cluster mode (for `/healthz`).
    pub fn broker(&self) -> Option<&Arc<Broker>> {
        self.shared.broker.as_ref()
    }

    pub fn config(&self) -> &DocConfig {
        &self.shared.config
    }

    /// The actor of `name`, spawned (and loading) if there was none.
    pub fn handle(&self, name: &DocName) -> Result<DocHandle, DocError> {
        self.handle_or_shed(name, Shed::Never)
    }

    /// The actor of `name`; spawning one is refused with `Busy` when
    /// `shed` allows it and too many are loading.
    fn handle_or_shed(&self, name: &DocName, shed: Shed) -> Result<DocHandle, DocError> {
        if self.inner.shutting_down.load(Ordering::Acquire) {
            return Err(DocError::ShuttingDown);
        }
        let mut docs = self.inner.docs.lock().unwrap();
        if let Some(slot) = docs.get(name) {
            return Ok(slot.handle.clone());
        }
        let loading = self.inner.loads.start(shed)?;
        let generation = self.inner.next_generation.fetch_add(1, Ordering::Relaxed);
        let handle = self.spawn(name, generation, loading);
        docs.insert(
            name.clone(),
            Slot {
                generation,
                handle: handle.clone(),
            },
        );
        Ok(handle)
    }

    /// Starts the actor of `name` in a span of its own, and supervises it.
    fn spawn(&self, name: &DocName, generation: u64, loading: Loading) -> DocHandle {
        let (handle, mailbox) = handle::mailbox(self.live.clone().map(|live| (name.clone(), live)));
        let inner = self.inner.clone();
        let leaving = name.clone();
        let deregister = Box::new(move || inner.remove(&leaving, generation));
        let actor = actor::run(name.clone(), mailbox, self.shared.clone(), deregister, loading);
        let (inner, name, metrics) = (self.inner.clone(), name.clone(), self.shared.metrics.clone());
        let span = tracing::info_span!("doc", doc = %name);
        tokio::spawn(
            async move {
                // A panic in the actor (yrs on input nothing caught, or a bug
                // of ours) must not leave a dead actor in the registry: every
                // later request would reach it and fail. Its peers lose their
                // queues and reconnect; the document loads afresh from what
                // was stored.
                if AssertUnwindSafe(actor).catch_unwind().await.is_err() {
                    error!("document actor panicked; its peers reconnect and it loads again from storage");
                    metrics.actor_panics.fetch_add(1, Relaxed);
                    inner.remove(&name, generation);
                }
            }
            .instrument(span),
        );
        handle
    }

    /// The actor of `name` if it is loaded; never loads.
    pub fn loaded(&self, name: &DocName) -> Option<DocHandle> {
        let docs = self.inner.docs.lock().unwrap();
        docs.get(name).map(|slot| slot.handle.clone())
    }

    /// Every document in memory.
    pub fn loaded_docs(&self) -> Vec<(DocName, DocHandle)> {
        let docs = self.inner.docs.lock().unwrap();
        docs.iter().map(|(n, slot)| (n.clone(), slot.handle.clone())).collect()
    }

    /// Whether the store can commit, as far as it knows (`/healthz`).
    pub fn store_healthy(&self) -> bool {
        self.shared.store.healthy()
    }

    /// Number of documents in memory.
    pub fn loaded_count(&self) -> usize {
        self.inner.docs.lock().unwrap().len()
    }

    /// Runs `f` against the document's actor, retrying on a fresh actor when
    /// the one it reached was unloading. Loads the document whatever else
    /// is loading: for weft's own work and sessions already admitted.
    pub async fn with_doc<T, F, Fut>(&self, name: &DocName, f: F) -> Result<T, DocError>
    where
        F: Fn(DocHandle) -> Fut,
        Fut: Future<Output = Result<T, DocError>>,
    {
        self.with_doc_as(name, Shed::Never, f).await
    }

    /// [`Registry::with_doc`] for a client's request: refused with
    /// `DocError::Busy` (503) instead of loading one more document while
    /// `--max-loading-docs` are loading.
    pub async fn with_doc_or_shed<T, F, Fut>(&self, name: &DocName, f: F) -> Result<T, DocError>
    where
        F: Fn(DocHandle) -> Fut,
        Fut: Future<Output = Result<T, DocError>>,
    {
        self.with_doc_as(name, Shed::Allowed, f).await
    }

    async fn with_doc_as<T, F, Fut>(&self, name: &DocName, shed: Shed, f: F) -> Result<T, DocError>
    where
        F: Fn(DocHandle) -> Fut,
        Fut: Future<Output = Result<T, DocError>>,
    {
        // An actor answers Unloaded while it leaves; the next one is fresh.
        // Bounded, so that an actor that keeps dying cannot spin a caller.
        for attempt in 0..RETRIES {
            match f(self.handle_or_shed(name, shed)?).await {
                Err(DocError::Unloaded) => tokio::time::sleep(std::time::Duration::from_millis(attempt)).await,
                other => return other,
            }
        }
        Err(DocError::LoadFailed {
            doc: name.to_string(),
            reason: "its actor stopped repeatedly; see the server log".into(),
        })
    }

    /// Stops every actor: each disconnects its peers, saves, and exits. New
    /// documents are refused from now on.
    pub async fn shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::Release);
        let handles: Vec<DocHandle> = self.inner.docs.lock().unwrap().drain().map(|(_, s)| s.handle).collect();
        let stops = handles.iter().map(|h| h.shutdown());
        futures_util::future::join_all(stops).await;
    }

    // What is stored of documents that need no actor: reading it loads
    // nothing (a load could take an automatic version).

    /// Every stored document.
    pub async fn stored_docs(&self) -> Result<Vec<DocMeta>, DocError> {
        self.shared.store.list().await.map_err(storage)
    }

    /// A stored document's metadata; `None` if it was never stored.
    pub async fn stored(&self, name: &DocName) -> Result<Option<DocMeta>, DocError> {
        self.shared.store.meta(name).await.map_err(storage)
    }

    /// A document's versions, newest first.
    pub async fn versions(&self, name: &DocName) -> Result<Vec<VersionMeta>, DocError> {
        self.shared.store.list_versions(name).await.map_err(storage)
    }

    /// One version and its full state (a Yjs v1 update); `None` if there is
    /// no such version.
    pub async fn version(&self, name: &DocName, id: i64) -> Result<Option<(VersionMeta, Vec<u8>)>, DocError> {
        self.shared.store.load_version(name, id).await.map_err(storage)
    }

    /// Deletes one version; `false` if there was none.
    pub async fn delete_version(&self, name: &DocName, id: i64) -> Result<bool, DocError> {
        let deleted = self
            .shared
            .store
            .delete_versions(name, vec![id])
            .await
            .map_err(storage)?;
        Ok(deleted > 0)
    }
}
