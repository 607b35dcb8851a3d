//! Restoring a version: one new update that turns the live document's
//! content into the version's. Pure yrs, no I/O.
//!
//! A reset (a fresh `Doc` built from the version's state) would not work:
//! clients hold the live document, and whatever they sync back would merge
//! the newer edits in again. So a restore is an edit like any other: one
//! transaction on the live document that deletes what the version lacks and
//! inserts what it has. Its update is stored and relayed like a client's, and
//! clients converge on the version's content without reloading.
//!
//! # Diff strategy
//!
//! Both documents are walked root by root (`content::typed_roots`), and
//! each pair of values of the same type is synchronised in place ([`tree`]):
//!
//! - **Text, XmlText**: the texts are sequences of units, a character or an
//!   embed, each with its formatting. Units are aligned on their content
//!   alone (common prefix and suffix, then Myers' diff of the middle);
//!   aligned units whose formatting differs get a `format`, the others are
//!   deleted or inserted with the version's formatting. Insertions and
//!   formatting go in as one `apply_delta`, a single pass over the text;
//!   deletions follow, one `remove_range` per deleted range (see
//!   `text::sync_text` for why).
//! - **Map** (and the attributes of XML nodes): keys the version lacks are
//!   removed, differing values are set, and a value that is the same kind of
//!   shared type on both sides is synchronised instead of replaced.
//! - **Array, XmlFragment, XmlElement children**: items are compared by
//!   deep value (a canonical encoding of each item, interned to a number)
//!   and aligned with the same diff. In a run of changed items, an item
//!   facing one of the same kind (an element with the same tag, a text, a
//!   map...) is synchronised recursively, so that one edited paragraph
//!   becomes a few character edits; the rest are deleted or inserted.
//! - Roots the version lacks are emptied; roots only the version has are
//!   created and filled.
//!
//! New shared values are inserted empty and then filled by the same
//! synchronisation (a deep copy). yrs' own `as_prelim` copy is not used for
//! them because it turns XML attribute values into strings (`level: 1`
//! would come back as `"1"`).
//!
//! # Cost
//!
//! Comparing costs O(n) per level of nesting, n being the size of the
//! content. Myers' diff of the part between the common prefix and suffix
//! costs O((n + m) · d) for d differences, so a 100k-character text with a
//! few edits is cheap. Past `diff::MAX_EDIT_DISTANCE` differences, or
//! `diff::WORK_BUDGET` comparisons, the diff gives up and replaces that middle
//! part wholesale: the result is still exact, just not minimal.
//!
//! # Layout
//!
//! - this module: the entry point, root by root, and the depth guard;
//! - [`tree`]: the walk that synchronises maps, sequences and XML in place;
//! - [`text`]: text sync, characters and embeds with their formatting;
//! - [`canonical`]: the encoding that tells equal values apart from others;
//! - [`diff`]: Myers' diff over `&[u32]`, which knows nothing of yrs.

mod canonical;
mod diff;
#[cfg(test)]
mod tests;
mod text;
mod tree;

use std::collections::{BTreeSet, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};

use yrs::updates::decoder::Decode;
use yrs::{Array, ArrayRef, Doc, Map, MapRef, Out, ReadTxn, Text, TextRef, Transact, TransactionMut, Update, WriteTxn};

use self::tree::{branch_of, sync_value};
use super::content::{self, Root, RootKind};

