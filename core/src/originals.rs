//! JSON values as their clients wrote them, put back into yrs's encodings.
//!
//! yrs 0.28 holds a JSON object (`Any::Map`) in a `HashMap`, so every
//! decode and re-encode writes its keys in hash order, which differs per
//! process: `{i: 1, tag: 'x'}` set by a client comes back as
//! `{tag: 'x', i: 1}` from anything weft encodes from its document (the
//! full state a joining client gets, a compaction snapshot, a version, the
//! HTTP update route). The values are equal, but an application that
//! renders keys in order or compares serialised JSON sees a change nobody
//! made (docs/upstream/yrs-any-map-key-order.md).
//!
//! A value in a Yjs document never changes once written: it sits at its
//! item's ID (client, clock) for good. So the bytes a client sent for the
//! value at an ID are a valid encoding of the value yrs writes at that ID.
//! [`Originals`] keeps those bytes for every value that holds an object
//! (the only values yrs writes differently), and [`Originals::restore`]
//! walks an update yrs encoded and puts them back in place of yrs's. A v1
//! update has no lengths around blocks, so a value of another length fits.
//!
//! The kept bytes are trusted for nothing: an update that resends a known
//! ID with another value (which yrs ignores) would otherwise plant it, so a
//! kept value replaces yrs's only when both decode to equal values.

use std::collections::HashMap;
use std::ops::Range;

use yrs::encoding::read::{Cursor, Read};
use yrs::Any;

use crate::validate::{block, content, item_header, Reader, Result, Shape, MAX_DEPTH};

/// lib0's type tag of an Any object.
const ANY_MAP: u8 = 118;

/// The original bytes of every JSON value holding an object, by the ID of
/// the value (each value of an item counts one clock tick).
#[derive(Debug, Default)]
pub struct Originals {
    values: HashMap<(u64, u64), Box<[u8]>>,
    bytes: usize,
}

/// What a JSON value is in a v1 update: an Any (array items, map values),
/// or a JSON string (embeds, format attributes).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Any,
    Json,
}

impl Originals {
    /// Keeps the values of an update (one that was applied: a stored row or
    /// an accepted update) that hold an object; an ID already kept keeps
    /// its first bytes. An update that does not walk adds nothing.
    pub fn add(&mut self, update: &[u8]) {
        // Most updates (typing) hold no object: skip them without a walk.
        if !update.contains(&ANY_MAP) && !update.contains(&b'{') {
            return;
        }
        let _ = values(update, |id, kind, range| {
            let value = &update[range];
            let holds_object = match kind {
                Kind::Any => value.contains(&ANY_MAP),
                Kind::Json => value.contains(&b'{'),
            };
            if holds_object && !self.values.contains_key(&id) {
                self.bytes += value.len();
                self.values.insert(id, value.into());
            }
        });
    }

    /// How many values are kept, and their bytes.
    pub fn size(&self) -> (usize, usize) {
        (self.values.len(), self.bytes)
    }

    /// `encoded` (a v1 update yrs wrote) with every kept value in place of
    /// yrs's encoding of it. Returned as it is when nothing is kept for it,
    /// or (never for what yrs writes) when it does not walk.
    pub fn restore(&self, encoded: Vec<u8>) -> Vec<u8> {
        if self.values.is_empty() {
            return encoded;
        }
        let mut swaps: Vec<(Range<usize>, &[u8])> = Vec::new();
        let walked = values(&encoded, |id, kind, range| {
            if let Some(original) = self.values.get(&id) {
                let ours = &encoded[range.clone()];
                if &original[..] != ours && same_value(kind, original, ours) {
                    swaps.push((range, original));
                }
            }
        });
        if walked.is_err() || swaps.is_empty() {
            return encoded;
        }
        let mut out = Vec::with_capacity(encoded.len() + encoded.len() / 16);
        let mut at = 0;
        for (range, original) in swaps {
            out.extend_from_slice(&encoded[at..range.start]);
            out.extend_from_slice(original);
            at = range.end;
        }
        out.extend_from_slice(&encoded[at..]);
        out
    }
}

/// Whether two encodings of a JSON value decode to equal values (an
/// object's keys in any order).
fn same_value(kind: Kind, a: &[u8], b: &[u8]) -> bool {
    let decode = |bytes: &[u8]| -> Option<Any> {
        let mut cursor = Cursor::new(bytes);
        let value = match kind {
            Kind::Any => Any::decode(&mut cursor).ok()?,
            Kind::Json => Any::from_json(cursor.read_string().ok()?).ok()?,
        };
        // The whole encoding, not a prefix of it.
        (cursor.next == bytes.len()).then_some(value)
    };
    match (decode(a), decode(b)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// Calls `each` with the ID, kind and byte range of every JSON value of a
/// v1 update, in order.
fn values(buf: &[u8], mut each: impl FnMut((u64, u64), Kind, Range<usize>)) -> Result<()> {
    let mut r = Reader::new(buf);
    let mut ignored = Shape::default();
    for _ in 0..r.count(3)? {
        let blocks = r.count(1)?;
        let client = r.var()?;
        let mut clock = r.var()?;
        for _ in 0..blocks {
            let start = r.pos;
            let info = r.u8()?;
            let kind = info & 0b1_1111;
            let json = info != content::GC
                && info != content::SKIP
                && matches!(kind, content::ANY | content::EMBED | content::FORMAT);
            if !json {
                r.pos = start;
                let (len, _skip) = block(&mut r, &mut ignored)?;
                clock = clock.saturating_add(len);
                continue;
            }
            item_header(&mut r, info)?;
            match kind {
                content::ANY => {
                    let n = r.count(1)?;
                    for i in 0..n {
                        let at = r.pos;
                        r.any(MAX_DEPTH)?;
                        each((client, clock + i), Kind::Any, at..r.pos);
                    }
                    clock = clock.saturating_add(n);
                }
                _ => {
                    if kind == content::FORMAT {
                        r.bytes()?; // the attribute's name
                    }
                    let at = r.pos;
                    r.bytes()?;
                    each((client, clock), Kind::Json, at..r.pos);
                    clock = clock.saturating_add(1);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
