//! The document actor: the one owner of a document's CRDT and awareness.
//!
//! The actor takes commands in batches: it drains everything waiting in its
//! mailbox, applies it, appends the accepted updates to the store in one
//! write, waits for the commit, and only then performs the batch's effects
//! (relaying updates, answering step1, sending awareness). An update is thus
//! durable before any peer sees it, and a burst of updates costs one commit.
//!
//! Effects that read the document (a step2 answer, a state request) are
//! evaluated after the commit too, so no peer is ever shown state that is not
//! yet stored.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn, Instrument};
use weft_core::{Clocks, Rebuilt};
use yrs::sync::awareness::AwarenessUpdate;
use yrs::sync::Awareness;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{ClientID, Doc, ReadTxn, StateVector, Transact, Update};

use super::registry::RegistryInner;
use super::{DocConfig, DocError, DocName, PeerId, PeerLink};
use crate::close::CloseReason;
use crate::metrics::Metrics;
use crate::protocol::{self, Inbound, InboundUpdate};
use crate::storage::{DocStore, LogEntry, Snapshot, StoredDoc, VersionKind, VersionMeta};

/// Commands waiting for an actor before senders wait.
const MAILBOX: usize = 256;
/// Most commands handled between two commits.
const MAX_BATCH: usize = 512;

type Reply<T> = oneshot::Sender<Result<T, DocError>>;

pub(crate) enum Command {
    /// Answers once the document is loaded (or failed to load).
    Ready {
        reply: Reply<()>,
    },
    Join {
        peer: PeerLink,
        reply: Reply<()>,
    },
    Leave {
        peer: PeerId,
    },
    Messages {
        peer: PeerId,
        messages: Vec<Inbound>,
    },
    /// An update from the HTTP API: applied, stored and relayed like a peer's.
    Update {
        update: InboundUpdate,
        reply: Reply<()>,
    },
    /// The state as a v1 update; only what `sv` lacks when given.
    EncodeState {
        sv: Option<StateVector>,
        reply: Reply<Vec<u8>>,
    },
    /// The content as JSON, one entry per root type.
    Content {
        reply: Reply<serde_json::Value>,
    },
    TakeVersion {
        kind: VersionKind,
        label: Option<String>,
        reply: Reply<VersionMeta>,
    },
    /// Makes the live content equal a version's, through a new update.
    Restore {
        id: i64,
        reply: Reply<Restored>,
    },
    /// Disconnects every peer, deletes the stored document, unloads.
    Delete {
        reply: Reply<bool>,
    },
    Shutdown {
        reply: Reply<()>,
    },
}

impl Command {
    /// Answers the command with an error instead of running it.
    fn refuse(self, err: DocError) {
        match self {
            Command::Ready { reply }
            | Command::Join { reply, .. }
            | Command::Update { reply, .. }
            | Command::Shutdown { reply } => {
                let _ = reply.send(Err(err));
            }
            Command::EncodeState { reply, .. } => {
                let _ = reply.send(Err(err));
            }
            Command::Content { reply } => {
                let _ = reply.send(Err(err));
            }
            Command::TakeVersion { reply, .. } => {
                let _ = reply.send(Err(err));
            }
            Command::Restore { reply, .. } => {
                let _ = reply.send(Err(err));
            }
            Command::Delete { reply } => {
                let _ = reply.send(Err(err));
            }
            Command::Leave { .. } | Command::Messages { .. } => {}
        }
    }
}

/// A cloneable address of a document actor.
#[derive(Clone, Debug)]
pub struct DocHandle {
    name: DocName,
    tx: mpsc::Sender<Command>,
    pub(crate) generation: u64,
    /// Kept up to date by the actor, so counting needs no round trip.
    peers: Arc<AtomicUsize>,
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct Restored {
    /// The version taken of the state just before, to undo the restore.
    pub backup: VersionMeta,
    /// Bytes of the update that turned the live content into the version's.
    pub update_size: usize,
}

impl DocHandle {
    pub fn name(&self) -> &DocName {
        &self.name
    }

