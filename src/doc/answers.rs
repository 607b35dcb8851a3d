//! Answers to what one peer can ask for in bulk: the rule for what a step1
//! gets ([`step2_for`], pure), what it costs ([`cost`]), and the encodings
//! shared by every peer that asks ([`Answers`]).
//!
//! A peer may send step1 after step1; each answer can be the whole document.
//! The actor remembers, for each peer, the state vector its last step2
//! answered while that answer still waits in the peer's queue. Everything
//! the document accepted since was queued behind that answer, so a step1
//! that holds at least that state vector needs nothing more. One that does
//! not (clients do not go back in time, hostile ones may) gets the full
//! state, which every later state vector holds. A peer that lacks most of
//! the document gets the full state too: it is shared, where a diff would be
//! encoded for this peer alone, and Yjs clients skip what they already hold.
//!
//! The full state is not encoded anew after every edit: the last encoding is
//! kept with the update frames accepted since, and sent as they are (the
//! step2, then the updates; a client applies both alike), until those pass
//! a quarter of the state; more updates than an eighth of a peer's queue
//! are merged into one frame when next asked for. What an answer
//! still costs (an encoding of the full state, or a diff) is charged to the
//! asking client's budget, so that no client can make the actor encode in
//! a loop.

use bytes::Bytes;
use yrs::StateVector;

/// Most update frames sent behind the shared full state; more are merged
/// into one when next asked for. Also at most an eighth of a peer's queue,
/// so that an answer never fills it.
const MAX_TAIL_FRAMES: usize = 128;

/// The answers any peer may ask for, encoded at most once while what they
/// hold stays the same, and shared (`Bytes`) by every peer that gets them.
#[derive(Debug)]
pub(super) struct Answers {
    /// The full state as it was when last encoded, and what was accepted
    /// since.
    full_state: Option<FullState>,
    /// The awareness frame holding every state, while no state changes.
    awareness_states: Option<Bytes>,
    max_tail_frames: usize,
}

/// The document now, as frames: a step2 of the full state at one version,
/// then the update frames accepted since (the ones relayed to every peer).
/// A client applies a step2 and an update alike, so the answer is the
/// document now without encoding it again.
#[derive(Debug)]
struct FullState {
    state: Bytes,
    /// Each update accepted since: its bytes, and its frame.
    tail: Vec<(Bytes, Bytes)>,
    tail_bytes: usize,
}

impl Answers {
    /// For peers whose queues hold `peer_queue` frames.
    pub fn new(peer_queue: usize) -> Self {
        Self {
            full_state: None,
            awareness_states: None,
            max_tail_frames: (peer_queue / 8).min(MAX_TAIL_FRAMES),
        }
    }

    /// Whether the full state is kept (an answer needs no encoding of it).
    pub fn has_full_state(&self) -> bool {
        self.full_state.is_some()
    }

    /// The frames of the full state (the step2 first), if it is kept. When
    /// more updates follow it than an answer may take, they are merged
    /// into one first by `merge` (the update and its frame; `None`: they
    /// could not be, and nothing is kept). Merging costs what they hold,
    /// at most a quarter of the state, and happens at most once per
    /// `max_tail_frames` accepted updates, however often peers ask.
    pub fn full_state(&mut self, merge: impl FnOnce(&[Bytes]) -> Option<(Bytes, Bytes)>) -> Option<Vec<Bytes>> {
        let kept = self.full_state.as_mut()?;
        if kept.tail.len() > self.max_tail_frames {
            let updates: Vec<Bytes> = kept.tail.iter().map(|(update, _)| update.clone()).collect();
            match merge(&updates) {
                Some((update, frame)) => {
                    kept.tail_bytes = frame.len();
                    kept.tail = vec![(update, frame)];
                }
                None => {
                    self.full_state = None;
                    return None;
                }
            }
        }
        let frames = std::iter::once(kept.state.clone()).chain(kept.tail.iter().map(|(_, frame)| frame.clone()));
        Some(frames.collect())
    }

