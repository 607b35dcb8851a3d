//! What the actor does with peers: joins and leaves, the messages they send
//! (updates, step1, awareness), and what they are sent. Answers cost one
//! encoding per document version, not one per request (see `answers`);
//! awareness changes are gathered over a batch and sent as one frame per
//! peer, holding the latest state of each client changed.

use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use tokio::time::Instant;
use tracing::{debug, warn};
use weft_core::originals::Originals;
use yrs::sync::awareness::AwarenessUpdate;
use yrs::{ClientID, StateVector};

use super::dormant::unbuilt;
use super::{DocActor, Effect, Origin};
use crate::close::CloseReason;
use crate::doc::answers::{self, Step2};
use crate::doc::handle::Reply;
use crate::doc::presence;
use crate::doc::{DocError, PeerId, PeerLink};
use crate::protocol::{self, Inbound, InboundUpdate};
use weft_core::hocuspocus;

/// Why `apply` refused an update.
pub(super) enum Refusal {
    /// It would grow the document past the size limit; nothing was applied.
    TooLarge(u64),
    /// It would give the document too many shared types; nothing was applied.
    TooManyTypes(u64),
    /// yrs refused it; the document may be half changed and must be rebuilt.
    Invalid(String),
    /// The dormant document could not be built to apply it (`dormant`).
    Unbuilt,
}

impl DocActor {
    pub(super) fn join(&mut self, link: PeerLink) {
        let id = link.id;
        let hocuspocus = link.hocuspocus;
        let joined = self.presence.join();
        self.peers.insert(link, joined);
        self.life.busy();
        // step1 first, then the awareness states, each in its own frame. A
        // Hocuspocus peer gets its step1 in answer to its own instead.
        if !hocuspocus {
            let sv = self.state_vector();
            self.send(id, protocol::encode_step1(&sv));
        }
        self.send_awareness_states(id);
        self.peer_joined(id);
        debug!(peer = %id, peers = self.peers.len(), "peer joined");
    }

    pub(super) fn leave(&mut self, id: PeerId) {
        if let Some(link) = self.peers.remove(id) {
            debug!(peer = %id, peers = self.peers.len(), "peer left");
            self.peer_left(id, link.user);
            self.release_clients(id);
        }
        self.idle_if_empty();
    }

    pub(super) async fn messages(&mut self, id: PeerId, messages: Vec<Inbound>, received: std::time::Instant) {
        for message in messages {
            let Some(writable) = self.peers.writable(id) else {
                return; // kicked earlier in this batch
            };
            match message {
                Inbound::SyncStep1(sv) => {
                    // Hocuspocus answers a step1 with its own step1, then
                    // step2: the provider's step2 in reply is what its
                    // sync status acknowledges, bringing `unsyncedChanges`
                    // (set to 1 by every sync it starts) back to 0.
                    if self.peers.hocuspocus(id) {
                        let own = self.state_vector();
                        self.send(id, protocol::encode_step1(&own));
                    }
                    self.effects.push(Effect::Step2 { peer: id, sv })
                }
                Inbound::Update(update) => {
                    let hocuspocus = self.peers.hocuspocus(id);
                    if !writable {
                        // Never applied, stored or relayed. An empty update
                        // is what every client sends as its first step2.
                        let empty = update.update.is_empty();
                        if !empty {
                            self.refuse_read_only(id);
                        }
                        if hocuspocus {
                            self.effects.push(Effect::SyncStatus {
                                peer: id,
                                applied: empty,
                            });
                        }
                        continue;
                    }
                    let reason = match self.apply(update, Origin::Peer(id), received) {
                        Ok(()) => {
                            // Sent after this batch's commit (`flush`): "1"
                            // means stored, not only applied in memory.
                            if hocuspocus {
                                self.effects.push(Effect::SyncStatus {
                                    peer: id,
                                    applied: true,
                                });
                            }
                            continue;
                        }
                        // Could not be built: every peer was disconnected.
                        Err(Refusal::Unbuilt) => return,
                        Err(Refusal::TooLarge(limit)) => CloseReason::doc_too_large(limit),
                        Err(Refusal::TooManyTypes(limit)) => CloseReason::too_many_types(limit),
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
                    };
                    self.metrics.updates_refused.fetch_add(1, Relaxed);
                    self.kick(id, reason);
                    return;
                }
                Inbound::Awareness(update) => self.apply_awareness(id, update),
                Inbound::QueryAwareness => self.effects.push(Effect::AwarenessStates { peer: id }),
                Inbound::Ignored(tag) => debug!(peer = %id, tag, "ignored message type"),
            }
        }
    }

