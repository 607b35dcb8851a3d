//! Applying an untrusted update to a document: the one function the server
//! uses for it, and the one the fuzz target drives.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;

use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, StateVector, Transact, TransactionMut, Update};

use crate::originals::Originals;
use crate::validate::{self, Span};

/// What [`apply_update`] remembers of a document between updates: how many
/// of each client's changes it holds, as far as the caller has seen (a lower
/// bound, refreshed from the document, O(clients), only when an update seems
/// to arrive before the changes it follows), and which pending state last
/// passed the encoding check.
#[derive(Debug, Default)]
pub struct Clocks {
    known: HashMap<u64, u64>,
    checked_pending: Option<u64>,
    /// How many times the whole document was re-encoded to check it.
    encode_checks: u64,
}

impl Clocks {
    fn get(&self, client: u64) -> u64 {
        self.known.get(&client).copied().unwrap_or(0)
    }

    fn early<'a>(&self, spans: &'a [Span]) -> Option<&'a Span> {
        spans.iter().find(|s| s.needs > self.get(s.client))
    }

    fn refresh(&mut self, txn: &impl ReadTxn) {
        self.known = txn
            .state_vector()
            .iter()
            .map(|(c, &k)| (c.get(), u64::from(k)))
            .collect();
    }

    /// An update with no missing predecessors integrated whole.
    fn advance(&mut self, spans: &[Span]) {
        for s in spans {
            let known = self.known.entry(s.client).or_default();
            *known = (*known).max(s.end);
        }
    }
}

/// Refuses an update whose blocks start past what the document holds of
/// their client (or leave a gap between them). yrs 0.28 integrates such
/// blocks around a placeholder for the gap; the update that later fills it
/// is split in place and integrated through a pointer into memory the split
/// freed (a use-after-free, found by cargo fuzz, that crashed the process).
/// Yjs itself would wait for the gap to fill. One WebSocket delivers a
/// client's changes in order, so only a sender that skipped some meets this.
fn in_order(txn: &TransactionMut, spans: &[Span], clocks: &mut Clocks) -> Result<(), String> {
    if clocks.early(spans).is_none() {
        return Ok(());
    }
    clocks.refresh(txn);
    match clocks.early(spans) {
        None => Ok(()),
        Some(s) => Err(format!(
            "client {}'s changes start at clock {} but the document holds only {} of them: \
             updates must arrive in order",
            s.client,
            s.needs,
            clocks.get(s.client)
        )),
    }
}

/// Applies `update` (whose [`Span`]s the validator measured) to `doc`.
/// `Ok(false)` when it changed nothing (every block and deletion was known
/// already); an update that waits for missing predecessors of other clients
/// counts as a change, since it must be stored and peers need it too. `Err`
/// with a reason when it is refused.
///
/// yrs may panic on hostile input; the panic is turned into a refusal. The
/// document may then be half changed: the caller rebuilds it from storage.
pub fn apply_update(doc: &Doc, update: Update, spans: &[Span], clocks: &mut Clocks) -> Result<bool, String> {
    let mut stage = "integrated";
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let mut txn = doc.transact_mut();
        in_order(&txn, spans, clocks)?;
        txn.apply_update(update).map_err(|e| e.to_string())?;
        let pending = txn.has_missing_updates();
        if pending {
            // yrs keeps updates that wait for missing predecessors aside and
            // merges them into every full encoding. Some malformed ones are
            // accepted but then make that merge panic (found by fuzzing):
            // the document could no longer be sent to anyone. Check now,
            // while the update can still be refused. The check is O(document),
            // so it runs when the pending state changed, not on every update
            // while one waits (a deletion of changes that never arrive waits
            // forever).
            let fingerprint = pending_fingerprint(&txn);
            if clocks.checked_pending != Some(fingerprint) {
                stage = "re-encoded with the updates it waits for";
                let state = txn.encode_state_as_update_v1(&StateVector::default());
                if Update::decode_v1(&state).is_err() {
                    panic!("the document's state no longer decodes");
                }
                clocks.checked_pending = Some(fingerprint);
                clocks.encode_checks += 1;
            }
        } else {
            clocks.advance(spans);
        }
        Ok::<_, String>(!txn.insert_set().is_empty() || !txn.delete_set().is_empty() || pending)
    }));
    match result {
        Ok(result) => result,
        Err(_) => Err(format!("the update could not be {stage}")),
    }
}

