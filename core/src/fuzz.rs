//! The incoming-frame path as one pure function: decode a frame as a
//! connection does, then apply it to a document and an awareness as the
//! document actor does. Driven by the cargo-fuzz target (`fuzz/`) and by the
//! property tests (weft's `tests/fuzz.rs`); not part of weft's API.

use bytes::Bytes;
use yrs::sync::Awareness;
use yrs::updates::decoder::Decode;
use yrs::{ReadTxn, StateVector, Transact, Update};

use crate::hocuspocus;
use crate::protocol::{self, Inbound};
use crate::{apply_update, Clocks};

/// What happened to a frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Refused at decoding: the connection would be closed with 4400.
    Undecodable,
    /// An update was refused: the connection would be closed with 4422 and
    /// the document rebuilt from storage.
    Refused,
    /// Every message was handled.
    Handled,
}

/// Runs `frame` through decode and apply. Panics only on a bug of weft's:
/// anything yrs refuses or panics on must come back as an `Outcome`.
pub fn incoming_frame(awareness: &mut Awareness, clocks: &mut Clocks, frame: &[u8]) -> Outcome {
    let frame = Bytes::copy_from_slice(frame);
    let Ok(messages) = protocol::decode_frame(&frame) else {
        return Outcome::Undecodable;
    };
    apply_messages(awareness, clocks, messages)
}

/// The same for a frame of the Hocuspocus endpoint: decoded as its session
/// does, and the y-sync message it may carry applied as the actor does.
pub fn hocuspocus_frame(awareness: &mut Awareness, clocks: &mut Clocks, frame: &[u8]) -> Outcome {
    let frame = Bytes::copy_from_slice(frame);
    match hocuspocus::decode(&frame) {
        Err(_) => Outcome::Undecodable,
        Ok(hocuspocus::Frame::Doc { address, message }) => {
            // What the session answers with must encode whatever came in.
            let _ = hocuspocus::address(&address, &hocuspocus::sync_status(true));
            match message {
                hocuspocus::Message::Sync(inbound) => apply_messages(awareness, clocks, vec![inbound]),
                hocuspocus::Message::Stateless(payload) => {
                    let _ = hocuspocus::address(&address, &hocuspocus::stateless(&payload));
                    Outcome::Handled
                }
                _ => Outcome::Handled,
            }
        }
        Ok(_) => Outcome::Handled,
    }
}

fn apply_messages(awareness: &mut Awareness, clocks: &mut Clocks, messages: Vec<Inbound>) -> Outcome {
    let mut accepted = Vec::new();
    for message in messages {
        match message {
            Inbound::SyncStep1(sv) => {
                // the actor answers with what that state vector lacks
                let answer = awareness.doc().transact().encode_state_as_update_v1(&sv);
                assert!(Update::decode_v1(&answer).is_ok(), "a step2 answer must decode");
            }
            Inbound::Update(update) => {
                let relayed = update.relay_frame();
                assert!(protocol::decode_frame(&relayed).is_ok(), "a relayed frame must decode");
                if update.update.is_empty() {
                    continue;
                }
                let raw = update.raw.clone();
                if apply_update(awareness.doc(), update.update, &update.shape.spans, clocks).is_err() {
                    return Outcome::Refused;
                }
                accepted.push(raw);
            }
            Inbound::Awareness(update) => {
                if let Ok(Some(summary)) = awareness.apply_update_summary(update) {
                    let changed = awareness
                        .update_with_clients(summary.all_changes())
                        .expect("known clients");
                    let _ = protocol::encode_awareness(&changed);
                }
            }
            Inbound::QueryAwareness | Inbound::Ignored(_) => {}
        }
    }
    // Accepted updates are relayed joined when they join: the join must pass
    // the same checks as a client's frame.
    if accepted.len() > 1 {
        let slices: Vec<&[u8]> = accepted.iter().map(|u| u.as_ref()).collect();
        if let Some(joined) = crate::concat::concat_v1(&slices) {
            let frame = protocol::encode_update(&joined);
            assert!(protocol::decode_frame(&frame).is_ok(), "a joined relay must decode");
        }
    }
    // What the actor stores and sends to newcomers must stay readable.
    let state = awareness
        .doc()
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    assert!(Update::decode_v1(&state).is_ok(), "a document's own state must decode");
    Outcome::Handled
}

/// Separates frames in one fuzz input; unlikely inside a real frame.
pub const SEPARATOR: &[u8] = b"\xffWEFT\xff";

/// Splits a fuzz input into at most four frames.
pub fn frames(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while out.len() < 3 {
        match rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
            Some(at) => {
                out.push(&rest[..at]);
                rest = &rest[at + SEPARATOR.len()..];
            }
            None => break,
        }
    }
    out.push(rest);
    out
}

/// A document with some text, a map and a y-prosemirror-like fragment, and
/// its awareness: what fuzzed frames are applied to.
pub fn seeded_awareness() -> Awareness {
    use yrs::{Map, Text, WriteTxn, XmlElementPrelim, XmlFragment, XmlTextPrelim};
    let doc = yrs::Doc::with_client_id(1);
    {
        let mut txn = doc.transact_mut();
        let text = txn.get_or_insert_text("text");
        text.insert(&mut txn, 0, "hello world");
        text.format(&mut txn, 0, 5, [("bold".into(), true.into())].into_iter().collect());
        let map = txn.get_or_insert_map("map");
        map.insert(&mut txn, "k", "v");
        let xml = txn.get_or_insert_xml_fragment("prosemirror");
        let p = xml.insert(&mut txn, 0, XmlElementPrelim::empty("paragraph"));
        p.insert(&mut txn, 0, XmlTextPrelim::new("para"));
    }
    Awareness::new(doc)
}
