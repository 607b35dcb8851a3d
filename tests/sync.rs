//! The sync server against its real binary, with the y-sync test client.

mod common;

use common::{flood_until_a_slow_peer_goes, map_get, Client, Server, SECOND};
use yrs::encoding::write::Write;
use yrs::{Map, Text, Transact};

/// Two peers editing the same Text and Map at once end with identical content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_converge_on_concurrent_edits() {
    let server = Server::start();
    let a = server.connect("notes/today").await;
    let b = server.connect("notes/today").await;
    let ta = a.doc.get_or_insert_text("t");
    let tb = b.doc.get_or_insert_text("t");
    let ma = a.doc.get_or_insert_map("m");
    let mb = b.doc.get_or_insert_map("m");
    for i in 0..20 {
        a.edit(|txn| ta.insert(txn, 0, &format!("a{i} ")));
        b.edit(|txn| tb.insert(txn, 0, &format!("b{i} ")));
        a.edit(|txn| {
            ma.insert(txn, "shared", format!("a{i}"));
        });
        b.edit(|txn| {
            mb.insert(txn, "shared", format!("b{i}"));
            mb.insert(txn, format!("b{i}"), i as i64);
        });
    }
    a.wait_for("a to converge", 10 * SECOND, |a| a.state_vector_eq(&b))
        .await
        .unwrap();
    b.wait_for("b to converge", 10 * SECOND, |b| b.state_vector_eq(&a))
        .await
        .unwrap();
    assert_eq!(a.text("t"), b.text("t"));
    // "a0 ".."a9 " are 3 characters, "a10 ".."a19 " are 4; the same for b
    assert_eq!(a.text("t").len(), 2 * (10 * 3 + 10 * 4));
    assert!(a.text("t").contains("a19 ") && a.text("t").contains("b0 "));
    assert_eq!(map_get(&a, "shared"), map_get(&b, "shared"));
    assert_eq!(map_get(&a, "b7").as_deref(), Some("7"));
}

trait Converge {
    fn state_vector_eq(&self, other: &Client) -> bool;
}

impl Converge for Client {
    fn state_vector_eq(&self, other: &Client) -> bool {
        use yrs::ReadTxn;
        self.doc.transact().state_vector() == other.doc.transact().state_vector() && self.text("t") == other.text("t")
    }
}

/// A peer that joins after the edits receives the whole document in step2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_joiner_gets_full_state() {
    let server = Server::start();
    let a = server.connect("late").await;
    let text = a.doc.get_or_insert_text("t");
    for word in ["one ", "two ", "three"] {
        a.edit(|txn| text.push(txn, word));
    }
    let observer = server.connect("late").await;
    observer
        .wait_for("a's edits", 5 * SECOND, |o| o.text("t") == "one two three")
        .await
        .unwrap();
    // and the early peer is not sent its own edits back
    let late = Client::connect(&server.ws, "late").await.unwrap();
    late.wait_for("full state", 5 * SECOND, |c| {
        c.text("t") == "one two three" && c.seen().synced
    })
    .await
    .unwrap();
    drop(late);
    assert_eq!(
        a.seen().updates,
        1,
        "only the initial step2: a must not get its own updates back"
    );
}

/// On connect the server sends step1, then the awareness states, in two
/// separate frames (y-websocket 3.x reads one message per frame).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_sends_step1_then_awareness_in_separate_frames() {
    let server = Server::start();
    let mut a = server.connect("frames").await;
    a.set_awareness(r#"{"user":{"name":"alice"}}"#);
    a.wait_for("own awareness echoed", 5 * SECOND, |a| !a.seen().present().is_empty())
        .await
        .unwrap();

    let b = Client::connect(&server.ws, "frames").await.unwrap();
    b.wait_for("two frames", 5 * SECOND, |b| b.seen().first_frames.len() >= 3)
        .await
        .unwrap();
    let frames = b.seen().first_frames;
    assert_eq!(&frames[0][..2], &[0, 0], "first frame is sync step1");
    assert_eq!(
        frames[0].len(),
        2 + 1 + (frames[0][2] as usize),
        "step1 frame holds one message"
    );
    assert_eq!(frames[1][0], 1, "second frame is awareness");
    assert_eq!(&frames[2][..2], &[0, 1], "then the step2 answering b's step1");
    assert_eq!(b.seen().present(), vec![a.client_id()]);
}

