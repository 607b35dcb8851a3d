//! Dormant documents, against the real binary: a loaded document is held as
//! its encoding and built in yrs only when an edit needs it (README,
//! "Memory"). What a client sees must not change: reconnecting clients get
//! the deletions they missed, new ones the whole document, edits reach
//! everyone, and `weft_documents_woken_total` says when it was built.

mod common;

use common::{ydoc, Client, Server, SECOND};
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact};

const DOC: &str = "dormant-notes";

/// A copy of what `client` holds, as a new document with its own client ID.
fn copy_of(client: &Client) -> Doc {
    ydoc::loaded(&client.state())
}

async fn wait_text(client: &Client, want: &str) {
    let want = want.to_string();
    client
        .wait_for(&format!("text {want:?}"), 10 * SECOND, move |c| c.text("t") == want)
        .await
        .unwrap();
}

/// Waits until another client is sent `want`: weft stores an edit before
/// it relays it.
async fn stored(server: &Server, want: &str) {
    let witness = server.connect(DOC).await;
    wait_text(&witness, want).await;
    witness.close();
}

async fn dormant(server: &Server, n: f64) {
    server
        .wait_metric("weft_documents_dormant", 10 * SECOND, |v| v == n)
        .await;
}

/// After a restart the document loads dormant. A client that held it all
/// but missed a deletion gets the deletion, a new client gets everything,
/// and neither builds it; the first edit builds it once and reaches both.
#[tokio::test]
async fn a_restarted_document_answers_from_its_encoding_until_an_edit() {
    let server = Server::start();
    let writer = server.connect(DOC).await;
    writer.wait_synced().await.unwrap();
    {
        let t = writer.doc.get_or_insert_text("t");
        writer.edit(|txn| t.insert(txn, 0, "hello brave new world"));
    }
    let reader = server.connect(DOC).await;
    wait_text(&reader, "hello brave new world").await;
    // The reader leaves holding every block; the deletion after it moves
    // no clock, so only the delete set can bring it.
    let held = copy_of(&reader);
    reader.close();
    {
        let t = writer.doc.get_or_insert_text("t");
        writer.edit(|txn| t.remove_range(txn, 5, 6));
    }
    stored(&server, "hello new world").await;
    writer.close();

    let server = server.restart();
    let woken = server.metric("weft_documents_woken_total").await;
    let back = Client::connect_with(&server.ws, DOC, held).await.unwrap();
    wait_text(&back, "hello new world").await;
    let fresh = server.connect(DOC).await;
    wait_text(&fresh, "hello new world").await;
    assert_eq!(server.metric("weft_documents_dormant").await, 1.0);
    assert_eq!(
        server.metric("weft_documents_woken_total").await,
        0.0,
        "read without building"
    );

    {
        let t = back.doc.get_or_insert_text("t");
        back.edit(|txn| t.insert(txn, 0, ">> "));
    }
    wait_text(&fresh, ">> hello new world").await;
    assert_eq!(server.metric("weft_documents_woken_total").await, woken + 1.0);
    assert_eq!(server.metric("weft_documents_dormant").await, 0.0);
    let content = server.get(&format!("/api/docs/{DOC}")).await;
    assert_eq!(content.status, 200, "{}", content.text());
    assert_eq!(content.json()["content"]["t"], ">> hello new world");
}

/// The HTTP API's state of a dormant document: the whole of it, or the
/// deletions for a state vector that holds every block; another state
/// vector builds it.
#[tokio::test]
async fn the_state_api_answers_from_the_encoding() {
    let server = Server::builder().arg("--dormant-after-ms", 100).start();
    let writer = server.connect(DOC).await;
    writer.wait_synced().await.unwrap();
    {
        let t = writer.doc.get_or_insert_text("t");
        writer.edit(|txn| t.insert(txn, 0, "abcdef"));
    }
    let partial = writer.doc.transact().state_vector();
    {
        let t = writer.doc.get_or_insert_text("t");
        writer.edit(|txn| t.insert(txn, 6, "ghi"));
    }
    {
        let t = writer.doc.get_or_insert_text("t");
        writer.edit(|txn| t.remove_range(txn, 0, 3));
    }
    stored(&server, "defghi").await;
    writer.close();
    dormant(&server, 1.0).await;
    let woken = server.metric("weft_documents_woken_total").await;

    let full = server.get(&format!("/api/docs/{DOC}/update")).await;
    assert_eq!(full.status, 200, "{}", full.text());
    let doc = ydoc::loaded(&full.body);
    assert_eq!(doc.get_or_insert_text("t").get_string(&doc.transact()), "defghi");
    let whole = writer.doc.transact().state_vector();
    let sv = base64(&yrs::updates::encoder::Encode::encode_v1(&whole));
    let deletions = server.get(&format!("/api/docs/{DOC}/update?sv={sv}")).await;
    assert_eq!(deletions.status, 200, "{}", deletions.text());
    let update = yrs::Update::decode_v1(&deletions.body).unwrap();
    assert_eq!(
        update.state_vector(),
        StateVector::default(),
        "no block, only deletions"
    );
    assert_eq!(server.metric("weft_documents_woken_total").await, woken);

    let sv = base64(&yrs::updates::encoder::Encode::encode_v1(&partial));
    let diff = server.get(&format!("/api/docs/{DOC}/update?sv={sv}")).await;
    assert_eq!(diff.status, 200, "{}", diff.text());
    assert_eq!(server.metric("weft_documents_woken_total").await, woken + 1.0);
}

