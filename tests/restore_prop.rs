//! Property test of version restore: whatever edits happen after a version
//! was taken, restoring it gives the live document exactly the version's
//! content, and a client that held the live document converges on it by
//! applying the one update the restore returns.

mod common;

use std::collections::BTreeMap;

use common::ydoc::{apply_update, loaded, state};
use proptest::prelude::*;
use serde_json::Value;
use weft::doc::content::doc_to_json;
use weft::doc::restore::restore;
use yrs::types::text::YChange;
use yrs::types::Attrs;
use yrs::{
    Any, Array, Doc, GetString, In, Map, MapPrelim, Out, ReadTxn, Text, TextPrelim, TextRef, Transact, TransactionMut,
    WriteTxn, Xml, XmlElementPrelim, XmlFragment, XmlTextPrelim, XmlTextRef,
};

const KEYS: [&str; 4] = ["a", "b", "c", "nested"];
const TAGS: [&str; 2] = ["paragraph", "heading"];

/// Formatting a Quill or ProseMirror binding would write.
fn format(i: usize) -> Attrs {
    let (key, value) = match i % 6 {
        0 => ("bold", Any::Bool(true)),
        1 => ("bold", Any::Null),
        2 => ("italic", Any::Bool(true)),
        3 => ("strong", Any::from_json("{}").unwrap()),
        4 => ("link", Any::from_json(r#"{"href":"https://a"}"#).unwrap()),
        _ => ("link", Any::Null),
    };
    Attrs::from([(key.into(), value)])
}

#[derive(Debug, Clone)]
enum Item {
    Int(i64),
    Str(String),
    Text(String),
    Map,
}

#[derive(Debug, Clone)]
enum Op {
    TextInsert {
        at: usize,
        s: String,
        format: Option<usize>,
    },
    TextDelete {
        at: usize,
        len: usize,
    },
    TextFormat {
        at: usize,
        len: usize,
        format: usize,
    },
    MapSet {
        key: usize,
        value: Item,
    },
    MapRemove {
        key: usize,
    },
    NestedSet {
        key: usize,
        value: i64,
    },
    ArrayInsert {
        at: usize,
        value: Item,
    },
    ArrayRemove {
        at: usize,
        len: usize,
    },
    XmlInsert {
        at: usize,
        tag: usize,
        text: String,
    },
    XmlRemove {
        at: usize,
    },
    XmlLevel {
        at: usize,
        level: i64,
    },
    XmlTextInsert {
        at: usize,
        pos: usize,
        s: String,
        format: Option<usize>,
    },
    XmlTextDelete {
        at: usize,
        pos: usize,
        len: usize,
    },
    XmlTextFormat {
        at: usize,
        pos: usize,
        len: usize,
        format: usize,
    },
}

fn word() -> impl Strategy<Value = String> {
    // Multi-byte characters on purpose: the documents count in bytes.
    prop::collection::vec(prop::sample::select(vec!['a', 'b', ' ', 'é', '😀', '\n']), 1..6)
        .prop_map(|chars| chars.into_iter().collect())
}

fn value() -> impl Strategy<Value = Item> {
    prop_oneof![
        (0i64..3).prop_map(Item::Int),
        word().prop_map(Item::Str),
        word().prop_map(Item::Text),
        Just(Item::Map),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let n = 0usize..64;
    prop_oneof![
        (n.clone(), word(), prop::option::of(0usize..6)).prop_map(|(at, s, format)| Op::TextInsert { at, s, format }),
        (n.clone(), 1usize..6).prop_map(|(at, len)| Op::TextDelete { at, len }),
        (n.clone(), 1usize..8, 0usize..6).prop_map(|(at, len, format)| Op::TextFormat { at, len, format }),
        (0usize..4, value()).prop_map(|(key, value)| Op::MapSet { key, value }),
        (0usize..4).prop_map(|key| Op::MapRemove { key }),
        (0usize..3, 0i64..3).prop_map(|(key, value)| Op::NestedSet { key, value }),
        (n.clone(), value()).prop_map(|(at, value)| Op::ArrayInsert { at, value }),
        (n.clone(), 1usize..3).prop_map(|(at, len)| Op::ArrayRemove { at, len }),
        (n.clone(), 0usize..2, word()).prop_map(|(at, tag, text)| Op::XmlInsert { at, tag, text }),
        n.clone().prop_map(|at| Op::XmlRemove { at }),
        (n.clone(), 1i64..4).prop_map(|(at, level)| Op::XmlLevel { at, level }),
        (n.clone(), n.clone(), word(), prop::option::of(0usize..6))
            .prop_map(|(at, pos, s, format)| Op::XmlTextInsert { at, pos, s, format }),
        (n.clone(), n.clone(), 1usize..5).prop_map(|(at, pos, len)| Op::XmlTextDelete { at, pos, len }),
        (n.clone(), n, 1usize..6, 0usize..6).prop_map(|(at, pos, len, format)| Op::XmlTextFormat {
            at,
            pos,
            len,
            format
        }),
    ]
}

/// Byte offset of character `i` of `s` (or of its end).
fn byte_at(s: &str, i: usize) -> u32 {
    s.char_indices().nth(i).map(|(b, _)| b).unwrap_or(s.len()) as u32
}

/// A character range `[at, at + len)` clamped to `s`, in bytes.
fn byte_range(s: &str, at: usize, len: usize) -> Option<(u32, u32)> {
    let chars = s.chars().count();
    if chars == 0 {
        return None;
    }
    let start = at % chars;
    let end = (start + len).min(chars);
    let (a, b) = (byte_at(s, start), byte_at(s, end));
    Some((a, b - a))
}

fn prelim(value: &Item) -> In {
    match value {
        Item::Int(i) => In::Any(Any::from(*i)),
        Item::Str(s) => In::Any(Any::from(s.as_str())),
        Item::Text(s) => In::Text(TextPrelim::new(s.as_str()).into()),
        Item::Map => In::Map(MapPrelim::from([("k".to_string(), In::Any(Any::from(1i64)))])),
    }
}

fn text_edit(text: &TextRef, txn: &mut TransactionMut, op: &Op) {
    let s = text.get_string(txn);
    match op {
        Op::TextInsert { at, s: new, format: f }
        | Op::XmlTextInsert {
            pos: at,
            s: new,
            format: f,
            ..
        } => {
            let at = byte_at(&s, at % (s.chars().count() + 1));
            match f {
                Some(f) => text.insert_with_attributes(txn, at, new, format(*f)),
                None => text.insert(txn, at, new),
            }
        }
        Op::TextDelete { at, len } | Op::XmlTextDelete { pos: at, len, .. } => {
            if let Some((at, len)) = byte_range(&s, *at, *len) {
                text.remove_range(txn, at, len);
            }
        }
        Op::TextFormat { at, len, format: f }
        | Op::XmlTextFormat {
            pos: at,
            len,
            format: f,
            ..
        } => {
            if let Some((at, len)) = byte_range(&s, *at, *len) {
                text.format(txn, at, len, format(*f));
            }
        }
        _ => unreachable!(),
    }
}

fn apply(doc: &Doc, op: &Op) {
    let mut txn = doc.transact_mut();
    let text = txn.get_or_insert_text("text");
    let map = txn.get_or_insert_map("map");
    let array = txn.get_or_insert_array("array");
    let xml = txn.get_or_insert_xml_fragment("prosemirror");
    let txn = &mut txn;
    match op {
        Op::TextInsert { .. } | Op::TextDelete { .. } | Op::TextFormat { .. } => text_edit(&text, txn, op),
        Op::MapSet { key, value } => {
            map.insert(txn, KEYS[*key], prelim(value));
        }
        Op::MapRemove { key } => {
            map.remove(txn, KEYS[*key]);
        }
        Op::NestedSet { key, value } => {
            let nested = match map.get(txn, "nested") {
                Some(Out::YMap(nested)) => nested,
                _ => map.insert(txn, "nested", MapPrelim::default()),
            };
            nested.insert(txn, KEYS[*key], *value);
        }
        Op::ArrayInsert { at, value } => {
            let at = (*at as u32) % (array.len(txn) + 1);
            array.insert(txn, at, prelim(value));
        }
        Op::ArrayRemove { at, len } => {
            let n = array.len(txn);
            if n > 0 {
                let at = (*at as u32) % n;
                array.remove_range(txn, at, (*len as u32).min(n - at));
            }
        }
        Op::XmlInsert { at, tag, text } => {
            let at = (*at as u32) % (xml.len(txn) + 1);
            let el = xml.insert(txn, at, XmlElementPrelim::empty(TAGS[*tag]));
            if *tag == 1 {
                el.insert_attribute(txn, "level", In::Any(Any::from(1i64)));
            }
            el.push_back(txn, XmlTextPrelim::new(text.as_str()));
        }
        Op::XmlRemove { at } => {
            let n = xml.len(txn);
            if n > 0 {
                xml.remove_range(txn, (*at as u32) % n, 1);
            }
        }
        Op::XmlLevel { at, level } => {
            let n = xml.len(txn);
            if n > 0 {
                if let Some(el) = xml.get(txn, (*at as u32) % n).and_then(|c| c.into_xml_element()) {
                    el.insert_attribute(txn, "level", In::Any(Any::from(*level)));
                }
            }
        }
        Op::XmlTextInsert { at, .. } | Op::XmlTextDelete { at, .. } | Op::XmlTextFormat { at, .. } => {
            let n = xml.len(txn);
            if n == 0 {
                return;
            }
            let el = xml.get(txn, (*at as u32) % n).and_then(|c| c.into_xml_element());
            let node: Option<XmlTextRef> = el.and_then(|el| el.get(txn, 0)).and_then(|c| c.into_xml_text());
            if let Some(node) = node {
                let as_text: &TextRef = node.as_ref();
                text_edit(as_text, txn, op);
            }
        }
    }
}

fn sync(a: &Doc, b: &Doc) {
    let to_b = a.transact().encode_state_as_update_v1(&b.transact().state_vector());
    let to_a = b.transact().encode_state_as_update_v1(&a.transact().state_vector());
    apply_update(b, &to_b);
    apply_update(a, &to_a);
}

/// The root text with its formatting, which `doc_to_json` leaves out:
/// runs of equal formatting, merged.
fn rich_text(doc: &Doc) -> RichText {
    let txn = doc.transact();
    let Some(text) = txn.get_text("text") else {
        return Vec::new();
    };
    let mut runs: RichText = Vec::new();
    for chunk in text.diff(&txn, YChange::identity) {
        let Out::Any(Any::String(s)) = chunk.insert else {
            panic!("unexpected embed");
        };
        let attrs: BTreeMap<String, Value> = chunk
            .attributes
            .iter()
            .flat_map(|a| a.iter())
            .map(|(k, v)| (k.to_string(), serde_json::to_value(v).unwrap()))
            .collect();
        match runs.last_mut() {
            Some((last, last_attrs)) if *last_attrs == attrs => last.push_str(&s),
            _ => runs.push((s.to_string(), attrs)),
        }
    }
    runs
}

/// What must match: the JSON rendering and the root text's formatting.
type Snapshot = (Value, RichText);
type RichText = Vec<(String, BTreeMap<String, Value>)>;

fn snapshot(doc: &Doc) -> Snapshot {
    (doc_to_json(doc), rich_text(doc))
}

/// Two clients edit and sync: the document gets items from several
/// clients, interleaved, as in real use.
fn run(a: &Doc, b: &Doc, ops: &[(bool, Op)]) {
    for (on_b, op) in ops {
        apply(if *on_b { b } else { a }, op);
        sync(a, b);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(128), ..ProptestConfig::default() })]

    #[test]
    fn restore_brings_back_the_version(
        before in prop::collection::vec((any::<bool>(), op()), 0..32),
        after in prop::collection::vec((any::<bool>(), op()), 0..32),
    ) {
        let (a, b) = (Doc::new(), Doc::new());
        run(&a, &b, &before);
        let version = state(&a);
        let expected = snapshot(&loaded(&version));
        run(&a, &b, &after);

        // The server's copy, and a client holding the same state.
        let live = loaded(&state(&a));
        let latest = snapshot(&live);
        let latest_state = state(&live);
        let update = restore(&live, &version).unwrap();
        prop_assert_eq!(&snapshot(&live), &expected);
        apply_update(&b, &update);
        prop_assert_eq!(&snapshot(&b), &expected);

        // Restoring the state from just before the restore undoes it.
        let undo = restore(&live, &latest_state).unwrap();
        prop_assert_eq!(&snapshot(&live), &latest);
        apply_update(&b, &undo);
        prop_assert_eq!(&snapshot(&b), &latest);
    }
}