/// Awareness reaches every peer, the sender included, and is removed (null,
/// clock + 1) for everyone when its sender disconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awareness_appears_and_disappears_with_its_sender() {
    let server = Server::start();
    let mut a = server.connect("presence").await;
    let b = server.connect("presence").await;
    a.set_awareness(r##"{"user":{"name":"alice","color":"#f00"}}"##);
    let alice = a.client_id();
    b.wait_for("alice present at b", 5 * SECOND, |b| b.seen().present() == vec![alice])
        .await
        .unwrap();
    a.wait_for("alice echoed to a", 5 * SECOND, |a| a.seen().present() == vec![alice])
        .await
        .unwrap();
    let (clock, json) = b.seen().awareness[&alice].clone();
    assert_eq!(clock, 1);
    assert!(json.contains("alice"));

    a.close();
    b.wait_for("alice removed at b", 5 * SECOND, |b| b.seen().present().is_empty())
        .await
        .unwrap();
    let (clock, json) = b.seen().awareness[&alice].clone();
    assert_eq!((clock, json.as_str()), (2, "null"), "removal is null with clock + 1");
}

/// A client that reconnects resends its state with the clock it had; it is
/// visible again at once, not after its renewals catch up with the removal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_client_is_visible_again_at_once() {
    let server = Server::start();
    let mut a = server.connect("comeback").await;
    let b = server.connect("comeback").await;
    a.set_awareness(r#"{"user":{"name":"alice"}}"#);
    let alice = a.client_id();
    b.wait_for("alice present", 5 * SECOND, |b| b.seen().present() == vec![alice])
        .await
        .unwrap();
    let doc = a.doc.clone();
    a.close();
    b.wait_for("alice gone", 5 * SECOND, |b| b.seen().present().is_empty())
        .await
        .unwrap();

    // same document, same client ID; its awareness clock starts where the
    // old connection's was (1), as y-websocket's does
    let mut back = Client::connect_with(&server.ws, "comeback", doc).await.unwrap();
    back.wait_synced().await.unwrap();
    back.set_awareness(r#"{"user":{"name":"alice"}}"#);
    b.wait_for("alice back", 5 * SECOND, |b| b.seen().present() == vec![alice])
        .await
        .unwrap();
    let (clock, _) = b.seen().awareness[&alice].clone();
    assert_eq!(clock, 3, "lifted above the removal at clock 2");
    back.wait_for("the new clock echoed to alice", 5 * SECOND, |c| {
        c.seen().awareness.get(&alice).map(|(clock, _)| *clock) == Some(3)
    })
    .await
    .unwrap();
}

/// y-websocket clients send back every awareness change they receive; such
/// an echo does not make a connection speak for someone else, so closing it
/// removes only its own client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_connection_removes_only_its_own_clients() {
    let server = Server::start();
    let mut a = server.connect("echo").await;
    let mut b = server.connect("echo").await;
    let observer = server.connect("echo").await;
    a.set_awareness(r#"{"n":"a"}"#);
    b.set_awareness(r#"{"n":"b"}"#);
    let (ida, idb) = (a.client_id(), b.client_id());
    let mut both = vec![ida, idb];
    both.sort();
    observer
        .wait_for("both present", 5 * SECOND, |o| o.seen().present() == both)
        .await
        .unwrap();
    // b echoes a's state back, as y-websocket does
    b.wait_for("a at b", 5 * SECOND, |b| b.seen().present().contains(&ida))
        .await
        .unwrap();
    let (clock, json) = b.seen().awareness[&ida].clone();
    b.send_raw(awareness_frame(ida, clock, &json));
    b.close();
    observer
        .wait_for("b gone", 5 * SECOND, |o| o.seen().present() == vec![ida])
        .await
        .unwrap();
    // a is still here: the next renewal is not needed to show it
    a.set_awareness(r#"{"n":"a2"}"#);
    observer
        .wait_for("a renewed", 5 * SECOND, |o| o.seen().awareness[&ida].1.contains("a2"))
        .await
        .unwrap();
    assert_eq!(observer.seen().present(), vec![ida]);
}

/// A client that says goodbye itself (null state) and connects again with
/// its old clock is visible again at once too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_said_goodbye_is_visible_when_it_returns() {
    let server = Server::start();
    let mut a = server.connect("goodbye").await;
    let observer = server.connect("goodbye").await;
    a.set_awareness(r#"{"n":1}"#); // clock 1
    let ida = a.client_id();
    observer
        .wait_for("a", 5 * SECOND, |o| o.seen().present() == vec![ida])
        .await
        .unwrap();
    a.set_awareness("null"); // clock 2: goodbye
    observer
        .wait_for("a left", 5 * SECOND, |o| o.seen().present().is_empty())
        .await
        .unwrap();
    a.close();
    let doc = a.doc.clone();
    let mut back = Client::connect_with(&server.ws, "goodbye", doc).await.unwrap();
    back.wait_synced().await.unwrap();
    back.set_awareness(r#"{"n":1}"#); // clock 1 again
    observer
        .wait_for("a back", 5 * SECOND, |o| o.seen().present() == vec![ida])
        .await
        .unwrap();
}

fn awareness_frame(client: u64, clock: u32, json: &str) -> Vec<u8> {
    use yrs::sync::awareness::{AwarenessUpdate, AwarenessUpdateEntry};
    use yrs::updates::encoder::Encode;
    let mut clients = std::collections::HashMap::new();
    clients.insert(
        yrs::ClientID::new(client),
        AwarenessUpdateEntry {
            clock,
            json: json.into(),
        },
    );
    yrs::sync::Message::Awareness(AwarenessUpdate { clients }).encode_v1()
}

/// query-awareness is answered, to the asker alone, with an awareness frame
/// holding every known state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_awareness_is_answered() {
    let server = Server::start();
    let mut a = server.connect("query").await;
    let mut c = server.connect("query").await;
    a.set_awareness(r#"{"n":"a"}"#);
    c.set_awareness(r#"{"n":"c"}"#);
    let mut both = vec![a.client_id(), c.client_id()];
    both.sort();
    let b = server.connect("query").await;
    for peer in [&a, &b, &c] {
        peer.wait_for("both states", 5 * SECOND, |p| p.seen().present() == both)
            .await
            .unwrap();
    }
    // Nobody changes anything now: the next awareness frame b gets is the answer.
    let before = b.seen();
    let others = [a.seen().awareness_frames, c.seen().awareness_frames];
    b.query_awareness();
    b.wait_for("an awareness frame answering the query", 5 * SECOND, |b| {
        b.seen().awareness_frames > before.awareness_frames
    })
    .await
    .unwrap();
    let after = b.seen();
    assert_eq!(after.awareness_frames, before.awareness_frames + 1);
    let mut answered = after.last_awareness.clone();
    answered.sort();
    assert_eq!(answered, both, "the answer holds every known state");
    assert_eq!(after.updates, before.updates, "no document update came with it");
    // Only the asker is answered: a marker edit reaches a and c after any
    // answer would have, and they got no awareness frame meanwhile.
    let text = b.doc.get_or_insert_text("t");
    b.edit(|txn| text.push(txn, "marker"));
    for (peer, frames) in [(&a, others[0]), (&c, others[1])] {
        peer.wait_for("the marker", 5 * SECOND, |p| p.text("t") == "marker")
            .await
            .unwrap();
        assert_eq!(peer.seen().awareness_frames, frames, "an answer went to another peer");
    }
}

/// Several messages in one incoming frame are each handled, in order (the
/// server sends one per frame, but accepts more).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_messages_in_one_frame_are_each_handled() {
    use yrs::updates::encoder::Encode;
    let server = Server::start();
    let mut a = server.connect("packed").await;
    a.set_awareness(r#"{"n":"a"}"#);
    let b = server.connect("packed").await;
    b.wait_for("a's state", 5 * SECOND, |b| b.seen().present() == vec![a.client_id()])
        .await
        .unwrap();
    let doc = yrs::Doc::new();
    let text = doc.get_or_insert_text("t");
    let mut updates = Vec::new();
    for word in ["one ", "two"] {
        let mut txn = doc.transact_mut();
        text.push(&mut txn, word);
        updates.push(txn.encode_update_v1());
    }
    let message = |m: yrs::sync::Message| m.encode_v1();
    let frame = [
        message(yrs::sync::Message::Sync(yrs::sync::SyncMessage::Update(
            updates[0].clone(),
        ))),
        message(yrs::sync::Message::Sync(yrs::sync::SyncMessage::Update(
            updates[1].clone(),
        ))),
        message(yrs::sync::Message::AwarenessQuery),
    ]
    .concat();
    let answers = b.seen().awareness_frames;
    b.send_raw(frame);
    a.wait_for("both updates, in order", 5 * SECOND, |a| a.text("t") == "one two")
        .await
        .unwrap();
    b.wait_for("the query answered", 5 * SECOND, |b| {
        b.seen().awareness_frames > answers
    })
    .await
    .unwrap();
    assert!(!b.seen().ended);
}

/// Awareness states not renewed within the timeout are removed for everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_awareness_expires() {
    let server = Server::builder().arg("--awareness-timeout-ms", 300).start();
    let mut a = server.connect("expiry").await;
    let b = server.connect("expiry").await;
    a.set_awareness(r#"{"n":1}"#);
    b.wait_for("present", 5 * SECOND, |b| !b.seen().present().is_empty())
        .await
        .unwrap();
    // `a` stays connected but stops renewing.
    b.wait_for("expired", 5 * SECOND, |b| b.seen().present().is_empty())
        .await
        .unwrap();
    assert_eq!(b.seen().awareness[&a.client_id()].1, "null");
}

/// Fifty documents edited at the same time each keep only their own content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_documents_in_parallel_stay_separate() {
    let server = Server::start();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let ws = server.ws.clone();
        tasks.push(tokio::spawn(async move {
            let room = format!("parallel/{i}");
            let a = Client::connect(&ws, &room).await.unwrap();
            let b = Client::connect(&ws, &room).await.unwrap();
            a.wait_synced().await.unwrap();
            b.wait_synced().await.unwrap();
            let text = a.doc.get_or_insert_text("t");
            for j in 0..5 {
                a.edit(|txn| text.push(txn, &format!("{i}.{j};")));
            }
            let want: String = (0..5).map(|j| format!("{i}.{j};")).collect();
            b.wait_for("b to receive", 20 * SECOND, |b| b.text("t") == want)
                .await
                .unwrap();
            b.text("t")
        }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        let text = task.await.unwrap();
        assert_eq!(text, (0..5).map(|j| format!("{i}.{j};")).collect::<String>());
    }
}

/// Names: percent-decoded path, `/` allowed, query string ignored; bad names
/// refused at the upgrade with 400 and a reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_names_come_from_the_path() {
    let server = Server::start();
    let a = server.connect("caf%C3%A9/menu?token=abc").await;
    let text = a.doc.get_or_insert_text("t");
    a.edit(|txn| text.push(txn, "x"));
    let b = server.connect("caf%C3%A9/menu").await;
    b.wait_for("same document", 5 * SECOND, |b| b.text("t") == "x")
        .await
        .unwrap();

    for (path, reason) in [
        ("/a%00b", "control character"),
        (&format!("/{}", "x".repeat(513)), "513 bytes"),
        ("/%FF%FE", "UTF-8"),
        ("/healthz/x", "reserved"),
    ] {
        let refused = Client::refused(&server.ws, path).await.unwrap();
        assert_eq!(refused.status, 400, "{path}");
        assert!(refused.body.contains(reason), "{path}: {}", refused.body);
        assert!(refused.body.starts_with("{\"error\":"), "JSON reason: {}", refused.body);
    }
    assert!(Client::connect(&server.ws, &"x".repeat(512)).await.is_ok());
}

async fn assert_only_bad_connection_closed(server: &Server, room: &str, bad: Client, code: u16) {
    let good = server.connect(room).await;
    let other = server.connect(room).await;
    let closed = bad.wait_closed(5 * SECOND).await.unwrap();
    assert_eq!(closed.as_ref().map(|c| c.0), Some(code), "close frame: {closed:?}");
    // the document is unchanged and the other peers keep working
    let text = good.doc.get_or_insert_text("t");
    good.edit(|txn| text.push(txn, "still fine"));
    other
        .wait_for("an update after the bad peer", 5 * SECOND, |o| {
            o.text("t").ends_with("still fine")
        })
        .await
        .unwrap();
    let fresh = server.connect(room).await;
    fresh
        .wait_for("state", 5 * SECOND, |f| f.text("t").ends_with("still fine"))
        .await
        .unwrap();
    assert!(!fresh.text("t").contains("EVIL"), "refused content must not be stored");
}

/// An undecodable frame closes that connection alone with 4400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_frame_closes_only_its_connection() {
    let server = Server::start();
    let bad = server.connect("bad1").await;
    bad.send_raw(vec![0, 2, 200, 1, 2, 3]);
    assert_only_bad_connection_closed(&server, "bad1", bad, 4400).await;
    server.wait_log("bad message", 5 * SECOND).await.unwrap();
    assert!(server
        .log()
        .lines()
        .any(|l| l.contains("WARN") && l.contains("doc=bad1") && l.contains("peer=p")));
}

/// An update that decodes but the document refuses closes with 4422, and
/// leaves the document as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_update_closes_only_its_connection() {
    let server = Server::start();
    let bad = server.connect("bad2").await;
    // An item whose parent is another item that is not a type: yrs refuses
    // it ("block parent ... must be deleted or shared ref type").
    bad.send_update(invalid_parent_update());
    assert_only_bad_connection_closed(&server, "bad2", bad, 4422).await;
}

/// A text frame closes with 1003.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_frame_closes_only_its_connection() {
    let server = Server::start();
    let bad = server.connect("bad3").await;
    bad.send_text("hello?");
    assert_only_bad_connection_closed(&server, "bad3", bad, 1003).await;
}

/// A frame over the size limit closes with 1009.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frame_closes_only_its_connection() {
    let server = Server::builder().arg("--max-message-size", 64 * 1024).start();
    let bad = server.connect("bad4").await;
    let doc = yrs::Doc::new();
    let text = doc.get_or_insert_text("t");
    let mut txn = doc.transact_mut();
    text.push(&mut txn, &"EVIL".repeat(32 * 1024));
    bad.send_update(txn.encode_update_v1());
    drop(txn);
    assert_only_bad_connection_closed(&server, "bad4", bad, 1009).await;
}

