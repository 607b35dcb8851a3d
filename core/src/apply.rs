//! Applying an untrusted update to a document: the one function the server
//! uses for it, and the one the fuzz target drives.

use std::panic::AssertUnwindSafe;

use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

/// Applies `update` to `doc`. `Ok(false)` when it changed nothing (every
/// block and deletion was known already); an update that waits for missing
/// predecessors counts as a change, since it must be stored and peers need
/// it too. `Err` with a reason when yrs refuses it.
///
/// yrs may panic on hostile input; the panic is turned into a refusal. The
/// document may then be half changed: the caller rebuilds it from storage.
pub fn apply_update(doc: &Doc, update: Update) -> Result<bool, String> {
    let mut stage = "integrated";
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let mut txn = doc.transact_mut();
        txn.apply_update(update)?;
        let pending = txn.has_missing_updates();
        if pending {
            // yrs keeps updates that wait for missing predecessors aside and
            // merges them into every full encoding. Some malformed ones are
            // accepted but then make that merge panic (found by fuzzing):
            // the document could no longer be sent to anyone. Check now,
            // while the update can still be refused. Pending updates are rare
            // (out-of-order delivery), so the O(document) check is too.
            stage = "re-encoded with the updates it waits for";
            let state = txn.encode_state_as_update_v1(&StateVector::default());
            if Update::decode_v1(&state).is_err() {
                panic!("the document's state no longer decodes");
            }
        }
        Ok::<_, yrs::error::UpdateError>(!txn.insert_set().is_empty() || !txn.delete_set().is_empty() || pending)
    }));
    match result {
        Ok(Ok(changed)) => Ok(changed),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("the update could not be {stage}")),
    }
}

/// Builds a document from stored updates (a snapshot, then the log), in one
/// transaction, with the same defences: a row that does not decode or apply,
/// or a result that cannot be encoded, is an error naming the row.
pub fn rebuild<'a>(updates: impl IntoIterator<Item = (String, &'a [u8])>) -> Result<Doc, String> {
    let doc = Doc::new();
    let mut current = String::from("the stored state");
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let mut txn = doc.transact_mut();
        for (what, bytes) in updates {
            current = what;
            let update = Update::decode_v1(bytes).map_err(|e| format!("{current} does not decode: {e}"))?;
            txn.apply_update(update)
                .map_err(|e| format!("{current} does not apply: {e}"))?;
        }
        current = String::from("the stored state");
        txn.encode_state_as_update_v1(&StateVector::default());
        Ok(())
    }));
    match result {
        Ok(Ok(())) => Ok(doc),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("{current}: yrs failed on it")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::updates::decoder::Decode;

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

    #[test]
    fn updates_that_would_break_encoding_are_refused() {
        for poison in POISON {
            let update = Update::decode_v1(poison).expect("the poison decodes");
            let awareness = crate::fuzz::seeded_awareness();
            assert!(apply_update(awareness.doc(), update).is_err(), "{poison:?}");
        }
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
