//! Answers to what one peer can ask for in bulk: the rule for what a step1
//! gets ([`step2_for`], pure), and the encodings shared by every peer that
//! asks ([`Answers`]).
//!
//! A peer may send step1 after step1; each answer can be the whole document.
//! The actor remembers, for each peer, the state vector its last step2
//! answered while that answer still waits in the peer's queue. Everything
//! the document accepted since was queued behind that answer, so a step1
//! that holds at least that state vector needs nothing more. One that does
//! not (clients do not go back in time, hostile ones may) gets the full
//! state, which every later state vector holds. A peer that lacks most of
//! the document gets the full state too: it is encoded once per document
//! version and shared, where a diff would be encoded for this peer alone,
//! and Yjs clients skip what they already hold.

use bytes::Bytes;
use yrs::StateVector;

/// The answers any peer may ask for, encoded at most once while what they
/// hold stays the same, and shared (`Bytes`) by every peer that gets them.
#[derive(Debug, Default)]
pub(super) struct Answers {
    /// The step2 frame holding the full state, while the document stays as
    /// it was when it was encoded.
    full_state: Option<Bytes>,
    /// The awareness frame holding every state, while no state changes.
    awareness_states: Option<Bytes>,
}

impl Answers {
    /// The full state's step2 frame, encoded by `encode` if it is not kept.
    pub fn full_state(&mut self, encode: impl FnOnce() -> Bytes) -> Bytes {
        self.full_state.get_or_insert_with(encode).clone()
    }

    /// The frame of every awareness state, encoded by `encode` if it is not
    /// kept; `None` (and nothing kept) when there are none.
    pub fn awareness_states(&mut self, encode: impl FnOnce() -> Option<Bytes>) -> Option<Bytes> {
        if self.awareness_states.is_none() {
            self.awareness_states = Some(encode()?);
        }
        self.awareness_states.clone()
    }

    /// The document changed: its full state is encoded anew when asked.
    pub fn doc_changed(&mut self) {
        self.full_state = None;
    }

    /// An awareness state changed.
    pub fn awareness_changed(&mut self) {
        self.awareness_states = None;
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
    let (mut total, mut held) = (0u64, 0u64);
    for (client, clock) in doc.iter() {
        total += u64::from(*clock);
        held += u64::from(sv.get(client).min(*clock));
    }
    held * 2 < total
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

    #[test]
    fn answers_are_encoded_once_until_what_they_hold_changes() {
        let mut answers = Answers::default();
        let encoded = std::cell::Cell::new(0);
        let encode = || {
            encoded.set(encoded.get() + 1);
            Bytes::from_static(b"state")
        };
        answers.full_state(encode);
        answers.full_state(encode);
        answers.awareness_changed();
        answers.full_state(encode);
        assert_eq!(encoded.get(), 1);
        answers.doc_changed();
        answers.full_state(encode);
        assert_eq!(encoded.get(), 2);

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