/// Why a restore could not be computed. The live document is untouched in
/// every case.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("version state does not decode: {0}")]
    Decode(#[source] yrs::encoding::read::Error),
    #[error("version state does not apply: {0}")]
    Apply(#[source] yrs::error::UpdateError),
    #[error("version state could not be integrated")]
    Panicked,
    #[error("version state is incomplete: it depends on updates it does not contain")]
    Incomplete,
    #[error("the document or the version nests shared types deeper than {0} levels, which restore does not walk")]
    TooDeep(usize),
}

/// Restoring walks both documents recursively; past this nesting it refuses
/// rather than recurse as deep as a hostile document goes.
const MAX_RESTORE_DEPTH: usize = 256;

/// How deep shared types nest in a document, up to `limit` (walked with an
/// explicit stack, not recursion, so any document can be measured).
fn nesting_depth<T: ReadTxn>(txn: &T, limit: usize) -> usize {
    let mut stack: Vec<(Out, usize)> = content::typed_roots(txn)
        .into_iter()
        .map(|root| (root.value, 1))
        .collect();
    let mut deepest = 0;
    while let Some((value, depth)) = stack.pop() {
        deepest = deepest.max(depth);
        if deepest > limit {
            break;
        }
        let children: Vec<Out> = match &value {
            Out::YMap(map) => map.iter(txn).map(|(_, v)| v).collect(),
            Out::YArray(array) => array.iter(txn).collect(),
            Out::YXmlFragment(fragment) => yrs::XmlFragment::children(fragment, txn).map(Out::from).collect(),
            Out::YXmlElement(element) => yrs::XmlFragment::children(element, txn).map(Out::from).collect(),
            // Texts hold characters (and rarely embedded types, which
            // restore copies as a whole); nothing else nests.
            _ => Vec::new(),
        };
        stack.extend(
            children
                .into_iter()
                .filter(|c| c.try_branch().is_some())
                .map(|c| (c, depth + 1)),
        );
    }
    deepest
}

/// Changes `live` so that its content equals the version's, in one
/// transaction, and returns that transaction's update (Yjs v1).
///
/// `version_state` is a full-state update, as
/// `encode_state_as_update_v1(&StateVector::default())` gives. A document
/// that already equals the version gets an update that changes nothing.
pub fn restore(live: &Doc, version_state: &[u8]) -> Result<Vec<u8>, RestoreError> {
    let version = load(version_state)?;
    let vtxn = version.transact();
    for depth in [
        nesting_depth(&vtxn, MAX_RESTORE_DEPTH),
        nesting_depth(&live.transact(), MAX_RESTORE_DEPTH),
    ] {
        if depth > MAX_RESTORE_DEPTH {
            return Err(RestoreError::TooDeep(MAX_RESTORE_DEPTH));
        }
    }
    let mut wanted: HashMap<String, Root> = content::typed_roots(&vtxn)
        .into_iter()
        .map(|root| (root.name.clone(), root))
        .collect();

    let mut txn = live.transact_mut();
    let mut present: HashMap<String, Root> = content::typed_roots(&txn)
        .into_iter()
        .map(|root| (root.name.clone(), root))
        .collect();

    let names: BTreeSet<String> = wanted.keys().chain(present.keys()).cloned().collect();
    for name in names {
        match (present.remove(&name), wanted.remove(&name)) {
            (Some(live_root), Some(version_root)) if live_root.kind == version_root.kind => {
                sync_value(&mut txn, &live_root.value, &vtxn, &version_root.value);
            }
            (live_root, version_root) => {
                // A root the version lacks, one it adds, or (rarely) one whose
                // inferred type changed: empty it, then fill it as the version.
                if let Some(live_root) = live_root {
                    clear(&mut txn, &live_root);
                }
                if let Some(version_root) = version_root {
                    let target = root_as(&mut txn, &name, version_root.kind);
                    sync_value(&mut txn, &target, &vtxn, &version_root.value);
                }
            }
        }
    }
    Ok(txn.encode_update_v1())
}

/// Builds the version's document apart from the live one.
fn load(state: &[u8]) -> Result<Doc, RestoreError> {
    let doc = Doc::new();
    // yrs may panic on a corrupt update; this document is thrown away then.
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let update = Update::decode_v1(state).map_err(RestoreError::Decode)?;
        let mut txn = doc.transact_mut();
        txn.apply_update(update).map_err(RestoreError::Apply)?;
        Ok(txn.has_missing_updates())
    }));
    match outcome {
        Ok(Ok(false)) => Ok(doc),
        Ok(Ok(true)) => Err(RestoreError::Incomplete),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(RestoreError::Panicked),
    }
}

fn clear(txn: &mut TransactionMut, root: &Root) {
    let Some(branch) = branch_of(&root.value) else {
        return;
    };
    match root.kind {
        RootKind::Text => {
            let text = TextRef::from(branch);
            let len = text.len(txn);
            text.remove_range(txn, 0, len);
        }
        RootKind::Map => {
            let map = MapRef::from(branch);
            let keys: Vec<String> = map.keys(txn).map(str::to_owned).collect();
            for key in keys {
                map.remove(txn, &key);
            }
        }
        RootKind::Array | RootKind::XmlFragment => {
            let seq = ArrayRef::from(branch);
            let len = seq.len(txn);
            seq.remove_range(txn, 0, len);
        }
    }
}

/// The live root `name` seen as `kind`, created if missing. An existing root
/// of undefined type takes that type from now on.
fn root_as(txn: &mut TransactionMut, name: &str, kind: RootKind) -> Out {
    match kind {
        RootKind::Text => Out::YText(txn.get_or_insert_text(name)),
        RootKind::Map => Out::YMap(txn.get_or_insert_map(name)),
        RootKind::Array => Out::YArray(txn.get_or_insert_array(name)),
        RootKind::XmlFragment => Out::YXmlFragment(txn.get_or_insert_xml_fragment(name)),
    }
}
