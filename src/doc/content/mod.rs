//! A document's content as plain values: its roots, their types, and a JSON
//! rendering of everything in them. Pure yrs, no I/O.
//!
//! The version history shows this rendering, and [`restore`](super::restore)
//! walks the same typed roots to diff two documents.
//!
//! - [`roots`]: which roots a document has, and their types, which a
//!   document built from updates does not declare;
//! - [`render`]: the JSON (and XML text) rendering, bounded in depth.

mod render;
mod roots;
#[cfg(test)]
#[path = "../../../tests/common/ydoc.rs"]
pub(super) mod ydoc;

use yrs::types::text::YChange;
use yrs::types::Attrs;
use yrs::{Any, Out, ReadTxn, Text, TextRef};

pub use self::render::doc_to_json;
pub(crate) use self::roots::{typed_roots, Root, RootKind};

/// The formatted runs of a Text or XmlText, with adjacent strings of equal
/// formatting merged: yrs splits a run at every formatting mark, even one
/// that changes nothing, so two equal texts can come out in different pieces.
pub(crate) fn text_runs<T: ReadTxn>(text: &TextRef, txn: &T) -> Vec<(Out, Option<Box<Attrs>>)> {
    let mut runs = Vec::new();
    // The string being merged, pushed once its run ends.
    let mut pending: Option<(String, Option<Box<Attrs>>)> = None;
    for chunk in text.diff(txn, YChange::identity) {
        if let (Some((s, attrs)), Out::Any(Any::String(more))) = (pending.as_mut(), &chunk.insert) {
            if *attrs == chunk.attributes {
                s.push_str(more);
                continue;
            }
        }
        if let Some((s, attrs)) = pending.take() {
            runs.push((Out::Any(Any::String(s.into())), attrs));
        }
        match chunk.insert {
            Out::Any(Any::String(s)) => pending = Some((s.to_string(), chunk.attributes)),
            other => runs.push((other, chunk.attributes)),
        }
    }
    if let Some((s, attrs)) = pending {
        runs.push((Out::Any(Any::String(s.into())), attrs));
    }
    runs
}