    /// An update from the HTTP API; `apply` answers the caller.
    pub(super) async fn api_update(&mut self, update: InboundUpdate, received: std::time::Instant, reply: Reply<()>) {
        if let Err(Refusal::Invalid(reason)) = self.apply(update, Origin::Api(reply), received) {
            // Undo any half-applied state.
            warn!(%reason, "update from the HTTP API refused");
            self.flush().await;
            self.reload().await;
        }
    }

    /// A read-only peer sent an update: it is dropped; the peer is told once
    /// (y-websocket logs "Permission denied to access <url>") and the
    /// attempt is logged.
    fn refuse_read_only(&mut self, id: PeerId) {
        self.metrics.updates_refused.fetch_add(1, Relaxed);
        if self.peers.first_read_only_refusal(id) {
            warn!(peer = %id, "read-only peer sent an update; refused (logged once per connection)");
            // A Hocuspocus peer is told by its sync status instead.
            if !self.peers.hocuspocus(id) {
                let frame = protocol::encode_auth_denied("read-only access: your changes are not saved");
                self.send(id, frame);
            }
        }
    }

    /// Applies an update to the document and queues it for storage and relay.
    /// On refusal, an API caller is answered here; a peer is the caller's job.
    fn apply(&mut self, update: InboundUpdate, origin: Origin, received: std::time::Instant) -> Result<(), Refusal> {
        let answer = |origin: Origin, result: Result<(), DocError>| {
            if let Origin::Api(reply) = origin {
                let _ = reply.send(result);
            }
        };
        let frame = update.relay_frame();
        let InboundUpdate { raw, update, shape, .. } = update;
        if update.is_empty() {
            // What a fresh client sends as its step2: nothing to store or relay.
            answer(origin, Ok(()));
            return Ok(());
        }
        let limit = self.config.max_doc_size;
        if self.log.would_exceed(raw.len() as u64, limit) {
            answer(origin, Err(DocError::TooLarge { limit }));
            return Err(Refusal::TooLarge(limit));
        }
        if self.dormant_knows(&raw) {
            // An up-to-date client's step2: nothing to build it for.
            answer(origin, Ok(()));
            return Ok(());
        }
        if !self.wake() {
            answer(origin, Err(unbuilt()));
            return Err(Refusal::Unbuilt);
        }
        let type_limit = self.config.max_doc_types;
        if self.type_items + shape.types > type_limit {
            answer(origin, Err(DocError::TooManyTypes { limit: type_limit }));
            return Err(Refusal::TooManyTypes(type_limit));
        }
        let started = std::time::Instant::now();
        let applied = weft_core::apply_update(self.awareness.doc(), update, &shape.spans, &mut self.clocks);
        self.metrics.record_apply(started.elapsed());
        let changed = match applied {
            Ok(changed) => changed,
            Err(reason) => {
                answer(origin, Err(DocError::BadUpdate(reason.clone())));
                return Err(Refusal::Invalid(reason));
            }
        };
        if !changed {
            // Everything in it was already known (several peers resending
            // the same edits after a reconnect): storing it again would only
            // grow the log.
            answer(origin, Ok(()));
            return Ok(());
        }
        // Counted only when it changed something: a resent update would
        // otherwise count twice. (A partly known one still counts whole; the
        // count is exact again when the document is next loaded.)
        self.type_items += shape.types;
        self.accept(raw, frame, origin, Some(received));
        Ok(())
    }

