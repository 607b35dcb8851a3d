//! A canonical encoding of values: two values are equal exactly when their
//! encodings are, whatever pieces yrs keeps them in. The diffs compare
//! items by it, interned to numbers.

use std::collections::HashMap;

use yrs::branch::{Branch, BranchPtr};
use yrs::types::Attrs;
use yrs::{Any, Array, ArrayRef, Map, MapRef, Out, ReadTxn, TextRef};

use crate::doc::content;

/// Hands out consecutive numbers for distinct strings.
#[derive(Default)]
pub(super) struct Interner(HashMap<String, u32>);

impl Interner {
    pub(super) fn id(&mut self, key: String) -> u32 {
        let next = self.0.len() as u32;
        *self.0.entry(key).or_insert(next)
    }
}

/// An encoding of a value's content such that two values are equal exactly
/// when their encodings are: types tagged, strings length-prefixed, keys
/// sorted, text runs merged.
pub(super) fn canonical<T: ReadTxn>(value: &Out, txn: &T) -> String {
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

pub(super) fn write_attrs(attrs: &Attrs, out: &mut String) {
    write_entries(attrs.iter().map(|(k, v)| (k.as_ref(), v)), out);
}

/// Plain key-value pairs (formatting attributes, an `Any::Map`), sorted by key.
fn write_entries<'a>(entries: impl Iterator<Item = (&'a str, &'a Any)>, out: &mut String) {
    let mut entries: Vec<(&str, &Any)> = entries.collect();
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
        Any::Map(entries) => write_entries(entries.iter().map(|(k, v)| (k.as_str(), v)), out),
    }
}

fn write_str(s: &str, out: &mut String) {
    use std::fmt::Write as _;
    let _ = write!(out, "s{}:{s}", s.len());
}
