//! `Peers`: a document's connected peers and the fan-out to them.
//!
//! Frames go into each peer's bounded queue (`outbox`) without waiting. A
//! peer whose queue is full is noted as slow, never skipped: the actor
//! disconnects it ([`Peers::take_slow`]) and it resyncs when it reconnects,
//! so a peer either gets every frame or is told to start over. The peer
//! count is shared with the document's handles, so counting needs no round
//! trip to the actor, and reported to the feed's live counts.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;
use tokio::time::Instant;
use yrs::StateVector;

use super::answers;
use super::{DocName, PeerId, PeerLink, Refused};
use crate::events::PeerCounts;
use crate::rate::SharedBucket;

/// What the actor holds of one peer besides its link.
#[derive(Debug)]
struct Peer {
    link: PeerLink,
    /// Its join number, for awareness ownership (`Presence`).
    joined: u64,
    /// A read-only peer was told once that its updates are refused.
    told_read_only: bool,
    /// It was told (in the log) that it sent more awareness clients than a
    /// connection may have.
    warned_clients: bool,
    /// The step2 last queued to it: its ticket in the peer's queue, and the
    /// state vector it answered (all of the document after it).
    step2: Option<(u64, StateVector)>,
    /// The ticket of the awareness states last queued to it.
    awareness_states: Option<u64>,
    /// A step1 waiting for its client's budget of encodings, and when to
    /// try again.
    deferred: Option<(StateVector, Instant)>,
}

#[derive(Debug)]
pub(super) struct Peers {
    peers: HashMap<PeerId, Peer>,
    /// Peers whose queue was full since the last `take_slow`.
    slow: Vec<PeerId>,
    count: Count,
}

/// The peer count, where others read it: the document's handles (an
/// atomic), and the live counts of the event feed (`events::PeerCounts`,
/// which sends `document.peers`).
#[derive(Debug, Default)]
pub(super) struct Count {
    shared: Arc<AtomicUsize>,
    live: Option<(DocName, PeerCounts)>,
}

impl Count {
    pub fn new(shared: Arc<AtomicUsize>, live: Option<(DocName, PeerCounts)>) -> Self {
        Self { shared, live }
    }

    fn set(&self, n: usize) {
        self.shared.store(n, Relaxed);
        if let Some((doc, live)) = &self.live {
            live.report(doc, n);
        }
    }
}

impl From<Arc<AtomicUsize>> for Count {
    fn from(shared: Arc<AtomicUsize>) -> Self {
        Self::new(shared, None)
    }
}

impl Peers {
    pub fn new(count: impl Into<Count>) -> Self {
        Self {
            peers: HashMap::new(),
            slow: Vec::new(),
            count: count.into(),
        }
    }

    /// Adds a peer that joined as the `joined`th connection.
    pub fn insert(&mut self, link: PeerLink, joined: u64) {
        let peer = Peer {
            link,
            joined,
            told_read_only: false,
            warned_clients: false,
            step2: None,
            awareness_states: None,
            deferred: None,
        };
        self.peers.insert(peer.link.id, peer);
        self.count.set(self.peers.len());
    }

    /// Forgets a peer; its link, to close it with, if it was there.
    pub fn remove(&mut self, id: PeerId) -> Option<PeerLink> {
        let peer = self.peers.remove(&id)?;
        self.count.set(self.peers.len());
        Some(peer.link)
    }

    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    pub fn contains(&self, id: PeerId) -> bool {
        self.peers.contains_key(&id)
    }

    pub fn ids(&self) -> Vec<PeerId> {
        self.peers.keys().copied().collect()
    }

    /// Whether the peer may change the document (`None`: not here).
    pub fn writable(&self, id: PeerId) -> Option<bool> {
        self.peers.get(&id).map(|p| p.link.writable)
    }

    /// Whom the peer's token names, if anyone.
    pub fn user(&self, id: PeerId) -> Option<&super::User> {
        self.peers.get(&id).and_then(|p| p.link.user.as_ref())
    }

    /// Whether the peer speaks Hocuspocus (`false` when it is not here).
    pub fn hocuspocus(&self, id: PeerId) -> bool {
        self.peers.get(&id).is_some_and(|p| p.link.hocuspocus)
    }

