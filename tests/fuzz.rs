//! Fuzzing the incoming-frame path without cargo-fuzz: random and mutated
//! frames through decode and apply (`weft::fuzz::incoming_frame`), then a
//! batch of them against the real server, which must keep serving. The
//! coverage-guided target is in fuzz/ (`cargo fuzz run --sanitizer none
//! frame`); every input that ever broke something is a regression case below.

mod common;

use common::{Client, Server, SECOND};
use proptest::prelude::*;
use weft::fuzz::{frames, incoming_frame, seeded_awareness, Outcome, SEPARATOR};
use yrs::sync::awareness::{AwarenessUpdate, AwarenessUpdateEntry};
use yrs::sync::{Message, SyncMessage};
use yrs::updates::encoder::Encode;
use yrs::{Doc, Map, ReadTxn, StateVector, Text, Transact, WriteTxn, XmlFragment, XmlTextPrelim};

/// Valid frames of every kind: the seeds for mutation (and for fuzz/corpus).
fn seeds() -> Vec<Vec<u8>> {
    let doc = Doc::with_client_id(7);
    let mut updates = Vec::new();
    let mut edit = |f: &dyn Fn(&mut yrs::TransactionMut)| {
        let mut txn = doc.transact_mut();
        f(&mut txn);
        updates.push(txn.encode_update_v1());
    };
    edit(&|txn| {
        let t = txn.get_or_insert_text("text");
        t.insert(txn, 0, "abc");
    });
    edit(&|txn| {
        let t = txn.get_or_insert_text("text");
        t.remove_range(txn, 1, 1);
    });
    edit(&|txn| {
        let m = txn.get_or_insert_map("map");
        m.insert(txn, "n", 42i64);
    });
    edit(&|txn| {
        let x = txn.get_or_insert_xml_fragment("prosemirror");
        x.insert(txn, 0, XmlTextPrelim::new("x"));
    });
    let state = doc.transact().encode_state_as_update_v1(&StateVector::default());
    let sv = doc.transact().state_vector();
    let mut awareness = std::collections::HashMap::new();
    awareness.insert(
        yrs::ClientID::new(9),
        AwarenessUpdateEntry {
            clock: 3,
            json: r#"{"user":{"name":"fuzz"}}"#.into(),
        },
    );
    let mut out = vec![
        Message::Sync(SyncMessage::SyncStep1(sv)).encode_v1(),
        Message::Sync(SyncMessage::SyncStep2(state)).encode_v1(),
        Message::Awareness(AwarenessUpdate { clients: awareness }).encode_v1(),
        Message::AwarenessQuery.encode_v1(),
    ];
    // each edit with those it follows (alone, it would skip their clocks)
    for i in 0..updates.len() {
        let merged = yrs::merge_updates_v1(updates[..=i].iter().map(Vec::as_slice)).unwrap();
        out.push(Message::Sync(SyncMessage::Update(merged)).encode_v1());
    }
    // several messages in one frame, and a sequence of dependent frames
    out.push([out[0].clone(), out[4].clone(), out[3].clone()].concat());
    let mut sequence = out[4].clone();
    for u in &updates[1..] {
        sequence.extend_from_slice(SEPARATOR);
        sequence.extend_from_slice(&Message::Sync(SyncMessage::Update(u.clone())).encode_v1());
    }
    out.push(sequence);
    out
}

/// An input that once broke something, and what must happen to it now,
/// in the pure frame path and at the real server alike.
struct Regression {
    what: &'static str,
    /// One frame, or several separated by `SEPARATOR`, sent in order.
    input: Vec<u8>,
    /// The outcome of the frame that ends it (the last one if none does).
    outcome: Outcome,
    /// Part of the close reason (4400 and 4422 carry one).
    reason: &'static str,
}

