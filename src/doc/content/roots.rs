//! The roots of a document and their types.
//!
//! # How a root's type is found
//!
//! A root the server declared itself (`get_or_insert_text` and friends) keeps
//! that type. But the server never declares roots: it builds documents from
//! updates, and a Yjs update names a root without saying which type the
//! client asked for. Such a root is `TypeRef::Undefined` and `root_refs`
//! yields it as `Out::UndefinedRef`.
//!
//! yrs 0.28 infers a type for it only when asked for a copy
//! (`Out::as_prelim`, backed by the private `infer_type_from_content` in
//! `out.rs`), so [`roots`] asks for one and looks at which variant comes back.
//! The inference looks at three facts of the root's branch:
//!
//! - *map*: it has map entries, deleted ones included;
//! - *list*: it has a first list item, deleted or not;
//! - *text*: its first undeleted list item is a string, an embed or a
//!   formatting mark;
//!
//! and answers: text without map → Text; text with map → XmlText; list
//! without text → Array (or XmlElement when there is a map too); map alone →
//! Map; nothing at all → Map. What that means in practice (the tests below
//! check each point):
//!
//! - a Text that starts with a formatting mark (bold from the first
//!   character) is still a Text;
//! - an XmlFragment comes out as an Array, because its children are shared
//!   types, not text. So a root inferred as Array whose items are all
//!   XmlElement/XmlText is taken here for an XmlFragment;
//! - a Text whose characters were all deleted still has a (deleted) list and
//!   no live text: an empty Array;
//! - a Text starting with an embedded *shared type* (not a plain embed) is
//!   inferred as an Array: the one case we get wrong. Yjs editors do not
//!   write that.
//!
//! Empty roots are left out of [`roots`] and [`doc_to_json`]: their type
//! cannot be known (the inference would say Map) and they have nothing to
//! show or restore. To a client, an empty root and a missing one look the
//! same.

use yrs::branch::BranchPtr;
use yrs::types::AsPrelim;
use yrs::{Array, ArrayRef, In, Map, MapRef, Out, ReadTxn, TextRef, XmlFragmentRef};

/// The type of a root, as far as rendering and restoring care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum RootKind {
    /// Y.Text (an XmlText root counts as a Text).
    Text,
    Map,
    Array,
    /// Y.XmlFragment (an XmlElement root counts as a fragment: its
    /// attributes are ignored).
    XmlFragment,
}
/// A non-empty root with its type resolved; `value` is a typed view of the
/// root's branch (never `Out::UndefinedRef`).
pub(crate) struct Root {
    pub name: String,
    pub kind: RootKind,
    pub value: Out,
}

/// The non-empty roots of a document, sorted by name.
pub(crate) fn typed_roots<T: ReadTxn>(txn: &T) -> Vec<Root> {
    let mut roots: Vec<Root> = txn
        .root_refs()
        .filter_map(|(name, value)| {
            let branch = BranchPtr::from(value.try_branch()?);
            if is_empty(branch, txn) {
                return None;
            }
            let kind = kind_of(&value, branch, txn)?;
            Some(Root {
                name: name.to_owned(),
                kind,
                value: typed_view(branch, kind),
            })
        })
        .collect();
    roots.sort_by(|a, b| a.name.cmp(&b.name));
    roots
}

/// Whether a branch holds nothing visible: no countable list item (a lone
/// formatting mark does not count) and no live map entry.
fn is_empty<T: ReadTxn>(branch: BranchPtr, txn: &T) -> bool {
    branch.len() == 0 && MapRef::from(branch).len(txn) == 0
}

/// The declared type of a root, or the inferred one; `None` for roots that
/// are neither of the four kinds (a sub-document, a weak link).
fn kind_of<T: ReadTxn>(value: &Out, branch: BranchPtr, txn: &T) -> Option<RootKind> {
    match value {
        Out::YText(_) | Out::YXmlText(_) => Some(RootKind::Text),
        Out::YMap(_) => Some(RootKind::Map),
        Out::YArray(_) => Some(RootKind::Array),
        Out::YXmlFragment(_) | Out::YXmlElement(_) => Some(RootKind::XmlFragment),
        // The copy costs one pass over the root; yrs has no cheaper public
        // way to ask for its inference.
        Out::UndefinedRef(_) => match value.as_prelim(txn) {
            In::Text(_) | In::XmlText(_) => Some(RootKind::Text),
            In::Map(_) => Some(RootKind::Map),
            In::XmlElement(_) => Some(RootKind::XmlFragment),
            In::Array(_) if holds_only_xml(branch, txn) => Some(RootKind::XmlFragment),
            In::Array(_) => Some(RootKind::Array),
            _ => None,
        },
        _ => None,
    }
}

