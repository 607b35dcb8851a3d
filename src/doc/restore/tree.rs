//! The tree walk: makes a live shared value hold what a version's value of
//! the same kind holds, in place. Maps by keys; arrays, XML fragments and
//! element children by items aligned with [`diff`](super::diff), recursing
//! into aligned items of the same kind; texts through [`text`](super::text).

use yrs::branch::BranchPtr;
use yrs::types::text::DeltaPrelim;
use yrs::types::xml::XmlDeltaPrelim;
use yrs::{
    Any, Array, ArrayPrelim, ArrayRef, Doc, In, Map, MapPrelim, MapRef, Options, Out, ReadTxn, TransactionMut,
    XmlElementPrelim, XmlFragmentPrelim,
};

use super::canonical::{canonical, Interner};
use super::diff::{edit_script, Step};
use super::text::sync_text;

pub(super) fn branch_of(value: &Out) -> Option<BranchPtr> {
    value.try_branch().map(BranchPtr::from)
}

/// Whether `sync_value` can turn `live` into `version` in place.
fn same_kind(live: &Out, version: &Out) -> bool {
    match (live, version) {
        (Out::YText(_), Out::YText(_))
        | (Out::YMap(_), Out::YMap(_))
        | (Out::YArray(_), Out::YArray(_))
        | (Out::YXmlFragment(_), Out::YXmlFragment(_))
        | (Out::YXmlText(_), Out::YXmlText(_)) => true,
        (Out::YXmlElement(a), Out::YXmlElement(b)) => a.try_tag() == b.try_tag(),
        (Out::YDoc(a), Out::YDoc(b)) => a.guid() == b.guid(),
        _ => false,
    }
}

/// Makes the shared value `live` hold what `version` holds, when both are
/// of the same kind (see [`same_kind`]); does nothing otherwise.
pub(super) fn sync_value<V: ReadTxn>(txn: &mut TransactionMut, live: &Out, vtxn: &V, version: &Out) {
    if !same_kind(live, version) {
        return;
    }
    let (Some(l), Some(v)) = (branch_of(live), branch_of(version)) else {
        // Sub-documents: same guid, same reference; their content lives
        // elsewhere.
        return;
    };
    match version {
        Out::YText(_) => sync_text(txn, l, vtxn, v),
        Out::YMap(_) => sync_map(txn, l, vtxn, v),
        Out::YArray(_) | Out::YXmlFragment(_) => sync_seq(txn, l, vtxn, v),
        Out::YXmlElement(_) => {
            sync_map(txn, l, vtxn, v);
            sync_seq(txn, l, vtxn, v);
        }
        Out::YXmlText(_) => {
            sync_map(txn, l, vtxn, v);
            sync_text(txn, l, vtxn, v);
        }
        _ => {}
    }
}

/// An empty shared value of the same kind as `value`, or `value` itself when
/// it is not shared; `None` for what cannot be copied (a weak link).
fn empty_like(value: &Out) -> Option<In> {
    Some(match value {
        Out::Any(any) => In::Any(any.clone()),
        Out::YText(_) => In::Text(DeltaPrelim::default()),
        Out::YArray(_) => In::Array(ArrayPrelim::default()),
        Out::YMap(_) => In::Map(MapPrelim::default()),
        Out::YXmlElement(element) => In::XmlElement(XmlElementPrelim::empty(element.try_tag()?.clone())),
        Out::YXmlFragment(_) => In::XmlFragment(XmlFragmentPrelim::default()),
        Out::YXmlText(_) => In::XmlText(XmlDeltaPrelim::default()),
        Out::YDoc(doc) => In::Doc(subdoc_like(doc)),
        _ => return None,
    })
}

/// A new reference to the same sub-document: Yjs finds a sub-document by its
/// guid, its content is not part of this document.
pub(super) fn subdoc_like(doc: &Doc) -> Doc {
    Doc::with_options(Options {
        guid: doc.guid(),
        collection_id: doc.collection_id(),
        auto_load: doc.auto_load(),
        should_load: doc.should_load(),
        ..Options::default()
    })
}