/// Inputs that once broke something; each must stay handled.
fn regressions() -> Vec<Regression> {
    let inputs = raw_regressions();
    let expected: [(&str, Outcome, &str); 13] = [
        (
            "an update whose length prefix runs past the frame",
            Outcome::Undecodable,
            "truncated",
        ),
        (
            "an unknown sync subtype",
            Outcome::Undecodable,
            "unknown sync message type 7",
        ),
        (
            "a skipping update with a short length prefix",
            Outcome::Undecodable,
            "bytes where",
        ),
        (
            "an update skipping its client's first clocks",
            Outcome::Refused,
            "must arrive in order",
        ),
        (
            "a pending update after which encoding panicked (1)",
            Outcome::Undecodable,
            "legacy JSON",
        ),
        (
            "a pending update after which encoding panicked (2)",
            Outcome::Undecodable,
            "unknown content type",
        ),
        (
            "legacy JSON content decoded with one string too many",
            Outcome::Undecodable,
            "legacy JSON",
        ),
        (
            "a block at clock u32::MAX wrapping yrs's arithmetic",
            Outcome::Undecodable,
            "blocks reach clock",
        ),
        (
            "legacy JSON content panicking while a panic unwound",
            Outcome::Undecodable,
            "legacy JSON",
        ),
        (
            "the use-after-free: an update spanning a skipped gap",
            Outcome::Refused,
            "must arrive in order",
        ),
        (
            "an item-parent update with a long length prefix",
            Outcome::Undecodable,
            "truncated",
        ),
        ("a parent that is an item, not a type", Outcome::Refused, "parent"),
        (
            "a client in two groups of one update (a segfault in yrs)",
            Outcome::Undecodable,
            "two groups",
        ),
    ];
    assert_eq!(inputs.len(), expected.len());
    inputs
        .into_iter()
        .zip(expected)
        .map(|(input, (what, outcome, reason))| Regression {
            what,
            input,
            outcome,
            reason,
        })
        .collect()
}