/// With peers, a document goes dormant after `--dormant-after-ms` without
/// an edit, and the next edit builds it and reaches the other peer.
#[tokio::test]
async fn a_quiet_document_with_peers_goes_dormant_and_wakes_on_an_edit() {
    let server = Server::builder().arg("--dormant-after-ms", 200).start();
    let a = server.connect(DOC).await;
    let b = server.connect(DOC).await;
    a.wait_synced().await.unwrap();
    b.wait_synced().await.unwrap();
    let t = a.doc.get_or_insert_text("t");
    for word in ["one ", "two ", "three "] {
        a.edit(|txn| {
            let len = t.len(txn);
            t.insert(txn, len, word)
        });
    }
    wait_text(&b, "one two three ").await;
    dormant(&server, 1.0).await;
    let woken = server.metric("weft_documents_woken_total").await;
    {
        let t = b.doc.get_or_insert_text("t");
        b.edit(|txn| t.insert(txn, 0, "zero "));
    }
    wait_text(&a, "zero one two three ").await;
    assert_eq!(server.metric("weft_documents_woken_total").await, woken + 1.0);
    // Awareness goes on while dormant.
    dormant(&server, 1.0).await;
    let mut c = server.connect(DOC).await;
    c.set_awareness(r#"{"user":"c"}"#);
    let id = c.client_id();
    a.wait_for("c's awareness", 10 * SECOND, move |a| a.seen().present().contains(&id))
        .await
        .unwrap();
    assert_eq!(server.metric("weft_documents_woken_total").await, woken + 1.0);
}

/// `--dormant-after-ms 0`: documents are built as they load and stay built.
#[tokio::test]
async fn zero_keeps_every_document_built() {
    let server = Server::builder().arg("--dormant-after-ms", 0).start();
    let a = server.connect(DOC).await;
    a.wait_synced().await.unwrap();
    {
        let t = a.doc.get_or_insert_text("t");
        a.edit(|txn| t.insert(txn, 0, "x"));
    }
    a.close();
    let b = server.connect(DOC).await;
    wait_text(&b, "x").await;
    assert_eq!(server.metric("weft_documents_dormant").await, 0.0);
    assert_eq!(server.metric("weft_documents_loaded").await, 1.0);
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Updates from the HTTP API to a document nobody has open build it once,
/// not once each: it goes back to sleep only after `--dormant-after-ms`.
#[tokio::test]
async fn api_writes_build_a_document_once() {
    let server = Server::builder().arg("--dormant-after-ms", 60_000).start();
    let writer = yrs::Doc::with_client_id(7);
    let text = writer.get_or_insert_text("t");
    let mut sent = StateVector::default();
    for word in ["a", "b", "c", "d"] {
        text.push(&mut writer.transact_mut(), word);
        let update = writer.transact().encode_state_as_update_v1(&sent);
        sent = writer.transact().state_vector();
        let posted = server
            .post(&format!("/api/docs/{DOC}/update"), "application/octet-stream", &update)
            .await;
        assert_eq!(posted.status, 200, "{}", posted.text());
    }
    let reader = server.connect(DOC).await;
    wait_text(&reader, "abcd").await;
    // Built by the first update (a new document loads dormant), never again.
    assert_eq!(server.metric("weft_documents_woken_total").await, 1.0);
    assert_eq!(server.metric("weft_documents_dormant").await, 0.0);
}

/// A document goes dormant when its last peer leaves, also when a
/// compaction was being written then (it waits for the write, not for
/// `--dormant-after-ms`).
#[tokio::test]
async fn the_last_peer_leaving_puts_it_to_sleep_even_during_a_compaction() {
    let server = Server::builder()
        .arg("--dormant-after-ms", 600_000)
        .arg("--compact-updates", 1)
        .start();
    let writer = server.connect(DOC).await;
    writer.wait_synced().await.unwrap();
    {
        let t = writer.doc.get_or_insert_text("t");
        writer.edit(|txn| t.insert(txn, 0, &"x".repeat(100_000)));
    }
    stored(&server, &"x".repeat(100_000)).await;
    writer.close();
    dormant(&server, 1.0).await;
}
