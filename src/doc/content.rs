//! A document's content as plain values: its roots, their types, and a JSON
//! rendering of everything in them. Pure yrs, no I/O.
//!
//! The version history shows this rendering, and [`restore`](super::restore)
//! walks the same typed roots to diff two documents.
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

use std::fmt::Write as _;

use serde_json::Value;
use yrs::branch::BranchPtr;
use yrs::types::text::YChange;
use yrs::types::{AsPrelim, Attrs};
use yrs::{
    Any, Array, ArrayRef, Doc, GetString, In, Map, MapRef, Out, ReadTxn, Text, TextRef, Transact, XmlFragmentRef,
};

/// The type of a root, as far as rendering and restoring care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RootKind {
    /// Y.Text (an XmlText root counts as a Text).
    Text,
    Map,
    Array,
    /// Y.XmlFragment (an XmlElement root counts as a fragment: its
    /// attributes are ignored).
    XmlFragment,
}

/// The non-empty roots of `doc` and their types, sorted by name.
pub fn roots(doc: &Doc) -> Vec<(String, RootKind)> {
    let txn = doc.transact();
    typed_roots(&txn)
        .into_iter()
        .map(|root| (root.name, root.kind))
        .collect()
}

/// The content of `doc` as `{ rootName: value }`: a Text as its string
/// (formatting left out), a Map as an object, an Array as an array, an
/// XmlFragment as XML text. Nested shared types render the same way.
///
/// The XML text is what yrs' `get_string` writes (formatting of an XmlText as
/// tags, `<bold>hi</bold>`), except that attributes are sorted by name and
/// adjacent runs with the same formatting are merged, so that two documents
/// with the same content render to the same string.
pub fn doc_to_json(doc: &Doc) -> Value {
    let txn = doc.transact();
    let mut object = serde_json::Map::new();
    for root in typed_roots(&txn) {
        object.insert(root.name, out_to_json(&root.value, &txn));
    }
    Value::Object(object)
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

/// Shared types nested deeper than this are rendered as [`TOO_DEEP`]. A
/// document may nest thousands of levels (one map inside the next); the JSON
/// of that helps nobody, and rendering it would recurse that deep.
pub const MAX_RENDER_DEPTH: usize = 256;

/// What stands for content nested deeper than [`MAX_RENDER_DEPTH`].
pub const TOO_DEEP: &str = "…";

thread_local! {
    /// Nesting of the rendering under way on this thread: the renderers call
    /// each other (JSON, XML, attribute text), so a counter is simpler than
    /// threading a depth through all of them.
    static DEPTH: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// One level deeper for as long as it lives; `None` past the limit.
struct Deeper;

impl Deeper {
    fn enter() -> Option<Self> {
        DEPTH.with(|d| {
            if d.get() >= MAX_RENDER_DEPTH {
                return None;
            }
            d.set(d.get() + 1);
            Some(Deeper)
        })
    }
}

impl Drop for Deeper {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get() - 1));
    }
}

pub(crate) fn out_to_json<T: ReadTxn>(value: &Out, txn: &T) -> Value {
    let Some(_deeper) = Deeper::enter() else {
        return Value::String(TOO_DEEP.into());
    };
    match value {
        Out::Any(any) => any_to_json(any),
        Out::YText(text) => Value::String(text.get_string(txn)),
        Out::YMap(map) => {
            let mut entries: Vec<(String, Value)> = map
                .iter(txn)
                .map(|(key, value)| (key.to_owned(), out_to_json(&value, txn)))
                .collect();
            // Sorted, so that the rendering does not depend on serde_json's
            // map flavour (`preserve_order` keeps insertion order).
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().collect())
        }
        Out::YArray(array) => Value::Array(array.iter(txn).map(|v| out_to_json(&v, txn)).collect()),
        Out::YXmlElement(_) | Out::YXmlFragment(_) | Out::YXmlText(_) => {
            let mut xml = String::new();
            write_xml(value, txn, &mut xml);
            Value::String(xml)
        }
        Out::YDoc(doc) => serde_json::json!({ "guid": doc.guid().as_ref() }),
        // A weak link or a nested type of unknown type: nothing to show.
        _ => Value::Null,
    }
}