fn sync_map<V: ReadTxn>(txn: &mut TransactionMut, live: BranchPtr, vtxn: &V, version: BranchPtr) {
    let live_map = MapRef::from(live);
    let mut wanted: Vec<(String, Out)> = MapRef::from(version)
        .iter(vtxn)
        .map(|(key, value)| (key.to_owned(), value))
        .collect();
    wanted.sort_by(|a, b| a.0.cmp(&b.0));

    let stale: Vec<String> = live_map
        .keys(txn)
        .filter(|key| wanted.binary_search_by(|(k, _)| k.as_str().cmp(key)).is_err())
        .map(str::to_owned)
        .collect();
    for key in stale {
        live_map.remove(txn, &key);
    }

    for (key, value) in wanted {
        match live_map.get(txn, &key) {
            Some(current) if canonical(&current, txn) == canonical(&value, vtxn) => {}
            Some(current) if same_kind(&current, &value) => sync_value(txn, &current, vtxn, &value),
            _ => {
                if let Some(prelim) = empty_like(&value) {
                    let inserted = live_map.insert(txn, key, prelim);
                    sync_value(txn, &inserted, vtxn, &value);
                }
            }
        }
    }
}

/// Synchronises the list part of two branches: an Array, or the children of
/// an XmlFragment or XmlElement (an ArrayRef reads and edits any of them).
fn sync_seq<V: ReadTxn>(txn: &mut TransactionMut, live: BranchPtr, vtxn: &V, version: BranchPtr) {
    let seq = ArrayRef::from(live);
    let have: Vec<Out> = seq.iter(txn).collect();
    let want: Vec<Out> = ArrayRef::from(version).iter(vtxn).collect();
    let mut ids = Interner::default();
    let a: Vec<u32> = have.iter().map(|v| ids.id(canonical(v, txn))).collect();
    let b: Vec<u32> = want.iter().map(|v| ids.id(canonical(v, vtxn))).collect();

    let (mut index, mut ai, mut bi) = (0u32, 0usize, 0usize);
    for step in edit_script(&a, &b) {
        match step {
            Step::Keep(n) => {
                index += n as u32;
                ai += n;
                bi += n;
            }
            Step::Change { del, ins } => {
                let paired = del.min(ins);
                let mut j = 0;
                while j < paired {
                    if same_kind(&have[ai + j], &want[bi + j]) {
                        sync_value(txn, &have[ai + j], vtxn, &want[bi + j]);
                        index += 1;
                        j += 1;
                        continue;
                    }
                    let start = j;
                    while j < paired && !same_kind(&have[ai + j], &want[bi + j]) {
                        j += 1;
                    }
                    seq.remove_range(txn, index, (j - start) as u32);
                    index = insert_items(txn, &seq, index, vtxn, &want[bi + start..bi + j]);
                }
                if del > paired {
                    seq.remove_range(txn, index, (del - paired) as u32);
                }
                index = insert_items(txn, &seq, index, vtxn, &want[bi + paired..bi + ins]);
                ai += del;
                bi += ins;
            }
        }
    }
}

/// Inserts copies of `items` at `index`; returns the index after them.
fn insert_items<V: ReadTxn>(txn: &mut TransactionMut, seq: &ArrayRef, mut index: u32, vtxn: &V, items: &[Out]) -> u32 {
    let mut k = 0;
    while k < items.len() {
        // Plain values go in as one block, like a client's paste would.
        let plain: Vec<Any> = items[k..]
            .iter()
            .map_while(|item| match item {
                Out::Any(any) => Some(any.clone()),
                _ => None,
            })
            .collect();
        if !plain.is_empty() {
            k += plain.len();
            let n = plain.len() as u32;
            seq.insert_range(txn, index, plain);
            index += n;
            continue;
        }
        if let Some(prelim) = empty_like(&items[k]) {
            let inserted = seq.insert(txn, index, prelim);
            sync_value(txn, &inserted, vtxn, &items[k]);
            index += 1;
        }
        k += 1;
    }
    index
}