    /// Queues an applied update for storage, then relay.
    pub(super) fn accept(&mut self, raw: Bytes, frame: Bytes, origin: Origin, received: Option<std::time::Instant>) {
        self.metrics.updates_applied.fetch_add(1, Relaxed);
        self.metrics.update_bytes.fetch_add(raw.len() as u64, Relaxed);
        self.answers.accepted(&raw, &frame);
        self.shared_rows = false;
        self.originals.add(&raw);
        self.log.push(raw.clone());
        if let Origin::Peer(id) = &origin {
            if let Some(user) = self.peers.user(*id) {
                self.unreported.editor(user);
            }
        }
        self.effects.push(Effect::Relay {
            origin,
            raw,
            frame,
            received,
        });
        let now = Instant::now();
        self.versions.edited(now);
        self.active_at = now;
    }

    /// Applies what a connection may say of awareness (see `presence`) and
    /// notes the clients that changed; they are sent at the end of the batch.
    fn apply_awareness(&mut self, id: PeerId, mut update: AwarenessUpdate) {
        let Some(joined) = self.peers.joined(id) else { return };
        self.metrics.awareness_updates.fetch_add(1, Relaxed);
        let awareness = &self.awareness;
        let too_many = self.presence.admit(id, joined, &mut update, |client| {
            awareness.meta(client).map(|(clock, _)| clock)
        });
        if too_many > 0 && self.peers.first_clients_warning(id) {
            warn!(
                peer = %id,
                dropped = too_many,
                limit = self.config.max_awareness_clients,
                "more awareness clients than one connection may have; dropped (logged once per connection)"
            );
        }
        if update.clients.is_empty() {
            return;
        }
        match self.awareness.apply_update_summary(update) {
            Ok(Some(summary)) => {
                for client in &summary.removed {
                    // It said goodbye itself; if it comes back with its old
                    // clock, it is revived like a dropped one.
                    self.presence.gone(*client);
                }
                // Renewals (same state, higher clock) count as changes and are
                // relayed too: they keep idle clients' 30 s timers fed.
                self.note_local_awareness(summary.all_changes());
                self.awareness_changed.extend(summary.all_changes());
                self.answers.awareness_changed();
            }
            Ok(None) => {}
            Err(e) => debug!(peer = %id, error = %e, "awareness update not applied"),
        }
    }

    /// The awareness clients a connection owns, removed as it goes.
    pub(super) fn release_clients(&mut self, id: PeerId) {
        let mine = self.presence.leave(id);
        self.note_local_awareness(mine.iter().copied());
        self.remove_states(mine);
    }

    /// Removes the states of the given clients (null, clock + 1); the peers
    /// hear of it at the end of the batch.
    fn remove_states(&mut self, clients: Vec<ClientID>) {
        if clients.is_empty() {
            return;
        }
        for client in &clients {
            self.awareness.remove_state(*client);
        }
        self.awareness_changed.extend(clients);
        self.answers.awareness_changed();
    }

    /// Removes awareness states not renewed within the timeout.
    pub(super) fn expire_awareness(&mut self) {
        use yrs::sync::time::Clock;
        let states = self
            .awareness
            .iter()
            .map(|(client, state)| (client, state.data.is_some(), state.last_updated));
        let timeout = self.config.awareness_timeout.as_millis() as u64;
        let stale = presence::stale(states, self.clock.now(), timeout);
        if !stale.is_empty() {
            debug!(clients = stale.len(), "awareness states expired");
            for client in &stale {
                self.presence.gone(*client);
            }
            self.remove_states(stale);
        }
    }

