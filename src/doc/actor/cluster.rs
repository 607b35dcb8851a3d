//! What the actor does in cluster mode (`--redis`): its document's updates
//! go through the document's Redis stream (`broker`), which is the one
//! order every node sees.
//!
//! - A batch's accepted updates are appended to the stream in one pipeline
//!   (`flush`) before any peer sees them; then this node's peers get them,
//!   as in single-node mode. Their ids are kept in `own`, so that when the
//!   follower reads them back they are neither applied nor relayed twice.
//! - Everything else the follower reads (other nodes' updates) is applied
//!   and relayed to every peer of this node.
//! - Loading reads the stored state from PostgreSQL, then the stream.
//! - Awareness changes this node's peers make are shared on the document's
//!   awareness stream; other nodes' are applied and sent to this node's
//!   peers like any awareness change. Other nodes' clients are owned by no
//!   peer here: their states expire when not renewed, which is how a dead
//!   node's clients disappear everywhere within the awareness timeout.
//!
//! PostgreSQL gets no per-update writes: the stream is the log. It gets the
//! compaction snapshots (full states) any node writes, versions and
//! revocations. The stream is not trimmed (docs/CLUSTER.md says why and
//! what that costs).

use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};
use yrs::sync::awareness::AwarenessUpdate;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::ClientID;

use super::{build_doc, DocActor, Shared};
use crate::broker::{Batch, Broker, Entry, EntryId, Follower, START};
use crate::close::CloseReason;
use crate::doc::handle::Command;
use crate::doc::DocName;
use crate::protocol::{self, InboundUpdate};
use crate::storage::StoredDoc;
use weft_core::Rebuilt;

/// The actor's link to its document's stream.
pub(super) struct Cluster {
    broker: Arc<Broker>,
    follower: Follower,
    /// Ids this node appended and the follower has not read back yet.
    own: HashSet<EntryId>,
    /// Awareness clients this node's peers changed since the last share.
    local_awareness: HashSet<ClientID>,
}

/// A document as loaded: what PostgreSQL holds, rebuilt with the stream's
/// entries after it, and the follower that goes on from the last of them.
pub(super) struct Loaded {
    pub stored: StoredDoc,
    pub rebuilt: Rebuilt,
    pub cluster: Option<Cluster>,
    /// Entries read from the stream, and their bytes.
    pub streamed: (u64, u64),
    /// Other nodes' awareness updates, to apply before the first peer.
    pub awareness: Vec<Bytes>,
}

/// Loads a document: the store's snapshot and log, then (cluster mode)
/// every entry of its stream. Applying an entry the snapshot already holds
/// changes nothing, so reading the whole stream is always right.
pub(super) async fn load(name: &DocName, shared: &Shared) -> Result<Loaded, String> {
    let stored = shared.store.load(name).await.map_err(|e| e.to_string())?;
    let Some(broker) = &shared.broker else {
        let rebuilt = build_doc(&stored, &[])?;
        return Ok(Loaded {
            stored,
            rebuilt,
            cluster: None,
            streamed: (0, 0),
            awareness: Vec::new(),
        });
    };
    let entries = broker.range(name, START).await.map_err(|e| e.to_string())?;
    let (awareness, awareness_last) = broker.awareness(name).await.map_err(|e| e.to_string())?;
    let rebuilt = build_doc(&stored, &entries)?;
    let last = entries.last().map_or_else(|| START.to_string(), |e| e.id.clone());
    let bytes = entries.iter().map(|e| e.update.len() as u64).sum();
    Ok(Loaded {
        stored,
        rebuilt,
        cluster: Some(Cluster {
            follower: broker.follow(name, last, awareness_last),
            broker: broker.clone(),
            own: HashSet::new(),
            local_awareness: HashSet::new(),
        }),
        streamed: (entries.len() as u64, bytes),
        awareness,
    })
}

/// The follower's next entries; never resolves outside cluster mode.
pub(super) async fn next_entries(cluster: &mut Option<Cluster>) -> Batch {
    if let Some(cluster) = cluster {
        if let Some(batch) = cluster.follower.next().await {
            return batch;
        }
    }
    std::future::pending().await
}

impl DocActor {
    /// Appends the batch's updates to the stream. `Err`: why not; then
    /// none of them may be relayed.
    pub(super) async fn append_to_stream(&mut self, updates: Vec<Bytes>) -> Result<(), String> {
        let Some(cluster) = &mut self.cluster else {
            return Err("not in cluster mode".into());
        };
        let ids = cluster
            .broker
            .append(&self.name, &updates)
            .await
            .map_err(|e| e.to_string())?;
        cluster.own.extend(ids);
        Ok(())
    }