    async fn request<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, DocError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| DocError::Unloaded)?;
        rx.await.map_err(|_| DocError::Unloaded)?
    }

    /// Waits until the document is loaded.
    pub async fn ready(&self) -> Result<(), DocError> {
        self.request(|reply| Command::Ready { reply }).await
    }

    /// Adds a peer; the actor queues step1 and the awareness states to it.
    pub async fn join(&self, peer: PeerLink) -> Result<(), DocError> {
        self.request(|reply| Command::Join { peer, reply }).await
    }

    /// Removes a peer (and its awareness states). Best effort: a gone actor
    /// has nothing to remove.
    pub async fn leave(&self, peer: PeerId) {
        let _ = self.tx.send(Command::Leave { peer }).await;
    }

    /// Hands the messages of one frame to the actor. Waits while the mailbox
    /// is full, which slows down the reading of this peer's socket: a fast
    /// writer is held back by TCP, not by dropping what it sent.
    pub async fn messages(&self, peer: PeerId, messages: Vec<Inbound>) -> Result<(), DocError> {
        self.tx
            .send(Command::Messages { peer, messages })
            .await
            .map_err(|_| DocError::Unloaded)
    }

    pub async fn apply_update(&self, update: InboundUpdate) -> Result<(), DocError> {
        self.request(|reply| Command::Update { update, reply }).await
    }

    pub async fn encode_state(&self, sv: Option<StateVector>) -> Result<Vec<u8>, DocError> {
        self.request(|reply| Command::EncodeState { sv, reply }).await
    }

    /// Connected peers right now.
    pub fn peers(&self) -> usize {
        self.peers.load(Relaxed)
    }

    pub async fn content(&self) -> Result<serde_json::Value, DocError> {
        self.request(|reply| Command::Content { reply }).await
    }

    pub async fn take_version(&self, kind: VersionKind, label: Option<String>) -> Result<VersionMeta, DocError> {
        self.request(|reply| Command::TakeVersion { kind, label, reply }).await
    }

    pub async fn restore(&self, id: i64) -> Result<Restored, DocError> {
        self.request(|reply| Command::Restore { id, reply }).await
    }

    pub async fn delete(&self) -> Result<bool, DocError> {
        self.request(|reply| Command::Delete { reply }).await
    }

    pub(crate) async fn shutdown(&self) -> Result<(), DocError> {
        self.request(|reply| Command::Shutdown { reply }).await
    }
}

/// Why `apply` refused an update.
enum Refusal {
    /// It would grow the document past the size limit; nothing was applied.
    TooLarge(u64),
    /// It would give the document too many shared types; nothing was applied.
    TooManyTypes(u64),
    /// yrs refused it; the document may be half changed and must be rebuilt.
    Invalid(String),
}

/// Where an update came from; decides who is told when it is stored.
enum Origin {
    Peer(PeerId),
    Api(Reply<()>),
    /// Made by the actor itself (a restore).
    Actor,
}

/// Something to do once the batch's updates are committed.
enum Effect {
    /// Send an accepted update to every peer but its sender.
    Relay {
        origin: Origin,
        frame: Bytes,
    },
    /// Send an awareness change to every peer, the sender included.
    Broadcast {
        frame: Bytes,
    },
    Send {
        peer: PeerId,
        frame: Bytes,
    },
    /// Answer a step1 with what the peer lacks.
    Step2 {
        peer: PeerId,
        sv: StateVector,
    },
    EncodeState {
        sv: Option<StateVector>,
        reply: Reply<Vec<u8>>,
    },
    Content {
        reply: Reply<serde_json::Value>,
    },
}

struct Peer {
    link: PeerLink,
    /// A read-only peer was told once that its updates are refused.
    told_read_only: bool,
}

#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

pub(crate) struct DocActor {
    name: DocName,
    generation: u64,
    /// Holds the yrs `Doc` too (`awareness.doc()`).
    awareness: Awareness,
    /// What the document holds of each client's changes (a lower bound):
    /// updates that skip some are refused.
    clocks: Clocks,
    peers: HashMap<PeerId, Peer>,
    store: Arc<dyn DocStore>,
    registry: Arc<RegistryInner>,
    config: Arc<DocConfig>,
    metrics: Arc<Metrics>,
    /// Sequence number of the next accepted update.
    next_seq: u64,
    /// Updates in the log since the last snapshot.
    log_updates: u64,
    log_bytes: u64,
    /// Size of the last snapshot written or loaded.
    snapshot_bytes: u64,
    /// Shared types the document holds (counted when loaded, then per
    /// accepted update); bounded by `max_doc_types`.
    type_items: u64,
    /// Accepted in this batch, not yet committed.
    pending: Vec<LogEntry>,
    effects: Vec<Effect>,
    /// Peers whose outbound queue was full during this batch.
    slow: Vec<PeerId>,
    idle_since: Option<Instant>,
    /// The in-memory document may differ from the store and could not be
    /// rebuilt: the actor unloads without saving anything.
    poisoned: bool,
    peer_count: Arc<AtomicUsize>,
    /// First and latest edit since the last version, for automatic versions.
    edited: Option<(Instant, Instant)>,
    /// What the newest version holds (its [`fingerprint`]), once known; an
    /// automatic version identical to it is not taken.
    last_version: Option<Vec<u8>>,
    /// Awareness clients marked gone (their connection closed, their state
    /// expired, or they said goodbye), which may come back with old clocks.
    gone: HashSet<ClientID>,
    /// Which connection speaks for each awareness client.
    owners: HashMap<ClientID, PeerId>,
    /// Counts this document in `weft_documents_loaded` while it lives,
    /// however the actor ends.
    _loaded: LoadedGauge,
}

struct LoadedGauge(Arc<Metrics>);

impl LoadedGauge {
    fn new(metrics: &Arc<Metrics>) -> Self {
        metrics.docs_loaded.fetch_add(1, Relaxed);
        Self(metrics.clone())
    }
}

impl Drop for LoadedGauge {
    fn drop(&mut self) {
        self.0.docs_loaded.fetch_sub(1, Relaxed);
    }
}

