//! `Registry`: document name → the actor that holds it.
//!
//! Actors are spawned on first use and remove themselves after their last
//! peer left and the grace period passed. The map sits behind a std `Mutex`:
//! every critical section is a hash lookup or insert, never an `.await`, so a
//! blocking lock is both correct and cheaper than an async one.
//!
//! An actor that is unloading may still be reached through a handle taken
//! just before it left the map; it then answers `DocError::Unloaded`, and
//! [`Registry::with_doc`] simply asks again, which spawns a fresh actor that
//! loads what the old one stored.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::actor::{self, DocHandle};
use super::{DocConfig, DocError, DocName};
use crate::metrics::Metrics;
use crate::storage::DocStore;

pub(crate) struct RegistryInner {
    docs: Mutex<HashMap<DocName, DocHandle>>,
    next_generation: AtomicU64,
    shutting_down: AtomicBool,
}

impl RegistryInner {
    /// Removes `name` if it still maps to the actor of that generation.
    pub(crate) fn remove(&self, name: &DocName, generation: u64) {
        let mut docs = self.docs.lock().unwrap();
        if docs.get(name).is_some_and(|h| h.generation == generation) {
            docs.remove(name);
        }
    }
}

/// Attempts of [`Registry::with_doc`] before it gives up.
const RETRIES: u64 = 20;

#[derive(Clone)]
pub struct Registry {
    inner: Arc<RegistryInner>,
    store: Arc<dyn DocStore>,
    config: Arc<DocConfig>,
    metrics: Arc<Metrics>,
}

impl Registry {
    pub fn new(store: Arc<dyn DocStore>, config: DocConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            inner: Arc::new(RegistryInner {
                docs: Mutex::new(HashMap::new()),
                next_generation: AtomicU64::new(1),
                shutting_down: AtomicBool::new(false),
            }),
            store,
            config: Arc::new(config),
            metrics,
        }
    }

    pub fn store(&self) -> &Arc<dyn DocStore> {
        &self.store
    }

    pub fn config(&self) -> &DocConfig {
        &self.config
    }

    /// The actor of `name`, spawned (and loading) if there was none.
    pub fn handle(&self, name: &DocName) -> Result<DocHandle, DocError> {
        if self.inner.shutting_down.load(Ordering::Acquire) {
            return Err(DocError::ShuttingDown);
        }
        let mut docs = self.inner.docs.lock().unwrap();
        if let Some(handle) = docs.get(name) {
            return Ok(handle.clone());
        }
        let generation = self.inner.next_generation.fetch_add(1, Ordering::Relaxed);
        let handle = actor::spawn(
            name.clone(),
            generation,
            self.store.clone(),
            self.inner.clone(),
            self.config.clone(),
            self.metrics.clone(),
        );
        docs.insert(name.clone(), handle.clone());
        Ok(handle)
    }

    /// The actor of `name` if it is loaded; never loads.
    pub fn loaded(&self, name: &DocName) -> Option<DocHandle> {
        self.inner.docs.lock().unwrap().get(name).cloned()
    }

    /// Every document in memory.
    pub fn loaded_docs(&self) -> Vec<(DocName, DocHandle)> {
        let docs = self.inner.docs.lock().unwrap();
        docs.iter().map(|(n, h)| (n.clone(), h.clone())).collect()
    }

    /// Number of documents in memory.
    pub fn loaded_count(&self) -> usize {
        self.inner.docs.lock().unwrap().len()
    }

    /// Runs `f` against the document's actor, retrying on a fresh actor when
    /// the one it reached was unloading.
    pub async fn with_doc<T, F, Fut>(&self, name: &DocName, f: F) -> Result<T, DocError>
    where
        F: Fn(DocHandle) -> Fut,
        Fut: Future<Output = Result<T, DocError>>,
    {
        // An actor answers Unloaded while it leaves; the next one is fresh.
        // Bounded, so that an actor that keeps dying cannot spin a caller.
        for attempt in 0..RETRIES {
            match f(self.handle(name)?).await {
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
        let handles: Vec<DocHandle> = self.inner.docs.lock().unwrap().drain().map(|(_, h)| h).collect();
        let stops = handles.iter().map(|h| h.shutdown());
        futures_util::future::join_all(stops).await;
    }
}