/// Identifies what a document holds aside (blocks waiting for others, and
/// deletions of changes it has not seen), in O(that), not O(document).
fn pending_fingerprint(txn: &TransactionMut) -> u64 {
    use std::hash::{Hash, Hasher};
    let store = txn.store();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    if let Some(p) = store.pending_update() {
        let mut missing: Vec<(u64, u32)> = p.missing.iter().map(|(c, &k)| (c.get(), k)).collect();
        missing.sort_unstable();
        missing.hash(&mut h);
        p.update.insertions(true).hash(&mut h);
        p.update.delete_set().hash(&mut h);
    }
    if let Some(ds) = store.pending_ds() {
        ds.hash(&mut h);
    }
    h.finish()
}

/// A document built from stored updates.
#[derive(Debug, Default)]
pub struct Rebuilt {
    pub doc: Doc,
    /// What it holds of each client's changes.
    pub clocks: Clocks,
    /// Shared types its rows create (a bound on its nesting depth).
    pub types: u64,
    /// Rows left out, with why: they could not be applied in order (stored
    /// by an older weft, which let yrs hold them).
    pub left_out: Vec<String>,
    /// The JSON values of its rows as they were written (yrs re-orders
    /// objects' keys when it encodes).
    pub originals: Originals,
}

/// Builds a document from stored updates (a snapshot, then the log), in one
/// transaction, with the same defences: a row that does not decode or apply,
/// or a result that cannot be encoded, is an error naming the row. A row
/// that arrives before the changes it follows waits for them (rows are
/// stored in the order they arrived); one still waiting at the end is left
/// out and named.
pub fn rebuild<'a>(updates: impl IntoIterator<Item = (String, &'a [u8])>) -> Result<Rebuilt, String> {
    let doc = Doc::new();
    let mut clocks = Clocks::default();
    let mut types = 0;
    let mut originals = Originals::default();
    let mut waiting: Vec<(String, Vec<Span>, &'a [u8])> = Vec::new();
    let mut current = String::from("the stored state");
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let mut txn = doc.transact_mut();
        for (what, bytes) in updates {
            current = what;
            let shape = validate::update_v1(bytes).map_err(|e| format!("{current} does not decode: {e}"))?;
            types += shape.types;
            originals.add(bytes);
            if in_order(&txn, &shape.spans, &mut clocks).is_err() {
                waiting.push((current.clone(), shape.spans, bytes));
                continue;
            }
            apply_row(&mut txn, &current, &shape.spans, bytes, &mut clocks)?;
            // Rows that were waiting for this one.
            while let Some(i) = waiting.iter().position(|(_, spans, _)| clocks.early(spans).is_none()) {
                let (what, spans, bytes) = waiting.remove(i);
                current = what;
                apply_row(&mut txn, &current, &spans, bytes, &mut clocks)?;
            }
        }
        current = String::from("the stored state");
        txn.encode_state_as_update_v1(&StateVector::default());
        Ok(())
    }));
    let left_out = waiting
        .into_iter()
        .map(|(what, _, _)| format!("{what} follows changes the document never received"))
        .collect();
    match result {
        Ok(Ok(())) => Ok(Rebuilt {
            doc,
            clocks,
            types,
            left_out,
            originals,
        }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("{current}: yrs failed on it")),
    }
}

