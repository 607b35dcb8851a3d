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
//! - One node at a time holds the document's lease (`broker/lease.rs`),
//!   taken or renewed at every tick: only the holder writes compaction
//!   snapshots (each records the last stream entry it covers), takes
//!   automatic versions, and trims the stream up to a snapshot once
//!   `trim_grace` has passed. A node whose position is below the trim point
//!   reloads from PostgreSQL and sends its peers what they missed.
//!
//! PostgreSQL gets no per-update writes: the stream is the log. It gets the
//! compaction snapshots, versions and revocations.

use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, error, info, trace, warn};
use yrs::sync::awareness::AwarenessUpdate;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{ClientID, ReadTxn, Transact, Update};

use super::dormant::Dormant;
use super::{build_doc, DocActor, Shared};
use crate::broker::{self, Batch, Broker, Entry, EntryId, Follower, LEASE_TTL, START};
use crate::close::CloseReason;
use crate::doc::handle::Command;
use crate::doc::DocName;
use crate::metrics::Metrics;
use crate::protocol::{self, InboundUpdate};
use crate::storage::StoredDoc;
use weft_core::Rebuilt;

/// The actor's link to its document's stream.
pub(super) struct Cluster {
    broker: Arc<Broker>,
    follower: Follower,
    /// Ids this node appended and the follower has not read back yet.
    own: HashSet<EntryId>,
    /// The last entry of the stream the document holds, with every entry
    /// before it: what a snapshot written now covers.
    last_read: EntryId,
    /// Awareness clients this node's peers changed since the last share.
    local_awareness: HashSet<ClientID>,
    /// Until when this node may act as the lease holder (`None`: it does
    /// not hold the lease): half the lease's life after it was renewed.
    lease_until: Option<Instant>,
    /// The stream is to be trimmed up to this id (covered by a snapshot)
    /// at this time.
    pending_trim: Option<(EntryId, Instant)>,
    metrics: Arc<Metrics>,
}

impl Cluster {
    /// Records whether the lease is held, in `weft_leases_held` too.
    fn set_lease(&mut self, until: Option<Instant>) {
        match (self.lease_until.is_some(), until.is_some()) {
            (false, true) => {
                self.metrics.leases_held.fetch_add(1, Relaxed);
                debug!("compaction lease taken");
            }
            (true, false) => {
                self.metrics.leases_held.fetch_sub(1, Relaxed);
            }
            _ => {}
        }
        self.lease_until = until;
    }
}

impl Drop for Cluster {
    /// However the actor ends, the gauge forgets its lease (Redis forgets
    /// it within `LEASE_TTL` when it was not released).
    fn drop(&mut self) {
        self.set_lease(None);
    }
}

/// The target of the trace events that follow an update from one node to
/// another (`--log warn,weft::latency=trace`; read by bench/latency.py).
pub(crate) const LATENCY: &str = "weft::latency";

/// How long the oldest update of a batch has waited since its handle took
/// it, in µs (only evaluated when the trace is on).
fn oldest_wait_us(effects: &[super::Effect]) -> u64 {
    let waited = effects.iter().filter_map(|e| match e {
        super::Effect::Relay { received: Some(r), .. } => Some(r.elapsed().as_micros() as u64),
        _ => None,
    });
    waited.max().unwrap_or(0)
}

/// Whether entry `a` comes before entry `b`.
fn before(a: &str, b: &str) -> bool {
    broker::id_key(a).unwrap_or_default() < broker::id_key(b).unwrap_or_default()
}

/// Loads tried before a document is loaded even though its stream was
/// trimmed past the snapshot read (see [`load`]).
const LOAD_ATTEMPTS: usize = 3;

/// A document as loaded: what PostgreSQL holds, rebuilt with the stream's
/// entries after it, and the follower that goes on from the last of them.
pub(super) struct Loaded {
    pub stored: StoredDoc,
    pub built: Built,
    pub cluster: Option<Cluster>,
    /// Entries read from the stream, and their bytes.
    pub streamed: (u64, u64),
    /// Other nodes' awareness updates, to apply before the first peer.
    pub awareness: Vec<Bytes>,
}

/// A loaded document, built in yrs or held as its encoding.
pub(super) enum Built {
    Doc(Rebuilt),
    Dormant(Dormant),
}