/// Raw garbage below the WebSocket layer does not take the server down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_websocket_framing_is_survived() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Server::start();
    let mut raw = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
    let handshake = format!(
        "GET /framing HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.addr
    );
    raw.write_all(handshake.as_bytes()).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = raw.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 101"));
    // unmasked frame with reserved bits and a bogus opcode, then junk
    raw.write_all(&[0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3])
        .await
        .unwrap();
    let _ = tokio::time::timeout(5 * SECOND, raw.read(&mut buf)).await;
    drop(raw);
    let a = server.connect("framing").await;
    let text = a.doc.get_or_insert_text("t");
    a.edit(|txn| text.push(txn, "alive"));
    let b = server.connect("framing").await;
    b.wait_for("alive", 5 * SECOND, |b| b.text("t") == "alive")
        .await
        .unwrap();
}

/// A peer that stops reading is disconnected (4503) once its queue is full;
/// the other peers keep receiving every update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_peer_is_disconnected_and_others_keep_receiving() {
    // The writer sends faster than the default rate, whose burst is
    // clamped to the 8-frame queue: this test is about slow readers.
    let server = Server::builder().arg("--peer-queue", 8).arg("--rate-limit", 0).start();
    let writer = server.connect("slow").await;
    let fast = server.connect("slow").await;
    let slow = server.connect("slow").await;
    slow.pause_reading(true);
    // 64 KiB values fill the socket buffers, then the 8-frame queue.
    flood_until_a_slow_peer_goes(&server, &writer, &fast, 64 * 1024).await;
    let map = writer.doc.get_or_insert_map("m");
    slow.pause_reading(false);
    let closed = slow.wait_closed(10 * SECOND).await.unwrap();
    assert_eq!(closed.map(|c| c.0), Some(4503));
    writer.edit(|txn| {
        map.insert(txn, "n", -1i64);
    });
    fast.wait_for("fast still served", 10 * SECOND, |f| {
        map_get(f, "n").as_deref() == Some("-1")
    })
    .await
    .unwrap();
    assert!(!fast.seen().ended && !writer.seen().ended);
    assert_eq!(
        server.metric("weft_disconnects_total{reason=\"slow_consumer\"}").await,
        1.0
    );
    server.wait_log("disconnecting peer", SECOND).await.unwrap();
}

