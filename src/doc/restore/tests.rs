//! Restores checked end to end: the live document holds exactly the
//! version's content afterwards, and so does a peer that applies only the
//! update the restore returned.

use yrs::branch::{Branch, BranchPtr};
use yrs::types::text::DeltaPrelim;
use yrs::updates::decoder::Decode;
use yrs::{
    Any, Array, ArrayPrelim, Doc, GetString, In, Map, MapPrelim, OffsetKind, Options, Out, ReadTxn, Text, TextRef,
    Transact, TransactionMut, Update, WriteTxn, Xml, XmlElementPrelim, XmlElementRef, XmlFragment, XmlTextPrelim,
    XmlTextRef,
};

use super::canonical::canonical;
use super::content::{self, doc_to_json, RootKind};
use super::{restore, RestoreError};

use crate::doc::content::ydoc::{attrs, loaded, state};

/// Every root's kind and exact content, formatting included.
fn exact(doc: &Doc) -> Vec<(String, RootKind, String)> {
    let txn = doc.transact();
    content::typed_roots(&txn)
        .into_iter()
        .map(|root| {
            let canon = canonical(&root.value, &txn);
            (root.name, root.kind, canon)
        })
        .collect()
}

fn json_any(src: &str) -> Any {
    Any::from_json(src).unwrap()
}

