//! What a document's encoding holds, read from its bytes alone: its state
//! vector and its deletions, without building the document in yrs.
//!
//! Building a document in yrs costs far more than its bytes: the end state
//! of an editing trace (~65 KiB encoded) takes ~4.5 ms of CPU and ~1 MiB of
//! memory (bench/FINDINGS.md). Most loaded documents are only read: a
//! client that reconnects already holds every block, a new one needs the
//! whole state. Both answers come from the bytes: the whole state is the
//! encoding itself, and a client holding every block needs only the
//! deletions (a step2 always carries the whole delete set, since deleting
//! moves no clock). [`Summary`] reads what those answers need, so that the
//! server can hold a document as its encoding until something needs it in
//! yrs (an update that changes it, a request for its content).

use std::collections::BTreeMap;

use yrs::{ClientID, StateVector};

use crate::concat::{coalesce, layout, put_var};
use crate::validate::{CLIENT_BITS, MAX_CLOCK};

/// A document's state vector and deletions, read from its encoding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Each client's clock after its last block (the state vector).
    clocks: Vec<(u64, u64)>,
    /// Deleted ranges `(start, len)` of each client, sorted, touching ones
    /// joined.
    deletes: BTreeMap<u64, Vec<(u64, u64)>>,
}

impl Summary {
    /// Reads one v1 update holding a whole document: each client's blocks
    /// from clock 0 without a gap, as yrs encodes a document (and as
    /// [`crate::concat::concat_v1`] joins a document's stored updates).
    /// Anything else is refused with the reason: what it lacks can only be
    /// known by building it.
    pub fn of(state: &[u8]) -> Result<Self, String> {
        // One walk over the blocks, with the validator's parser (what it
        // alone checks is checked below): the bytes were validated when
        // they arrived, or encoded by yrs, and this runs for every
        // document loaded.
        let parts = layout(state).map_err(|e| e.to_string())?;
        // yrs keeps a client id's low 53 bits, so two ids that differ above
        // them are one client to it and two to these bytes: only yrs can
        // say what such a document holds.
        let wide = parts.groups.iter().map(|g| g.client);
        if let Some(id) = wide.chain(parts.deletes.iter().map(|d| d.0)).find(|&c| c > CLIENT_BITS) {
            return Err(format!("client id {id} is wider than 53 bits"));
        }
        let mut clocks = Vec::with_capacity(parts.groups.len());
        for g in parts.groups.iter().filter(|g| g.blocks > 0) {
            if g.clock != 0 || g.skips {
                return Err(format!(
                    "client {}'s blocks start at clock {} or leave a gap",
                    g.client, g.clock
                ));
            }
            if g.end > MAX_CLOCK {
                return Err(format!("client {}'s blocks reach clock {}", g.client, g.end));
            }
            clocks.push((g.client, g.end));
        }
        clocks.sort_unstable();
        if let Some(pair) = clocks.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            return Err(format!("client {} has two groups of blocks", pair[0].0));
        }
        let mut deletes: BTreeMap<u64, Vec<(u64, u64)>> = BTreeMap::new();
        for (client, start, len) in parts.deletes {
            if len > 0 {
                deletes.entry(client).or_default().push((start, len));
            }
        }
        for ranges in deletes.values_mut() {
            ranges.sort_unstable();
            *ranges = coalesce(std::mem::take(ranges));
        }
        Ok(Self { clocks, deletes })
    }

    /// The document's state vector.
    pub fn state_vector(&self) -> StateVector {
        let mut sv = StateVector::default();
        for &(client, clock) in &self.clocks {
            sv.set_max(ClientID::new(client), clock as u32);
        }
        sv
    }

    /// Whether a client at `sv` holds every block of the document (then
    /// what it may lack is only deletions).
    pub fn held_by(&self, sv: &StateVector) -> bool {
        self.clocks
            .iter()
            .all(|&(client, clock)| u64::from(sv.get(&ClientID::new(client))) >= clock)
    }

    /// A v1 update holding no block and every deletion of the document:
    /// what a client that holds every block lacks at most.
    pub fn deletions(&self) -> Vec<u8> {
        let mut out = vec![0];
        put_var(&mut out, self.deletes.len() as u64);
        for (client, ranges) in &self.deletes {
            put_var(&mut out, *client);
            put_var(&mut out, ranges.len() as u64);
            for &(start, len) in ranges {
                put_var(&mut out, start);
                put_var(&mut out, len);
            }
        }
        out
    }

    /// Whether `update` would change nothing: it holds no block and only
    /// deletions the document holds (what an up-to-date client sends back
    /// as its step2). `false` means it may change something, or could not
    /// be read.
    pub fn knows(&self, update: &[u8]) -> bool {
        let Ok(parts) = layout(update) else { return false };
        parts.groups.iter().all(|g| g.blocks == 0 && g.client <= CLIENT_BITS)
            && parts
                .deletes
                .iter()
                .all(|&(client, start, len)| len == 0 || (client <= CLIENT_BITS && self.deleted(client, start, len)))
    }

    fn deleted(&self, client: u64, start: u64, len: u64) -> bool {
        let Some(ranges) = self.deletes.get(&client) else {
            return false;
        };
        // The last range starting at or before `start`; joined ranges
        // never touch, so one of them covers the whole deletion or none.
        let i = ranges.partition_point(|&(s, _)| s <= start);
        i > 0 && {
            let (s, l) = ranges[i - 1];
            start.saturating_add(len) <= s + l
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::concat::concat_v1;
    use yrs::updates::decoder::Decode;
    use yrs::{Doc, GetString, ReadTxn, Text, Transact, Update};

    fn doc(client: u64) -> Doc {
        Doc::with_client_id(client)
    }

    fn full(doc: &Doc) -> Vec<u8> {
        doc.transact().encode_state_as_update_v1(&StateVector::default())
    }

    fn apply(doc: &Doc, update: &[u8]) {
        doc.transact_mut()
            .apply_update(Update::decode_v1(update).unwrap())
            .unwrap();
    }

    fn text(doc: &Doc) -> String {
        let t = doc.get_or_insert_text("t");
        let s = t.get_string(&doc.transact());
        s
    }

    /// Two writers; `b` holds every block of `a` but not its last deletion.
    fn two_writers() -> (Doc, Doc) {
        let a = doc(1);
        let b = doc(2);
        let ta = a.get_or_insert_text("t");
        ta.insert(&mut a.transact_mut(), 0, "hello world");
        apply(&b, &full(&a));
        let tb = b.get_or_insert_text("t");
        tb.insert(&mut b.transact_mut(), 5, ", dear");
        apply(&a, &full(&b));
        ta.remove_range(&mut a.transact_mut(), 0, 2);
        apply(&b, &full(&a));
        // The deletion b never hears of: it moves no clock.
        ta.remove_range(&mut a.transact_mut(), 3, 10);
        (a, b)
    }

    #[test]
    fn reads_the_state_vector_yrs_holds() {
        let (a, _) = two_writers();
        let summary = Summary::of(&full(&a)).unwrap();
        assert_eq!(summary.state_vector(), a.transact().state_vector());
        assert!(summary.held_by(&a.transact().state_vector()));
        assert!(!summary.held_by(&StateVector::default()));
    }

    #[test]
    fn deletions_bring_a_client_that_holds_every_block_up_to_date() {
        let (a, b) = two_writers();
        let summary = Summary::of(&full(&a)).unwrap();
        assert!(summary.held_by(&b.transact().state_vector()));
        assert_ne!(text(&a), text(&b));
        apply(&b, &summary.deletions());
        assert_eq!(text(&a), text(&b));
        // Decodes as yrs reads it, with no block.
        let update = Update::decode_v1(&summary.deletions()).unwrap();
        assert_eq!(update.state_vector(), StateVector::default());
    }

    #[test]
    fn knows_what_an_up_to_date_client_sends_back_and_nothing_more() {
        let (a, b) = two_writers();
        apply(&b, &full(&a));
        let summary = Summary::of(&full(&a)).unwrap();
        // An up-to-date client's step2: no block, its deletions.
        let step2 = b.transact().encode_state_as_update_v1(&a.transact().state_vector());
        assert!(summary.knows(&step2));
        assert!(summary.knows(&[0, 0]));
        // A deletion the document lacks, and a block.
        let tb = b.get_or_insert_text("t");
        let before = b.transact().state_vector();
        tb.remove_range(&mut b.transact_mut(), 0, 1);
        let deletion = b.transact().encode_state_as_update_v1(&before);
        assert!(!summary.knows(&deletion));
        tb.insert(&mut b.transact_mut(), 0, "x");
        let insert = b.transact().encode_state_as_update_v1(&before);
        assert!(!summary.knows(&insert));
        assert!(!summary.knows(&[7]), "unreadable bytes are not known");
    }

    #[test]
    fn stored_updates_joined_read_as_the_document() {
        let a = doc(1);
        let t = a.get_or_insert_text("t");
        t.insert(&mut a.transact_mut(), 0, "abc");
        let snapshot = full(&a);
        let mut log = Vec::new();
        for i in 0..5 {
            let before = a.transact().state_vector();
            t.insert(&mut a.transact_mut(), i, "x");
            if i == 3 {
                t.remove_range(&mut a.transact_mut(), 0, 2);
            }
            log.push(a.transact().encode_state_as_update_v1(&before));
        }
        let parts: Vec<&[u8]> = std::iter::once(&snapshot[..])
            .chain(log.iter().map(|u| &u[..]))
            .collect();
        let joined = concat_v1(&parts).unwrap();
        let summary = Summary::of(&joined).unwrap();
        assert_eq!(summary.state_vector(), a.transact().state_vector());
        let b = doc(9);
        apply(&b, &joined);
        assert_eq!(text(&b), text(&a));
    }

    #[test]
    fn a_state_that_does_not_start_at_zero_is_refused() {
        let a = doc(1);
        let t = a.get_or_insert_text("t");
        t.insert(&mut a.transact_mut(), 0, "abc");
        let sv = a.transact().state_vector();
        t.insert(&mut a.transact_mut(), 3, "def");
        let tail = a.transact().encode_state_as_update_v1(&sv);
        let err = Summary::of(&tail).unwrap_err();
        assert!(err.contains("start at clock 3"), "{err}");
        assert!(Summary::of(&[1, 2]).is_err());
        // A deletion of client 1 written with a bit above the 53 yrs keeps.
        let mut wide = vec![0, 1];
        crate::concat::put_var(&mut wide, 1 | 1 << 53);
        wide.extend([1, 0, 1]);
        let err = Summary::of(&wide).unwrap_err();
        assert!(err.contains("wider than 53 bits"), "{err}");
        assert!(!Summary::default().knows(&wide));
        assert_eq!(Summary::of(&[0, 0]).unwrap(), Summary::default());
    }
}