fn raw_regressions() -> Vec<Vec<u8>> {
    vec![
        // sync update whose length prefix runs past the frame
        vec![0, 2, 200, 1, 2, 3],
        // unknown sync subtype
        vec![0, 7, 0],
        // meant as the next case, but its length prefix (9) is short of its
        // 11 bytes: refused at decoding, never applied
        vec![0, 2, 9, 1, 1, 5, 10, 4, 1, 1, b't', 1, b'x', 0],
        // an update for a client whose earlier clocks (0..10) never arrive:
        // yrs would keep it pending; weft refuses it (see the use-after-free)
        vec![0, 2, 11, 1, 1, 5, 10, 4, 1, 1, b't', 1, b'x', 0],
        // found by cargo fuzz: pending updates yrs 0.28 accepts, after
        // which every full encoding of the document panicked (step2 answers,
        // snapshots); once refused at apply, now already at decoding (legacy
        // JSON content, an unknown content type)
        vec![
            0, 2, 31, 2, 0, 16, 39, 1, 0, 33, 2, 252, 255, 59, 255, 255, 1, 0, 0, 0, 0, 0, 20, 32, 1, 0, 0, 241, 241,
            241, 241, 249, 241, 241,
        ],
        vec![
            0, 2, 23, 2, 0, 0, 0, 1, 33, 255, 255, 131, 255, 255, 5, 146, 210, 4, 0, 1, 1, 116, 0, 1, 120, 0,
        ],
        // found by cargo fuzz: legacy JSON content, which yrs 0.28 decodes
        // with one string too many; applied, it made the document's own
        // encoding undecodable; now refused at decoding
        vec![
            0, 2, 31, 2, 0, 0, 1, 1, 33, 0, 2, 1, 5, 20, 1, 0, 0, 0, 0, 0, 0, 0, 0, 30, 4, 247, 175, 255, 40, 1, 7, 1,
            120, 0,
        ],
        // found by cargo fuzz: a block at clock u32::MAX whose length wraps
        // yrs's clock arithmetic; integrated, it left the document impossible
        // to encode; now refused at decoding (several frames in sequence)
        vec![
            0, 2, 16, 1, 1, 7, 191, 255, 255, 255, 255, 255, 255, 41, 0, 4, 0, 21, 21, 21, 21, 21, 21, 21, 2, 16, 1, 1,
            7, 255, 255, 255, 255, 116, 7, 0, 0, 0, 0, 0, 84, 255, 0, 2, 16, 1, 1, 7, 3, 40, 1, 3, 109, 97, 112, 1,
            110, 1, 126, 0, 125, 42, 0, 255, 87, 69, 70, 84, 255, 0, 0, 26, 1, 2, 7, 4, 7, 1, 70, 84, 255, 0, 0, 26, 1,
            2, 7, 4, 7, 1, 11, 112, 114, 111, 115, 101, 111, 109, 114, 105, 114, 21, 21, 21, 21, 21, 21, 0, 0, 255, 87,
            69, 70, 84, 255, 0, 2, 16, 1, 13, 0, 0, 0, 0, 0, 0, 0, 1, 7, 192, 0, 0, 0, 0, 5, 255, 41, 0, 4, 0, 0, 0,
            255, 87, 65, 70, 84, 255, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 7, 70, 1, 120, 0,
        ],
        // found by cargo fuzz: legacy JSON content again, this time making
        // yrs panic while a panic unwound (an abort); refused at decoding
        vec![
            0, 2, 31, 2, 0, 0, 1, 2, 215, 252, 2, 255, 255, 255, 1, 4, 5, 1, 0, 0, 34, 1, 1, 0, 0, 1, 0, 0, 1, 33, 0,
            1, 120, 0,
        ],
        // found by cargo fuzz: blocks that skip some of their client's clocks,
        // then an update spanning the gap, which yrs 0.28 integrated through
        // freed memory (a segfault); now refused as out of order
        vec![
            0, 2, 16, 1, 1, 7, 64, 68, 1, 4, 1, 0, 0, 0, 0, 24, 0, 69, 0, 0, 1, 59, 1, 6, 7, 11, 4, 1, 4, 116, 101,
            120, 116, 1, 97, 129, 7, 1, 65, 132, 7, 1, 1, 99, 40, 1, 3, 109, 97, 112, 1, 110, 1, 125, 42, 7, 1, 11,
            112, 114, 111, 115, 101, 109, 114, 114, 105, 111, 114, 6, 4, 0, 7, 10, 1, 120, 1, 7, 1, 1, 106, 0, 2, 31,
            2, 0, 0, 1, 0, 33, 0, 2, 9, 1, 65, 5, 30, 4, 219, 254, 0, 0, 255, 1, 0, 43, 0, 0, 0, 0, 33, 216, 1, 120, 0,
            0, 2, 16, 1, 1, 7, 0, 4, 1, 4, 116, 101, 120, 116, 3, 97, 98, 107, 0, 0, 2, 16, 1, 1, 71, 64, 68, 1, 4, 1,
            0, 0, 0, 0, 24, 0, 69, 0, 0, 1, 59, 1, 6, 7, 9, 4, 1, 4, 116, 101, 120, 116, 1, 97, 129, 7, 1, 2, 132, 7,
            1, 1, 99, 40, 1, 3, 109, 97, 112, 1, 110, 1, 125, 42, 7, 1, 11, 112, 114, 111, 115, 101, 109, 114, 114,
            105, 111, 114, 6, 4, 0, 7, 4, 1, 120, 1, 7, 1, 1, 106, 0, 2, 31, 2, 0, 0, 1, 0, 33, 0, 2, 9, 1, 65, 5, 30,
            4, 219, 254, 0, 0, 255, 1, 0, 0, 0, 0, 0, 0, 33, 216, 1, 120, 0, 0, 2, 16, 1, 1, 7, 0, 4, 1, 4, 116, 101,
            120, 116, 3, 97, 98, 107, 0, 255, 87, 69, 70, 84, 255, 0, 1, 7, 1, 1, 255, 87, 69, 70, 84, 255, 0, 1, 7, 1,
            1, 1, 1, 255, 87, 69, 255, 87, 69,
        ],
        // meant as the next case, but its length prefix (23) runs one byte
        // past the frame: refused at decoding, never applied
        vec![
            0, 2, 23, 1, 2, 146, 33, 0, 4, 1, 1, b't', 4, b'E', b'V', b'I', b'L', 4, 0, 146, 33, 0, 1, b'x', 0,
        ],
        // the decoded-but-invalid parent (an item, not a type)
        vec![
            0, 2, 22, 1, 2, 146, 33, 0, 4, 1, 1, b't', 4, b'E', b'V', b'I', b'L', 4, 0, 146, 33, 0, 1, b'x', 0,
        ],
        // found by cargo fuzz on the Hocuspocus endpoint (the same step2 in
        // a y-websocket frame): client 1 in several groups of blocks, which
        // yrs reads into one list out of clock order; applied to the seeded
        // document, yrs wrote through freed memory and weft died with
        // SIGSEGV, which no catch_unwind stops; now refused at decoding
        vec![
            0, 1, 45, 6, 0, 217, 217, 217, 217, 1, 1, 1, 1, 1, 1, 1, 1, 1, 59, 1, 1, 1, 0, 1, 1, 1, 13, 0, 1, 1, 1, 1,
            1, 2, 0, 0, 246, 2, 0, 5, 183, 1, 1, 1, 1, 12, 1, 1,
        ],
    ]
}

