//! What the actor keeps of a document's past: compaction snapshots,
//! versions (named and automatic, within the quota), and restore.
//!
//! Compaction snapshots and automatic versions are written by a task of
//! their own ([`Background`]): the actor encodes the state (it alone holds
//! the document), hands the write over and goes on applying, storing and
//! relaying updates; the outcome comes back to its loop as
//! [`Written`]. An update committed meanwhile stays in the log, which the
//! snapshot does not cover (it deletes only the log up to its
//! `upto_seq`), so nothing committed is lost whenever weft stops. At most
//! one such write is in flight per document; unload, shutdown, delete,
//! reload, named versions and restores wait for it first.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::task::{JoinError, JoinHandle};
use tokio::time::Instant;
use tracing::{debug, error, info, warn, Instrument};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{ReadTxn, StateVector, Transact, Update};

use super::dormant::unbuilt;
use super::{DocActor, Origin};
use crate::doc::handle::{Restored, Taken};
use crate::doc::log::Compaction;
use crate::doc::versions::{self, Reuse};
use crate::doc::{DocConfig, DocError, DocName};
use crate::protocol;
use crate::storage::{DocStore, Snapshot, StoreError, VersionKind};

fn storage(e: StoreError) -> DocError {
    DocError::Storage(e.to_string())
}

/// How long after a failed compaction the next is tried: each attempt
/// encodes the whole document, which a store that is down should not
/// cost after every batch.
const COMPACTION_RETRY: Duration = Duration::from_secs(1);

/// The write in flight on a task of its own, if any.
#[derive(Default)]
pub(super) struct Background {
    task: Option<JoinHandle<Written>>,
    /// After a failed compaction: none is started before this.
    retry_at: Option<Instant>,
}

impl Background {
    pub(super) fn busy(&self) -> bool {
        self.task.is_some()
    }
}

/// What a background write came back with.
pub(super) enum Written {
    Compacted {
        result: Result<(), StoreError>,
        /// Cluster mode: the last stream entry the snapshot covers.
        covered: Option<String>,
        size: u64,
        /// The log's updates and bytes when the snapshot was taken: what
        /// it covers.
        mark: (u64, u64),
    },
    AutoVersion {
        result: Result<Taken, DocError>,
        /// The edits counted when its state was taken (`Versions::edits`).
        edits: u64,
    },
}

/// The outcome of the write in flight; never resolves without one (a
/// `select!` branch). Cancel-safe: the task is kept until it has answered.
pub(super) async fn finished(background: &mut Background) -> Result<Written, JoinError> {
    match &mut background.task {
        Some(task) => {
            let written = task.await;
            background.task = None;
            written
        }
        None => std::future::pending().await,
    }
}

/// A version to take: everything the store's part needs, so that it can run
/// off the actor. The state is encoded beforehand, also when the latest
/// version turns out to hold it already.
struct VersionJob {
    store: Arc<dyn DocStore>,
    name: DocName,
    config: Arc<DocConfig>,
    kind: VersionKind,
    label: Option<String>,
    digest: [u8; 32],
    snapshot: Snapshot,
    /// Bytes stored for the current state (snapshot and log), for the quota.
    stored: u64,
}

impl VersionJob {
    /// Takes the version, unless the latest one holds the same content:
    /// then that one is the answer, and nothing is stored (see
    /// [`versions::reuse`]). A new version must fit the quota: the oldest
    /// automatic versions are deleted to make room, named ones never.
    async fn run(self) -> Result<Taken, DocError> {
        let Self {
            store,
            name,
            config,
            kind,
            label,
            digest,
            snapshot,
            stored,
        } = self;
        let versions = store.list_versions(&name).await.map_err(storage)?;
        let latest = versions.first();
        let reused = match versions::reuse(latest, &digest, kind, label.as_deref()) {
            Reuse::New => None,
            Reuse::Latest => latest.cloned(),
            Reuse::NameLatest => {
                let id = latest.map_or(0, |v| v.id);
                let named = store.name_version(&name, id, label.clone()).await;
                Some(named.map_err(storage)?.ok_or(DocError::NoVersion(id))?)
            }
        };
        if let Some(version) = reused {
            debug!(version = version.id, "nothing changed since the latest version");
            return Ok(Taken {
                version,
                existing: true,
            });
        }
        let size = snapshot.state.len() as u64;
        let doomed = versions::make_room(&versions, stored, size, &config.versions.quota)?;
        if !doomed.is_empty() {
            let n = store.delete_versions(&name, doomed).await.map_err(storage)?;
            info!(deleted = n, "oldest automatic versions deleted to make room");
        }
        let meta = store
            .save_version(&name, snapshot, kind, label, digest.to_vec())
            .await
            .map_err(storage)?;
        info!(version = meta.id, kind = kind.as_str(), label = ?meta.label, size, "version taken");
        if kind == VersionKind::Auto {
            thin_versions(&*store, &name, &config).await;
        }
        Ok(Taken {
            version: meta,
            existing: false,
        })
    }
}