pub(crate) fn any_to_json(any: &Any) -> Value {
    match any {
        Any::Null | Any::Undefined => Value::Null,
        Any::Bool(b) => Value::Bool(*b),
        Any::Number(yrs::Number::Int(i)) => Value::from(*i),
        Any::Number(yrs::Number::Float(f)) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        Any::String(s) => Value::String(s.to_string()),
        Any::Buffer(bytes) => Value::Array(bytes.iter().map(|b| Value::from(*b)).collect()),
        Any::Array(items) => Value::Array(items.iter().map(any_to_json).collect()),
        Any::Map(entries) => {
            let mut entries: Vec<(&String, &Any)> = entries.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k.clone(), any_to_json(v))).collect())
        }
    }
}

/// Writes an XML node the way yrs' `get_string` does, deterministically.
fn write_xml<T: ReadTxn>(value: &Out, txn: &T, xml: &mut String) {
    let Some(_deeper) = Deeper::enter() else {
        xml.push_str(TOO_DEEP);
        return;
    };
    match value {
        Out::YXmlFragment(fragment) => {
            let branch = BranchPtr::from(fragment.as_ref() as &yrs::branch::Branch);
            for child in ArrayRef::from(branch).iter(txn) {
                write_xml(&child, txn, xml);
            }
        }
        Out::YXmlElement(element) => {
            let branch = BranchPtr::from(element.as_ref() as &yrs::branch::Branch);
            let tag = element.try_tag().map(|t| t.as_ref()).unwrap_or("");
            let mut attributes: Vec<(String, String)> = MapRef::from(branch)
                .iter(txn)
                .map(|(key, value)| (key.to_owned(), out_text(&value, txn)))
                .collect();
            attributes.sort();
            let _ = write!(xml, "<{tag}");
            for (key, value) in attributes {
                let _ = write!(xml, " {key}=\"{value}\"");
            }
            xml.push('>');
            for child in ArrayRef::from(branch).iter(txn) {
                write_xml(&child, txn, xml);
            }
            let _ = write!(xml, "</{tag}>");
        }
        Out::YXmlText(text) => {
            let branch = BranchPtr::from(text.as_ref() as &yrs::branch::Branch);
            for (insert, attrs) in text_runs(&TextRef::from(branch), txn) {
                let mut marks: Vec<(&str, &Any)> = attrs
                    .iter()
                    .flat_map(|a| a.iter())
                    .map(|(k, v)| (k.as_ref(), v))
                    .collect();
                marks.sort_by(|a, b| a.0.cmp(b.0));
                for (mark, mark_value) in &marks {
                    let _ = write!(xml, "<{mark}");
                    if let Any::Map(fields) = mark_value {
                        let mut fields: Vec<(&String, &Any)> = fields.iter().collect();
                        fields.sort_by(|a, b| a.0.cmp(b.0));
                        for (k, v) in fields {
                            let _ = write!(xml, " {k}=\"{}\"", any_text(v));
                        }
                    }
                    xml.push('>');
                }
                // Like yrs, embedded shared types inside a text are not shown.
                if let Out::Any(any) = insert {
                    xml.push_str(&any_text(&any));
                }
                for (mark, _) in marks.iter().rev() {
                    let _ = write!(xml, "</{mark}>");
                }
            }
        }
        other => xml.push_str(&out_text(other, txn)),
    }
}

/// A value as attribute text: strings as they are, the rest as JSON.
fn out_text<T: ReadTxn>(value: &Out, txn: &T) -> String {
    match value {
        Out::Any(any) => any_text(any),
        other => match out_to_json(other, txn) {
            Value::String(s) => s,
            json => json.to_string(),
        },
    }
}