fn run(frame_input: &[u8]) -> Outcome {
    let mut awareness = seeded_awareness();
    let mut clocks = weft_core::Clocks::default();
    let mut last = Outcome::Handled;
    for frame in frames(frame_input) {
        last = incoming_frame(&mut awareness, &mut clocks, frame);
        if last != Outcome::Handled {
            break;
        }
    }
    last
}

#[test]
fn seeds_are_handled() {
    for seed in seeds() {
        assert_eq!(run(&seed), Outcome::Handled, "{seed:?}");
    }
}

/// Each regression input has the outcome it must have, in the pure frame path.
#[test]
fn regression_inputs_are_refused_as_expected() {
    let wrong: Vec<String> = regressions()
        .into_iter()
        .filter_map(|case| {
            let got = run(&case.input);
            (got != case.outcome).then(|| format!("{}: {got:?}, not {:?}", case.what, case.outcome))
        })
        .collect();
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// Every regression input, sent to the real server frame by frame on one
/// connection: the connection is closed with the code its outcome means
/// (4400 refused at decoding, 4422 refused when applied) and the reason;
/// nothing of it is applied, stored or relayed; the document stays readable
/// (a newcomer's step2 needs a full encoding) and the server alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_regression_input_is_refused_by_the_server() {
    let server = Server::start();
    let mut keeper = server.connect("poison").await;
    keeper.set_awareness(r#"{"n":"keeper"}"#);
    let text = keeper.doc.get_or_insert_text("t");
    keeper.edit(|txn| text.push(txn, "fine"));
    let observer = server.connect("poison").await;
    observer
        .wait_for("the keeper's edit", 5 * SECOND, |c| c.text("t") == "fine")
        .await
        .unwrap();
    for case in regressions() {
        let code = match case.outcome {
            Outcome::Undecodable => 4400,
            Outcome::Refused => 4422,
            Outcome::Handled => unreachable!("every regression input is refused"),
        };
        let applied = server.metric("weft_updates_applied_total").await;
        let relayed = observer.seen().updates;
        let bad = server.connect("poison").await;
        // One frame at a time, as the pure path takes them: a connection
        // decodes its next frame while the actor still applies the last one,
        // so frames sent at once could end on a later frame's refusal. A
        // query-awareness after each frame is answered only once the frame
        // was handled.
        for frame in frames(&case.input) {
            let answers = bad.seen().awareness_frames;
            bad.send_raw(frame.to_vec());
            bad.query_awareness();
            bad.wait_for("the frame handled or refused", 10 * SECOND, |b| {
                b.seen().ended || b.seen().awareness_frames > answers
            })
            .await
            .unwrap();
            if bad.seen().ended {
                break;
            }
        }
        let closed = bad.wait_closed(10 * SECOND).await.unwrap();
        let (got, reason) = closed.unwrap_or_else(|| panic!("{}: closed without a code", case.what));
        assert_eq!(got, code, "{}: {reason}\n{}", case.what, server.log());
        assert!(reason.contains(case.reason), "{}: {reason}", case.what);
        drop(bad);
        // Not applied (the counter moves at acceptance), hence neither
        // stored nor relayed: the observer got nothing.
        assert_eq!(
            server.metric("weft_updates_applied_total").await,
            applied,
            "{}: applied",
            case.what
        );
        let newcomer = server.connect("poison").await;
        assert_eq!(newcomer.text("t"), "fine", "{}", case.what);
        drop(newcomer);
        assert_eq!(observer.seen().updates, relayed, "{}: relayed", case.what);
    }
    // still serving
    keeper.edit(|txn| text.push(txn, "!"));
    observer
        .wait_for("the next edit", 5 * SECOND, |c| c.text("t") == "fine!")
        .await
        .unwrap();
    assert_eq!(server.metric("weft_actor_panics_total").await, 0.0);
}

/// An update that skips some of its client's clocks (the shape of the
/// fuzz find that crashed yrs) is refused with a reason; the document and
/// its other peers carry on, and the same edits sent in order are accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_that_skip_clocks_are_refused_by_the_server() {
    use yrs::{Text, Transact};
    let server = Server::start();
    let keeper = server.connect("gaps").await;
    let text = keeper.doc.get_or_insert_text("t");
    keeper.edit(|txn| text.push(txn, "fine"));
    let writer = yrs::Doc::with_client_id(77);
    let mut edits = Vec::new();
    for part in [" a", " b", " c"] {
        let t = writer.get_or_insert_text("x");
        let mut txn = writer.transact_mut();
        t.push(&mut txn, part);
        edits.push(txn.encode_update_v1());
    }
    let applied = server
        .wait_metric("weft_updates_applied_total", 5 * SECOND, |v| v >= 1.0)
        .await;
    let relayed = keeper.seen().updates;
    let bad = server.connect("gaps").await;
    bad.send_raw(weft::protocol::encode_update(&edits[2]).to_vec());
    let (code, reason) = bad.wait_closed(5 * SECOND).await.unwrap().unwrap();
    assert_eq!(code, 4422, "{}", server.log());
    assert!(reason.contains("must arrive in order"), "{reason}");
    // The server's document, not the keeper's copy: nothing of the refused
    // update was accepted (so stored) or relayed.
    assert_eq!(server.metric("weft_updates_applied_total").await, applied);
    let content = server.get("/api/docs/gaps").await.json()["content"].clone();
    assert_eq!(content["t"], "fine");
    assert!(content.get("x").is_none_or(|x| x == ""), "{content}");
    assert_eq!(keeper.seen().updates, relayed, "the refused update was relayed");
    let good = server.connect("gaps").await;
    for edit in &edits {
        good.send_raw(weft::protocol::encode_update(edit).to_vec());
    }
    keeper
        .wait_for("the edits in order", 5 * SECOND, |c| c.text("x") == " a b c")
        .await
        .unwrap();
    // Accepted once each; relayed in one to three frames (a batch's
    // consecutive updates from one sender go out joined).
    assert_eq!(server.metric("weft_updates_applied_total").await, applied + 3.0);
    let frames = keeper.seen().updates - relayed;
    assert!((1..=3).contains(&frames), "{frames} frames for three edits");
    assert_eq!(server.metric("weft_actor_panics_total").await, 0.0);
}