fn holds_only_xml<T: ReadTxn>(branch: BranchPtr, txn: &T) -> bool {
    ArrayRef::from(branch)
        .iter(txn)
        .all(|item| matches!(item, Out::YXmlElement(_) | Out::YXmlText(_)))
}

fn typed_view(branch: BranchPtr, kind: RootKind) -> Out {
    match kind {
        RootKind::Text => Out::YText(TextRef::from(branch)),
        RootKind::Map => Out::YMap(MapRef::from(branch)),
        RootKind::Array => Out::YArray(ArrayRef::from(branch)),
        RootKind::XmlFragment => Out::YXmlFragment(XmlFragmentRef::from(branch)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use yrs::{Any, Doc, In, Map, MapPrelim, Text, Transact, WriteTxn, XmlElementPrelim, XmlFragment, XmlTextPrelim};

    use super::super::doc_to_json;
    use super::super::ydoc::{attrs, loaded, state};
    use super::*;

    /// The non-empty roots of `doc` and their types, sorted by name.
    fn roots(doc: &Doc) -> Vec<(String, RootKind)> {
        typed_roots(&doc.transact())
            .into_iter()
            .map(|root| (root.name, root.kind))
            .collect()
    }

    #[test]
    fn each_root_type_is_inferred_from_an_update() {
        let source = Doc::new();
        {
            let mut txn = source.transact_mut();
            txn.get_or_insert_text("text").push(&mut txn, "hello");
            let map = txn.get_or_insert_map("map");
            map.insert(&mut txn, "a", 1);
            let array = txn.get_or_insert_array("array");
            array.push_back(&mut txn, "x");
            let xml = txn.get_or_insert_xml_fragment("prosemirror");
            xml.push_back(&mut txn, XmlElementPrelim::empty("paragraph"));
        }
        let doc = loaded(&state(&source));
        assert_eq!(
            roots(&doc),
            vec![
                ("array".to_string(), RootKind::Array),
                ("map".to_string(), RootKind::Map),
                ("prosemirror".to_string(), RootKind::XmlFragment),
                ("text".to_string(), RootKind::Text),
            ]
        );
    }

    /// Guards the claims of the module comment about yrs' inference.
    #[test]
    fn inference_corner_cases() {
        let source = Doc::new();
        {
            let mut txn = source.transact_mut();
            // Bold from the first character: the first item is a mark.
            let bold = txn.get_or_insert_text("bold");
            bold.insert_with_attributes(&mut txn, 0, "hi", attrs(&[("bold", Any::Bool(true))]));
            // Every character deleted.
            let gone = txn.get_or_insert_text("gone");
            gone.push(&mut txn, "bye");
            gone.remove_range(&mut txn, 0, 3);
            // Text opening with an embedded shared type.
            let embed = txn.get_or_insert_text("embed");
            embed.insert_embed(&mut txn, 0, MapPrelim::default());
            embed.push(&mut txn, "after");
            // Declared but never written.
            txn.get_or_insert_array("untouched");
            // An XmlFragment whose first child is a text node.
            let xml = txn.get_or_insert_xml_fragment("xml");
            xml.push_back(&mut txn, XmlTextPrelim::new("loose text"));
        }
        let doc = loaded(&state(&source));
        {
            // The raw inference, before our reading of it.
            let txn = doc.transact();
            let inferred = |name: &str| match txn.get(name).unwrap().as_prelim(&txn) {
                In::Text(_) => "text",
                In::Array(_) => "array",
                In::Map(_) => "map",
                _ => "other",
            };
            assert_eq!(inferred("bold"), "text");
            assert_eq!(inferred("gone"), "array");
            assert_eq!(inferred("embed"), "array");
            // Never written: no item names it, so updates do not carry it.
            assert!(txn.get("untouched").is_none());
            assert_eq!(inferred("xml"), "array");
        }
        assert_eq!(
            roots(&doc),
            vec![
                ("bold".to_string(), RootKind::Text),
                ("embed".to_string(), RootKind::Array),
                ("xml".to_string(), RootKind::XmlFragment),
            ]
        );
    }

    #[test]
    fn empty_roots_are_left_out() {
        let doc = Doc::new();
        {
            let mut txn = doc.transact_mut();
            txn.get_or_insert_map("empty");
            let text = txn.get_or_insert_text("emptied");
            text.push(&mut txn, "abc");
            text.remove_range(&mut txn, 0, 3);
        }
        assert_eq!(doc_to_json(&doc), json!({}));
        assert!(roots(&loaded(&state(&doc))).is_empty());
    }
}