fn any_text(any: &Any) -> String {
    match any {
        Any::String(s) => s.to_string(),
        Any::Number(n) => n.to_string(),
        Any::Array(_) | Any::Map(_) => any_to_json(any).to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use yrs::types::Attrs;
    use yrs::updates::decoder::Decode;
    use yrs::{
        ArrayPrelim, MapPrelim, StateVector, TextPrelim, Update, WriteTxn, Xml, XmlElementPrelim, XmlFragment,
        XmlTextPrelim,
    };

    /// What the server sees: a document built only from another's updates.
    fn loaded(source: &Doc) -> Doc {
        let state = source.transact().encode_state_as_update_v1(&StateVector::default());
        let doc = Doc::new();
        doc.transact_mut()
            .apply_update(Update::decode_v1(&state).unwrap())
            .unwrap();
        doc
    }

    fn attrs(pairs: &[(&str, Any)]) -> Attrs {
        pairs.iter().map(|(k, v)| (k.to_string().into(), v.clone())).collect()
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
        let doc = loaded(&source);
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
        let doc = loaded(&source);
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
    fn renders_nested_types_recursively() {
        let doc = Doc::new();
        {
            let mut txn = doc.transact_mut();
            let map = txn.get_or_insert_map("map");
            map.insert(&mut txn, "title", TextPrelim::new("Notes"));
            let inner = map.insert(&mut txn, "inner", MapPrelim::default());
            inner.insert(&mut txn, "n", 2.5);
            inner.insert(&mut txn, "i", 7i64);
            map.insert(&mut txn, "list", ArrayPrelim::from([1i64, 2]));
            let el = map.insert(&mut txn, "xml", XmlElementPrelim::empty("p"));
            el.push_back(&mut txn, XmlTextPrelim::new("x"));
            let array = txn.get_or_insert_array("array");
            array.push_back(&mut txn, Any::Null);
            array.push_back(&mut txn, MapPrelim::from([("k".to_string(), In::Any(true.into()))]));
        }
        assert_eq!(
            doc_to_json(&doc),
            json!({
                "map": {
                    "title": "Notes",
                    "inner": { "n": 2.5, "i": 7 },
                    "list": [1, 2],
                    "xml": "<p>x</p>",
                },
                "array": [null, { "k": true }],
            })
        );
        // The same content read back from an update renders the same.
        assert_eq!(doc_to_json(&loaded(&doc)), doc_to_json(&doc));
    }

    #[test]
    fn renders_prosemirror_xml_deterministically() {
        let doc = Doc::new();
        {
            let mut txn = doc.transact_mut();
            let xml = txn.get_or_insert_xml_fragment("prosemirror");
            let heading = xml.push_back(&mut txn, XmlElementPrelim::empty("heading"));
            heading.insert_attribute(&mut txn, "level", In::Any(Any::from(1i64)));
            heading.insert_attribute(&mut txn, "id", "intro");
            let text = heading.push_back(&mut txn, XmlTextPrelim::new("Hello world"));
            text.format(&mut txn, 6, 5, attrs(&[("bold", Any::Bool(true))]));
            // A mark that changes nothing: yrs would split the run here.
            text.format(&mut txn, 0, 2, attrs(&[("italic", Any::Null)]));
            let p = xml.push_back(&mut txn, XmlElementPrelim::empty("paragraph"));
            let text = p.push_back(&mut txn, XmlTextPrelim::new("link"));
            let href = Any::from_json(r#"{"href":"https://x","target":"_blank"}"#).unwrap();
            text.format(
                &mut txn,
                0,
                4,
                attrs(&[("link", href), ("strong", Any::from_json("{}").unwrap())]),
            );
        }
        let expected = json!({
            "prosemirror": "<heading id=\"intro\" level=\"1\">Hello <bold>world</bold></heading>\
                <paragraph><link href=\"https://x\" target=\"_blank\"><strong>link</strong></link></paragraph>"
        });
        assert_eq!(doc_to_json(&doc), expected);
        assert_eq!(doc_to_json(&loaded(&doc)), expected);
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
        assert!(roots(&loaded(&doc)).is_empty());
    }
}

#[cfg(test)]
mod depth_tests {
    use super::*;
    use yrs::{MapPrelim, Transact, WriteTxn};

    #[test]
    fn deep_nesting_renders_with_a_marker() {
        let doc = Doc::new();
        {
            let mut txn = doc.transact_mut();
            let mut map: MapRef = txn.get_or_insert_map("m");
            for _ in 0..2 * MAX_RENDER_DEPTH {
                map = map.insert(&mut txn, "k", MapPrelim::default());
            }
        }
        let json = doc_to_json(&doc);
        let mut depth = 0;
        let mut cur = &json["m"];
        while let Some(next) = cur.get("k") {
            cur = next;
            depth += 1;
        }
        assert_eq!(cur, &Value::String(TOO_DEEP.into()));
        assert_eq!(
            depth, MAX_RENDER_DEPTH,
            "the root and 255 levels inside it, then the marker"
        );
    }
}