fn mutate(seed: &[u8], flips: &[(usize, u8)], cut: Option<usize>, insert: &[(usize, u8)]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for &(pos, mask) in flips {
        if !out.is_empty() {
            let i = pos % out.len();
            out[i] ^= mask;
        }
    }
    for &(pos, byte) in insert {
        let i = pos % (out.len() + 1);
        out.insert(i, byte);
    }
    if let Some(cut) = cut {
        out.truncate(cut % (out.len() + 1));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Arbitrary bytes never panic the frame path.
    #[test]
    fn random_frames_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        run(&data);
    }

    /// Valid frames with flipped, inserted or cut bytes never panic it.
    #[test]
    fn mutated_frames_never_panic(
        which in any::<usize>(),
        flips in proptest::collection::vec((any::<usize>(), 1u8..=255), 0..4),
        insert in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..3),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let seeds = seeds();
        let seed = &seeds[which % seeds.len()];
        run(&mutate(seed, &flips, cut, &insert));
    }

    /// The Hocuspocus endpoint's decoder: every y-sync seed behind an
    /// address, and Hocuspocus's own messages, mutated, never panic it.
    #[test]
    fn mutated_hocuspocus_frames_never_panic(
        which in any::<usize>(),
        flips in proptest::collection::vec((any::<usize>(), 1u8..=255), 0..4),
        insert in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..3),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let seeds = hocuspocus_seeds();
        let seed = &seeds[which % seeds.len()];
        run_hocuspocus(&mutate(seed, &flips, cut, &insert));
    }

    #[test]
    fn random_hocuspocus_frames_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        run_hocuspocus(&data);
    }
}

/// Valid frames of the Hocuspocus endpoint: the y-sync seeds behind an
/// address, and one of each of Hocuspocus's own messages.
fn hocuspocus_seeds() -> Vec<Vec<u8>> {
    use weft_core::hocuspocus as hp;
    // A Hocuspocus frame holds one message: the seeds that are several are left out.
    let one = |s: &Vec<u8>| weft::protocol::decode_frame(&s.clone().into()).is_ok_and(|m| m.len() == 1);
    let mut seeds: Vec<Vec<u8>> = seeds()
        .iter()
        .filter(|s| one(s))
        .map(|s| hp::address("doc", s).to_vec())
        .collect();
    seeds.push(
        hp::address(
            "doc\0session",
            &[2, 0, 3, b'a', b'b', b'c', 5, b'4', b'.', b'8', b'.', b'0'],
        )
        .to_vec(),
    );
    seeds.push(hp::address("doc", &hp::stateless("{\"x\":1}")).to_vec());
    seeds.push(hp::address("doc", &[hp::CLOSE as u8]).to_vec());
    seeds.push(vec![hp::PONG]);
    seeds
}

