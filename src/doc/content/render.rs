//! Documents as JSON: every root by its type, nested shared types the same
//! way, XML as text; nesting past [`MAX_RENDER_DEPTH`] as a marker.

use std::fmt::Write as _;

use serde_json::Value;
use yrs::branch::BranchPtr;
use yrs::{Any, Array, ArrayRef, Doc, GetString, Map, MapRef, Out, ReadTxn, TextRef, Transact};

use super::{text_runs, typed_roots};

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

/// Shared types nested deeper than this are rendered as [`TOO_DEEP`]. A
/// document may nest thousands of levels (one map inside the next); the JSON
/// of that helps nobody, and rendering it would recurse that deep.
const MAX_RENDER_DEPTH: usize = 256;

/// What stands for content nested deeper than [`MAX_RENDER_DEPTH`].
const TOO_DEEP: &str = "…";

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

fn out_to_json<T: ReadTxn>(value: &Out, txn: &T) -> Value {
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

fn any_to_json(any: &Any) -> Value {
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
    use serde_json::json;
    use yrs::{
        Any, ArrayPrelim, In, Map, MapPrelim, Text, TextPrelim, WriteTxn, Xml, XmlElementPrelim, XmlFragment,
        XmlTextPrelim,
    };

    use super::super::ydoc::{attrs, loaded, state};
    use super::*;

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
        assert_eq!(doc_to_json(&loaded(&state(&doc))), doc_to_json(&doc));
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
        assert_eq!(doc_to_json(&loaded(&state(&doc))), expected);
    }

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
