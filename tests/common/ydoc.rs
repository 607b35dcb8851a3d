//! Documents built by hand, for tests of what weft does with them.
//!
//! One copy for every test that needs them: `tests/common` includes it for
//! the integration tests, and the unit tests of `doc::content` and
//! `doc::restore` include it by path (`#[path]`), since a library's unit
//! tests cannot use `tests/common` otherwise. So it uses yrs only.
#![allow(dead_code)]

use yrs::types::Attrs;
use yrs::updates::decoder::Decode;
use yrs::{Any, Doc, ReadTxn, StateVector, Text, Transact, Update};

/// The full state of `doc`, as an update (Yjs v1).
pub fn state(doc: &Doc) -> Vec<u8> {
    doc.transact().encode_state_as_update_v1(&StateVector::default())
}

/// Applies a Yjs v1 update to `doc`; panics if it does not decode or apply.
pub fn apply_update(doc: &Doc, update: &[u8]) {
    doc.transact_mut()
        .apply_update(Update::decode_v1(update).unwrap())
        .unwrap();
}

/// A document as the server holds it: built from updates only, so its roots
/// have no declared type.
pub fn loaded(update: &[u8]) -> Doc {
    let doc = Doc::new();
    apply_update(&doc, update);
    doc
}

/// An update that creates a document whose text `t` holds `s`.
pub fn text_update(s: &str) -> Vec<u8> {
    let doc = Doc::new();
    doc.get_or_insert_text("t").push(&mut doc.transact_mut(), s);
    state(&doc)
}

/// Formatting attributes from pairs.
pub fn attrs(pairs: &[(&str, Any)]) -> Attrs {
    pairs.iter().map(|(k, v)| (k.to_string().into(), v.clone())).collect()
}
