//! What the actor keeps of a document's past: compaction snapshots,
//! versions (named and automatic, within the quota), and restore.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use tokio::time::Instant;
use tracing::{debug, info, warn};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{ReadTxn, StateVector, Transact, Update};

use super::{DocActor, Origin};
use crate::doc::handle::{Restored, Taken};
use crate::doc::log::Compaction;
use crate::doc::versions::{self, Reuse};
use crate::doc::DocError;
use crate::protocol;
use crate::storage::{Snapshot, StoreError, VersionKind};

fn storage(e: StoreError) -> DocError {
    DocError::Storage(e.to_string())
}

impl DocActor {
    /// Writes a compaction snapshot when the log has grown past the limits
    /// (or, with `force`, whenever it is not empty).
    pub(super) async fn compact_if_needed(&mut self, force: bool) {
        let limits = Compaction {
            after_updates: self.config.compact_after_updates,
            after_bytes: self.config.compact_after_bytes,
        };
        // Cluster mode: the lease holder alone compacts (and trims).
        if self.life.is_poisoned() || !self.log.compaction_due(limits, force) || !self.holds_lease() {
            return;
        }
        let snapshot = self.snapshot();
        let covered = snapshot.stream_id.clone();
        let size = snapshot.state.len();
        match self.store.compact(&self.name, snapshot).await {
            Ok(()) => {
                let (updates, bytes) = self.log.size();
                debug!(updates, bytes, snapshot = size, "log compacted");
                self.metrics.compactions.fetch_add(1, Relaxed);
                self.log.compacted(size as u64);
                self.compacted_up_to(covered);
            }
            // The log is intact; compaction is retried after the next batch.
            Err(e) => warn!(error = %e, "compaction failed"),
        }
    }

    /// The full state as of the last accepted update. Only called with no
    /// update pending, so the state is exactly what the log holds.
    fn snapshot(&self) -> Snapshot {
        let txn = self.doc().transact();
        Snapshot {
            upto_seq: self.log.last_seq(),
            state: txn.encode_state_as_update_v1(&StateVector::default()),
            state_vector: txn.state_vector().encode_v1(),
            stream_id: self.stream_position(),
        }
    }

    /// Takes a version, unless the latest one holds the same content: then
    /// that one is the answer, and nothing is stored (see
    /// [`versions::reuse`]). A new version must fit the quota: the oldest
    /// automatic versions are deleted to make room, named ones never.
    pub(super) async fn take_version(&mut self, kind: VersionKind, label: Option<String>) -> Result<Taken, DocError> {
        let digest = versions::digest(&self.doc().transact());
        let versions = self.store.list_versions(&self.name).await.map_err(storage)?;
        let latest = versions.first();
        let reused = match versions::reuse(latest, &digest, kind, label.as_deref()) {
            Reuse::New => None,
            Reuse::Latest => latest.cloned(),
            Reuse::NameLatest => {
                let id = latest.map_or(0, |v| v.id);
                let named = self.store.name_version(&self.name, id, label.clone()).await;
                Some(named.map_err(storage)?.ok_or(DocError::NoVersion(id))?)
            }
        };
        if let Some(version) = reused {
            debug!(version = version.id, "nothing changed since the latest version");
            self.versions.taken();
            return Ok(Taken {
                version,
                existing: true,
            });
        }
        let snapshot = self.snapshot();
        let size = snapshot.state.len() as u64;
        let doomed = versions::make_room(&versions, self.log.stored_bytes(), size, &self.config.versions.quota)?;
        if !doomed.is_empty() {
            let n = self.store.delete_versions(&self.name, doomed).await.map_err(storage)?;
            info!(deleted = n, "oldest automatic versions deleted to make room");
        }
        let meta = self
            .store
            .save_version(&self.name, snapshot, kind, label, digest.to_vec())
            .await
            .map_err(storage)?;
        info!(version = meta.id, kind = kind.as_str(), label = ?meta.label, size, "version taken");
        self.versions.taken();
        if kind == VersionKind::Auto {
            self.thin_versions().await;
        }
        Ok(Taken {
            version: meta,
            existing: false,
        })
    }

    /// Takes an automatic version when one is due (see `Versions`).
    pub(super) async fn auto_version_if_due(&mut self) {
        if self.versions.auto_version_due(Instant::now(), &self.config.versions) {
            self.auto_version().await;
        }
    }

    /// An automatic version of the edits since the last one. One that does
    /// not fit the quota is skipped until the next edit: only named versions
    /// are left to delete, and that is a person's call.
    /// Cluster mode: the lease holder alone takes them, once per document.
    pub(super) async fn auto_version(&mut self) {
        if self.life.is_poisoned() || !self.versions.is_edited() || !self.holds_lease() {
            return;
        }
        match self.take_version(VersionKind::Auto, None).await {
            Ok(_) => {}
            Err(DocError::VersionQuota(reason)) => {
                warn!(%reason, "automatic version skipped");
                self.versions.taken();
            }
            Err(e) => warn!(error = %e, "automatic version failed"),
        }
    }

    async fn thin_versions(&mut self) {
        let Ok(versions) = self.store.list_versions(&self.name).await else {
            return;
        };
        let doomed = versions::thin(&versions, crate::clock::now_ms(), &self.config.versions);
        if !doomed.is_empty() {
            match self.store.delete_versions(&self.name, doomed).await {
                Ok(n) => debug!(deleted = n, "automatic versions thinned"),
                Err(e) => warn!(error = %e, "thinning versions failed"),
            }
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
