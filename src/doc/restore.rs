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
//! each pair of values of the same type is synchronised in place:
//!
//! - **Text, XmlText**: the texts are sequences of units, a character or an
//!   embed, each with its formatting. Units are aligned on their content
//!   alone (common prefix and suffix, then Myers' diff of the middle);
//!   aligned units whose formatting differs get a `format`, the others are
//!   deleted or inserted with the version's formatting. Insertions and
//!   formatting go in as one `apply_delta`, a single pass over the text;
//!   deletions follow, one `remove_range` per deleted range (see
//!   `sync_text` for why).
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
//! few edits is cheap. Past `MAX_EDIT_DISTANCE` differences, or
//! `WORK_BUDGET` comparisons, the diff gives up and replaces that middle
//! part wholesale: the result is still exact, just not minimal.

use std::collections::{BTreeSet, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};

use yrs::branch::{Branch, BranchPtr};
use yrs::types::text::{DeltaPrelim, YChange};
use yrs::types::xml::XmlDeltaPrelim;
use yrs::types::{AsPrelim, Attrs, Delta};
use yrs::updates::decoder::Decode;
use yrs::{
    Any, Array, ArrayPrelim, ArrayRef, Doc, In, Map, MapPrelim, MapRef, OffsetKind, Options, Out, ReadTxn, Text,
    TextRef, Transact, TransactionMut, Update, WriteTxn, XmlElementPrelim, XmlFragmentPrelim,
};

use super::content::{self, Root, RootKind};

/// Past this many differences between two sequences, the minimal diff is
/// abandoned for a wholesale replacement of the part that differs. Keeps the
/// diff's memory (about d² words for its trace) bounded.
const MAX_EDIT_DISTANCE: usize = 1000;

/// Comparisons one diff may spend before giving up the same way.
const WORK_BUDGET: usize = 10_000_000;

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
pub const MAX_RESTORE_DEPTH: usize = 256;

