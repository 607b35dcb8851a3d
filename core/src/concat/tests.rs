use std::sync::{Arc, Mutex};

use yrs::updates::decoder::Decode;
use yrs::{Any, Array, Doc, GetString, Map, ReadTxn, StateVector, Text, Transact, Update, WriteTxn};

use yrs::types::ToJson;

use super::concat_v1;

/// A document that records every update it produces.
struct Recorder {
    doc: Doc,
    updates: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Recorder {
    fn new(client: u64) -> Self {
        let doc = doc(client);
        let updates = Arc::new(Mutex::new(Vec::new()));
        let sink = updates.clone();
        doc.observe_update_v1("recorder", move |_, e| sink.lock().unwrap().push(e.update.clone()))
            .unwrap();
        Self { doc, updates }
    }

    fn take(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.updates.lock().unwrap())
    }
}

/// A document whose text offsets count UTF-16 units, as Yjs's do, so that
/// any offset below the length is a place to edit.
fn doc(client: u64) -> Doc {
    Doc::with_options(yrs::Options {
        client_id: yrs::ClientID::new(client),
        offset_kind: yrs::OffsetKind::Utf16,
        ..Default::default()
    })
}

fn apply(doc: &Doc, update: &[u8]) {
    let mut txn = doc.transact_mut();
    txn.apply_update(Update::decode_v1(update).unwrap()).unwrap();
}

/// What a document holds, compared as the text of its roots and its state
/// vector (values compared as values: a map's keys in any order).
fn summary(doc: &Doc) -> (String, Any, Any, StateVector) {
    let txn = doc.transact();
    let text = txn.get_text("text").map(|t| t.get_string(&txn)).unwrap_or_default();
    let map = txn.get_map("map").map(|m| m.to_json(&txn)).unwrap_or(Any::Null);
    let array = txn.get_array("array").map(|a| a.to_json(&txn)).unwrap_or(Any::Null);
    (text, map, array, txn.state_vector())
}

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// One random edit by `doc`: insert or delete text, set a map key to an
/// object, push to an array.
fn edit(doc: &Doc, rng: &mut Rng) {
    let mut txn = doc.transact_mut();
    match rng.below(5) {
        0 | 1 => {
            let text = txn.get_or_insert_text("text");
            let len = text.len(&txn);
            let at = rng.below(u64::from(len) + 1) as u32;
            let s = ["a", "héllo ", "🎉", "xyz"][rng.below(4) as usize];
            text.insert(&mut txn, at, s);
        }
        2 => {
            let text = txn.get_or_insert_text("text");
            let len = text.len(&txn);
            if len > 0 {
                let at = rng.below(u64::from(len)) as u32;
                let n = (1 + rng.below(3) as u32).min(len - at);
                text.remove_range(&mut txn, at, n);
            }
        }
        3 => {
            let map = txn.get_or_insert_map("map");
            let key = format!("k{}", rng.below(4));
            let value: Any = Any::from(std::collections::HashMap::from([
                ("i".to_string(), Any::from(rng.below(100) as f64)),
                ("tag".to_string(), Any::from("x")),
            ]));
            map.insert(&mut txn, key, value);
        }
        _ => {
            let array = txn.get_or_insert_array("array");
            array.push_back(&mut txn, rng.below(1000) as f64);
        }
    }
}

#[test]
fn one_writer_s_updates_join_and_keep_their_bytes() {
    let writer = Recorder::new(7);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..50 {
        edit(&writer.doc, &mut rng);
    }
    let updates = writer.take();
    let slices: Vec<&[u8]> = updates.iter().map(Vec::as_slice).collect();
    let joined = concat_v1(&slices).expect("one writer's consecutive updates join");
    let reader = doc(8);
    apply(&reader, &joined);
    assert_eq!(summary(&reader), summary(&writer.doc));
    // not re-encoded: smaller than the sum only by the headers it saved
    let total: usize = updates.iter().map(Vec::len).sum();
    assert!(joined.len() <= total, "{} > {total}", joined.len());
}

#[test]
fn a_gap_in_one_client_s_clocks_is_not_joined() {
    let writer = Recorder::new(7);
    for s in ["a", "b", "c"] {
        let mut txn = writer.doc.transact_mut();
        txn.get_or_insert_text("text").insert(&mut txn, 0, s);
    }
    let updates = writer.take();
    // the first and the third: the second's clocks are missing
    assert_eq!(concat_v1(&[&updates[0], &updates[2]]), None);
    // the second before the first: an overlap going backwards
    assert_eq!(concat_v1(&[&updates[1], &updates[0]]), None);
}

/// Several writers that sync with each other, and a reader that gets every
/// run of consecutive updates either joined or one by one: it ends with the
/// same document either way.
#[test]
fn joined_runs_give_the_same_document_as_single_updates() {
    for seed in 1..40u64 {
        let mut rng = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1);
        let writers: Vec<Recorder> = (0..3).map(|i| Recorder::new(100 + i)).collect();
        let mut stream: Vec<Vec<u8>> = Vec::new();
        for _ in 0..60 {
            let w = rng.below(3) as usize;
            edit(&writers[w].doc, &mut rng);
            let made = writers[w].take();
            // the others learn of it, as through a server (their own
            // recorders see the applied update too: drop that echo)
            for (i, other) in writers.iter().enumerate() {
                if i != w {
                    for u in &made {
                        apply(&other.doc, u);
                    }
                    other.take();
                }
            }
            stream.extend(made);
        }
        let one_by_one = doc(1);
        for u in &stream {
            apply(&one_by_one, u);
        }
        let joined_reader = doc(2);
        let mut i = 0;
        let mut joins = 0;
        while i < stream.len() {
            let n = 1 + rng.below(6) as usize;
            let run: Vec<&[u8]> = stream[i..(i + n).min(stream.len())].iter().map(Vec::as_slice).collect();
            match concat_v1(&run) {
                Some(joined) => {
                    joins += 1;
                    apply(&joined_reader, &joined)
                }
                None => run.iter().for_each(|u| apply(&joined_reader, u)),
            }
            i += n;
        }
        assert!(joins > 0, "seed {seed}: nothing joined");
        assert_eq!(summary(&joined_reader), summary(&one_by_one), "seed {seed}");
        assert_eq!(summary(&one_by_one), summary(&writers[0].doc), "seed {seed}");
    }
}

#[test]
fn object_keys_keep_the_order_the_client_wrote() {
    // An object whose keys a client wrote as {"i", "tag"}, by hand: yrs
    // would re-encode them in hash order, a join must not.
    let writer = Recorder::new(9);
    {
        let mut txn = writer.doc.transact_mut();
        txn.get_or_insert_text("text").insert(&mut txn, 0, "a");
    }
    {
        let mut txn = writer.doc.transact_mut();
        let map = txn.get_or_insert_map("map");
        map.insert(
            &mut txn,
            "o",
            Any::from(std::collections::HashMap::from([("i".to_string(), Any::from(1.0))])),
        );
    }
    let updates = writer.take();
    let joined = concat_v1(&[&updates[0], &updates[1]]).unwrap();
    for u in &updates {
        // each update's blocks appear whole in the join (after its header:
        // one client, one block, the client, the clock; before its empty
        // delete set)
        let body = &u[4..u.len() - 1];
        assert!(
            joined.windows(body.len()).any(|w| w == body),
            "the blocks of {u:?} are not in {joined:?}"
        );
    }
}