/// Loads a document: the store's snapshot and log, then (cluster mode)
/// the entries of its stream after the last one the snapshot covers (all
/// of them when it records none: applying an entry the snapshot already
/// holds changes nothing).
pub(super) async fn load(name: &DocName, shared: &Shared) -> Result<Loaded, String> {
    let stored = shared.store.load(name).await.map_err(|e| e.to_string())?;
    let Some(broker) = &shared.broker else {
        // Held as its encoding until something needs it built (`dormant`),
        // unless the stored updates do not join into one.
        let dormant = match shared.config.dormant_after.is_zero() {
            true => Err("--dormant-after-ms is 0".to_string()),
            false => Dormant::stored(&stored, &shared.metrics),
        };
        let built = match dormant {
            Ok(dormant) => Built::Dormant(dormant),
            Err(reason) => {
                debug!(%reason, "document built at load");
                Built::Doc(build_doc(&stored, &[])?)
            }
        };
        return Ok(Loaded {
            stored,
            built,
            cluster: None,
            streamed: (0, 0),
            awareness: Vec::new(),
        });
    };
    let mut stored = stored;
    let mut attempt = 1;
    let (after, entries) = loop {
        let after = stored.stream_id.clone().unwrap_or_else(|| START.to_string());
        let entries = broker.range(name, &after).await.map_err(|e| e.to_string())?;
        // A trim between the snapshot read and the stream read (the grace
        // period passed while loading): the newer snapshot covers it.
        let trimmed = broker.trimmed(name).await.map_err(|e| e.to_string())?;
        match trimmed {
            Some(trimmed) if before(&after, &trimmed) => {
                if attempt == LOAD_ATTEMPTS {
                    error!(snapshot = %after, %trimmed, "the stream is trimmed past every snapshot read; loaded without the entries between");
                    break (after, entries);
                }
                warn!(snapshot = %after, %trimmed, "the stream was trimmed past the snapshot read; loading again");
                attempt += 1;
                stored = shared.store.load(name).await.map_err(|e| e.to_string())?;
            }
            _ => break (after, entries),
        }
    };
    let (awareness, awareness_last) = broker.awareness(name).await.map_err(|e| e.to_string())?;
    let built = Built::Doc(build_doc(&stored, &entries)?);
    let last = entries.last().map_or(after, |e| e.id.clone());
    let bytes = entries.iter().map(|e| e.update.len() as u64).sum();
    Ok(Loaded {
        stored,
        built,
        cluster: Some(Cluster {
            follower: broker.follow(name, last.clone(), awareness_last),
            broker: broker.clone(),
            own: HashSet::new(),
            last_read: last,
            local_awareness: HashSet::new(),
            lease_until: None,
            pending_trim: None,
            metrics: shared.metrics.clone(),
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
        // The path of one update between nodes, for bench/latency.py
        // (`--log warn,weft::latency=trace`): this node's wait and append.
        trace!(target: LATENCY, n = updates.len(), oldest_us = oldest_wait_us(&self.effects), "append sent");
        let ids = cluster
            .broker
            .append(&self.name, &updates)
            .await
            .map_err(|e| e.to_string())?;
        trace!(target: LATENCY, first = ids.first().map_or("", String::as_str), last = ids.last().map_or("", String::as_str), "appended");
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
        // The other end of the path (see `append_to_stream`).
        let traced = tracing::enabled!(target: LATENCY, tracing::Level::TRACE).then(|| {
            let id = |e: Option<&Entry>| e.map_or_else(String::new, |e| e.id.clone());
            (id(updates.first()), id(updates.last()))
        });
        if let Some((first, last)) = &traced {
            trace!(target: LATENCY, first, last, "actor got");
        }
        let mut rebuild = false;
        let mut prior = START.to_string();
        let mut relays = Vec::new();
        for entry in updates {
            if let Some(cluster) = &mut self.cluster {
                prior = cluster.last_read.clone();
                cluster.last_read = broker::later(std::mem::take(&mut cluster.last_read), entry.id.clone());
                if cluster.own.remove(&entry.id) {
                    continue;
                }
            }
            match self.apply_entry(entry.update) {
                Ok(relay) => relays.extend(relay),
                Err(reason) => {
                    // Accepted by another node, so this should not happen;
                    // the document may be half changed.
                    error!(id = %entry.id, %reason, "stream entry refused; the document is loaded again");
                    rebuild = true;
                    break;
                }
            }
        }
        self.relay_entries(relays);
        if let Some((first, last)) = &traced {
            trace!(target: LATENCY, first, last, "relayed");
        }
        if rebuild {
            if self.trimmed_past(&prior).await {
                // Entries this node had not read were trimmed (it was
                // stalled past the grace period): the snapshot covers them.
                warn!(last_read = %prior, "the stream was trimmed past what this node read; the document is loaded again");
                self.catch_up_from_store().await;
            } else {
                self.kick_all(CloseReason::storage_failed());
                self.reload().await;
            }
        }
        self.drop_slow_peers();
        self.apply_remote_awareness(awareness);
        self.publish_awareness();
        // Other nodes' edits grow the log too: the holder compacts on them.
        self.compact_if_needed();
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

    /// Applies another node's entry; gives its update and frame to relay
    /// when it changed the document.
    fn apply_entry(&mut self, raw: Bytes) -> Result<Option<(Bytes, Bytes)>, String> {
        let update = InboundUpdate::from_raw(raw).map_err(|e| e.to_string())?;
        let InboundUpdate { raw, update, shape, .. } = update;
        let started = std::time::Instant::now();
        let changed = weft_core::apply_update(self.awareness.doc(), update, &shape.spans, &mut self.clocks)?;
        self.metrics.record_apply(started.elapsed());
        if !changed {
            return Ok(None);
        }
        self.type_items += shape.types;
        self.metrics.updates_applied.fetch_add(1, Relaxed);
        self.metrics.update_bytes.fetch_add(raw.len() as u64, Relaxed);
        let frame = protocol::encode_update(&raw);
        self.answers.accepted(&raw, &frame);
        self.originals.add(&raw);
        self.log.appended(1, raw.len() as u64);
        self.versions.edited(Instant::now());
        Ok(Some((raw, frame)))
    }

    /// Relays other nodes' updates of one read to every peer: a frame
    /// each, or one merged frame when they are more than an eighth of a
    /// peer queue. A node catching up on the stream (stalled, or behind
    /// under load) reads up to 1,000 entries at once; a frame each would
    /// fill its peers' queues faster than their sockets drain them, and
    /// drop them as too slow (4503), where one peer's own writes would
    /// have been slowed by TCP instead.
    ///
    /// Consecutive entries are first joined by moving bytes, as a batch's
    /// own updates are (`weft_core::concat`, see `relay.rs`); only entries
    /// that do not join and are that many are merged by yrs, which
    /// re-encodes them.
    fn relay_entries(&mut self, relays: Vec<(Bytes, Bytes)>) {
        let updates: Vec<&[u8]> = relays.iter().map(|(raw, _)| &raw[..]).collect();
        if updates.len() > 1 {
            if let Some(joined) = weft_core::concat::concat_v1(&updates) {
                self.metrics
                    .updates_joined
                    .fetch_add(updates.len() as u64, std::sync::atomic::Ordering::Relaxed);
                self.broadcast(protocol::encode_update(&joined), None);
                return;
            }
        }
        if relays.len() > (self.config.peer_queue / 8).max(1) {
            match yrs::merge_updates_v1(&updates) {
                Ok(merged) => {
                    let merged = self.originals.restore(merged);
                    debug!(updates = relays.len(), "other nodes' updates relayed as one frame");
                    self.broadcast(protocol::encode_update(&merged), None);
                    return;
                }
                Err(e) => {
                    warn!(error = %e, updates = relays.len(), "other nodes' updates did not merge; relayed one by one")
                }
            }
        }
        for (_, frame) in relays {
            self.broadcast(frame, None);
        }
    }

    /// Another node deleted the document: as `delete`, but the store and
    /// the stream are already done with.
    pub(super) async fn evict(&mut self, rx: &mut mpsc::Receiver<Command>) {
        self.settle().await;
        self.kick_all(CloseReason::deleted());
        info!("document deleted on another node; its peers here are disconnected");
        self.unreported = Default::default();
        self.log.forget();
        self.versions.taken();
        self.unload(rx).await;
    }

    /// The entries of the document's stream after `after` (the last one
    /// a snapshot covers; the whole stream with `None`); none outside
    /// cluster mode.
    pub(super) async fn read_stream(&mut self, after: Option<&str>) -> Result<Vec<Entry>, String> {
        // Cloned out: the actor (not `Sync`) is not borrowed across the wait.
        let Some(broker) = self.cluster.as_ref().map(|c| c.broker.clone()) else {
            return Ok(Vec::new());
        };
        broker
            .range(&self.name, after.unwrap_or(START))
            .await
            .map_err(|e| e.to_string())
    }

    /// After a reload: the document holds the stream up to the last entry
    /// read, or the snapshot's position when none was.
    pub(super) fn reloaded_up_to(&mut self, stored: Option<&str>, entries: &[Entry]) {
        if let Some(cluster) = &mut self.cluster {
            let last = entries.last().map(|e| e.id.as_str()).or(stored);
            if let Some(last) = last {
                cluster.last_read = broker::later(std::mem::take(&mut cluster.last_read), last.to_string());
            }
        }
    }

    /// Whether this node may compact the document and take its automatic
    /// versions: outside cluster mode always; in it, while it holds the
    /// lease.
    pub(super) fn holds_lease(&self) -> bool {
        self.cluster
            .as_ref()
            .map_or(true, |c| c.lease_until.is_some_and(|until| Instant::now() < until))
    }

    /// At every tick (cluster mode): takes or renews the lease, reloads
    /// when the stream was trimmed past what this node read, and trims the
    /// stream when a trim is due.
    pub(super) async fn lease_tick(&mut self) {
        let Some(broker) = self.cluster.as_ref().map(|c| c.broker.clone()) else {
            return;
        };
        let asked = Instant::now();
        let state = broker.lease(&self.name).await;
        let Some(cluster) = &mut self.cluster else { return };
        let trimmed = match state {
            Ok(state) => {
                cluster.set_lease(state.held.then_some(asked + LEASE_TTL / 2));
                state.trimmed
            }
            Err(e) => {
                debug!(error = %e, "compaction lease not renewed");
                cluster.set_lease(None);
                return;
            }
        };
        if let Some(trimmed) = trimmed {
            if before(&cluster.last_read, &trimmed) {
                let last_read = cluster.last_read.clone();
                warn!(%last_read, %trimmed, "the stream was trimmed past what this node read; the document is loaded again");
                self.catch_up_from_store().await;
            }
        }
        self.trim_if_due().await;
    }

    /// Whether the stream was trimmed past `last_read` (entries after it
    /// are gone); `false` when Redis cannot say.
    async fn trimmed_past(&mut self, last_read: &str) -> bool {
        let Some(broker) = self.cluster.as_ref().map(|c| c.broker.clone()) else {
            return false;
        };
        match broker.trimmed(&self.name).await {
            Ok(Some(trimmed)) => before(last_read, &trimmed),
            _ => false,
        }
    }

    /// Reloads the document from PostgreSQL and the stream, and sends this
    /// node's peers what the reload brought (they stay connected).
    async fn catch_up_from_store(&mut self) {
        let known = self.awareness.doc().transact().state_vector();
        self.reload().await;
        if self.life.is_poisoned() {
            return;
        }
        let missed = self.encode(&known);
        if Update::decode_v1(&missed).map(|u| u.is_empty()).unwrap_or(false) {
            return;
        }
        let raw = Bytes::from(missed);
        let frame = protocol::encode_update(&raw);
        self.broadcast(frame, None);
        self.drop_slow_peers();
    }

    /// A compaction snapshot covering the stream up to `covered` was
    /// written: the stream is trimmed up to it after the grace period,
    /// unless an earlier trim is still waiting (it goes first).
    pub(super) fn compacted_up_to(&mut self, covered: Option<String>) {
        let grace = self.config.trim_grace;
        if let (Some(cluster), Some(covered)) = (&mut self.cluster, covered) {
            if cluster.pending_trim.is_none() && covered != START {
                cluster.pending_trim = Some((covered, Instant::now() + grace));
            }
        }
    }

    async fn trim_if_due(&mut self) {
        if !self.holds_lease() {
            return;
        }
        let Some(cluster) = &mut self.cluster else { return };
        let Some((keep, at)) = cluster.pending_trim.clone() else {
            return;
        };
        if Instant::now() < at {
            return;
        }
        let broker = cluster.broker.clone();
        match broker.trim(&self.name, &keep).await {
            Ok(deleted) => {
                info!(%keep, deleted, "stream trimmed up to the compaction snapshot");
                self.metrics.stream_trims.fetch_add(1, Relaxed);
                if let Some(cluster) = &mut self.cluster {
                    cluster.pending_trim = None;
                }
            }
            // Tried again at the next tick.
            Err(e) => warn!(error = %e, "stream not trimmed"),
        }
    }

    /// Gives the lease up (the document unloads or the node stops), so
    /// that another node holding the document takes it at its next tick.
    pub(super) async fn release_lease(&mut self) {
        let Some(cluster) = &mut self.cluster else { return };
        if cluster.lease_until.is_none() {
            return;
        }
        cluster.set_lease(None);
        if let Err(e) = cluster.broker.clone().release(&self.name).await {
            debug!(error = %e, "compaction lease not released; it expires");
        }
    }

    /// What a snapshot written now covers of the stream (cluster mode).
    pub(super) fn stream_position(&self) -> Option<String> {
        self.cluster.as_ref().map(|c| c.last_read.clone())
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
