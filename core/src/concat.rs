//! Several Yjs v1 updates joined into one, without decoding their content.
//!
//! The document actor relays every update it accepted to every other peer.
//! When a batch holds many updates from one writer (a fast typist, a paste
//! replayed as many edits, a client catching up), each reader would get one
//! frame per update, and the per-frame cost (queueing, framing, a wake-up of
//! the reader's task, the client's decode) is most of what fan-out costs.
//! Joining the batch's updates into one lets every reader take one frame.
//!
//! yrs can merge updates (`merge_updates_v1`), but it decodes and re-encodes
//! every value: JSON objects inside the document come back with their keys
//! in hash order (see README, guarantees), and the decode costs more than
//! the frames saved. This join only moves bytes: a v1 update is a list of
//! per-client groups of blocks followed by a delete set, and a block's bytes
//! do not depend on where it sits, so two groups of the same client join by
//! concatenation when the second starts at the clock where the first ends.
//! Anything else (a gap or an overlap in one client's clocks) is not joined:
//! [`concat_v1`] answers `None` and the caller relays the updates one by one.
//!
//! The updates given must have passed [`crate::validate::update_v1`] (the
//! actor relays only updates it applied), so walking them cannot fail; if it
//! does anyway, the answer is `None`, never a wrong update.

use std::collections::BTreeMap;

use crate::validate::{block, Reader, Result, Shape};

/// One client's blocks in one update.
pub(crate) struct Group {
    pub(crate) client: u64,
    pub(crate) clock: u64,
    pub(crate) blocks: u64,
    /// The clock after its last block (skips included).
    pub(crate) end: u64,
    /// Some of its blocks are skips (gaps).
    pub(crate) skips: bool,
    bytes: std::ops::Range<usize>,
}

/// One client's blocks from several updates, joined.
struct Joined<'a> {
    clock: u64,
    blocks: u64,
    end: u64,
    pieces: Vec<&'a [u8]>,
}

/// Where the parts of an update lie.
pub(crate) struct Layout {
    pub(crate) groups: Vec<Group>,
    /// Deleted ranges, `(client, start, len)`.
    pub(crate) deletes: Vec<(u64, u64, u64)>,
}

pub(crate) fn layout(buf: &[u8]) -> Result<Layout> {
    let mut r = Reader::new(buf);
    let mut groups = Vec::new();
    let mut ignored = Shape::default();
    for _ in 0..r.count(3)? {
        let blocks = r.count(1)?;
        let client = r.var()?;
        let clock = r.var()?;
        let start = r.pos;
        let mut end = clock;
        let mut skips = false;
        for _ in 0..blocks {
            let (len, skip) = block(&mut r, &mut ignored)?;
            end = end.saturating_add(len);
            skips |= skip;
        }
        groups.push(Group {
            client,
            clock,
            blocks,
            end,
            skips,
            bytes: start..r.pos,
        });
    }
    let mut deletes = Vec::new();
    for _ in 0..r.count(2)? {
        let client = r.var()?;
        for _ in 0..r.count(2)? {
            let start = r.var()?;
            let len = r.var()?;
            deletes.push((client, start, len));
        }
    }
    Ok(Layout { groups, deletes })
}

/// One update holding what `updates` hold, or `None` when they cannot be
/// joined by moving bytes (see the module comment). One update is returned
/// as it is.
pub fn concat_v1(updates: &[&[u8]]) -> Option<Vec<u8>> {
    if let [only] = updates {
        return Some(only.to_vec());
    }
    // Written in order of first appearance, so that the output is
    // deterministic.
    let mut order: Vec<u64> = Vec::new();
    let mut joined: BTreeMap<u64, Joined<'_>> = BTreeMap::new();
    let mut deletes: BTreeMap<u64, Vec<(u64, u64)>> = BTreeMap::new();
    for update in updates {
        let layout = layout(update).ok()?;
        for g in layout.groups {
            if g.blocks == 0 {
                continue;
            }
            let piece = &update[g.bytes];
            match joined.get_mut(&g.client) {
                Some(j) => {
                    if j.end != g.clock {
                        return None; // a gap or an overlap: not a concatenation
                    }
                    j.blocks += g.blocks;
                    j.end = g.end;
                    j.pieces.push(piece);
                }
                None => {
                    order.push(g.client);
                    let j = Joined {
                        clock: g.clock,
                        blocks: g.blocks,
                        end: g.end,
                        pieces: vec![piece],
                    };
                    joined.insert(g.client, j);
                }
            }
        }
        for (client, start, len) in layout.deletes {
            deletes.entry(client).or_default().push((start, len));
        }
    }
    let size: usize = updates.iter().map(|u| u.len()).sum();
    let mut out = Vec::with_capacity(size);
    put_var(&mut out, order.len() as u64);
    for client in &order {
        let j = &joined[client];
        put_var(&mut out, j.blocks);
        put_var(&mut out, *client);
        put_var(&mut out, j.clock);
        for piece in &j.pieces {
            out.extend_from_slice(piece);
        }
    }
    put_var(&mut out, deletes.len() as u64);
    for (client, mut ranges) in deletes {
        ranges.sort_unstable();
        let merged = coalesce(ranges);
        put_var(&mut out, client);
        put_var(&mut out, merged.len() as u64);
        for (start, len) in merged {
            put_var(&mut out, start);
            put_var(&mut out, len);
        }
    }
    Some(out)
}

/// Sorted ranges with overlapping or touching ones joined, as Yjs writes a
/// delete set.
pub(crate) fn coalesce(sorted: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(sorted.len());
    for (start, len) in sorted {
        match out.last_mut() {
            Some((s, l)) if start <= *s + *l => *l = (*l).max(start + len - *s),
            _ => out.push((start, len)),
        }
    }
    out
}

/// An unsigned lib0 varint.
pub(crate) fn put_var(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

#[cfg(test)]
mod tests;