/// Spawns the actor for `name` and returns its handle. The actor loads the
/// document first; commands wait in the mailbox meanwhile.
pub(crate) fn spawn(
    name: DocName,
    generation: u64,
    store: Arc<dyn DocStore>,
    registry: Arc<RegistryInner>,
    config: Arc<DocConfig>,
    metrics: Arc<Metrics>,
) -> DocHandle {
    let (tx, rx) = mpsc::channel(MAILBOX);
    let span = tracing::info_span!("doc", doc = %name);
    let peer_count = Arc::new(AtomicUsize::new(0));
    let handle = DocHandle {
        name: name.clone(),
        tx,
        generation,
        peers: peer_count.clone(),
    };
    let supervisor = (name.clone(), registry.clone(), metrics.clone());
    let actor = async move {
        let started = Instant::now();
        let stored = match store.load(&name).await {
            Ok(stored) => stored,
            Err(e) => return fail_load(&name, generation, &registry, rx, e.to_string()).await,
        };
        let Rebuilt { doc, clocks, types, .. } = match build_doc(&stored) {
            Ok(rebuilt) => rebuilt,
            Err(e) => return fail_load(&name, generation, &registry, rx, e).await,
        };
        let actor = DocActor {
            log_updates: stored.log.len() as u64,
            log_bytes: stored.log_bytes(),
            snapshot_bytes: stored.snapshot.as_ref().map_or(0, |s| s.len() as u64),
            type_items: types,
            next_seq: stored.next_seq,
            name,
            generation,
            awareness: Awareness::new(doc),
            clocks,
            peers: HashMap::new(),
            store,
            registry,
            config,
            metrics: metrics.clone(),
            pending: Vec::new(),
            effects: Vec::new(),
            slow: Vec::new(),
            idle_since: Some(Instant::now()),
            poisoned: false,
            peer_count,
            // A log after the newest snapshot may hold edits no version
            // has; the version taken for them is skipped if it is not new.
            edited: (!stored.log.is_empty()).then(|| (Instant::now(), Instant::now())),
            last_version: None,
            gone: HashSet::new(),
            owners: HashMap::new(),
            _loaded: LoadedGauge::new(&metrics),
        };
        actor.metrics.docs_loaded_total.fetch_add(1, Relaxed);
        debug!(
            updates = stored.log.len(),
            snapshot = stored.snapshot.as_ref().map_or(0, Vec::len),
            took_ms = started.elapsed().as_secs_f64() * 1e3,
            "document loaded"
        );
        actor.run(rx).await;
    };
    tokio::spawn(
        async move {
            // A panic in the actor (yrs on input nothing caught, or a bug of
            // ours) must not leave a dead actor in the registry: every later
            // request would reach it and fail. Its peers lose their queues
            // and reconnect; the document loads afresh from what was stored.
            if std::panic::AssertUnwindSafe(actor).catch_unwind().await.is_err() {
                let (name, registry, metrics) = supervisor;
                error!("document actor panicked; its peers reconnect and it loads again from storage");
                metrics.actor_panics.fetch_add(1, Relaxed);
                registry.remove(&name, generation);
            }
        }
        .instrument(span),
    );
    handle
}

/// A document that cannot be loaded answers every waiting command with the
/// reason and leaves the registry, so the next request tries again.
async fn fail_load(
    name: &DocName,
    generation: u64,
    registry: &RegistryInner,
    mut rx: mpsc::Receiver<Command>,
    reason: String,
) {
    error!(error = %reason, "document could not be loaded");
    registry.remove(name, generation);
    rx.close();
    while let Some(cmd) = rx.recv().await {
        cmd.refuse(DocError::LoadFailed {
            doc: name.to_string(),
            reason: reason.clone(),
        });
    }
}

/// Rebuilds a document from its snapshot and log.
fn build_doc(stored: &StoredDoc) -> Result<Rebuilt, String> {
    let snapshot = stored.snapshot.iter().map(|s| ("snapshot".to_string(), &s[..]));
    let log = stored.log.iter().map(|e| (format!("update #{}", e.seq), &e.data[..]));
    let rebuilt = weft_core::rebuild(snapshot.chain(log))?;
    for reason in &rebuilt.left_out {
        warn!(%reason, "stored update left out");
    }
    Ok(rebuilt)
}

fn now_ms() -> u64 {
    crate::storage::now_ms() as u64
}

/// What a document holds, to tell versions apart: its state vector and its
/// delete set. The state vector alone does not change when edits only
/// delete, and would call such a document identical to its last version.
fn fingerprint(doc: &Doc) -> Vec<u8> {
    doc.transact().snapshot().encode_v1()
}

