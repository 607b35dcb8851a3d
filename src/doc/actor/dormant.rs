//! A document held as its encoding instead of in yrs (`weft_core::dormant`).
//!
//! A document built in yrs takes ~15 times its encoded size in memory and
//! ~4.5 ms of CPU per 65 KiB to build (bench/FINDINGS.md), yet most loaded
//! documents are only read: after a restart every client reconnects
//! holding the whole document, a class opening one document needs all of
//! it. So a document loads dormant, as its stored updates joined into one
//! (`concat_v1`), and its state vector and deletions read from those
//! bytes. While dormant, the actor answers from them: a step1 of a client
//! lacking most of it gets the encoding itself (the shared full state of
//! `answers`), one holding every block gets the deletions only, and an
//! update that changes nothing (an up-to-date client's step2) is
//! recognised without yrs. Anything else wakes it first ([`DocActor::wake`]):
//! an update that changes it, a diff, its content, a version, a restore.
//!
//! It goes dormant again when its last peer leaves (it stays loaded until
//! `--unload-after-ms`, for the next join), and, with peers, after
//! `--dormant-after-ms` without an edit. Never in cluster mode, where the
//! stream's entries are applied as they come.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;
use tokio::time::Instant;
use tracing::{debug, error};
use weft_core::dormant::Summary;
use weft_core::originals::Originals;
use weft_core::{Clocks, Rebuilt};
use yrs::encoding::read::{Cursor, Read};
use yrs::{Doc, ReadTxn, StateVector, Transact};

use super::DocActor;
use crate::close::CloseReason;
use crate::doc::DocError;
use crate::metrics::Metrics;
use crate::protocol;
use crate::storage::StoredDoc;

/// The document as its encoding.
pub(super) struct Dormant {
    /// The whole state as a step2 frame, shared with `answers`.
    frame: Bytes,
    /// The whole state (the frame's payload).
    state: Bytes,
    summary: Summary,
    /// The step2 frame of the deletions alone, once asked for.
    deletions: Option<Bytes>,
    /// The state is yrs's own encoding (the document went to sleep, or
    /// loaded from a snapshot alone), not stored rows joined: a compaction
    /// writes it as it is. Joined rows keep every row's blocks apart, so
    /// compacting them means building the document.
    squashed: bool,
    _counted: DormantGauge,
}

/// Counts a document in `weft_documents_dormant` while it is held as its
/// encoding.
struct DormantGauge(Arc<Metrics>);

impl Drop for DormantGauge {
    fn drop(&mut self) {
        self.0.docs_dormant.fetch_sub(1, Relaxed);
    }
}

impl Dormant {
    /// The document whose whole state is `state` (one v1 update, each
    /// client's blocks from clock 0); `Err` when it is not such an update.
    pub fn new(state: &[u8], squashed: bool, metrics: &Arc<Metrics>) -> Result<Self, String> {
        let frame = protocol::encode_step2(state);
        Self::from_frame(frame, squashed, metrics)
    }

    /// From the step2 frame of the whole state (the shared answer kept by
    /// `answers`), without copying it.
    fn from_frame(frame: Bytes, squashed: bool, metrics: &Arc<Metrics>) -> Result<Self, String> {
        let header = step2_header(&frame).ok_or("not a step2 frame")?;
        let state = frame.slice(header..);
        let summary = Summary::of(&state)?;
        metrics.docs_dormant.fetch_add(1, Relaxed);
        Ok(Self {
            frame,
            state,
            summary,
            deletions: None,
            squashed,
            _counted: DormantGauge(metrics.clone()),
        })
    }

    /// From a stored document (its snapshot, then its log): `Err` when
    /// they do not join into one whole state by moving bytes (a gap or an
    /// overlap), and the document must be built to be known.
    pub fn stored(stored: &StoredDoc, metrics: &Arc<Metrics>) -> Result<Self, String> {
        let log = stored.log.iter().map(|e| &e.data[..]);
        let updates: Vec<&[u8]> = stored.snapshot.as_deref().into_iter().chain(log).collect();
        let joined = weft_core::concat::concat_v1(&updates).ok_or("the stored updates overlap or leave a gap")?;
        Self::new(&joined, stored.log.is_empty(), metrics)
    }

    pub fn state_vector(&self) -> StateVector {
        self.summary.state_vector()
    }

    pub fn bytes(&self) -> usize {
        self.state.len()
    }
}

impl DocActor {
    /// The document's state vector, dormant or not.
    pub(super) fn state_vector(&self) -> StateVector {
        match &self.dormant {
            Some(d) => d.state_vector(),
            None => self.doc().transact().state_vector(),
        }
    }

    /// On the tick: a document with no edit for `--dormant-after-ms` is
    /// held as its encoding.
    pub(super) fn sleep_if_quiet(&mut self, now: Instant) {
        let after = self.config.dormant_after;
        if self.dormant.is_none() && !after.is_zero() && now.saturating_duration_since(self.active_at) >= after {
            self.sleep();
        }
    }

    /// Takes a dormant document's full state as the shared answer (see
    /// `answers`): it is the encoding itself.
    pub(super) fn share_dormant_state(&mut self) {
        if let Some(d) = &self.dormant {
            self.answers.set_full_state(d.frame.clone());
        }
    }

    /// For a dormant document, the answer to a step1 from a client that
    /// holds every block: the deletions alone. `None` when awake or when
    /// the client lacks some block.
    pub(super) fn dormant_answer(&mut self, sv: &StateVector) -> Option<Bytes> {
        let d = self.dormant.as_mut()?;
        if !d.summary.held_by(sv) {
            return None;
        }
        Some(
            d.deletions
                .get_or_insert_with(|| protocol::encode_step2(&d.summary.deletions()))
                .clone(),
        )
    }