    /// The kept full state's step2 frame, when nothing was accepted since
    /// it: the document now, in one frame.
    pub fn current_state(&self) -> Option<Bytes> {
        self.full_state
            .as_ref()
            .filter(|kept| kept.tail.is_empty())
            .map(|kept| kept.state.clone())
    }

    /// Keeps a fresh encoding of the full state (a step2 frame).
    pub fn set_full_state(&mut self, state: Bytes) {
        self.full_state = Some(FullState {
            state,
            tail: Vec::new(),
            tail_bytes: 0,
        });
    }

    /// The frame of every awareness state, encoded by `encode` if it is not
    /// kept; `None` (and nothing kept) when there are none.
    pub fn awareness_states(&mut self, encode: impl FnOnce() -> Option<Bytes>) -> Option<Bytes> {
        if self.awareness_states.is_none() {
            self.awareness_states = Some(encode()?);
        }
        self.awareness_states.clone()
    }

    /// An update was accepted, relayed as `frame`: it joins the kept full
    /// state, which is dropped (encoded anew when asked) once what follows
    /// it passes a quarter of its size (or at once when peer queues are too
    /// short to take a second frame).
    pub fn accepted(&mut self, update: &Bytes, frame: &Bytes) {
        let Some(kept) = &mut self.full_state else { return };
        kept.tail_bytes += frame.len();
        kept.tail.push((update.clone(), frame.clone()));
        if self.max_tail_frames == 0 || kept.tail_bytes > kept.state.len() / 4 {
            self.full_state = None;
        }
    }

    /// The document was replaced (rebuilt from storage): nothing kept holds.
    pub fn doc_changed(&mut self) {
        self.full_state = None;
    }

    /// An awareness state changed.
    pub fn awareness_changed(&mut self) {
        self.awareness_states = None;
    }
}

/// Answers with the full state that cost less than this share of one
/// encoding are not charged less: a diff also encodes every deletion of
/// the document.
const MIN_COST: f64 = 1.0 / 64.0;

/// What answering a step1 costs the actor, in encodings of the full state,
/// counted against the asker's budget: nothing when the shared encoding is
/// kept (or the answer is nothing), one to encode the full state, and for a
/// diff the share of the document (by clocks) the peer lacks, at least
/// [`MIN_COST`].
pub(super) fn cost(step2: Step2, kept: bool, doc: &StateVector, sv: &StateVector) -> f64 {
    match step2 {
        Step2::Nothing => 0.0,
        Step2::Full if kept => 0.0,
        Step2::Full => 1.0,
        Step2::Diff => {
            let (total, held) = clocks(doc, sv);
            if total == 0 {
                0.0
            } else {
                ((total - held) as f64 / total as f64).max(MIN_COST)
            }
        }
    }
}

/// A step1 came while another from the same peer waits for its budget:
/// one answer serves both, computed for what both hold.
pub(super) fn merge_waiting(waiting: StateVector, sv: StateVector) -> StateVector {
    if holds(&sv, &waiting) {
        waiting
    } else if holds(&waiting, &sv) {
        sv
    } else {
        StateVector::default()
    }
}

/// The answer to a step1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step2 {
    /// The answer still waiting in the peer's queue covers this one.
    Nothing,
    /// The whole document (the shared encoding).
    Full,
    /// What the peer lacks, encoded for it.
    Diff,
}

/// `doc`: the document's state vector; `sv`: the step1's; `waiting`: the
/// state vector the peer's waiting answer was computed for, if one waits.
pub(super) fn step2_for(doc: &StateVector, sv: &StateVector, waiting: Option<&StateVector>) -> Step2 {
    match waiting {
        Some(answered) if holds(sv, answered) => Step2::Nothing,
        Some(_) => Step2::Full,
        None if lacks_most(doc, sv) => Step2::Full,
        None => Step2::Diff,
    }
}

/// Whether state vector `a` holds at least everything `b` does.
fn holds(a: &StateVector, b: &StateVector) -> bool {
    b.iter().all(|(client, clock)| a.get(client) >= *clock)
}