    /// Queues a frame for every Hocuspocus peer but `except`; how many got it.
    pub fn fan_out_hocuspocus(&mut self, frame: &Bytes, except: Option<PeerId>) -> u64 {
        let mut sent = 0;
        for (id, peer) in &self.peers {
            if Some(*id) == except || !peer.link.hocuspocus {
                continue;
            }
            match peer.link.outbox.try_send(frame.clone()) {
                Ok(_) => sent += 1,
                Err(Refused::Full) => self.slow.push(*id),
                Err(Refused::Closed) => {}
            }
        }
        sent
    }

    /// The peer's join number (`None`: not here).
    pub fn joined(&self, id: PeerId) -> Option<u64> {
        self.peers.get(&id).map(|p| p.joined)
    }

    /// `true` the first time a read-only peer's update is refused: it is
    /// told once, not once per update.
    pub fn first_read_only_refusal(&mut self, id: PeerId) -> bool {
        self.peers
            .get_mut(&id)
            .is_some_and(|p| !std::mem::replace(&mut p.told_read_only, true))
    }

    /// `true` the first time the peer sends too many awareness clients.
    pub fn first_clients_warning(&mut self, id: PeerId) -> bool {
        self.peers
            .get_mut(&id)
            .is_some_and(|p| !std::mem::replace(&mut p.warned_clients, true))
    }

    /// The state vector the peer's last step2 answered, while that answer
    /// still waits in its queue (`None`: no answer waits).
    pub fn waiting_step2(&self, id: PeerId) -> Option<&StateVector> {
        let peer = self.peers.get(&id)?;
        let (ticket, answered) = peer.step2.as_ref()?;
        peer.link.outbox.waiting(*ticket).then_some(answered)
    }