    /// After a failed append: the batch may or may not be in the stream (a
    /// lost answer), so no peer of this node can be told which. Every one
    /// of them reconnects and resyncs (4500), and the document is loaded
    /// again, with whatever the stream holds.
    pub(super) async fn stream_append_failed(&mut self) {
        self.kick_all(CloseReason::storage_failed());
        self.reload().await;
    }

    /// Entries the follower read: this node's own are skipped (their
    /// peers have them), the others applied and relayed to every peer.
    pub(super) async fn stream_entries(&mut self, batch: Batch) {
        let Batch { updates, awareness } = batch;
        let mut rebuild = false;
        for entry in updates {
            if let Some(cluster) = &mut self.cluster {
                if cluster.own.remove(&entry.id) {
                    continue;
                }
            }
            if let Err(reason) = self.apply_entry(entry.update) {
                // Accepted by another node, so this should not happen; the
                // document may be half changed.
                error!(id = %entry.id, %reason, "stream entry refused; the document is loaded again");
                rebuild = true;
                break;
            }
        }
        if rebuild {
            self.kick_all(CloseReason::storage_failed());
            self.reload().await;
        }
        self.drop_slow_peers();
        self.apply_remote_awareness(awareness);
        self.publish_awareness();
    }

    /// Other nodes' awareness updates: applied like a peer's, but owned by
    /// no peer here and not shared again.
    pub(super) fn apply_remote_awareness(&mut self, updates: Vec<Bytes>) {
        for update in updates {
            let update = match AwarenessUpdate::decode_v1(&update) {
                Ok(update) => update,
                Err(e) => {
                    debug!(error = %e, "awareness entry of another node skipped");
                    continue;
                }
            };
            if let Ok(Some(summary)) = self.awareness.apply_update_summary(update) {
                for client in &summary.removed {
                    self.presence.gone(*client);
                }
                self.awareness_changed.extend(summary.all_changes());
                self.answers.awareness_changed();
            }
        }
    }

    /// Awareness clients this node's peers changed (or left with): shared
    /// with the other nodes at the next [`DocActor::share_awareness`].
    pub(super) fn note_local_awareness(&mut self, clients: impl IntoIterator<Item = ClientID>) {
        if let Some(cluster) = &mut self.cluster {
            cluster.local_awareness.extend(clients);
        }
    }

    /// Shares the states of the clients this node's peers changed.
    pub(super) fn share_awareness(&mut self) {
        let Some(cluster) = &mut self.cluster else { return };
        if cluster.local_awareness.is_empty() {
            return;
        }
        let clients = std::mem::take(&mut cluster.local_awareness);
        if let Ok(update) = self.awareness.update_with_clients(clients) {
            cluster.broker.publish_awareness(&self.name, update.encode_v1());
        }
    }

    fn apply_entry(&mut self, raw: Bytes) -> Result<(), String> {
        let update = InboundUpdate::from_raw(raw).map_err(|e| e.to_string())?;
        let InboundUpdate { raw, update, shape, .. } = update;
        let started = std::time::Instant::now();
        let changed = weft_core::apply_update(self.awareness.doc(), update, &shape.spans, &mut self.clocks)?;
        self.metrics.record_apply(started.elapsed());
        if !changed {
            return Ok(());
        }
        self.type_items += shape.types;
        self.metrics.updates_applied.fetch_add(1, Relaxed);
        self.metrics.update_bytes.fetch_add(raw.len() as u64, Relaxed);
        let frame = protocol::encode_update(&raw);
        self.answers.accepted(&raw, &frame);
        self.log.appended(1, raw.len() as u64);
        self.broadcast(frame, None);
        self.versions.edited(Instant::now());
        Ok(())
    }

    /// Another node deleted the document: as `delete`, but the store and
    /// the stream are already done with.
    pub(super) async fn evict(&mut self, rx: &mut mpsc::Receiver<Command>) {
        self.kick_all(CloseReason::deleted());
        info!("document deleted on another node; its peers here are disconnected");
        self.log.forget();
        self.versions.taken();
        self.unload(rx).await;
    }

    /// Every entry of the document's stream (none outside cluster mode).
    pub(super) async fn read_stream(&mut self) -> Result<Vec<Entry>, String> {
        // Cloned out: the actor (not `Sync`) is not borrowed across the wait.
        let Some(broker) = self.cluster.as_ref().map(|c| c.broker.clone()) else {
            return Ok(Vec::new());
        };
        broker.range(&self.name, START).await.map_err(|e| e.to_string())
    }

    /// The document was deleted: its stream goes too, or the next load
    /// would bring it back.
    pub(super) async fn delete_stream(&mut self) {
        if let Some(broker) = self.cluster.as_ref().map(|c| c.broker.clone()) {
            if let Err(e) = broker.delete(&self.name).await {
                warn!(error = %e, "the deleted document's stream could not be deleted");
            }
        }
    }
}