fn run_hocuspocus(input: &[u8]) -> Outcome {
    let mut awareness = seeded_awareness();
    let mut clocks = weft_core::Clocks::default();
    let mut last = Outcome::Handled;
    for frame in frames(input) {
        last = weft_core::fuzz::hocuspocus_frame(&mut awareness, &mut clocks, frame);
        if last != Outcome::Handled {
            break;
        }
    }
    last
}

#[test]
fn hocuspocus_seeds_are_handled() {
    for seed in hocuspocus_seeds() {
        assert_eq!(run_hocuspocus(&seed), Outcome::Handled, "{seed:?}");
    }
}

/// The real server under a stream of mutated frames from many connections:
/// each bad one closes its own connection, and the server keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_survives_mutated_frames() {
    let server = Server::builder().arg("--rate-limit", 0).start();
    let keeper = server.connect("fuzzed").await;
    let text = keeper.doc.get_or_insert_text("kept");
    keeper.edit(|txn| text.push(txn, "before"));

    let seeds = seeds();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut inputs: Vec<Vec<u8>> = regressions().into_iter().map(|r| r.input).collect();
    for _ in 0..300 {
        let seed = &seeds[next() as usize % seeds.len()];
        let flips: Vec<(usize, u8)> = (0..next() % 4)
            .map(|_| (next() as usize, (next() % 255 + 1) as u8))
            .collect();
        let insert: Vec<(usize, u8)> = (0..next() % 2).map(|_| (next() as usize, next() as u8)).collect();
        let cut = (next() % 3 == 0).then(|| next() as usize);
        inputs.push(mutate(seed, &flips, cut, &insert));
    }
    for chunk in inputs.chunks(10) {
        let client = Client::connect(&server.ws, "fuzzed").await.unwrap();
        for input in chunk {
            for frame in frames(input) {
                client.send_raw(frame.to_vec());
            }
        }
        client.close();
        let _ = client.wait_closed(5 * SECOND).await;
    }
    // still serving, the good content intact and still editable
    keeper.edit(|txn| text.push(txn, " after"));
    let check = server.connect("fuzzed").await;
    check
        .wait_for("the keeper's edits", 10 * SECOND, |c| c.text("kept") == "before after")
        .await
        .unwrap();
    assert!(server.get("/healthz").await.status == 200);
}

/// Writes the seeds to fuzz/corpus/frame (run by hand when they change:
/// `cargo test --test fuzz -- --ignored write_seed_corpus`).
#[test]
#[ignore]
fn write_seed_corpus() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/frame");
    std::fs::create_dir_all(&dir).unwrap();
    let regressions: Vec<Vec<u8>> = regressions().into_iter().map(|r| r.input).collect();
    for (i, seed) in seeds().iter().chain(regressions.iter()).enumerate() {
        std::fs::write(dir.join(format!("seed-{i:02}")), seed).unwrap();
    }
}