/// A document with no peers leaves memory after the grace period; its
/// content is loaded again on the next join.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_document_is_unloaded() {
    let server = Server::builder().arg("--unload-after-ms", 200).start();
    let a = server.connect("idle").await;
    let text = a.doc.get_or_insert_text("t");
    a.edit(|txn| text.push(txn, "kept"));
    let b = server.connect("idle").await;
    b.wait_for("edit", 5 * SECOND, |b| b.text("t") == "kept").await.unwrap();
    assert_eq!(server.metric("weft_documents_loaded").await, 1.0);
    a.close();
    b.close();
    server
        .wait_metric("weft_documents_loaded", 5 * SECOND, |v| v == 0.0)
        .await;
    assert_eq!(server.metric("weft_documents_unloaded_total").await, 1.0);
    let c = server.connect("idle").await;
    c.wait_for("reloaded content", 5 * SECOND, |c| c.text("t") == "kept")
        .await
        .unwrap();
}

/// SIGTERM closes sockets with 1001 and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_with_1001_and_exits_cleanly() {
    let mut server = Server::start();
    let a = server.connect("bye").await;
    let text = a.doc.get_or_insert_text("t");
    a.edit(|txn| text.push(txn, "saved"));
    let b = server.connect("bye").await;
    b.wait_for("edit", 5 * SECOND, |b| b.text("t") == "saved")
        .await
        .unwrap();
    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}\n{}", server.log());
    assert_eq!(a.wait_closed(5 * SECOND).await.unwrap().map(|c| c.0), Some(1001));
    assert_eq!(b.wait_closed(5 * SECOND).await.unwrap().map(|c| c.0), Some(1001));
    let server = server.restart();
    let c = server.connect("bye").await;
    c.wait_for("content after restart", 5 * SECOND, |c| c.text("t") == "saved")
        .await
        .unwrap();
}