    /// For a dormant document, whether `update` changes nothing (no block,
    /// deletions it holds). `false` when awake.
    pub(super) fn dormant_knows(&self, update: &[u8]) -> bool {
        self.dormant.as_ref().is_some_and(|d| d.summary.knows(update))
    }

    /// The whole state as yrs would encode it, when dormant and held so
    /// (see `Dormant::squashed`): a compaction snapshot without building.
    pub(super) fn dormant_squashed(&self) -> Option<Bytes> {
        self.dormant.as_ref().filter(|d| d.squashed).map(|d| d.state.clone())
    }

    /// For a dormant document, what a client at `sv` lacks, when the
    /// encoding tells it without building: everything when it holds none
    /// of the document's blocks, the deletions when it holds all of them.
    pub(super) fn dormant_update(&self, sv: &StateVector) -> Option<Vec<u8>> {
        let d = self.dormant.as_ref()?;
        if d.summary.held_by(sv) {
            Some(d.summary.deletions())
        } else if d.summary.state_vector().iter().all(|(client, _)| sv.get(client) == 0) {
            Some(d.state.to_vec())
        } else {
            None
        }
    }

    /// Builds a dormant document in yrs; `true` once it is awake. When its
    /// encoding does not build (yrs refuses what was stored), every peer is
    /// disconnected and the actor unloads, as when a reload fails.
    #[must_use]
    pub(super) fn wake(&mut self) -> bool {
        if self.life.is_poisoned() {
            return false;
        }
        let Some(dormant) = self.dormant.take() else {
            return true;
        };
        let started = std::time::Instant::now();
        match weft_core::rebuild([("the stored state".to_string(), &dormant.state[..])]) {
            Ok(Rebuilt {
                doc,
                clocks,
                types,
                originals,
                ..
            }) => {
                *self.awareness.doc_mut() = doc;
                self.clocks = clocks;
                self.type_items = types;
                self.originals = originals;
                // The shared full state is still this frame (see `sleep`).
                self.shared_rows = !dormant.squashed;
                // Not put back to sleep before `--dormant-after-ms`: a
                // client asking for diffs would have it built every tick.
                self.active_at = Instant::now();
                self.metrics.docs_woken.fetch_add(1, Relaxed);
                debug!(
                    bytes = dormant.bytes(),
                    took_ms = started.elapsed().as_secs_f64() * 1e3,
                    "dormant document built"
                );
                true
            }
            Err(e) => {
                error!(error = %e, "the stored document could not be built; disconnecting every peer");
                // Still answered from its encoding (never an empty
                // document) until the actor leaves, at the batch's end.
                self.dormant = Some(dormant);
                self.kick_all(CloseReason::storage_failed());
                self.life.poison();
                false
            }
        }
    }

    /// Holds the document as its encoding from now on, dropping it from
    /// yrs. Only between batches (nothing pending), never in cluster mode
    /// or while a version or compaction is being written (it encodes from
    /// the document).
    pub(super) fn sleep(&mut self) {
        if self.dormant.is_some()
            || self.config.dormant_after.is_zero()
            || self.cluster.is_some()
            || self.life.is_poisoned()
            || self.log.has_pending()
            || self.background.busy()
        {
            return;
        }
        // The shared answer, when it is the document now: no encoding.
        let dormant = match self.answers.current_state() {
            Some(frame) => Dormant::from_frame(frame, !self.shared_rows, &self.metrics),
            None => Dormant::new(&self.encode(&StateVector::default()), true, &self.metrics),
        };
        match dormant {
            Ok(dormant) => {
                debug!(bytes = dormant.bytes(), "document dormant");
                self.answers.set_full_state(dormant.frame.clone());
                let bytes = dormant.bytes();
                self.dormant = Some(dormant);
                *self.awareness.doc_mut() = Doc::new();
                self.clocks = Clocks::default();
                self.originals = Originals::default();
                crate::doc::trim::document_freed(bytes);
            }
            // An encoding the summary cannot read (a gap in a client's
            // blocks, a client id past 53 bits): it stays built.
            Err(e) => debug!(reason = %e, "document stays built"),
        }
    }
}

/// What a request that needs the document built is told when its stored
/// state does not build.
pub(super) fn unbuilt() -> DocError {
    DocError::Storage("the stored document could not be built".into())
}

/// Where the update starts in a step2 frame: after the message type, the
/// sync type and the update's length (a lib0 varint).
fn step2_header(frame: &[u8]) -> Option<usize> {
    let mut cursor = Cursor::new(frame);
    let tag: u64 = cursor.read_var().ok()?;
    let sub: u64 = cursor.read_var().ok()?;
    let len: u64 = cursor.read_var().ok()?;
    ((tag, sub) == (0, 1) && (frame.len() - cursor.next) as u64 == len).then_some(cursor.next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_update_of_a_step2_frame_is_found() {
        for len in [0, 5, 127, 128, 300, 20 << 20] {
            let update = vec![7u8; len];
            let frame = protocol::encode_step2(&update);
            let header = step2_header(&frame).unwrap();
            assert_eq!(&frame[header..], &update[..]);
        }
        assert_eq!(step2_header(&protocol::encode_update(&[1, 2, 3])), None);
        assert_eq!(step2_header(&[0, 1, 5, 1]), None, "a length that is not the rest");
    }
}