    /// Sends the awareness changes gathered since the last call to every
    /// peer, the senders included, as one frame: however many messages
    /// caused them, each peer gets one frame with the latest state of each
    /// client that changed.
    pub(super) fn publish_awareness(&mut self) {
        self.share_awareness();
        while !self.awareness_changed.is_empty() {
            let changed = std::mem::take(&mut self.awareness_changed);
            if let Ok(update) = self.awareness.update_with_clients(changed) {
                self.broadcast(protocol::encode_awareness(&update), None);
            }
            // Peers too slow for it leave, and their clients with them.
            self.drop_slow_peers();
        }
    }

    pub(super) fn perform(&mut self, effect: Effect) {
        match effect {
            Effect::Relay {
                origin,
                frame,
                received,
                ..
            } => {
                match origin {
                    Origin::Peer(id) => self.broadcast(frame, Some(id)),
                    Origin::Api(reply) => {
                        self.broadcast(frame, None);
                        let _ = reply.send(Ok(()));
                    }
                    Origin::Actor => self.broadcast(frame, None),
                }
                if let Some(received) = received {
                    self.metrics.record_relay(received);
                }
            }
            Effect::Step2 { peer, sv } => self.answer_step1(peer, sv),
            Effect::SyncStatus { peer, applied } => {
                self.send(peer, hocuspocus::sync_status(applied));
            }
            Effect::AwarenessStates { peer } => self.send_awareness_states(peer),
            Effect::EncodeState { sv, reply } => {
                let sv = sv.unwrap_or_default();
                let _ = reply.send(self.state_for(&sv));
            }
            Effect::Content { reply } => {
                let content = match self.wake() {
                    true => Ok(crate::doc::content::doc_to_json(self.doc())),
                    false => Err(unbuilt()),
                };
                let _ = reply.send(content);
            }
        }
    }

    /// What the document holds beyond `sv` (the HTTP API's state).
    fn state_for(&mut self, sv: &StateVector) -> Result<Vec<u8>, DocError> {
        if let Some(update) = self.dormant_update(sv) {
            return Ok(update);
        }
        if !self.wake() {
            return Err(unbuilt());
        }
        Ok(self.encode(sv))
    }

    /// Sends a stateless message to every Hocuspocus peer but its sender;
    /// how many got it. Nothing is stored: it is the application's
    /// ephemeral event (Hocuspocus's `onStateless` + `broadcastStateless`).
    pub(super) fn stateless(&mut self, from: Option<PeerId>, payload: &str) -> u64 {
        if from.is_some_and(|id| !self.peers.contains(id)) {
            return 0;
        }
        let sent = self.peers.fan_out_hocuspocus(&hocuspocus::stateless(payload), from);
        self.metrics.frames_sent.fetch_add(sent, Relaxed);
        self.drop_slow_peers();
        sent
    }