/// How deep shared types nest in a document, up to `limit` (walked with an
/// explicit stack, not recursion, so any document can be measured).
pub fn nesting_depth<T: ReadTxn>(txn: &T, limit: usize) -> usize {
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

fn branch_of(value: &Out) -> Option<BranchPtr> {
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
fn sync_value<V: ReadTxn>(txn: &mut TransactionMut, live: &Out, vtxn: &V, version: &Out) {
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
fn subdoc_like(doc: &Doc) -> Doc {
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

/// First code above the last Unicode scalar value: text units from here on
/// stand for embeds.
const EMBED_BASE: u32 = 0x11_0000;

/// Numbers for attribute sets and embeds, shared by both sides of one text
/// diff so that equal ones get equal numbers.
#[derive(Default)]
struct TextTable {
    formats: Vec<Option<Box<Attrs>>>,
    format_ids: Interner,
    embed_ids: Interner,
}

/// A text as units (a character, or `EMBED_BASE` + an embed's number) and
/// the number of each unit's formatting.
struct TextUnits {
    units: Vec<u32>,
    formats: Vec<u32>,
    /// The embedded values, by unit position.
    embeds: HashMap<usize, Out>,
}

impl TextTable {
    fn units<T: ReadTxn>(&mut self, text: &TextRef, txn: &T) -> TextUnits {
        let mut out = TextUnits {
            units: Vec::new(),
            formats: Vec::new(),
            embeds: HashMap::new(),
        };
        for chunk in text.diff(txn, YChange::identity) {
            let format = self.format_id(chunk.attributes);
            match chunk.insert {
                // A string embed cannot be told from text here; it comes
                // back as text.
                Out::Any(Any::String(s)) => {
                    for c in s.chars() {
                        out.units.push(c as u32);
                        out.formats.push(format);
                    }
                }
                embed => {
                    let id = self.embed_ids.id(canonical(&embed, txn));
                    out.embeds.insert(out.units.len(), embed);
                    out.units.push(EMBED_BASE + id);
                    out.formats.push(format);
                }
            }
        }
        out
    }

    fn format_id(&mut self, attrs: Option<Box<Attrs>>) -> u32 {
        let mut key = String::new();
        if let Some(attrs) = attrs.as_deref() {
            write_attrs(attrs, &mut key);
        }
        let id = self.format_ids.id(key);
        if id as usize == self.formats.len() {
            self.formats.push(attrs.filter(|a| !a.is_empty()));
        }
        id
    }

    /// The `format` attributes that turn formatting `from` into `to`:
    /// changed keys with their new value, dropped keys with null.
    fn change(&self, from: u32, to: u32) -> Attrs {
        let empty = Attrs::new();
        let old = self.formats[from as usize].as_deref().unwrap_or(&empty);
        let new = self.formats[to as usize].as_deref().unwrap_or(&empty);
        let mut change: Attrs = new
            .iter()
            .filter(|(k, v)| old.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for key in old.keys().filter(|k| !new.contains_key(*k)) {
            change.insert(key.clone(), Any::Null);
        }
        change
    }
}

fn unit_len(unit: u32, offsets: OffsetKind) -> u32 {
    match char::from_u32(unit) {
        Some(c) if unit < EMBED_BASE => match offsets {
            OffsetKind::Bytes => c.len_utf8() as u32,
            OffsetKind::Utf16 => c.len_utf16() as u32,
        },
        _ => 1,
    }
}

/// Two passes, because yrs 0.28 mis-tracks formatting after a deletion
/// inside `apply_delta`: `remove` lets `clean_format_gap` apply the marks
/// that follow the deleted range while the position stays before them, so
/// the next insert or format of the same delta is formatted wrongly (text
/// typed after a deleted italic word came out italic). So the first pass
/// inserts and formats in one `apply_delta` with no deletion in it; the
/// second removes the ranges that go, last first, each on a fresh position.
fn sync_text<V: ReadTxn>(txn: &mut TransactionMut, live: BranchPtr, vtxn: &V, version: BranchPtr) {
    let text = TextRef::from(live);
    let offsets = txn.doc().offset_kind();
    let mut table = TextTable::default();
    let a = table.units(&text, txn);
    let b = table.units(&TextRef::from(version), vtxn);

    let mut delta: Vec<Delta<In>> = Vec::new();
    // Ranges to remove, as offsets in the text the first pass leaves.
    let mut doomed: Vec<(u32, u32)> = Vec::new();
    let mut offset = 0u32;
    let (mut ai, mut bi) = (0usize, 0usize);
    for step in edit_script(&a.units, &b.units) {
        match step {
            Step::Keep(n) => {
                // Runs over which the formatting change is the same.
                let mut j = 0;
                while j < n {
                    let pair = (a.formats[ai + j], b.formats[bi + j]);
                    let mut len = 0;
                    while j < n && (a.formats[ai + j], b.formats[bi + j]) == pair {
                        len += unit_len(a.units[ai + j], offsets);
                        j += 1;
                    }
                    let change = (pair.0 != pair.1).then(|| Box::new(table.change(pair.0, pair.1)));
                    retain(&mut delta, len, change);
                    offset += len;
                }
                ai += n;
                bi += n;
            }
            Step::Change { del, ins } => {
                // The version's units go in before the ones that go away.
                let mut j = bi;
                while j < bi + ins {
                    let format = b.formats[j];
                    let attrs = table.formats[format as usize].clone();
                    if let Some(embed) = b.embeds.get(&j) {
                        if let Some(prelim) = embed_copy(embed, vtxn) {
                            delta.push(Delta::Inserted(prelim, attrs));
                            offset += 1;
                        }
                        j += 1;
                        continue;
                    }
                    let mut s = String::new();
                    while j < bi + ins && b.formats[j] == format && !b.embeds.contains_key(&j) {
                        s.extend(char::from_u32(b.units[j]));
                        offset += unit_len(b.units[j], offsets);
                        j += 1;
                    }
                    delta.push(Delta::Inserted(In::Any(Any::String(s.into())), attrs));
                }
                let len: u32 = a.units[ai..ai + del].iter().map(|&u| unit_len(u, offsets)).sum();
                if len > 0 {
                    retain(&mut delta, len, None);
                    doomed.push((offset, len));
                    offset += len;
                }
                ai += del;
                bi += ins;
            }
        }
    }
    if let Some(Delta::Retain(_, None)) = delta.last() {
        delta.pop();
    }
    if !delta.is_empty() {
        text.apply_delta(txn, delta);
    }
    for (at, len) in doomed.into_iter().rev() {
        text.remove_range(txn, at, len);
    }
}

/// Appends a retain, merging plain retains.
fn retain(delta: &mut Vec<Delta<In>>, len: u32, format: Option<Box<Attrs>>) {
    match (delta.last_mut(), format) {
        (Some(Delta::Retain(n, None)), None) => *n += len,
        (_, format) => delta.push(Delta::Retain(len, format)),
    }
}

/// A copy of a value embedded in a text. Shared types use yrs' `as_prelim`
/// here (XML attribute values become strings); editors embed plain values.
fn embed_copy<V: ReadTxn>(embed: &Out, vtxn: &V) -> Option<In> {
    match embed {
        Out::Any(any) => Some(In::Any(any.clone())),
        Out::YDoc(doc) => Some(In::Doc(subdoc_like(doc))),
        Out::UndefinedRef(_) => None,
        shared => Some(shared.as_prelim(vtxn)),
    }
}

/// Hands out consecutive numbers for distinct strings.
#[derive(Default)]
struct Interner(HashMap<String, u32>);

impl Interner {
    fn id(&mut self, key: String) -> u32 {
        let next = self.0.len() as u32;
        *self.0.entry(key).or_insert(next)
    }
}

/// An encoding of a value's content such that two values are equal exactly
/// when their encodings are: types tagged, strings length-prefixed, keys
/// sorted, text runs merged.
fn canonical<T: ReadTxn>(value: &Out, txn: &T) -> String {
    let mut out = String::new();
    write_canonical(value, txn, &mut out);
    out
}

fn write_canonical<T: ReadTxn>(value: &Out, txn: &T, out: &mut String) {
    match value {
        Out::Any(any) => write_any(any, out),
        Out::YText(text) => {
            out.push('T');
            write_text(text, txn, out);
        }
        Out::YXmlText(text) => {
            let branch = BranchPtr::from(text.as_ref() as &Branch);
            out.push('X');
            write_map(branch, txn, out);
            write_text(&TextRef::from(branch), txn, out);
        }
        Out::YMap(map) => {
            out.push('M');
            write_map(BranchPtr::from(map.as_ref() as &Branch), txn, out);
        }
        Out::YArray(array) => {
            out.push('A');
            write_seq(BranchPtr::from(array.as_ref() as &Branch), txn, out);
        }
        Out::YXmlFragment(fragment) => {
            out.push('F');
            write_seq(BranchPtr::from(fragment.as_ref() as &Branch), txn, out);
        }
        Out::YXmlElement(element) => {
            let branch = BranchPtr::from(element.as_ref() as &Branch);
            out.push('E');
            write_str(element.try_tag().map(|t| t.as_ref()).unwrap_or(""), out);
            write_map(branch, txn, out);
            write_seq(branch, txn, out);
        }
        Out::YDoc(doc) => {
            out.push('D');
            write_str(&doc.guid(), out);
        }
        // A weak link: nothing we can compare or copy.
        _ => out.push('?'),
    }
}

fn write_text<T: ReadTxn>(text: &TextRef, txn: &T, out: &mut String) {
    out.push('(');
    for (insert, attrs) in content::text_runs(text, txn) {
        if let Some(attrs) = attrs {
            write_attrs(&attrs, out);
        } else {
            out.push_str("{}");
        }
        write_canonical(&insert, txn, out);
    }
    out.push(')');
}

fn write_map<T: ReadTxn>(branch: BranchPtr, txn: &T, out: &mut String) {
    let map = MapRef::from(branch);
    let mut entries: Vec<(&str, Out)> = map.iter(txn).collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    out.push('{');
    for (key, value) in entries {
        write_str(key, out);
        write_canonical(&value, txn, out);
    }
    out.push('}');
}

fn write_seq<T: ReadTxn>(branch: BranchPtr, txn: &T, out: &mut String) {
    out.push('[');
    for item in ArrayRef::from(branch).iter(txn) {
        write_canonical(&item, txn, out);
    }
    out.push(']');
}

fn write_attrs(attrs: &Attrs, out: &mut String) {
    let mut entries: Vec<(&str, &Any)> = attrs.iter().map(|(k, v)| (k.as_ref(), v)).collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    out.push('{');
    for (key, value) in entries {
        write_str(key, out);
        write_any(value, out);
    }
    out.push('}');
}

fn write_any(any: &Any, out: &mut String) {
    use std::fmt::Write as _;
    match any {
        Any::Null => out.push('n'),
        Any::Undefined => out.push('u'),
        Any::Bool(b) => out.push(if *b { 't' } else { 'f' }),
        // Int and Float stay apart: they are different values on the wire.
        Any::Number(yrs::Number::Int(i)) => {
            let _ = write!(out, "i{i};");
        }
        Any::Number(yrs::Number::Float(f)) => {
            let _ = write!(out, "d{:x};", f.to_bits());
        }
        Any::String(s) => write_str(s, out),
        Any::Buffer(bytes) => {
            out.push('b');
            for byte in bytes.iter() {
                let _ = write!(out, "{byte:02x}");
            }
            out.push(';');
        }
        Any::Array(items) => {
            out.push('[');
            items.iter().for_each(|item| write_any(item, out));
            out.push(']');
        }
        Any::Map(entries) => {
            let mut entries: Vec<(&String, &Any)> = entries.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (key, value) in entries {
                write_str(key, out);
                write_any(value, out);
            }
            out.push('}');
        }
    }
}

fn write_str(s: &str, out: &mut String) {
    use std::fmt::Write as _;
    let _ = write!(out, "s{}:{s}", s.len());
}

/// One step of an edit script from sequence `a` to sequence `b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The next `n` items of `a` are the next `n` of `b`.
    Keep(usize),
    /// The next `del` items of `a` give way to the next `ins` items of `b`.
    Change { del: usize, ins: usize },
}

/// Collects steps, merging neighbours of the same kind and dropping empty
/// ones, so that every change run sits between two keeps.
#[derive(Default)]
struct Script(Vec<Step>);

impl Script {
    fn push(&mut self, step: Step) {
        match (self.0.last_mut(), step) {
            (_, Step::Keep(0)) | (_, Step::Change { del: 0, ins: 0 }) => {}
            (Some(Step::Keep(n)), Step::Keep(more)) => *n += more,
            (Some(Step::Change { del, ins }), Step::Change { del: d, ins: i }) => {
                *del += d;
                *ins += i;
            }
            _ => self.0.push(step),
        }
    }
}

/// A shortest edit script from `a` to `b` (within the limits of the module
/// comment; beyond them, a correct but longer one).
fn edit_script(a: &[u32], b: &[u32]) -> Vec<Step> {
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let (a_rest, b_rest) = (&a[prefix..], &b[prefix..]);
    let suffix = a_rest
        .iter()
        .rev()
        .zip(b_rest.iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let a_mid = &a_rest[..a_rest.len() - suffix];
    let b_mid = &b_rest[..b_rest.len() - suffix];

    let mut script = Script::default();
    script.push(Step::Keep(prefix));
    match myers(a_mid, b_mid) {
        Some(steps) => steps.into_iter().for_each(|s| script.push(s)),
        None => script.push(Step::Change {
            del: a_mid.len(),
            ins: b_mid.len(),
        }),
    }
    script.push(Step::Keep(suffix));
    script.0
}

/// Myers' O((n + m) · d) greedy diff ("An O(ND) Difference Algorithm and Its
/// Variations", 1986). `None` past the limits.
fn myers(a: &[u32], b: &[u32]) -> Option<Vec<Step>> {
    let (n, m) = (a.len() as isize, b.len() as isize);
    if n == 0 || m == 0 {
        return Some(vec![Step::Change {
            del: a.len(),
            ins: b.len(),
        }]);
    }
    let max_d = (n + m).min(MAX_EDIT_DISTANCE as isize);
    let offset = max_d + 1;
    // v[offset + k]: the furthest x reached on diagonal k = x - y.
    let mut v = vec![0isize; (2 * max_d + 3) as usize];
    // The diagonals -d..=d of v after each round d, to walk the path back.
    let mut trace: Vec<Vec<isize>> = Vec::new();
    let mut work = 0usize;
    for d in 0..=max_d {
        let mut k = -d;
        while k <= d {
            let i = (offset + k) as usize;
            let down = k == -d || (k != d && v[i - 1] < v[i + 1]);
            let mut x = if down { v[i + 1] } else { v[i - 1] + 1 };
            let mut y = x - k;
            let start = x;
            while x < n && y < m && a[x as usize] == b[y as usize] {
                x += 1;
                y += 1;
            }
            work += 1 + (x - start) as usize;
            v[i] = x;
            if x >= n && y >= m {
                trace.push(v[(offset - d) as usize..=(offset + d) as usize].to_vec());
                return Some(backtrack(&trace, n, m));
            }
            k += 2;
        }
        if work > WORK_BUDGET {
            return None;
        }
        trace.push(v[(offset - d) as usize..=(offset + d) as usize].to_vec());
    }
    None
}

fn backtrack(trace: &[Vec<isize>], n: isize, m: isize) -> Vec<Step> {
    let mut reversed = Vec::new();
    let (mut x, mut y) = (n, m);
    for d in (1..trace.len() as isize).rev() {
        let before = &trace[(d - 1) as usize];
        let at = |k: isize| before[(k + d - 1) as usize];
        let k = x - y;
        let down = k == -d || (k != d && at(k - 1) < at(k + 1));
        let prev_k = if down { k + 1 } else { k - 1 };
        let prev_x = at(prev_k);
        let snake_start = if down { prev_x } else { prev_x + 1 };
        reversed.push(Step::Keep((x - snake_start) as usize));
        reversed.push(if down {
            Step::Change { del: 0, ins: 1 }
        } else {
            Step::Change { del: 1, ins: 0 }
        });
        x = prev_x;
        y = prev_x - prev_k;
    }
    debug_assert_eq!(x, y);
    reversed.push(Step::Keep(x as usize));
    let mut script = Script::default();
    reversed.into_iter().rev().for_each(|s| script.push(s));
    script.0
}

#[cfg(test)]
mod tests {
    use super::content::doc_to_json;
    use super::*;
    use proptest::prelude::*;
    use yrs::{GetString, StateVector, Xml, XmlElementRef, XmlFragment, XmlTextPrelim, XmlTextRef};

    fn state(doc: &Doc) -> Vec<u8> {
        doc.transact().encode_state_as_update_v1(&StateVector::default())
    }

    /// A document as the server holds it: built from updates only, so its
    /// roots have no declared type.
    fn loaded(update: &[u8]) -> Doc {
        let doc = Doc::new();
        doc.transact_mut()
            .apply_update(Update::decode_v1(update).unwrap())
            .unwrap();
        doc
    }

    /// Every root's kind and exact content, formatting included.
    fn exact(doc: &Doc) -> Vec<(String, RootKind, String)> {
        let txn = doc.transact();
        content::typed_roots(&txn)
            .into_iter()
            .map(|root| {
                let canon = canonical(&root.value, &txn);
                (root.name, root.kind, canon)
            })
            .collect()
    }

    fn attrs(pairs: &[(&str, Any)]) -> Attrs {
        pairs.iter().map(|(k, v)| (k.to_string().into(), v.clone())).collect()
    }

    fn json_any(src: &str) -> Any {
        Any::from_json(src).unwrap()
    }

    /// Restores `version` on `live` and checks what every restore must
    /// give: `live` holds exactly the version's content, and so does a peer
    /// that held the live state and applies only the returned update.
    fn restore_and_check(live: &Doc, version: &[u8]) -> Vec<u8> {
        let peer = loaded(&state(live));
        let update = restore(live, version).expect("restore");
        peer.transact_mut()
            .apply_update(Update::decode_v1(&update).unwrap())
            .unwrap();
        let expected = loaded(version);
        assert_eq!(doc_to_json(live), doc_to_json(&expected));
        assert_eq!(exact(live), exact(&expected));
        assert_eq!(exact(&peer), exact(&expected));
        assert_eq!(doc_to_json(&peer), doc_to_json(&expected));
        update
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    /// A text edited by a client, then mirrored by the server as it would
    /// be: the server's copy has an undefined root type.
    fn server_text(edit: impl Fn(&TextRef, &mut TransactionMut)) -> (Doc, Doc) {
        let client = Doc::new();
        let text = client.get_or_insert_text("text");
        edit(&text, &mut client.transact_mut());
        let server = loaded(&state(&client));
        (client, server)
    }

    fn edit_text(doc: &Doc, edit: impl FnOnce(&TextRef, &mut TransactionMut)) {
        let text = doc.get_or_insert_text("text");
        edit(&text, &mut doc.transact_mut());
    }

    #[test]
    fn text_comes_back_with_few_edits() {
        let (_, live) = server_text(|t, txn| t.push(txn, "The quick brown fox jumps"));
        let version = state(&live);
        edit_text(&live, |t, txn| {
            t.remove_range(txn, 4, 5); // "quick"
            t.insert(txn, 4, "slow");
            t.push(txn, " high");
        });
        let update = restore_and_check(&live, &version);
        // Only "quick" goes back in, not the whole sentence.
        assert!(contains(&update, b"quick"));
        assert!(!contains(&update, b"brown"));
    }

    #[test]
    fn formatting_changes_become_format_calls() {
        let (_, live) = server_text(|t, txn| t.push(txn, "hello world"));
        let version = state(&live);
        edit_text(&live, |t, txn| {
            t.format(txn, 6, 5, attrs(&[("bold", Any::Bool(true))]));
            t.format(txn, 0, 5, attrs(&[("italic", Any::Bool(true))]));
        });
        let update = restore_and_check(&live, &version);
        assert!(!contains(&update, b"hello") && !contains(&update, b"world"));
    }

    #[test]
    fn formatting_and_embeds_are_restored() {
        let (_, live) = server_text(|t, txn| {
            t.insert_with_attributes(txn, 0, "bold", attrs(&[("bold", Any::Bool(true))]));
            t.push(txn, " plain ");
            let link = json_any(r#"{"href":"https://example.com"}"#);
            t.insert_with_attributes(txn, 11, "link", attrs(&[("link", link), ("italic", Any::Bool(true))]));
            t.insert_embed(txn, 15, json_any(r#"{"image":"cat.png"}"#));
            t.push(txn, "\n");
        });
        let version = state(&live);
        edit_text(&live, |t, txn| {
            t.format(txn, 0, 8, attrs(&[("bold", Any::Null), ("code", Any::Bool(true))]));
            t.remove_range(txn, 15, 1); // the embed
            t.insert_with_attributes(txn, 2, "XY", attrs(&[("italic", Any::Bool(true))]));
        });
        restore_and_check(&live, &version);
    }

    /// Guards the two passes of `sync_text`: with the deletions inside the
    /// same `apply_delta`, yrs formatted "éé" italic, like the deleted word
    /// before it.
    #[test]
    fn text_inserted_after_a_deleted_italic_word_is_not_italic() {
        let italic = || attrs(&[("italic", Any::Bool(true))]);
        let (_, live) = server_text(|t, txn| {
            t.insert_with_attributes(txn, 0, " ", attrs(&[("strong", json_any("{}"))]));
            t.push(txn, "ééba");
        });
        let version = state(&live);
        edit_text(&live, |t, txn| {
            let len = t.len(txn);
            t.remove_range(txn, 0, len);
            t.push(txn, "aaaabaa");
            t.insert_with_attributes(txn, 4, " a ", italic());
        });
        restore_and_check(&live, &version);
    }

    #[test]
    fn multibyte_text_in_both_offset_kinds() {
        for offsets in [OffsetKind::Bytes, OffsetKind::Utf16] {
            let live = Doc::with_options(Options {
                offset_kind: offsets,
                ..Options::default()
            });
            edit_text(&live, |t, txn| t.push(txn, "né 😀 ü 日本"));
            let version = state(&live);
            edit_text(&live, |t, txn| {
                let len = t.len(txn);
                t.remove_range(txn, 0, len);
                t.push(txn, "😀😀 ü 本");
                let emoji = match offsets {
                    OffsetKind::Bytes => 4,
                    OffsetKind::Utf16 => 2,
                };
                t.format(txn, emoji, emoji + 1, attrs(&[("bold", Any::Bool(true))]));
            });
            restore_and_check(&live, &version);
            assert_eq!(
                live.get_or_insert_text("text").get_string(&live.transact()),
                "né 😀 ü 日本"
            );
        }
    }

    #[test]
    fn maps_recurse_into_nested_maps() {
        let live = Doc::new();
        let map = live.get_or_insert_map("map");
        let nested_id = {
            let mut txn = live.transact_mut();
            map.insert(&mut txn, "keep", "same");
            map.insert(&mut txn, "change", 1i64);
            map.insert(&mut txn, "gone later", true);
            let nested = map.insert(&mut txn, "nested", MapPrelim::default());
            nested.insert(&mut txn, "a", "x");
            nested.insert(&mut txn, "title", In::Text(DeltaPrelim::default()));
            BranchPtr::from(nested.as_ref() as &Branch).id()
        };
        let version = state(&live);
        {
            let mut txn = live.transact_mut();
            map.insert(&mut txn, "change", 1.0f64); // a Float, not the Int 1
            map.insert(&mut txn, "added", "new");
            map.remove(&mut txn, "gone later");
            let Some(Out::YMap(nested)) = map.get(&txn, "nested") else {
                panic!()
            };
            nested.insert(&mut txn, "a", "y");
            nested.insert(&mut txn, "b", "z");
        }
        restore_and_check(&live, &version);
        let txn = live.transact();
        let Some(Out::YMap(nested)) = map.get(&txn, "nested") else {
            panic!()
        };
        assert_eq!(BranchPtr::from(nested.as_ref() as &Branch).id(), nested_id);
    }

    #[test]
    fn a_value_of_another_kind_is_replaced() {
        let live = Doc::new();
        let map = live.get_or_insert_map("map");
        map.insert(&mut live.transact_mut(), "v", In::Array(ArrayPrelim::from([1i64, 2])));
        let version = state(&live);
        {
            let mut txn = live.transact_mut();
            let inner = map.insert(&mut txn, "v", MapPrelim::default());
            inner.insert(&mut txn, "k", 1i64);
        }
        restore_and_check(&live, &version);
    }

    #[test]
    fn arrays_by_items() {
        let live = Doc::new();
        let array = live.get_or_insert_array("array");
        {
            let mut txn = live.transact_mut();
            array.insert_range(&mut txn, 0, [1i64, 2, 3, 4, 5]);
            let m = array.push_back(&mut txn, MapPrelim::default());
            m.insert(&mut txn, "k", "v");
            array.push_back(&mut txn, json_any(r#"{"plain":[1,2]}"#));
        }
        let version = state(&live);
        {
            let mut txn = live.transact_mut();
            array.remove_range(&mut txn, 1, 2);
            array.insert(&mut txn, 0, "first");
            let Some(Out::YMap(m)) = array.get(&txn, 4) else {
                panic!()
            };
            m.insert(&mut txn, "k", "changed");
            array.push_back(&mut txn, 9i64);
        }
        let update = restore_and_check(&live, &version);
        assert!(!contains(&update, b"plain"));
    }

    /// What y-prosemirror writes: paragraphs and headings holding one
    /// formatted XmlText each.
    fn prosemirror(doc: &Doc) -> Vec<u8> {
        let xml = doc.get_or_insert_xml_fragment("prosemirror");
        let mut txn = doc.transact_mut();
        let h = xml.push_back(&mut txn, XmlElementPrelim::empty("heading"));
        h.insert_attribute(&mut txn, "level", In::Any(Any::from(1i64)));
        h.push_back(&mut txn, XmlTextPrelim::new("Title"));
        for (i, words) in ["first paragraph", "second one", "third"].iter().enumerate() {
            let p = xml.push_back(&mut txn, XmlElementPrelim::empty("paragraph"));
            let t = p.push_back(&mut txn, XmlTextPrelim::new(*words));
            if i == 0 {
                t.format(&mut txn, 0, 5, attrs(&[("bold", Any::Bool(true))]));
            } else {
                t.format(&mut txn, 0, 3, attrs(&[("strong", json_any("{}"))]));
            }
        }
        drop(txn);
        state(doc)
    }

    fn child(doc: &Doc, index: u32) -> XmlElementRef {
        let xml = doc.get_or_insert_xml_fragment("prosemirror");
        let txn = doc.transact();
        xml.get(&txn, index).and_then(|n| n.into_xml_element()).unwrap()
    }

    #[test]
    fn prosemirror_paragraphs_are_edited_in_place() {
        let client = Doc::new();
        let live = loaded(&prosemirror(&client));
        let version = state(&live);
        // The client edits; the server (live) receives its update.
        let before = client.transact().state_vector();
        {
            let xml = client.get_or_insert_xml_fragment("prosemirror");
            let mut txn = client.transact_mut();
            let h = xml.get(&txn, 0).and_then(|n| n.into_xml_element()).unwrap();
            h.insert_attribute(&mut txn, "level", In::Any(Any::from(2i64)));
            let p = xml.get(&txn, 1).and_then(|n| n.into_xml_element()).unwrap();
            let t: XmlTextRef = p.get(&txn, 0).and_then(|n| n.into_xml_text()).unwrap();
            t.insert(&mut txn, 5, " edited");
            t.format(
                &mut txn,
                0,
                5,
                attrs(&[("bold", Any::Null), ("italic", Any::Bool(true))]),
            );
            xml.remove_range(&mut txn, 2, 1);
            let p = xml.push_back(&mut txn, XmlElementPrelim::empty("paragraph"));
            p.push_back(&mut txn, XmlTextPrelim::new("added"));
        }
        let edit = client.transact().encode_state_as_update_v1(&before);
        live.transact_mut()
            .apply_update(Update::decode_v1(&edit).unwrap())
            .unwrap();
        let heading_id = BranchPtr::from(child(&live, 0).as_ref() as &Branch).id();
        let paragraph_id = BranchPtr::from(child(&live, 1).as_ref() as &Branch).id();

        let update = restore_and_check(&live, &version);

        // Edited elements were synchronised, not replaced.
        assert_eq!(BranchPtr::from(child(&live, 0).as_ref() as &Branch).id(), heading_id);
        assert_eq!(BranchPtr::from(child(&live, 1).as_ref() as &Branch).id(), paragraph_id);
        assert!(!contains(&update, b"paragraph\x00") && !contains(&update, b"first"));
        // The level is the number 1 again, not the string "1".
        let level = child(&live, 0).get_attribute(&live.transact(), "level");
        assert_eq!(level, Some(Out::Any(Any::from(1i64))));
    }

    #[test]
    fn roots_are_emptied_and_created() {
        let live = Doc::new();
        {
            let mut txn = live.transact_mut();
            txn.get_or_insert_text("only in version").push(&mut txn, "back");
            txn.get_or_insert_map("both").insert(&mut txn, "k", 1i64);
        }
        let version = state(&live);
        {
            let mut txn = live.transact_mut();
            let text = txn.get_or_insert_text("only in version");
            text.remove_range(&mut txn, 0, 4);
            txn.get_or_insert_array("only live").push_back(&mut txn, 1i64);
            txn.get_or_insert_xml_fragment("xml only live")
                .push_back(&mut txn, XmlElementPrelim::empty("p"));
        }
        // The server's copy, without declared types.
        let live = loaded(&state(&live));
        restore_and_check(&live, &version);

        // A version taken before the document had any content empties it all.
        let empty = state(&Doc::new());
        restore_and_check(&live, &empty);
        assert!(content::roots(&live).is_empty());
        // And a fresh document gets the version's roots.
        let fresh = Doc::new();
        restore_and_check(&fresh, &version);
    }

    #[test]
    fn restoring_the_state_before_a_restore_undoes_it() {
        let (_, live) = server_text(|t, txn| t.push(txn, "version one"));
        let version = state(&live);
        edit_text(&live, |t, txn| {
            t.insert(txn, 0, "later ");
            t.format(txn, 0, 5, attrs(&[("bold", Any::Bool(true))]));
        });
        let before_restore = state(&live);
        let expected = exact(&live);
        restore_and_check(&live, &version);
        restore_and_check(&live, &before_restore);
        assert_eq!(exact(&live), expected);
    }

    #[test]
    fn restoring_the_same_content_changes_nothing() {
        let client = Doc::new();
        let live = loaded(&prosemirror(&client));
        let update = restore_and_check(&live, &state(&live));
        assert!(Update::decode_v1(&update).unwrap().is_empty());
    }

    #[test]
    fn a_client_edit_made_during_the_restore_is_kept_once() {
        let (client, live) = server_text(|t, txn| t.push(txn, "one two"));
        let version = state(&live);
        edit_text(&live, |t, txn| t.push(txn, " three"));
        client
            .transact_mut()
            .apply_update(Update::decode_v1(&state(&live)).unwrap())
            .unwrap();
        // The client types while the server restores.
        let sv = client.transact().state_vector();
        edit_text(&client, |t, txn| t.insert(txn, 0, "zero "));
        let typed = client.transact().encode_state_as_update_v1(&sv);
        let update = restore(&live, &version).unwrap();
        client
            .transact_mut()
            .apply_update(Update::decode_v1(&update).unwrap())
            .unwrap();
        live.transact_mut()
            .apply_update(Update::decode_v1(&typed).unwrap())
            .unwrap();
        assert_eq!(doc_to_json(&live), serde_json::json!({ "text": "zero one two" }));
        assert_eq!(doc_to_json(&client), doc_to_json(&live));
    }

    #[test]
    fn a_bad_version_state_is_refused_and_live_is_untouched() {
        let (client, live) = server_text(|t, txn| t.push(txn, "abc"));
        let before = state(&live);
        assert!(matches!(restore(&live, &[]), Err(RestoreError::Decode(_))));
        assert!(restore(&live, &[1, 2, 3, 200, 7]).is_err());
        // An update that needs an earlier one: the version would be partial.
        let sv = client.transact().state_vector();
        edit_text(&client, |t, txn| t.push(txn, "def"));
        let increment = client.transact().encode_state_as_update_v1(&sv);
        let err = restore(&live, &increment).unwrap_err();
        assert!(matches!(err, RestoreError::Incomplete), "{err}");
        assert_eq!(state(&live), before);
    }

    fn lcg_text(seed: &mut u64, len: usize, alphabet: &[char]) -> String {
        (0..len)
            .map(|_| {
                *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                alphabet[(*seed >> 33) as usize % alphabet.len()]
            })
            .collect()
    }

    #[test]
    fn a_large_text_with_few_edits_gives_a_small_update() {
        let mut seed = 7;
        // ASCII, so that byte offsets picked below fall between characters.
        let body = lcg_text(&mut seed, 100_000, &['a', 'b', 'c', ' ', '\n']);
        let (_, live) = server_text(|t, txn| t.push(txn, &body));
        let version = state(&live);
        edit_text(&live, |t, txn| {
            let len = t.len(txn);
            t.insert(txn, 10, "EDIT1");
            t.remove_range(txn, len / 2, 1);
            t.format(txn, len / 3, 20, attrs(&[("bold", Any::Bool(true))]));
            t.push(txn, "EDIT3");
        });
        let started = std::time::Instant::now();
        let update = restore(&live, &version).unwrap();
        let took = started.elapsed();
        assert!(update.len() < 512, "update of {} bytes", update.len());
        assert_eq!(live.get_or_insert_text("text").get_string(&live.transact()), body);
        // Generous: a quadratic diff takes minutes here, not seconds.
        assert!(took.as_secs() < 10, "restore took {took:?}");
    }

    #[test]
    fn completely_different_texts_fall_back_to_a_replacement() {
        let mut seed = 11;
        let old = lcg_text(&mut seed, 20_000, &['a', 'b', 'c', 'd']);
        let new = lcg_text(&mut seed, 20_000, &['a', 'b', 'c', 'd']);
        let (_, live) = server_text(|t, txn| t.push(txn, &new));
        let version = {
            let (_, v) = server_text(|t, txn| t.push(txn, &old));
            state(&v)
        };
        restore_and_check(&live, &version);
    }

    /// Applies a script to `a`; must give `b`.
    fn apply_script(a: &[u32], b: &[u32], script: &[Step]) -> Vec<u32> {
        let (mut out, mut ai, mut bi) = (Vec::new(), 0, 0);
        for step in script {
            match *step {
                Step::Keep(n) => {
                    assert_eq!(a[ai..ai + n], b[bi..bi + n]);
                    out.extend_from_slice(&a[ai..ai + n]);
                    ai += n;
                    bi += n;
                }
                Step::Change { del, ins } => {
                    out.extend_from_slice(&b[bi..bi + ins]);
                    ai += del;
                    bi += ins;
                }
            }
        }
        assert_eq!(ai, a.len());
        out
    }

    fn lcs(a: &[u32], b: &[u32]) -> usize {
        let mut row = vec![0usize; b.len() + 1];
        for x in a {
            let mut diag = 0;
            for (j, y) in b.iter().enumerate() {
                let up = row[j + 1];
                row[j + 1] = if x == y { diag + 1 } else { up.max(row[j]) };
                diag = up;
            }
        }
        row[b.len()]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// The script is valid and as short as an edit script can be.
        #[test]
        fn edit_scripts_are_shortest(
            a in prop::collection::vec(0u32..4, 0..40),
            b in prop::collection::vec(0u32..4, 0..40),
        ) {
            let script = edit_script(&a, &b);
            prop_assert_eq!(apply_script(&a, &b, &script), b.clone());
            let kept: usize = script.iter().map(|s| match s { Step::Keep(n) => *n, _ => 0 }).sum();
            prop_assert_eq!(kept, lcs(&a, &b));
            for pair in script.windows(2) {
                prop_assert!(std::mem::discriminant(&pair[0]) != std::mem::discriminant(&pair[1]));
            }
        }
    }
}