async fn thin_versions(store: &dyn DocStore, name: &DocName, config: &DocConfig) {
    let Ok(versions) = store.list_versions(name).await else {
        return;
    };
    let doomed = versions::thin(&versions, crate::clock::now_ms(), &config.versions);
    if !doomed.is_empty() {
        match store.delete_versions(name, doomed).await {
            Ok(n) => debug!(deleted = n, "automatic versions thinned"),
            Err(e) => warn!(error = %e, "thinning versions failed"),
        }
    }
}

impl DocActor {
    /// Whether a compaction snapshot is due (with `force`: whenever the
    /// log is not empty, as on unload and shutdown). Cluster mode: the
    /// lease holder alone compacts (and trims).
    fn compaction_due(&self, force: bool) -> bool {
        let limits = Compaction {
            after_updates: self.config.compact_after_updates,
            after_bytes: self.config.compact_after_bytes,
        };
        !self.life.is_poisoned() && self.log.compaction_due(limits, force) && self.holds_lease()
    }

    /// Starts writing a compaction snapshot when the log has grown past the
    /// limits and no background write is in flight; the actor goes on
    /// meanwhile (see the module comment).
    pub(super) fn compact_if_needed(&mut self) {
        let retry_later = self.background.retry_at.is_some_and(|at| Instant::now() < at);
        if self.background.busy() || retry_later || !self.compaction_due(false) {
            return;
        }
        let Some((snapshot, mark)) = self.compaction_snapshot() else {
            return;
        };
        let (store, name) = (self.store.clone(), self.name.clone());
        let task = async move {
            let covered = snapshot.stream_id.clone();
            let size = snapshot.state.len() as u64;
            let result = store.compact(&name, snapshot).await;
            Written::Compacted {
                result,
                covered,
                size,
                mark,
            }
        };
        self.background.task = Some(tokio::spawn(task.instrument(tracing::Span::current())));
    }

    /// On unload and shutdown: waits for the write in flight, then
    /// compacts whatever the log still holds, on the actor (nobody waits
    /// for a relay any more).
    pub(super) async fn compact_now(&mut self) {
        self.settle().await;
        if !self.compaction_due(true) {
            return;
        }
        let Some((snapshot, mark)) = self.compaction_snapshot() else {
            return;
        };
        let covered = snapshot.stream_id.clone();
        let size = snapshot.state.len() as u64;
        let result = self.store.compact(&self.name, snapshot).await;
        self.written(Ok(Written::Compacted {
            result,
            covered,
            size,
            mark,
        }));
    }

    /// The snapshot to compact with, and the log's size it covers.
    fn compaction_snapshot(&mut self) -> Option<(Snapshot, (u64, u64))> {
        // Stored rows joined are not a compaction: build to encode.
        if self.dormant_squashed().is_none() && !self.wake() {
            return None;
        }
        let started = std::time::Instant::now();
        let snapshot = self.snapshot();
        debug!(
            bytes = snapshot.state.len(),
            encode_ms = started.elapsed().as_secs_f64() * 1e3,
            "compaction snapshot encoded"
        );
        Some((snapshot, self.log.size()))
    }

    /// Waits for the background write in flight, if any, and takes in its
    /// outcome.
    pub(super) async fn settle(&mut self) {
        if let Some(task) = self.background.task.take() {
            let written = task.await;
            self.written(written);
        }
    }

    /// Takes in the outcome of a background write.
    pub(super) fn written(&mut self, written: Result<Written, JoinError>) {
        match written {
            Ok(Written::Compacted {
                result: Ok(()),
                covered,
                size,
                mark,
            }) => {
                self.background.retry_at = None;
                debug!(updates = mark.0, bytes = mark.1, snapshot = size, "log compacted");
                self.metrics.compactions.fetch_add(1, Relaxed);
                self.log.compacted(mark, size);
                self.compacted_up_to(covered);
            }
            // The log is intact; compaction is tried again later.
            Ok(Written::Compacted { result: Err(e), .. }) => {
                warn!(error = %e, "compaction failed");
                self.background.retry_at = Some(Instant::now() + COMPACTION_RETRY);
            }
            Ok(Written::AutoVersion { result, edits }) => self.auto_versioned(result, edits),
            Err(e) => {
                error!(error = %e, "a background write failed; it is tried again later");
                self.background.retry_at = Some(Instant::now() + COMPACTION_RETRY);
            }
        }
    }

    /// The full state as of the last accepted update. Only called with no
    /// update pending, so the state is exactly what the log holds.
    fn snapshot(&self) -> Snapshot {
        if let Some(state) = self.dormant_squashed() {
            // Already yrs's encoding of the whole state.
            return Snapshot {
                upto_seq: self.log.last_seq(),
                state: state.to_vec(),
                state_vector: self.state_vector().encode_v1(),
                stream_id: self.stream_position(),
            };
        }
        let txn = self.doc().transact();
        Snapshot {
            upto_seq: self.log.last_seq(),
            state: self
                .originals
                .restore(txn.encode_state_as_update_v1(&StateVector::default())),
            state_vector: txn.state_vector().encode_v1(),
            stream_id: self.stream_position(),
        }
    }

