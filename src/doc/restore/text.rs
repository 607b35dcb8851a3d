//! Text sync: a text as a sequence of units (a character or an embed), each
//! with its formatting. Units are aligned on their content alone; aligned
//! units whose formatting differs get a `format`, the others are deleted or
//! inserted with the version's formatting.

use std::collections::HashMap;

use yrs::branch::BranchPtr;
use yrs::types::text::YChange;
use yrs::types::{AsPrelim, Attrs, Delta};
use yrs::{Any, In, OffsetKind, Out, ReadTxn, Text, TextRef, TransactionMut};

use super::canonical::{canonical, write_attrs, Interner};
use super::diff::{edit_script, Step};
use super::tree::subdoc_like;

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
pub(super) fn sync_text<V: ReadTxn>(txn: &mut TransactionMut, live: BranchPtr, vtxn: &V, version: BranchPtr) {
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