/// Whether a peer at `sv` lacks most of a document at `doc`, counted in
/// clocks (one per character or item, deleted ones included): its diff
/// would be most of the full state.
fn lacks_most(doc: &StateVector, sv: &StateVector) -> bool {
    let (total, held) = clocks(doc, sv);
    held * 2 < total
}

/// The clocks of a document at `doc`, and how many of them a peer at `sv`
/// holds.
fn clocks(doc: &StateVector, sv: &StateVector) -> (u64, u64) {
    let (mut total, mut held) = (0u64, 0u64);
    for (client, clock) in doc.iter() {
        total += u64::from(*clock);
        held += u64::from(sv.get(client).min(*clock));
    }
    (total, held)
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::ClientID;

    fn sv(entries: &[(u64, u32)]) -> StateVector {
        let mut sv = StateVector::default();
        for (client, clock) in entries {
            sv.set_max(ClientID::new(*client), *clock);
        }
        sv
    }

    fn frames(answers: &mut Answers) -> Option<Vec<Bytes>> {
        answers.full_state(|_| panic!("nothing to merge"))
    }

    fn update(bytes: &'static [u8]) -> (Bytes, Bytes) {
        (Bytes::from_static(bytes), Bytes::from_static(bytes))
    }

    #[test]
    fn the_full_state_is_kept_with_the_updates_accepted_since() {
        let mut answers = Answers::new(1024);
        assert_eq!(frames(&mut answers), None);
        let (u0, _) = update(b"u0");
        answers.accepted(&u0, &u0);
        assert_eq!(frames(&mut answers), None, "nothing kept: nothing to add to");
        answers.set_full_state(Bytes::from(vec![0u8; 400]));
        let (u1, u2) = (update(b"u1").0, update(b"u2").0);
        answers.accepted(&u1, &u1);
        answers.accepted(&u2, &u2);
        answers.awareness_changed();
        let kept = frames(&mut answers).unwrap();
        assert_eq!(kept.len(), 3);
        assert_eq!(&kept[1..], [u1, u2]);
        // past a quarter of the state: encoded anew when next asked for
        let big = Bytes::from(vec![1u8; 97]);
        answers.accepted(&big, &big);
        assert_eq!(frames(&mut answers), None);
        answers.set_full_state(Bytes::from(vec![0u8; 400]));
        answers.doc_changed();
        assert_eq!(frames(&mut answers), None);
    }

    #[test]
    fn an_answer_never_takes_more_than_an_eighth_of_a_peer_queue() {
        let mut answers = Answers::new(64);
        answers.set_full_state(Bytes::from(vec![0u8; 1 << 20]));
        let u = Bytes::from_static(b"u");
        for _ in 0..8 {
            answers.accepted(&u, &u);
        }
        assert_eq!(frames(&mut answers).unwrap().len(), 9);
        answers.accepted(&u, &u);
        let merged = answers
            .full_state(|updates| {
                assert_eq!(updates.len(), 9);
                Some((Bytes::from_static(b"m"), Bytes::from_static(b"M")))
            })
            .unwrap();
        assert_eq!(merged.len(), 2, "the state, then the updates merged");
        assert_eq!(merged[1], Bytes::from_static(b"M"));
        answers.accepted(&u, &u);
        assert_eq!(frames(&mut answers).unwrap().len(), 3, "merged once");
        for _ in 0..8 {
            answers.accepted(&u, &u);
        }
        assert_eq!(answers.full_state(|_| None), None, "could not merge: nothing kept");
        assert!(!answers.has_full_state());
        let mut small = Answers::new(4);
        small.set_full_state(Bytes::from(vec![0u8; 1 << 20]));
        small.accepted(&u, &u);
        assert_eq!(frames(&mut small), None, "a queue of 4 frames: the state alone");
    }

    #[test]
    fn awareness_states_are_encoded_once_until_one_changes() {
        let mut answers = Answers::new(1024);
        assert_eq!(answers.awareness_states(|| None), None, "no states: nothing kept");
        assert!(answers.awareness_states(|| Some(Bytes::from_static(b"a"))).is_some());
        assert_eq!(
            answers.awareness_states(|| panic!("kept")),
            Some(Bytes::from_static(b"a"))
        );
        answers.doc_changed();
        assert_eq!(
            answers.awareness_states(|| panic!("kept")),
            Some(Bytes::from_static(b"a"))
        );
        answers.awareness_changed();
        assert_eq!(
            answers.awareness_states(|| Some(Bytes::from_static(b"b"))),
            Some(Bytes::from_static(b"b"))
        );
    }

    #[test]
    fn what_an_answer_costs() {
        let doc = sv(&[(1, 900), (2, 100)]);
        assert_eq!(cost(Step2::Nothing, false, &doc, &sv(&[])), 0.0);
        assert_eq!(cost(Step2::Full, true, &doc, &sv(&[])), 0.0, "the shared encoding");
        assert_eq!(cost(Step2::Full, false, &doc, &sv(&[])), 1.0);
        assert_eq!(cost(Step2::Diff, false, &doc, &sv(&[(1, 700), (2, 100)])), 0.2);
        assert_eq!(cost(Step2::Diff, false, &doc, &sv(&[(1, 900), (2, 100)])), MIN_COST);
        assert_eq!(cost(Step2::Diff, false, &sv(&[]), &sv(&[])), 0.0, "an empty document");
    }

    #[test]
    fn step1s_waiting_for_the_budget_share_one_answer() {
        let a = sv(&[(1, 10), (2, 5)]);
        let later = sv(&[(1, 12), (2, 5)]);
        assert_eq!(merge_waiting(a.clone(), later.clone()), a);
        assert_eq!(merge_waiting(later, a.clone()), a);
        assert_eq!(merge_waiting(a, sv(&[(1, 20)])), sv(&[]), "neither holds the other");
    }

    #[test]
    fn a_new_peer_or_a_hostile_state_vector_gets_the_shared_full_state() {
        let doc = sv(&[(1, 1_000_000), (2, 10)]);
        assert_eq!(step2_for(&doc, &sv(&[]), None), Step2::Full);
        // {c: 1} for a client holding a million clocks: the diff is the document
        assert_eq!(step2_for(&doc, &sv(&[(1, 1)]), None), Step2::Full);
        assert_eq!(step2_for(&doc, &sv(&[(3, 5_000_000)]), None), Step2::Full);
        // a peer that holds most of it gets what it lacks
        assert_eq!(step2_for(&doc, &sv(&[(1, 999_000)]), None), Step2::Diff);
        assert_eq!(step2_for(&sv(&[]), &sv(&[]), None), Step2::Diff, "an empty document");
    }

    #[test]
    fn a_waiting_answer_covers_later_state_vectors_that_hold_what_it_answered() {
        let doc = sv(&[(1, 100), (2, 100)]);
        let answered = sv(&[(1, 90), (2, 50)]);
        assert_eq!(step2_for(&doc, &answered, Some(&answered)), Step2::Nothing);
        assert_eq!(
            step2_for(&doc, &sv(&[(1, 95), (2, 50)]), Some(&answered)),
            Step2::Nothing
        );
        assert_eq!(
            step2_for(&doc, &sv(&[(1, 90), (2, 50), (7, 3)]), Some(&answered)),
            Step2::Nothing
        );
        // one that lacks what the waiting answer assumed gets the full state...
        assert_eq!(step2_for(&doc, &sv(&[(1, 95), (2, 40)]), Some(&answered)), Step2::Full);
        assert_eq!(step2_for(&doc, &sv(&[(2, 100)]), Some(&answered)), Step2::Full);
        // ...which covers every later one
        let full = sv(&[]);
        assert_eq!(step2_for(&doc, &sv(&[]), Some(&full)), Step2::Nothing);
        assert_eq!(step2_for(&doc, &sv(&[(1, 1)]), Some(&full)), Step2::Nothing);
    }
}