    /// What taking a version of the current state needs.
    fn version_job(&mut self, kind: VersionKind, label: Option<String>) -> Result<VersionJob, DocError> {
        // Its digest reads the document in yrs.
        if !self.wake() {
            return Err(unbuilt());
        }
        Ok(VersionJob {
            store: self.store.clone(),
            name: self.name.clone(),
            config: self.config.clone(),
            kind,
            label,
            digest: versions::digest(&self.doc().transact()),
            snapshot: self.snapshot(),
            stored: self.log.stored_bytes(),
        })
    }

    /// Takes a version on the actor (named versions and restores answer an
    /// API call), after the background write in flight.
    pub(super) async fn take_version(&mut self, kind: VersionKind, label: Option<String>) -> Result<Taken, DocError> {
        self.settle().await;
        let taken = self.version_job(kind, label)?.run().await?;
        self.versions.taken();
        Ok(taken)
    }

    /// Starts an automatic version when one is due (see `Versions`) and
    /// no background write is in flight.
    pub(super) fn auto_version_if_due(&mut self) {
        if self.background.busy() || !self.versions.auto_version_due(Instant::now(), &self.config.versions) {
            return;
        }
        if !self.auto_version_wanted() {
            return;
        }
        let job = match self.version_job(VersionKind::Auto, None) {
            Ok(job) => job,
            Err(e) => return warn!(error = %e, "automatic version failed"),
        };
        let edits = self.versions.edits();
        let task = async move {
            let result = job.run().await;
            Written::AutoVersion { result, edits }
        };
        self.background.task = Some(tokio::spawn(task.instrument(tracing::Span::current())));
    }

    /// An automatic version of the edits since the last one, on the actor
    /// (it unloads), after the background write in flight.
    pub(super) async fn auto_version(&mut self) {
        self.settle().await;
        if !self.auto_version_wanted() {
            return;
        }
        let edits = self.versions.edits();
        let result = match self.version_job(VersionKind::Auto, None) {
            Ok(job) => job.run().await,
            Err(e) => Err(e),
        };
        self.auto_versioned(result, edits);
    }

    /// Cluster mode: the lease holder alone takes automatic versions, once
    /// per document.
    fn auto_version_wanted(&self) -> bool {
        !self.life.is_poisoned() && self.versions.is_edited() && self.holds_lease()
    }

    /// One that does not fit the quota is skipped until the next edit: only
    /// named versions are left to delete, and that is a person's call.
    fn auto_versioned(&mut self, result: Result<Taken, DocError>, edits: u64) {
        match result {
            Ok(_) => self.versions.taken_up_to(edits, Instant::now()),
            Err(DocError::VersionQuota(reason)) => {
                warn!(%reason, "automatic version skipped");
                self.versions.taken_up_to(edits, Instant::now());
            }
            Err(e) => warn!(error = %e, "automatic version failed"),
        }
    }

    /// Restore = backup version + one update computed by diffing the live
    /// content against the version's. Connected peers receive that update
    /// like any other and converge without reloading.
    pub(super) async fn restore(&mut self, id: i64) -> Result<Restored, DocError> {
        let (version, state) = self
            .store
            .load_version(&self.name, id)
            .await
            .map_err(storage)?
            .ok_or(DocError::NoVersion(id))?;
        let label = match &version.label {
            Some(label) => format!("Before restoring version {id} ({label})"),
            None => format!("Before restoring version {id}"),
        };
        let backup = match self.take_version(VersionKind::Named, Some(label)).await {
            Ok(taken) => taken.version,
            Err(DocError::VersionQuota(reason)) => {
                return Err(DocError::VersionQuota(format!(
                    "no room for the version a restore takes first: {reason}"
                )))
            }
            Err(e) => return Err(e),
        };
        let doc = self.awareness.doc();
        let update = match std::panic::catch_unwind(AssertUnwindSafe(|| crate::doc::restore::restore(doc, &state))) {
            Ok(Ok(update)) => update,
            Ok(Err(e)) => {
                self.reload().await;
                return Err(DocError::Restore(e.to_string()));
            }
            Err(_) => {
                self.reload().await;
                return Err(DocError::Restore("restore panicked".into()));
            }
        };
        let update_size = update.len();
        // Written with the restore's update (or alone when it changes
        // nothing), in one transaction.
        self.restored_event(id, backup.id);
        self.type_items += weft_core::validate::update_v1(&update).map_or(0, |shape| shape.types);
        if !Update::decode_v1(&update).map(|u| u.is_empty()).unwrap_or(false) {
            let raw = Bytes::from(update);
            let frame = protocol::encode_update(&raw);
            self.accept(raw, frame, Origin::Actor, None);
            if !self.flush().await {
                return Err(DocError::Storage("the restore could not be stored".into()));
            }
        }
        info!(version = id, backup = backup.id, update_size, "version restored");
        // The restore itself is an edit: the next automatic version records it.
        Ok(Restored { backup, update_size })
    }
}