    /// Answers a step1: nothing while a waiting answer covers it, the
    /// shared full state, or a diff of its own (see `answers`). An answer
    /// that needs an encoding is charged to the client's budget first; when
    /// the budget is spent, it waits (`answer_deferred`), and later step1s
    /// of the peer wait with it.
    fn answer_step1(&mut self, id: PeerId, sv: StateVector) {
        if !self.peers.contains(id) {
            return;
        }
        if self.peers.has_deferred(id) {
            self.peers.defer_step1(id, sv, Instant::now());
            return;
        }
        let doc_sv = self.state_vector();
        let step2 = answers::step2_for(&doc_sv, &sv, self.peers.waiting_step2(id));
        if step2 == Step2::Diff {
            if let Some(frame) = self.dormant_answer(&sv) {
                // It holds every block: the deletions, kept once encoded.
                if let Some(ticket) = self.send(id, frame) {
                    self.peers.step2_sent(id, ticket, sv);
                }
                return;
            }
        }
        let cost = answers::cost(step2, self.answers.has_full_state(), &doc_sv, &sv);
        if cost > 0.0 {
            let now = Instant::now();
            if let Some(Err(wait)) = self.peers.encodes(id).map(|b| b.take(cost, now.into_std())) {
                debug!(peer = %id, wait_ms = wait.as_millis(), "step1 answer waits for the client's budget of encodings");
                self.metrics.answers_deferred.fetch_add(1, Relaxed);
                self.peers.defer_step1(id, sv, now + wait);
                return;
            }
            self.metrics.state_encodes.fetch_add(1, Relaxed);
        }
        let (ticket, answered) = match step2 {
            Step2::Nothing => return,
            Step2::Full => {
                let originals = &self.originals;
                let frames = match self.answers.full_state(|updates| merge_updates(updates, originals)) {
                    Some(frames) => frames,
                    None if !self.wake() => return,
                    None => {
                        // Stale (or its tail would not merge): encode it anew.
                        let update = self.encode(&StateVector::default());
                        let frame = protocol::encode_step2(&update);
                        self.answers.set_full_state(frame.clone());
                        self.shared_rows = false;
                        vec![frame]
                    }
                };
                (self.send_all(id, frames), StateVector::default())
            }
            Step2::Diff => {
                if !self.wake() {
                    return;
                }
                let update = self.encode(&sv);
                (self.send(id, protocol::encode_step2(&update)), sv)
            }
        };
        if let Some(ticket) = ticket {
            self.peers.step2_sent(id, ticket, answered);
        }
    }

    /// Answers the step1s that waited for their budget and whose time has
    /// come (on the actor's tick).
    pub(super) fn answer_deferred(&mut self) {
        for (id, sv) in self.peers.take_deferred(Instant::now()) {
            self.answer_step1(id, sv);
        }
    }

    /// Sends every awareness state to a peer (on join, or asked), unless the
    /// last such frame still waits in its queue: the changes since then were
    /// queued behind it.
    fn send_awareness_states(&mut self, id: PeerId) {
        if !self.peers.contains(id) || self.peers.awareness_states_waiting(id) {
            return;
        }
        let awareness = &self.awareness;
        let frame = self.answers.awareness_states(|| {
            let update = awareness.update().ok()?;
            (!update.clients.is_empty()).then(|| protocol::encode_awareness(&update))
        });
        if let Some(ticket) = frame.and_then(|frame| self.send(id, frame)) {
            self.peers.awareness_states_sent(id, ticket);
        }
    }

    /// Queues frames for one peer, in order; the last one's ticket when
    /// all were queued.
    fn send_all(&mut self, id: PeerId, frames: Vec<Bytes>) -> Option<u64> {
        let mut last = None;
        for frame in frames {
            last = Some(self.send(id, frame)?);
        }
        last
    }

    /// Queues a frame for one peer; its ticket when queued.
    pub(super) fn send(&mut self, id: PeerId, frame: Bytes) -> Option<u64> {
        let ticket = self.peers.send(id, frame)?;
        self.metrics.frames_sent.fetch_add(1, Relaxed);
        Some(ticket)
    }

    pub(super) fn broadcast(&mut self, frame: Bytes, except: Option<PeerId>) {
        let sent = self.peers.fan_out(&frame, except);
        self.metrics.frames_sent.fetch_add(sent, Relaxed);
    }
}

/// The updates accepted since the kept full state, merged into one (and its
/// frame), so that an answer is two frames however many there were. yrs's
/// merge re-encodes their JSON values: they are put back as written.
fn merge_updates(updates: &[Bytes], originals: &Originals) -> Option<(Bytes, Bytes)> {
    match yrs::merge_updates_v1(updates) {
        Ok(merged) => {
            let merged = originals.restore(merged);
            let frame = protocol::encode_update(&merged);
            Some((Bytes::from(merged), frame))
        }
        Err(e) => {
            warn!(error = %e, updates = updates.len(), "accepted updates did not merge; the full state is encoded anew");
            None
        }
    }
}