/// Logs carry the document and the peer on every connection line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_and_leaves_are_logged_with_doc_and_peer() {
    let server = Server::start();
    let a = server.connect("logged").await;
    a.close();
    server.wait_log("left", 5 * SECOND).await.unwrap();
    let log = server.log();
    let joined = log.lines().find(|l| l.contains("joined writable")).unwrap();
    assert!(
        joined.contains("INFO") && joined.contains("doc=logged") && joined.contains("peer=p1"),
        "{joined}"
    );
}

/// An update whose item claims another (non-type) item as parent.
fn invalid_parent_update() -> Vec<u8> {
    // Built by hand in the v1 format: one client, two items.
    //   item 1: a string "EVIL" at root "t"
    //   item 2: a string whose parent is item 1's ID (an item, not a type)
    let client: u64 = 4242;
    let mut u = Vec::new();
    u.write_var(1u32); // one client
    u.write_var(2u32); // two structs
    u.write_var(client);
    u.write_var(0u32); // starting clock

    // item 1: info = content ref 4 (string), no origins, parent info flag set
    u.push(4);
    u.write_var(1u32); // parent is a root name
    u.write_string("t");
    u.write_string("EVIL");
    // item 2: string content, parent given as an ID
    u.push(4);
    u.write_var(0u32); // parent is an ID
    u.write_var(client);
    u.write_var(0u32);
    u.write_string("EVIL2");
    u.write_var(0u32); // empty delete set
    u
}

/// The same refused update posted to the API: 400 with yrs's reason, the
/// document unchanged, its peers not disturbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_update_posted_to_the_api_is_a_400() {
    let server = Server::start();
    let peer = server.connect("bad5").await;
    let text = peer.doc.get_or_insert_text("t");
    peer.edit(|txn| text.push(txn, "kept"));
    let observer = server.connect("bad5").await;
    observer
        .wait_for("the edit", 5 * SECOND, |o| o.text("t") == "kept")
        .await
        .unwrap();
    let res = server
        .post(
            "/api/docs/bad5/update",
            "application/octet-stream",
            &invalid_parent_update(),
        )
        .await;
    assert_eq!(res.status, 400, "{}", res.text());
    assert!(
        res.json()["error"].as_str().unwrap().contains("parent"),
        "{}",
        res.text()
    );
    let content = server.get("/api/docs/bad5").await.json();
    assert_eq!(content["content"], serde_json::json!({ "t": "kept" }));
    assert!(!peer.seen().ended && !observer.seen().ended);
}