    /// A step2 answering `answered` was queued to the peer as `ticket`.
    pub fn step2_sent(&mut self, id: PeerId, ticket: u64, answered: StateVector) {
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.step2 = Some((ticket, answered));
        }
    }

    /// The peer's client's budget of encodings (`None`: no limit, or not here).
    pub fn encodes(&self, id: PeerId) -> Option<&SharedBucket> {
        self.peers.get(&id)?.link.encodes.as_ref()
    }

    /// Whether a step1 of the peer waits for its budget.
    pub fn has_deferred(&self, id: PeerId) -> bool {
        self.peers.get(&id).is_some_and(|p| p.deferred.is_some())
    }

    /// A step1 waits for the budget until `until`; one already waiting
    /// shares its answer with it.
    pub fn defer_step1(&mut self, id: PeerId, sv: StateVector, until: Instant) {
        let Some(peer) = self.peers.get_mut(&id) else { return };
        peer.deferred = Some(match peer.deferred.take() {
            Some((waiting, at)) => (answers::merge_waiting(waiting, sv), at),
            None => (sv, until),
        });
    }

    /// The step1s whose time to try again has come, taken.
    pub fn take_deferred(&mut self, now: Instant) -> Vec<(PeerId, StateVector)> {
        let mut due = Vec::new();
        for (id, peer) in &mut self.peers {
            if peer.deferred.as_ref().is_some_and(|(_, at)| *at <= now) {
                if let Some((sv, _)) = peer.deferred.take() {
                    due.push((*id, sv));
                }
            }
        }
        due
    }

    /// Whether the awareness states last queued to the peer still wait.
    pub fn awareness_states_waiting(&self, id: PeerId) -> bool {
        self.peers
            .get(&id)
            .is_some_and(|p| p.awareness_states.is_some_and(|ticket| p.link.outbox.waiting(ticket)))
    }

    pub fn awareness_states_sent(&mut self, id: PeerId, ticket: u64) {
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.awareness_states = Some(ticket);
        }
    }

    /// Queues a frame for one peer; its ticket when queued. A full queue
    /// makes the peer slow; a closed one means its Leave is on the way.
    pub fn send(&mut self, id: PeerId, frame: Bytes) -> Option<u64> {
        let peer = self.peers.get(&id)?;
        match peer.link.outbox.try_send(frame) {
            Ok(ticket) => Some(ticket),
            Err(Refused::Full) => {
                self.slow.push(id);
                None
            }
            Err(Refused::Closed) => None,
        }
    }

    /// Queues a frame for every peer but `except`; how many got it.
    pub fn fan_out(&mut self, frame: &Bytes, except: Option<PeerId>) -> u64 {
        let mut sent = 0;
        for (id, peer) in &self.peers {
            if Some(*id) == except {
                continue;
            }
            match peer.link.outbox.try_send(frame.clone()) {
                Ok(_) => sent += 1,
                Err(Refused::Full) => self.slow.push(*id),
                Err(Refused::Closed) => {}
            }
        }
        sent
    }

    /// The peers that were too slow since the last call and are still here,
    /// each once, to disconnect.
    pub fn take_slow(&mut self) -> Vec<PeerId> {
        let mut slow = Vec::new();
        while let Some(id) = self.slow.pop() {
            if self.peers.contains_key(&id) && !slow.contains(&id) {
                slow.push(id);
            }
        }
        slow
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doc::{outbox, OutboxReceiver};

    fn link(id: u64, frames: usize, writable: bool) -> (PeerLink, OutboxReceiver) {
        let (outbox, rx) = outbox(frames, 0);
        let closer = crate::close::Closer::new();
        let link = PeerLink {
            id: PeerId(id),
            outbox,
            closer,
            writable,
            encodes: None,
            hocuspocus: false,
            user: None,
        };
        (link, rx)
    }

    fn frame() -> Bytes {
        Bytes::from_static(b"frame")
    }

    #[test]
    fn the_count_is_shared_with_the_handles() {
        let count = Arc::new(AtomicUsize::new(0));
        let mut peers = Peers::new(count.clone());
        let (a, _ra) = link(1, 4, true);
        let (b, _rb) = link(2, 4, false);
        peers.insert(a, 1);
        peers.insert(b, 2);
        assert_eq!(count.load(Relaxed), 2);
        assert_eq!(peers.writable(PeerId(2)), Some(false));
        assert_eq!(peers.joined(PeerId(2)), Some(2));
        assert!(peers.remove(PeerId(1)).is_some());
        assert!(peers.remove(PeerId(1)).is_none());
        assert_eq!(count.load(Relaxed), 1);
        assert_eq!(peers.writable(PeerId(1)), None);
    }

    #[test]
    fn fan_out_skips_the_sender_and_notes_full_queues_once() {
        let mut peers = Peers::new(Arc::default());
        let (a, _ra) = link(1, 8, true);
        let (b, _rb) = link(2, 1, true);
        let (c, rc) = link(3, 8, true);
        peers.insert(a, 1);
        peers.insert(b, 2);
        peers.insert(c, 3);
        drop(rc); // its connection ended; its Leave is on the way
        assert_eq!(peers.fan_out(&frame(), Some(PeerId(1))), 1, "only b had room");
        assert!(peers.take_slow().is_empty());
        assert_eq!(peers.fan_out(&frame(), None), 1, "a; b is full now");
        assert_eq!(peers.send(PeerId(2), frame()), None);
        assert_eq!(
            peers.take_slow(),
            vec![PeerId(2)],
            "slow once, however often it overflowed"
        );
        assert!(peers.take_slow().is_empty());
        peers.fan_out(&frame(), None);
        peers.remove(PeerId(2));
        assert!(
            peers.take_slow().is_empty(),
            "a peer that left is not disconnected again"
        );
    }

    #[tokio::test]
    async fn answers_wait_until_written() {
        let mut peers = Peers::new(Arc::default());
        let (a, mut ra) = link(1, 8, true);
        peers.insert(a, 1);
        assert_eq!(peers.waiting_step2(PeerId(1)), None);
        let sv = StateVector::default();
        let ticket = peers.send(PeerId(1), frame()).unwrap();
        peers.step2_sent(PeerId(1), ticket, sv.clone());
        let ticket = peers.send(PeerId(1), frame()).unwrap();
        peers.awareness_states_sent(PeerId(1), ticket);
        assert_eq!(peers.waiting_step2(PeerId(1)), Some(&sv));
        assert!(peers.awareness_states_waiting(PeerId(1)));
        let mut written = Vec::new();
        assert_eq!(ra.recv_many(&mut written, 8).await, 2);
        ra.written(&written);
        assert_eq!(peers.waiting_step2(PeerId(1)), None);
        assert!(!peers.awareness_states_waiting(PeerId(1)));
    }

    #[test]
    fn a_peer_is_told_and_warned_once() {
        let mut peers = Peers::new(Arc::default());
        let (a, _ra) = link(1, 8, false);
        peers.insert(a, 1);
        assert!(peers.first_read_only_refusal(PeerId(1)));
        assert!(!peers.first_read_only_refusal(PeerId(1)));
        assert!(peers.first_clients_warning(PeerId(1)));
        assert!(!peers.first_clients_warning(PeerId(1)));
        assert!(!peers.first_read_only_refusal(PeerId(9)), "not here");
    }
}