/// Restores `version` on `live` and checks what every restore must
/// give: `live` holds exactly the version's content, and so does a peer
/// that held the live state and applies only the returned update.
fn restore_and_check(live: &Doc, version: &[u8]) -> Vec<u8> {
    let peer = loaded(&state(live));
    let update = restore(live, version).expect("restore");
    peer.transact_mut()
        .apply_update(Update::decode_v1(&update).unwrap())
        .unwrap();
    let expected = loaded(version);
    assert_eq!(doc_to_json(live), doc_to_json(&expected));
    assert_eq!(exact(live), exact(&expected));
    assert_eq!(exact(&peer), exact(&expected));
    assert_eq!(doc_to_json(&peer), doc_to_json(&expected));
    update
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A text edited by a client, then mirrored by the server as it would
/// be: the server's copy has an undefined root type.
fn server_text(edit: impl Fn(&TextRef, &mut TransactionMut)) -> (Doc, Doc) {
    let client = Doc::new();
    let text = client.get_or_insert_text("text");
    edit(&text, &mut client.transact_mut());
    let server = loaded(&state(&client));
    (client, server)
}

fn edit_text(doc: &Doc, edit: impl FnOnce(&TextRef, &mut TransactionMut)) {
    let text = doc.get_or_insert_text("text");
    edit(&text, &mut doc.transact_mut());
}

#[test]
fn text_comes_back_with_few_edits() {
    let (_, live) = server_text(|t, txn| t.push(txn, "The quick brown fox jumps"));
    let version = state(&live);
    edit_text(&live, |t, txn| {
        t.remove_range(txn, 4, 5); // "quick"
        t.insert(txn, 4, "slow");
        t.push(txn, " high");
    });
    let update = restore_and_check(&live, &version);
    // Only "quick" goes back in, not the whole sentence.
    assert!(contains(&update, b"quick"));
    assert!(!contains(&update, b"brown"));
}

#[test]
fn formatting_changes_become_format_calls() {
    let (_, live) = server_text(|t, txn| t.push(txn, "hello world"));
    let version = state(&live);
    edit_text(&live, |t, txn| {
        t.format(txn, 6, 5, attrs(&[("bold", Any::Bool(true))]));
        t.format(txn, 0, 5, attrs(&[("italic", Any::Bool(true))]));
    });
    let update = restore_and_check(&live, &version);
    assert!(!contains(&update, b"hello") && !contains(&update, b"world"));
}

#[test]
fn formatting_and_embeds_are_restored() {
    let (_, live) = server_text(|t, txn| {
        t.insert_with_attributes(txn, 0, "bold", attrs(&[("bold", Any::Bool(true))]));
        t.push(txn, " plain ");
        let link = json_any(r#"{"href":"https://example.com"}"#);
        t.insert_with_attributes(txn, 11, "link", attrs(&[("link", link), ("italic", Any::Bool(true))]));
        t.insert_embed(txn, 15, json_any(r#"{"image":"cat.png"}"#));
        t.push(txn, "\n");
    });
    let version = state(&live);
    edit_text(&live, |t, txn| {
        t.format(txn, 0, 8, attrs(&[("bold", Any::Null), ("code", Any::Bool(true))]));
        t.remove_range(txn, 15, 1); // the embed
        t.insert_with_attributes(txn, 2, "XY", attrs(&[("italic", Any::Bool(true))]));
    });
    restore_and_check(&live, &version);
}

/// Guards the two passes of `sync_text`: with the deletions inside the
/// same `apply_delta`, yrs formatted "éé" italic, like the deleted word
/// before it.
#[test]
fn text_inserted_after_a_deleted_italic_word_is_not_italic() {
    let italic = || attrs(&[("italic", Any::Bool(true))]);
    let (_, live) = server_text(|t, txn| {
        t.insert_with_attributes(txn, 0, " ", attrs(&[("strong", json_any("{}"))]));
        t.push(txn, "ééba");
    });
    let version = state(&live);
    edit_text(&live, |t, txn| {
        let len = t.len(txn);
        t.remove_range(txn, 0, len);
        t.push(txn, "aaaabaa");
        t.insert_with_attributes(txn, 4, " a ", italic());
    });
    restore_and_check(&live, &version);
}

#[test]
fn multibyte_text_in_both_offset_kinds() {
    for offsets in [OffsetKind::Bytes, OffsetKind::Utf16] {
        let live = Doc::with_options(Options {
            offset_kind: offsets,
            ..Options::default()
        });
        edit_text(&live, |t, txn| t.push(txn, "né 😀 ü 日本"));
        let version = state(&live);
        edit_text(&live, |t, txn| {
            let len = t.len(txn);
            t.remove_range(txn, 0, len);
            t.push(txn, "😀😀 ü 本");
            let emoji = match offsets {
                OffsetKind::Bytes => 4,
                OffsetKind::Utf16 => 2,
            };
            t.format(txn, emoji, emoji + 1, attrs(&[("bold", Any::Bool(true))]));
        });
        restore_and_check(&live, &version);
        assert_eq!(
            live.get_or_insert_text("text").get_string(&live.transact()),
            "né 😀 ü 日本"
        );
    }
}

#[test]
fn maps_recurse_into_nested_maps() {
    let live = Doc::new();
    let map = live.get_or_insert_map("map");
    let nested_id = {
        let mut txn = live.transact_mut();
        map.insert(&mut txn, "keep", "same");
        map.insert(&mut txn, "change", 1i64);
        map.insert(&mut txn, "gone later", true);
        let nested = map.insert(&mut txn, "nested", MapPrelim::default());
        nested.insert(&mut txn, "a", "x");
        nested.insert(&mut txn, "title", In::Text(DeltaPrelim::default()));
        BranchPtr::from(nested.as_ref() as &Branch).id()
    };
    let version = state(&live);
    {
        let mut txn = live.transact_mut();
        map.insert(&mut txn, "change", 1.0f64); // a Float, not the Int 1
        map.insert(&mut txn, "added", "new");
        map.remove(&mut txn, "gone later");
        let Some(Out::YMap(nested)) = map.get(&txn, "nested") else {
            panic!()
        };
        nested.insert(&mut txn, "a", "y");
        nested.insert(&mut txn, "b", "z");
    }
    restore_and_check(&live, &version);
    let txn = live.transact();
    let Some(Out::YMap(nested)) = map.get(&txn, "nested") else {
        panic!()
    };
    assert_eq!(BranchPtr::from(nested.as_ref() as &Branch).id(), nested_id);
}

#[test]
fn a_value_of_another_kind_is_replaced() {
    let live = Doc::new();
    let map = live.get_or_insert_map("map");
    map.insert(&mut live.transact_mut(), "v", In::Array(ArrayPrelim::from([1i64, 2])));
    let version = state(&live);
    {
        let mut txn = live.transact_mut();
        let inner = map.insert(&mut txn, "v", MapPrelim::default());
        inner.insert(&mut txn, "k", 1i64);
    }
    restore_and_check(&live, &version);
}

#[test]
fn arrays_by_items() {
    let live = Doc::new();
    let array = live.get_or_insert_array("array");
    {
        let mut txn = live.transact_mut();
        array.insert_range(&mut txn, 0, [1i64, 2, 3, 4, 5]);
        let m = array.push_back(&mut txn, MapPrelim::default());
        m.insert(&mut txn, "k", "v");
        array.push_back(&mut txn, json_any(r#"{"plain":[1,2]}"#));
    }
    let version = state(&live);
    {
        let mut txn = live.transact_mut();
        array.remove_range(&mut txn, 1, 2);
        array.insert(&mut txn, 0, "first");
        let Some(Out::YMap(m)) = array.get(&txn, 4) else {
            panic!()
        };
        m.insert(&mut txn, "k", "changed");
        array.push_back(&mut txn, 9i64);
    }
    let update = restore_and_check(&live, &version);
    assert!(!contains(&update, b"plain"));
}

/// What y-prosemirror writes: paragraphs and headings holding one
/// formatted XmlText each.
fn prosemirror(doc: &Doc) -> Vec<u8> {
    let xml = doc.get_or_insert_xml_fragment("prosemirror");
    let mut txn = doc.transact_mut();
    let h = xml.push_back(&mut txn, XmlElementPrelim::empty("heading"));
    h.insert_attribute(&mut txn, "level", In::Any(Any::from(1i64)));
    h.push_back(&mut txn, XmlTextPrelim::new("Title"));
    for (i, words) in ["first paragraph", "second one", "third"].iter().enumerate() {
        let p = xml.push_back(&mut txn, XmlElementPrelim::empty("paragraph"));
        let t = p.push_back(&mut txn, XmlTextPrelim::new(*words));
        if i == 0 {
            t.format(&mut txn, 0, 5, attrs(&[("bold", Any::Bool(true))]));
        } else {
            t.format(&mut txn, 0, 3, attrs(&[("strong", json_any("{}"))]));
        }
    }
    drop(txn);
    state(doc)
}

fn child(doc: &Doc, index: u32) -> XmlElementRef {
    let xml = doc.get_or_insert_xml_fragment("prosemirror");
    let txn = doc.transact();
    xml.get(&txn, index).and_then(|n| n.into_xml_element()).unwrap()
}

#[test]
fn prosemirror_paragraphs_are_edited_in_place() {
    let client = Doc::new();
    let live = loaded(&prosemirror(&client));
    let version = state(&live);
    // The client edits; the server (live) receives its update.
    let before = client.transact().state_vector();
    {
        let xml = client.get_or_insert_xml_fragment("prosemirror");
        let mut txn = client.transact_mut();
        let h = xml.get(&txn, 0).and_then(|n| n.into_xml_element()).unwrap();
        h.insert_attribute(&mut txn, "level", In::Any(Any::from(2i64)));
        let p = xml.get(&txn, 1).and_then(|n| n.into_xml_element()).unwrap();
        let t: XmlTextRef = p.get(&txn, 0).and_then(|n| n.into_xml_text()).unwrap();
        t.insert(&mut txn, 5, " edited");
        t.format(
            &mut txn,
            0,
            5,
            attrs(&[("bold", Any::Null), ("italic", Any::Bool(true))]),
        );
        xml.remove_range(&mut txn, 2, 1);
        let p = xml.push_back(&mut txn, XmlElementPrelim::empty("paragraph"));
        p.push_back(&mut txn, XmlTextPrelim::new("added"));
    }
    let edit = client.transact().encode_state_as_update_v1(&before);
    live.transact_mut()
        .apply_update(Update::decode_v1(&edit).unwrap())
        .unwrap();
    let heading_id = BranchPtr::from(child(&live, 0).as_ref() as &Branch).id();
    let paragraph_id = BranchPtr::from(child(&live, 1).as_ref() as &Branch).id();

    let update = restore_and_check(&live, &version);

    // Edited elements were synchronised, not replaced.
    assert_eq!(BranchPtr::from(child(&live, 0).as_ref() as &Branch).id(), heading_id);
    assert_eq!(BranchPtr::from(child(&live, 1).as_ref() as &Branch).id(), paragraph_id);
    assert!(!contains(&update, b"paragraph\x00") && !contains(&update, b"first"));
    // The level is the number 1 again, not the string "1".
    let level = child(&live, 0).get_attribute(&live.transact(), "level");
    assert_eq!(level, Some(Out::Any(Any::from(1i64))));
}

#[test]
fn roots_are_emptied_and_created() {
    let live = Doc::new();
    {
        let mut txn = live.transact_mut();
        txn.get_or_insert_text("only in version").push(&mut txn, "back");
        txn.get_or_insert_map("both").insert(&mut txn, "k", 1i64);
    }
    let version = state(&live);
    {
        let mut txn = live.transact_mut();
        let text = txn.get_or_insert_text("only in version");
        text.remove_range(&mut txn, 0, 4);
        txn.get_or_insert_array("only live").push_back(&mut txn, 1i64);
        txn.get_or_insert_xml_fragment("xml only live")
            .push_back(&mut txn, XmlElementPrelim::empty("p"));
    }
    // The server's copy, without declared types.
    let live = loaded(&state(&live));
    restore_and_check(&live, &version);

    // A version taken before the document had any content empties it all.
    let empty = state(&Doc::new());
    restore_and_check(&live, &empty);
    assert!(content::typed_roots(&live.transact()).is_empty());
    // And a fresh document gets the version's roots.
    let fresh = Doc::new();
    restore_and_check(&fresh, &version);
}

#[test]
fn restoring_the_state_before_a_restore_undoes_it() {
    let (_, live) = server_text(|t, txn| t.push(txn, "version one"));
    let version = state(&live);
    edit_text(&live, |t, txn| {
        t.insert(txn, 0, "later ");
        t.format(txn, 0, 5, attrs(&[("bold", Any::Bool(true))]));
    });
    let before_restore = state(&live);
    let expected = exact(&live);
    restore_and_check(&live, &version);
    restore_and_check(&live, &before_restore);
    assert_eq!(exact(&live), expected);
}

#[test]
fn restoring_the_same_content_changes_nothing() {
    let client = Doc::new();
    let live = loaded(&prosemirror(&client));
    let update = restore_and_check(&live, &state(&live));
    assert!(Update::decode_v1(&update).unwrap().is_empty());
}

#[test]
fn a_client_edit_made_during_the_restore_is_kept_once() {
    let (client, live) = server_text(|t, txn| t.push(txn, "one two"));
    let version = state(&live);
    edit_text(&live, |t, txn| t.push(txn, " three"));
    client
        .transact_mut()
        .apply_update(Update::decode_v1(&state(&live)).unwrap())
        .unwrap();
    // The client types while the server restores.
    let sv = client.transact().state_vector();
    edit_text(&client, |t, txn| t.insert(txn, 0, "zero "));
    let typed = client.transact().encode_state_as_update_v1(&sv);
    let update = restore(&live, &version).unwrap();
    client
        .transact_mut()
        .apply_update(Update::decode_v1(&update).unwrap())
        .unwrap();
    live.transact_mut()
        .apply_update(Update::decode_v1(&typed).unwrap())
        .unwrap();
    assert_eq!(doc_to_json(&live), serde_json::json!({ "text": "zero one two" }));
    assert_eq!(doc_to_json(&client), doc_to_json(&live));
}

#[test]
fn a_bad_version_state_is_refused_and_live_is_untouched() {
    let (client, live) = server_text(|t, txn| t.push(txn, "abc"));
    let before = state(&live);
    assert!(matches!(restore(&live, &[]), Err(RestoreError::Decode(_))));
    assert!(restore(&live, &[1, 2, 3, 200, 7]).is_err());
    // An update that needs an earlier one: the version would be partial.
    let sv = client.transact().state_vector();
    edit_text(&client, |t, txn| t.push(txn, "def"));
    let increment = client.transact().encode_state_as_update_v1(&sv);
    let err = restore(&live, &increment).unwrap_err();
    assert!(matches!(err, RestoreError::Incomplete), "{err}");
    assert_eq!(state(&live), before);
}

fn lcg_text(seed: &mut u64, len: usize, alphabet: &[char]) -> String {
    (0..len)
        .map(|_| {
            *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            alphabet[(*seed >> 33) as usize % alphabet.len()]
        })
        .collect()
}

#[test]
fn a_large_text_with_few_edits_gives_a_small_update() {
    let mut seed = 7;
    // ASCII, so that byte offsets picked below fall between characters.
    let body = lcg_text(&mut seed, 100_000, &['a', 'b', 'c', ' ', '\n']);
    let (_, live) = server_text(|t, txn| t.push(txn, &body));
    let version = state(&live);
    edit_text(&live, |t, txn| {
        let len = t.len(txn);
        t.insert(txn, 10, "EDIT1");
        t.remove_range(txn, len / 2, 1);
        t.format(txn, len / 3, 20, attrs(&[("bold", Any::Bool(true))]));
        t.push(txn, "EDIT3");
    });
    let started = std::time::Instant::now();
    let update = restore(&live, &version).unwrap();
    let took = started.elapsed();
    assert!(update.len() < 512, "update of {} bytes", update.len());
    assert_eq!(live.get_or_insert_text("text").get_string(&live.transact()), body);
    // Generous: a quadratic diff takes minutes here, not seconds.
    assert!(took.as_secs() < 10, "restore took {took:?}");
}

#[test]
fn completely_different_texts_fall_back_to_a_replacement() {
    let mut seed = 11;
    let old = lcg_text(&mut seed, 20_000, &['a', 'b', 'c', 'd']);
    let new = lcg_text(&mut seed, 20_000, &['a', 'b', 'c', 'd']);
    let (_, live) = server_text(|t, txn| t.push(txn, &new));
    let version = {
        let (_, v) = server_text(|t, txn| t.push(txn, &old));
        state(&v)
    };
    restore_and_check(&live, &version);
}