impl DocActor {
    fn doc(&self) -> &Doc {
        self.awareness.doc()
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let period = [
            Duration::from_secs(1),
            self.config.awareness_timeout / 4,
            self.config.unload_after / 4,
        ]
        .into_iter()
        .min()
        .unwrap_or(Duration::from_secs(1))
        .max(Duration::from_millis(10));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            tokio::select! {
                n = rx.recv_many(&mut batch, MAX_BATCH) => {
                    if n == 0 {
                        break; // every handle is gone: the registry itself was dropped
                    }
                    if self.process(&mut batch, &mut rx).await == Flow::Stop {
                        return;
                    }
                    if self.poisoned {
                        self.unload(&mut rx).await;
                        return;
                    }
                }
                _ = tick.tick() => {
                    self.expire_awareness();
                    self.drop_slow_peers();
                    self.auto_version_if_due().await;
                    let idle = self.idle_since.is_some_and(|t| t.elapsed() >= self.config.unload_after);
                    if idle && self.peers.is_empty() {
                        self.unload(&mut rx).await;
                        return;
                    }
                }
            }
        }
    }

    async fn process(&mut self, batch: &mut Vec<Command>, rx: &mut mpsc::Receiver<Command>) -> Flow {
        for cmd in batch.drain(..) {
            match cmd {
                Command::Ready { reply } => {
                    let _ = reply.send(Ok(()));
                }
                Command::Join { peer, reply } => {
                    self.join(peer);
                    let _ = reply.send(Ok(()));
                }
                Command::Leave { peer } => self.leave(peer),
                Command::Messages { peer, messages } => self.messages(peer, messages).await,
                Command::Update { update, reply } => match self.apply(update, Origin::Api(reply)) {
                    // `apply` answered the caller.
                    Ok(()) | Err(Refusal::TooLarge(_) | Refusal::TooManyTypes(_)) => {}
                    Err(Refusal::Invalid(reason)) => {
                        // Undo any half-applied state.
                        warn!(%reason, "update from the HTTP API refused");
                        self.flush().await;
                        self.reload().await;
                    }
                },
                Command::EncodeState { sv, reply } => self.effects.push(Effect::EncodeState { sv, reply }),
                Command::Content { reply } => self.effects.push(Effect::Content { reply }),
                Command::TakeVersion { kind, label, reply } => {
                    self.flush().await;
                    let _ = reply.send(self.take_version(kind, label).await);
                }
                Command::Restore { id, reply } => {
                    self.flush().await;
                    let _ = reply.send(self.restore(id).await);
                }
                Command::Delete { reply } => {
                    self.flush().await;
                    for id in self.peers.keys().copied().collect::<Vec<_>>() {
                        self.kick(id, CloseReason::deleted());
                    }
                    let result = self.store.delete(&self.name).await;
                    info!(stored = ?result.as_ref().ok(), "document deleted");
                    let _ = reply.send(result.map_err(|e| DocError::Storage(e.to_string())));
                    // Nothing is left to save: leave without a version or
                    // a compaction, which would bring the document back.
                    self.log_updates = 0;
                    self.edited = None;
                    self.unload(rx).await;
                    return Flow::Stop;
                }
                Command::Shutdown { reply } => {
                    self.flush().await;
                    for id in self.peers.keys().copied().collect::<Vec<_>>() {
                        self.kick(id, CloseReason::going_away());
                    }
                    self.compact_if_needed(true).await;
                    let _ = reply.send(Ok(()));
                    rx.close();
                    while let Some(cmd) = rx.recv().await {
                        cmd.refuse(DocError::ShuttingDown);
                    }
                    return Flow::Stop;
                }
            }
        }
        self.flush().await;
        self.compact_if_needed(false).await;
        Flow::Continue
    }

    fn join(&mut self, link: PeerLink) {
        let id = link.id;
        self.peers.insert(
            id,
            Peer {
                link,
                told_read_only: false,
            },
        );
        self.idle_since = None;
        self.peer_count.store(self.peers.len(), Relaxed);
        // step1 first, then the awareness states, each in its own frame.
        let sv = self.doc().transact().state_vector();
        self.send(id, protocol::encode_step1(&sv));
        if let Ok(update) = self.awareness.update() {
            if !update.clients.is_empty() {
                self.send(id, protocol::encode_awareness(&update));
            }
        }
        debug!(peer = %id, peers = self.peers.len(), "peer joined");
    }

    fn leave(&mut self, id: PeerId) {
        if self.peers.remove(&id).is_some() {
            self.peer_count.store(self.peers.len(), Relaxed);
            debug!(peer = %id, peers = self.peers.len(), "peer left");
            self.release_clients(id);
        }
        if self.peers.is_empty() {
            self.idle_since = Some(Instant::now());
        }
    }

    async fn messages(&mut self, id: PeerId, messages: Vec<Inbound>) {
        for message in messages {
            let Some(peer) = self.peers.get(&id) else {
                return; // kicked earlier in this batch
            };
            match message {
                Inbound::SyncStep1(sv) => self.effects.push(Effect::Step2 { peer: id, sv }),
                Inbound::Update(update) => {
                    if !peer.link.writable {
                        // Never applied, stored or relayed. An empty update
                        // is what every client sends as its first step2.
                        if !update.update.is_empty() {
                            self.refuse_read_only(id);
                        }
                        continue;
                    }
                    match self.apply(update, Origin::Peer(id)) {
                        Ok(()) => {}
                        Err(Refusal::TooLarge(limit)) => {
                            self.metrics.updates_refused.fetch_add(1, Relaxed);
                            self.kick(id, CloseReason::doc_too_large(limit));
                            return;
                        }
                        Err(Refusal::TooManyTypes(limit)) => {
                            self.metrics.updates_refused.fetch_add(1, Relaxed);
                            self.kick(id, CloseReason::too_many_types(limit));
                            return;
                        }
                        Err(Refusal::Invalid(reason)) => {
                            warn!(peer = %id, %reason, "update refused; closing the connection");
                            self.metrics.updates_refused.fetch_add(1, Relaxed);
                            self.kick(id, CloseReason::bad_update(&reason));
                            // Store what was accepted before it, then rebuild
                            // the document from the store: the refused update
                            // may have been half applied.
                            self.flush().await;
                            self.reload().await;
                            return;
                        }
                    }
                }
                Inbound::Awareness(update) => self.apply_awareness(id, update),
                Inbound::QueryAwareness => {
                    if let Ok(update) = self.awareness.update() {
                        self.effects.push(Effect::Send {
                            peer: id,
                            frame: protocol::encode_awareness(&update),
                        });
                    }
                }
                Inbound::Ignored(tag) => debug!(peer = %id, tag, "ignored message type"),
            }
        }
    }

    /// A read-only peer sent an update: it is dropped; the peer is told once
    /// (y-websocket logs "Permission denied to access <url>") and the
    /// attempt is logged.
    fn refuse_read_only(&mut self, id: PeerId) {
        self.metrics.updates_refused.fetch_add(1, Relaxed);
        let Some(peer) = self.peers.get_mut(&id) else { return };
        if !peer.told_read_only {
            peer.told_read_only = true;
            warn!(peer = %id, "read-only peer sent an update; refused (logged once per connection)");
            let frame = protocol::encode_auth_denied("read-only access: your changes are not saved");
            self.send(id, frame);
        }
    }

    /// Applies an update to the document and queues it for storage and relay.
    /// On refusal, an API caller is answered here; a peer is the caller's job.
    fn apply(&mut self, update: InboundUpdate, origin: Origin) -> Result<(), Refusal> {
        let frame = update.relay_frame();
        let InboundUpdate { raw, update, shape, .. } = update;
        if update.is_empty() {
            // What a fresh client sends as its step2: nothing to store or relay.
            if let Origin::Api(reply) = origin {
                let _ = reply.send(Ok(()));
            }
            return Ok(());
        }
        let limit = self.config.max_doc_size;
        let stored =
            self.snapshot_bytes + self.log_bytes + self.pending.iter().map(|e| e.data.len() as u64).sum::<u64>();
        if limit > 0 && stored + raw.len() as u64 > limit {
            if let Origin::Api(reply) = origin {
                let _ = reply.send(Err(DocError::TooLarge { limit }));
            }
            return Err(Refusal::TooLarge(limit));
        }
        let type_limit = self.config.max_doc_types;
        if self.type_items + shape.types > type_limit {
            if let Origin::Api(reply) = origin {
                let _ = reply.send(Err(DocError::TooManyTypes { limit: type_limit }));
            }
            return Err(Refusal::TooManyTypes(type_limit));
        }
        let changed = match super::apply_update(self.awareness.doc(), update, &shape.spans, &mut self.clocks) {
            Ok(changed) => changed,
            Err(reason) => {
                if let Origin::Api(reply) = origin {
                    let _ = reply.send(Err(DocError::BadUpdate(reason.clone())));
                }
                return Err(Refusal::Invalid(reason));
            }
        };
        if !changed {
            // Everything in it was already known (several peers resending
            // the same edits after a reconnect): storing it again would only
            // grow the log.
            if let Origin::Api(reply) = origin {
                let _ = reply.send(Ok(()));
            }
            return Ok(());
        }
        // Counted only when it changed something: a resent update would
        // otherwise count twice. (A partly known one still counts whole; the
        // count is exact again when the document is next loaded.)
        self.type_items += shape.types;
        self.accept(raw, frame, origin);
        Ok(())
    }

    /// Queues an applied update for storage, then relay.
    fn accept(&mut self, raw: Bytes, frame: Bytes, origin: Origin) {
        self.metrics.updates_applied.fetch_add(1, Relaxed);
        self.metrics.update_bytes.fetch_add(raw.len() as u64, Relaxed);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending.push(LogEntry { seq, data: raw });
        self.effects.push(Effect::Relay { origin, frame });
        let now = Instant::now();
        self.edited = Some(self.edited.map_or((now, now), |(first, _)| (first, now)));
    }

    fn apply_awareness(&mut self, id: PeerId, mut update: AwarenessUpdate) {
        // A client whose connection dropped was marked gone at clock + 1.
        // When it reconnects, y-websocket resends its state with the clock it
        // had, which every peer would ignore as old until its second renewal
        // (up to 30 s of invisibility). A state from the client itself means
        // it is back: lift its clock above the removal. The echo carries the
        // new clock to the client too, which adopts it.
        let mut revived = Vec::new();
        for (client, entry) in update.clients.iter_mut() {
            if &*entry.json != "null" && self.gone.remove(client) {
                if let Some((clock, _)) = self.awareness.meta(*client) {
                    entry.clock = entry.clock.max(clock + 1);
                }
                revived.push(*client);
            }
        }
        self.metrics.awareness_updates.fetch_add(1, Relaxed);
        match self.awareness.apply_update_summary(update) {
            Ok(Some(summary)) => {
                // A connection speaks for the clients that appeared (or came
                // back) through it. y-websocket clients send back every
                // awareness change they receive, so merely mentioning a
                // client does not make a connection its owner (the reference
                // server's rule too); otherwise closing one connection would
                // remove people who are still here.
                for client in summary.added.iter().chain(&revived) {
                    self.owners.insert(*client, id);
                }
                for client in &summary.removed {
                    if self.owners.get(client) == Some(&id) {
                        // It said goodbye itself; if it comes back with its
                        // old clock, it is revived like a dropped one.
                        self.owners.remove(client);
                        self.gone.insert(*client);
                    }
                }
                // Renewals (same state, higher clock) count as changes and are
                // relayed too: they keep idle clients' 30 s timers fed.
                if let Ok(changed) = self.awareness.update_with_clients(summary.all_changes()) {
                    self.effects.push(Effect::Broadcast {
                        frame: protocol::encode_awareness(&changed),
                    });
                }
            }
            Ok(None) => {}
            Err(e) => debug!(peer = %id, error = %e, "awareness update not applied"),
        }
    }

    /// The awareness clients a connection owns, forgotten as it goes.
    fn release_clients(&mut self, id: PeerId) {
        let mine: Vec<ClientID> = self.owners.iter().filter(|(_, p)| **p == id).map(|(c, _)| *c).collect();
        for client in &mine {
            self.owners.remove(client);
        }
        self.forget_clients(mine);
    }

    /// Marks the given clients as gone (null state, clock + 1) and tells the
    /// remaining peers.
    fn forget_clients(&mut self, clients: impl IntoIterator<Item = ClientID>) {
        let gone: Vec<ClientID> = clients
            .into_iter()
            .filter(|c| self.awareness.meta(*c).is_some() && self.awareness.state::<serde_json::Value>(*c).is_some())
            .collect();
        if gone.is_empty() {
            return;
        }
        for client in &gone {
            self.awareness.remove_state(*client);
            self.gone.insert(*client);
        }
        if let Ok(update) = self.awareness.update_with_clients(gone) {
            self.broadcast(protocol::encode_awareness(&update), None);
        }
    }

    /// Removes awareness states not renewed within the timeout, as the
    /// reference server does (yrs leaves this to its user).
    fn expire_awareness(&mut self) {
        let now = now_ms();
        let timeout = self.config.awareness_timeout.as_millis() as u64;
        let stale: Vec<ClientID> = self
            .awareness
            .iter()
            .filter(|(_, state)| state.data.is_some() && now.saturating_sub(state.last_updated) >= timeout)
            .map(|(client, _)| client)
            .collect();
        if !stale.is_empty() {
            debug!(clients = stale.len(), "awareness states expired");
            for client in &stale {
                self.owners.remove(client);
            }
            self.forget_clients(stale);
        }
    }

    /// Commits the batch's updates, then performs its effects. `false` when
    /// the updates could not be stored (and were therefore not relayed).
    async fn flush(&mut self) -> bool {
        let mut stored = true;
        if !self.pending.is_empty() {
            let entries = std::mem::take(&mut self.pending);
            let count = entries.len() as u64;
            let bytes: u64 = entries.iter().map(|e| e.data.len() as u64).sum();
            match self.store.append(&self.name, entries).await {
                Ok(()) => {
                    self.log_updates += count;
                    self.log_bytes += bytes;
                }
                Err(e) => {
                    error!(error = %e, updates = count, "could not store updates; they are not relayed and their senders are disconnected");
                    self.drop_unstored_updates(&e.to_string());
                    self.reload().await;
                    stored = false;
                }
            }
        }
        for effect in std::mem::take(&mut self.effects) {
            self.perform(effect);
        }
        self.drop_slow_peers();
        stored
    }

    /// After a failed append: none of this batch's updates may be relayed.
    /// Their senders are disconnected (they still hold the updates and resend
    /// them when they reconnect); API callers get the error.
    fn drop_unstored_updates(&mut self, error: &str) {
        let mut senders = Vec::new();
        for effect in std::mem::take(&mut self.effects) {
            match effect {
                Effect::Relay {
                    origin: Origin::Peer(id),
                    ..
                } => senders.push(id),
                Effect::Relay {
                    origin: Origin::Api(reply),
                    ..
                } => {
                    let _ = reply.send(Err(DocError::Storage(error.to_string())));
                }
                Effect::Relay {
                    origin: Origin::Actor, ..
                } => {}
                other => self.effects.push(other),
            }
        }
        for id in senders {
            self.kick(id, CloseReason::storage_failed());
        }
    }

    fn perform(&mut self, effect: Effect) {
        match effect {
            Effect::Relay { origin, frame } => match origin {
                Origin::Peer(id) => self.broadcast(frame, Some(id)),
                Origin::Api(reply) => {
                    self.broadcast(frame, None);
                    let _ = reply.send(Ok(()));
                }
                Origin::Actor => self.broadcast(frame, None),
            },
            Effect::Broadcast { frame } => self.broadcast(frame, None),
            Effect::Send { peer, frame } => self.send(peer, frame),
            Effect::Step2 { peer, sv } => {
                let update = self.doc().transact().encode_state_as_update_v1(&sv);
                self.send(peer, protocol::encode_step2(&update));
            }
            Effect::EncodeState { sv, reply } => {
                let sv = sv.unwrap_or_default();
                let _ = reply.send(Ok(self.doc().transact().encode_state_as_update_v1(&sv)));
            }
            Effect::Content { reply } => {
                let _ = reply.send(Ok(super::content::doc_to_json(self.doc())));
            }
        }
    }

    fn send(&mut self, id: PeerId, frame: Bytes) {
        let Some(peer) = self.peers.get(&id) else { return };
        match peer.link.outbox.try_send(frame) {
            Ok(()) => {
                self.metrics.frames_sent.fetch_add(1, Relaxed);
            }
            Err(mpsc::error::TrySendError::Full(_)) => self.slow.push(id),
            // The connection ended; its Leave command is on the way.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    fn broadcast(&mut self, frame: Bytes, except: Option<PeerId>) {
        let mut sent = 0;
        for (id, peer) in &self.peers {
            if Some(*id) == except {
                continue;
            }
            match peer.link.outbox.try_send(frame.clone()) {
                Ok(()) => sent += 1,
                Err(mpsc::error::TrySendError::Full(_)) => self.slow.push(*id),
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        self.metrics.frames_sent.fetch_add(sent, Relaxed);
    }

    /// Disconnects every peer whose queue overflowed. Never skips a frame for
    /// a peer and keeps it: a peer either gets every update or is told to
    /// reconnect and resync.
    fn drop_slow_peers(&mut self) {
        while let Some(id) = self.slow.pop() {
            if self.peers.contains_key(&id) {
                self.kick(id, CloseReason::slow_consumer(self.config.peer_queue));
            }
        }
    }

    /// Closes a peer's connection with a reason and forgets the peer.
    fn kick(&mut self, id: PeerId, reason: CloseReason) {
        let Some(peer) = self.peers.remove(&id) else { return };
        self.peer_count.store(self.peers.len(), Relaxed);
        if let Some(kick) = reason.kick {
            self.metrics.kick(kick);
            warn!(peer = %id, code = reason.code, reason = %reason.reason, "disconnecting peer");
        }
        let _ = peer.link.closer.try_send(reason);
        self.release_clients(id);
        if self.peers.is_empty() {
            self.idle_since = Some(Instant::now());
        }
    }

    /// Replaces the in-memory document with the stored one.
    async fn reload(&mut self) {
        let rebuilt = match self.store.load(&self.name).await {
            Ok(stored) => build_doc(&stored).map(|rebuilt| (rebuilt, stored)),
            Err(e) => Err(e.to_string()),
        };
        match rebuilt {
            Ok((Rebuilt { doc, clocks, types, .. }, stored)) => {
                self.clocks = clocks;
                self.next_seq = stored.next_seq;
                self.log_updates = stored.log.len() as u64;
                self.log_bytes = stored.log_bytes();
                self.snapshot_bytes = stored.snapshot.as_ref().map_or(0, |s| s.len() as u64);
                self.type_items = types;
                *self.awareness.doc_mut() = doc;
                info!("document rebuilt from storage");
            }
            Err(e) => {
                // The in-memory state may hold what the store does not; no
                // peer may build on it. Everyone reconnects and the document
                // loads afresh.
                error!(error = %e, "document could not be rebuilt from storage; disconnecting every peer");
                for id in self.peers.keys().copied().collect::<Vec<_>>() {
                    self.kick(id, CloseReason::storage_failed());
                }
                self.poisoned = true;
            }
        }
    }

    /// Writes a compaction snapshot when the log has grown past the limits
    /// (or, with `force`, whenever it is not empty).
    async fn compact_if_needed(&mut self, force: bool) {
        if self.poisoned {
            return;
        }
        // A snapshot re-encodes the whole document, so taking one every N
        // updates would make the work quadratic in the document's life.
        // Waiting until the log also holds a quarter of the last snapshot's
        // bytes bounds it to a few bytes encoded per byte logged, and a load
        // to the snapshot plus a log of at most about a quarter of it.
        let grown = self.log_bytes >= self.snapshot_bytes / 4;
        let due = (self.log_updates >= self.config.compact_after_updates && grown)
            || self.log_bytes >= self.config.compact_after_bytes.max(self.snapshot_bytes)
            || (force && self.log_updates > 0);
        if !due {
            return;
        }
        let snapshot = self.snapshot();
        let size = snapshot.state.len();
        match self.store.compact(&self.name, snapshot).await {
            Ok(()) => {
                debug!(
                    updates = self.log_updates,
                    bytes = self.log_bytes,
                    snapshot = size,
                    "log compacted"
                );
                self.metrics.compactions.fetch_add(1, Relaxed);
                self.log_updates = 0;
                self.log_bytes = 0;
                self.snapshot_bytes = size as u64;
            }
            // The log is intact; compaction is retried after the next batch.
            Err(e) => warn!(error = %e, "compaction failed"),
        }
    }

    /// The full state as of the last accepted update. Only called with an
    /// empty `pending`, so the state is exactly what the log holds.
    fn snapshot(&self) -> Snapshot {
        let txn = self.doc().transact();
        Snapshot {
            upto_seq: self.next_seq - 1,
            state: txn.encode_state_as_update_v1(&StateVector::default()),
            state_vector: txn.state_vector().encode_v1(),
        }
    }

    async fn take_version(&mut self, kind: VersionKind, label: Option<String>) -> Result<VersionMeta, DocError> {
        let snapshot = self.snapshot();
        let taken = fingerprint(self.doc());
        let meta = self
            .store
            .save_version(&self.name, snapshot, kind, label)
            .await
            .map_err(|e| DocError::Storage(e.to_string()))?;
        info!(version = meta.id, kind = kind.as_str(), label = ?meta.label, "version taken");
        self.last_version = Some(taken);
        self.edited = None;
        if kind == VersionKind::Auto {
            self.thin_versions().await;
        }
        Ok(meta)
    }

    /// Takes an automatic version when the document was edited and then
    /// left alone, or has been edited for a long time without one.
    async fn auto_version_if_due(&mut self) {
        let Some((first, last)) = self.edited else { return };
        let policy = &self.config.versions;
        if last.elapsed() >= policy.after_idle || first.elapsed() >= policy.every {
            self.auto_version().await;
        }
    }

    async fn auto_version(&mut self) {
        if self.poisoned || self.edited.is_none() {
            return;
        }
        if self.last_version.is_none() {
            self.last_version = self.newest_version().await;
        }
        if self.last_version.as_ref() == Some(&fingerprint(self.doc())) {
            self.edited = None;
            return;
        }
        if let Err(e) = self.take_version(VersionKind::Auto, None).await {
            warn!(error = %e, "automatic version failed");
        }
    }

    /// The fingerprint of the newest stored version, if any.
    async fn newest_version(&self) -> Option<Vec<u8>> {
        let versions = self.store.list_versions(&self.name).await.ok()?;
        let (_, state) = self.store.load_version(&self.name, versions.first()?.id).await.ok()??;
        let doc = Doc::new();
        doc.transact_mut().apply_update(Update::decode_v1(&state).ok()?).ok()?;
        Some(fingerprint(&doc))
    }

    async fn thin_versions(&mut self) {
        let Ok(versions) = self.store.list_versions(&self.name).await else {
            return;
        };
        let doomed = super::thin(&versions, crate::storage::now_ms(), &self.config.versions);
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
    async fn restore(&mut self, id: i64) -> Result<Restored, DocError> {
        let (version, state) = self
            .store
            .load_version(&self.name, id)
            .await
            .map_err(|e| DocError::Storage(e.to_string()))?
            .ok_or(DocError::NoVersion(id))?;
        let label = match &version.label {
            Some(label) => format!("Before restoring version {id} ({label})"),
            None => format!("Before restoring version {id}"),
        };
        let backup = self.take_version(VersionKind::Named, Some(label)).await?;
        let doc = self.awareness.doc();
        let update = match std::panic::catch_unwind(AssertUnwindSafe(|| super::restore::restore(doc, &state))) {
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
        self.type_items += weft_core::validate::update_v1(&update).map_or(0, |shape| shape.types);
        if !Update::decode_v1(&update).map(|u| u.is_empty()).unwrap_or(false) {
            let raw = Bytes::from(update);
            let frame = protocol::encode_update(&raw);
            self.accept(raw, frame, Origin::Actor);
            if !self.flush().await {
                return Err(DocError::Storage("the restore could not be stored".into()));
            }
        }
        info!(version = id, backup = backup.id, update_size, "version restored");
        // The restore itself is an edit: the next automatic version records it.
        Ok(Restored { backup, update_size })
    }

    /// Leaves the registry and answers what is still in the mailbox, so that
    /// its senders retry on a fresh actor.
    async fn unload(&mut self, rx: &mut mpsc::Receiver<Command>) {
        self.auto_version().await;
        self.compact_if_needed(true).await;
        self.registry.remove(&self.name, self.generation);
        rx.close();
        while let Some(cmd) = rx.recv().await {
            cmd.refuse(DocError::Unloaded);
        }
        self.metrics.docs_unloaded_total.fetch_add(1, Relaxed);
        debug!("document unloaded");
    }
}