/// Small frames that announce huge counts, and updates nesting values deeper
/// than yrs's recursive decoder can take (a stack overflow aborts the whole
/// process): each closes only its own connection with 4400, refused by the
/// validator before yrs reads it (the reason is the validator's), and the
/// server's memory never grows toward what the counts announce.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocation_bombs_and_deep_nesting_cost_one_connection() {
    fn var(n: u64) -> Vec<u8> {
        use yrs::encoding::write::Write;
        let mut v = Vec::new();
        v.write_var(n);
        v
    }
    fn framed(header: &[u8], payload: Vec<u8>) -> Vec<u8> {
        [header.to_vec(), var(payload.len() as u64), payload].concat()
    }
    let huge = 200_000_000;
    let mut nested = vec![1, 1, 5, 0, 8, 1, 1, b't', 1];
    for _ in 0..300_000 {
        nested.extend([117, 1]);
    }
    nested.extend([126, 0]);
    let counted = "claims 200000000 entries";
    let frames = [
        (framed(&[1], [var(huge), vec![1, 1, 0]].concat()), counted), // awareness
        (framed(&[0, 0], [var(huge), vec![1, 1]].concat()), counted), // step1
        (framed(&[0, 2], [var(huge), vec![1, 1, 0]].concat()), counted), // update: clients
        (
            framed(
                &[0, 2],
                [vec![1, 1, 5, 0, 8, 1, 1, b't', 1, 118], var(huge), vec![0]].concat(),
            ),
            counted,
        ), // Any map
        (framed(&[0, 2], nested), "nested deeper than 64 levels"),    // 300,000 levels deep
    ];
    let server = Server::start();
    let keeper = server.connect("bombs").await;
    let text = keeper.doc.get_or_insert_text("t");
    keeper.edit(|txn| text.push(txn, "alive"));
    for (i, (frame, reason)) in frames.into_iter().enumerate() {
        let bad = server.connect("bombs").await;
        bad.send_raw(frame);
        let closed = bad.wait_closed(30 * SECOND).await.unwrap();
        assert_eq!(
            closed.as_ref().map(|c| c.0),
            Some(4400),
            "frame {i}: {closed:?} {}",
            server.log()
        );
        let said = closed.map(|c| c.1).unwrap_or_default();
        assert!(said.contains(reason), "frame {i}: refused by the validator? {said}");
    }
    // 200 million entries of anything are gigabytes; the server stayed small.
    let peak = server.peak_rss_kib();
    assert!(peak < 256 * 1024, "peak RSS {peak} KiB");
    let check = server.connect("bombs").await;
    check
        .wait_for("the document", 5 * SECOND, |c| c.text("t") == "alive")
        .await
        .unwrap();
}

/// Shared types nested thousands deep (each map inside the previous) make
/// yrs recurse once per level when the outer one is deleted; a stack
/// overflow aborts the process. A document may hold only so many shared
/// types (4413 beyond), and weft's stacks are sized for that many levels:
/// storing, rendering, versioning and deleting a chain as deep as allowed is
/// survived (restore refuses such depths with a reason).
#[test]
fn deeply_nested_shared_types_are_bounded_and_survived() {
    // The test's own clients hold the same deep documents: give their
    // threads the stacks the server gives its own.
    let stack = weft::doc::stack_size_for(50_000);
    std::thread::Builder::new()
        .stack_size(stack)
        .spawn(move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_stack_size(stack)
                .enable_all()
                .build()
                .unwrap()
                .block_on(deeply_nested())
        })
        .unwrap()
        .join()
        .unwrap();
}

async fn deeply_nested() {
    use yrs::{MapPrelim, MapRef};
    fn chain(depth: usize) -> Doc {
        let doc = Doc::new();
        {
            let mut txn = doc.transact_mut();
            let mut cur: MapRef = txn.get_or_insert_map("m");
            for _ in 0..depth {
                cur = cur.insert(&mut txn, "k", MapPrelim::default());
            }
        }
        doc
    }
    let server = Server::builder()
        .arg("--max-doc-types", 50_000)
        .arg("--rate-limit", 0)
        .start();
    // (a client's answer to the server's step1 carries its whole document)
    let too_deep = Client::connect_with(&server.ws, "nested", chain(60_000)).await.unwrap();
    assert_eq!(
        too_deep.wait_closed(10 * SECOND).await.unwrap().map(|c| c.0),
        Some(4413)
    );

    let writer = Client::connect_with(&server.ws, "nested", chain(49_000)).await.unwrap();
    writer.wait_synced().await.unwrap();
    server
        .wait_metric("weft_updates_applied_total", 30 * SECOND, |v| v >= 1.0)
        .await;
    assert_eq!(server.get("/api/docs/nested").await.status, 200);
    let version = server.post("/api/docs/nested/versions", "", b"").await.json();
    let m = writer.doc.get_or_insert_map("m");
    writer.edit(|txn| {
        m.remove(txn, "k");
    });
    let observer = server.connect("nested").await;
    observer
        .wait_for("the deletion", 30 * SECOND, |o| {
            o.doc.get_or_insert_map("m").len(&o.doc.transact()) == 0
        })
        .await
        .unwrap();
    // restore walks documents recursively, so it refuses such depths
    let restored = server
        .post(&format!("/api/docs/nested/versions/{}/restore", version["id"]), "", b"")
        .await;
    assert_eq!(restored.status, 422, "{}", restored.text());
    assert!(restored.text().contains("deeper than 256 levels"));
    assert_eq!(server.metric("weft_actor_panics_total").await, 0.0);
    server.connect("nested").await;
}