fn apply_row(
    txn: &mut TransactionMut,
    what: &str,
    spans: &[Span],
    bytes: &[u8],
    clocks: &mut Clocks,
) -> Result<(), String> {
    let update = Update::decode_v1(bytes).map_err(|e| format!("{what} does not decode: {e}"))?;
    txn.apply_update(update)
        .map_err(|e| format!("{what} does not apply: {e}"))?;
    if !txn.has_missing_updates() {
        clocks.advance(spans);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inputs cargo fuzz found: accepted by yrs 0.28 as pending updates,
    /// after which every full encoding of the document panicked.
    const POISON: [&[u8]; 2] = [
        &[
            2, 0, 16, 39, 1, 0, 33, 2, 252, 255, 59, 255, 255, 1, 0, 0, 0, 0, 0, 20, 32, 1, 0, 0, 241, 241, 241, 241,
            249, 241, 241,
        ],
        &[
            2, 0, 0, 0, 1, 33, 255, 255, 131, 255, 255, 5, 146, 210, 4, 0, 1, 1, 116, 0, 1, 120, 0,
        ],
    ];

    /// Validates and applies, as the server does.
    fn apply(doc: &Doc, clocks: &mut Clocks, bytes: &[u8]) -> Result<bool, String> {
        let shape = validate::update_v1(bytes).map_err(|e| e.to_string())?;
        apply_update(doc, Update::decode_v1(bytes).unwrap(), &shape.spans, clocks)
    }

    fn text_of(doc: &Doc) -> String {
        use yrs::{GetString, WriteTxn};
        let mut txn = doc.transact_mut();
        txn.get_or_insert_text("t").get_string(&txn)
    }

    /// Three edits of one client, encoded one by one.
    fn edits(client: u64, parts: &[&str]) -> Vec<Vec<u8>> {
        use yrs::{Text, WriteTxn};
        let doc = Doc::with_client_id(client);
        parts
            .iter()
            .map(|part| {
                let mut txn = doc.transact_mut();
                let text = txn.get_or_insert_text("t");
                let len = text.len(&txn);
                text.insert(&mut txn, len, part);
                txn.encode_update_v1()
            })
            .collect()
    }

    #[test]
    fn updates_that_would_break_encoding_are_refused() {
        for poison in POISON {
            let awareness = crate::fuzz::seeded_awareness();
            assert!(
                apply(awareness.doc(), &mut Clocks::default(), poison).is_err(),
                "{poison:?}"
            );
        }
    }

    #[test]
    fn a_repeated_update_changes_nothing() {
        let hello = &edits(1, &["hello"])[0];
        let (server, mut clocks) = (Doc::new(), Clocks::default());
        assert_eq!(apply(&server, &mut clocks, hello), Ok(true));
        assert_eq!(apply(&server, &mut clocks, hello), Ok(false));
    }

    #[test]
    fn a_deletion_and_an_update_waiting_for_another_client_are_changes() {
        use yrs::{Text, WriteTxn};
        let a = Doc::with_client_id(1);
        let hello = &edits(1, &["hello"])[0];
        a.transact_mut()
            .apply_update(Update::decode_v1(hello).unwrap())
            .unwrap();
        // client 2 appends to client 1's text; the server sees it first
        let b = Doc::with_client_id(2);
        b.transact_mut()
            .apply_update(Update::decode_v1(hello).unwrap())
            .unwrap();
        let bang = {
            let mut txn = b.transact_mut();
            txn.get_or_insert_text("t").push(&mut txn, "!");
            txn.encode_update_v1()
        };
        let delete = {
            let mut txn = a.transact_mut();
            txn.get_or_insert_text("t").remove_range(&mut txn, 0, 2);
            txn.encode_update_v1()
        };
        let (server, mut clocks) = (Doc::new(), Clocks::default());
        assert_eq!(apply(&server, &mut clocks, &bang), Ok(true), "waits for client 1");
        assert_eq!(apply(&server, &mut clocks, hello), Ok(true));
        assert_eq!(text_of(&server), "hello!");
        assert_eq!(apply(&server, &mut clocks, &delete), Ok(true));
        assert_eq!(apply(&server, &mut clocks, &delete), Ok(false));
        assert_eq!(text_of(&server), "llo!");
    }

    /// Found by cargo fuzz: yrs 0.28 integrates blocks that skip some of
    /// their client's clocks around a placeholder, and the update that then
    /// spans the placeholder was integrated through freed memory (a crash).
    #[test]
    fn updates_that_skip_clocks_are_refused_and_change_nothing() {
        let parts = edits(7, &["abc", "def", "ghi"]);
        let spanning = yrs::merge_updates_v1([parts[0].as_slice(), &parts[1], &parts[2]]).unwrap();
        let (server, mut clocks) = (Doc::new(), Clocks::default());
        let err = apply(&server, &mut clocks, &parts[2]).unwrap_err();
        assert!(
            err.contains("client 7's changes start at clock 6 but the document holds only 0"),
            "{err}"
        );
        assert_eq!(text_of(&server), "");
        assert_eq!(apply(&server, &mut clocks, &parts[0]), Ok(true));
        assert!(apply(&server, &mut clocks, &parts[2]).is_err());
        assert_eq!(apply(&server, &mut clocks, &spanning), Ok(true));
        assert_eq!(text_of(&server), "abcdefghi");
        // a gap inside one update: the first and third edits, merged
        let gapped = yrs::merge_updates_v1([parts[0].as_slice(), &parts[2]]).unwrap();
        let (server, mut clocks) = (Doc::new(), Clocks::default());
        assert!(apply(&server, &mut clocks, &gapped).unwrap_err().contains("at clock 6"));
        assert_eq!(apply(&server, &mut clocks, &spanning), Ok(true));
        assert_eq!(apply(&server, &mut clocks, &gapped), Ok(false), "known by now");
    }

    /// A deletion of changes that never arrive waits forever; the document
    /// is re-encoded to check it once, not again for every later update.
    #[test]
    fn a_lasting_pending_deletion_is_checked_once() {
        let (server, mut clocks) = (Doc::new(), Clocks::default());
        // client 1 deletes clock 0 of client 99, which never arrives
        let orphan_delete = [0u8, 1, 99, 1, 0, 1];
        assert_eq!(apply(&server, &mut clocks, &orphan_delete), Ok(true));
        assert_eq!(clocks.encode_checks, 1);
        for edit in edits(1, &["a", "b", "c", "d"]) {
            assert_eq!(apply(&server, &mut clocks, &edit), Ok(true));
        }
        assert_eq!(text_of(&server), "abcd");
        assert_eq!(clocks.encode_checks, 1, "the same pending state is not checked again");
    }

    #[test]
    fn rebuild_counts_the_shared_types_it_creates() {
        let seed = crate::fuzz::seeded_awareness()
            .doc()
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let rebuilt = rebuild([("snapshot".to_string(), &seed[..])]).unwrap();
        assert_eq!(rebuilt.types, 2, "a paragraph and its text");
    }

    #[test]
    fn rebuild_waits_for_rows_stored_out_of_order() {
        let parts = edits(7, &["abc", "def", "ghi"]);
        let later = edits(8, &["x", "y"]);
        let rows = [&parts[1], &parts[0], &later[1], &parts[2]];
        let rebuilt = rebuild(rows.iter().enumerate().map(|(i, r)| (format!("update #{i}"), &r[..]))).unwrap();
        assert_eq!(text_of(&rebuilt.doc), "abcdefghi");
        assert_eq!(
            rebuilt.left_out,
            ["update #2 follows changes the document never received"]
        );
        // the clocks it reports let the next update in
        let mut clocks = rebuilt.clocks;
        assert_eq!(
            apply(&rebuilt.doc, &mut clocks, &edits(7, &["abc", "def", "ghi", "j"])[3]),
            Ok(true)
        );
    }

    #[test]
    fn rebuild_names_the_bad_row() {
        let err = rebuild([("update #3".to_string(), &[0xff, 0x01][..])]).unwrap_err();
        assert!(err.starts_with("update #3 does not decode"), "{err}");
        let seed = crate::fuzz::seeded_awareness()
            .doc()
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        for poison in POISON {
            let err = rebuild([("snapshot".to_string(), &seed[..]), ("update #9".to_string(), poison)]).unwrap_err();
            assert!(
                err.starts_with("update #9") || err.starts_with("the stored state"),
                "{err}"
            );
        }
    }
}
