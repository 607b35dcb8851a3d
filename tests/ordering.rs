//! Updates that depend on edits the server does not hold yet, end to end
//! against the real binary. README: an update whose changes start past what
//! the document holds of its own client is refused (4422 over a socket, 400
//! over the API); one that waits for *another* client's edit is accepted,
//! stored and relayed, and integrates when that edit arrives.

mod common;

use common::{Client, Server, SECOND};
use serde_json::json;
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, Map, MapPrelim, ReadTxn, StateVector, Text, Transact, Update, WriteTxn};

/// `hello` by client 1, then ` world` by client 2 typed after it: the second
/// update refers to the first client's characters.
fn hello_world() -> (Vec<u8>, Vec<u8>) {
    let one = Doc::with_client_id(1);
    let text = one.get_or_insert_text("t");
    let hello = {
        let mut txn = one.transact_mut();
        text.push(&mut txn, "hello");
        txn.encode_update_v1()
    };
    let two = Doc::with_client_id(2);
    two.transact_mut()
        .apply_update(Update::decode_v1(&hello).unwrap())
        .unwrap();
    let text = two.get_or_insert_text("t");
    let world = {
        let mut txn = two.transact_mut();
        text.push(&mut txn, " world");
        txn.encode_update_v1()
    };
    (hello, world)
}

async fn api_text(server: &Server, doc: &str) -> serde_json::Value {
    server.get(&format!("/api/docs/{doc}")).await.json()["content"]["t"].clone()
}

/// Guards against refusing, dropping or losing an update that waits for
/// another client's edit: it is accepted (its sender stays connected),
/// relayed (a peer holds it, pending), stored (a SIGKILL later, the reloaded
/// document still has it), integrates when the missing edit arrives, and
/// the result survives another SIGKILL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_waiting_for_another_clients_edit_is_kept_until_it_integrates() {
    let (hello, world) = hello_world();
    let server = Server::start();
    let observer = server.connect("waiting").await;
    let relayed = observer.seen().updates;
    let applied = server.metric("weft_updates_applied_total").await;

    let sender = server.connect("waiting").await;
    sender.send_update(world.clone());
    // relayed: the observer received it, and holds it pending
    observer
        .wait_for("the waiting update relayed", 5 * SECOND, |o| o.seen().updates > relayed)
        .await
        .unwrap();
    assert_eq!(observer.text("t"), "", "it cannot show before the edit it follows");
    assert_eq!(server.metric("weft_updates_applied_total").await, applied + 1.0);
    assert!(!sender.seen().ended, "the sender was closed: {:?}", sender.seen().close);
    // the API shows the document as it stands: nothing integrated yet
    assert_eq!(api_text(&server, "waiting").await.as_str().unwrap_or(""), "");
    drop((observer, sender));

    // stored: a SIGKILL later, the reloaded document still holds it, and a
    // newcomer's step2 carries it
    let server = server.restart();
    let newcomer = server.connect("waiting").await;
    assert_eq!(newcomer.text("t"), "");
    let state = server.get("/api/docs/waiting/update").await;
    assert_eq!(state.status, 200);
    let copy = Doc::new();
    for update in [&state.body, &hello] {
        copy.transact_mut()
            .apply_update(Update::decode_v1(update).unwrap())
            .unwrap();
    }
    assert_eq!(
        copy.get_or_insert_text("t").get_string(&copy.transact()),
        "hello world",
        "the stored state lacks the waiting update"
    );

    // the missing edit arrives: everything integrates, everywhere
    let author = server.connect("waiting").await;
    author.send_update(hello.clone());
    newcomer
        .wait_for("both edits", 5 * SECOND, |c| c.text("t") == "hello world")
        .await
        .unwrap();
    assert_eq!(api_text(&server, "waiting").await, "hello world");
    drop((newcomer, author));

    let server = server.restart();
    assert_eq!(server.connect("waiting").await.text("t"), "hello world");
    assert_eq!(api_text(&server, "waiting").await, "hello world");
}

/// The same through the API: a posted update waiting for another client's
/// edit is accepted (200) and integrates once that edit is posted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_posted_update_waiting_for_another_clients_edit_is_accepted() {
    let (hello, world) = hello_world();
    let server = Server::start();
    let post = |update: Vec<u8>| {
        let server = &server;
        async move {
            server
                .post("/api/docs/posted/update", "application/octet-stream", &update)
                .await
        }
    };
    let res = post(world).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let res = post(hello).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(api_text(&server, "posted").await, "hello world");
}

/// Guards against storing an update that skips some of its own client's
/// edits (yrs would integrate it around a placeholder: the use-after-free
/// fuzzing found): the API answers 400 with the reason, and the document
/// takes the same edits in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_skipping_its_own_clients_edits_is_a_400() {
    let writer = Doc::with_client_id(3);
    let text = writer.get_or_insert_text("t");
    let edits: Vec<Vec<u8>> = ["a", "b", "c"]
        .iter()
        .map(|s| {
            let mut txn = writer.transact_mut();
            text.push(&mut txn, s);
            txn.encode_update_v1()
        })
        .collect();
    let server = Server::start();
    let peer = server.connect("skips").await;
    let path = "/api/docs/skips/update";
    let res = server.post(path, "application/octet-stream", &edits[0]).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let res = server.post(path, "application/octet-stream", &edits[2]).await;
    assert_eq!(res.status, 400, "{}", res.text());
    let error = res.json()["error"].as_str().unwrap().to_string();
    assert!(error.contains("must arrive in order"), "{error}");
    assert_eq!(api_text(&server, "skips").await, "a");
    for edit in &edits[1..] {
        let res = server.post(path, "application/octet-stream", edit).await;
        assert_eq!(res.status, 200, "{}", res.text());
    }
    peer.wait_for("the edits in order", 5 * SECOND, |p| p.text("t") == "abc")
        .await
        .unwrap();
    assert!(!peer.seen().ended);
}

/// Guards against the type limit applying only to sockets: a posted update
/// that would give the document more shared types than `--max-doc-types`
/// is refused with 413 and not stored; one within it is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_posted_update_past_the_type_limit_is_a_413() {
    fn nested(depth: usize) -> Vec<u8> {
        let doc = Doc::new();
        let mut txn = doc.transact_mut();
        let mut map = txn.get_or_insert_map("m");
        for _ in 0..depth {
            map = map.insert(&mut txn, "k", MapPrelim::default());
        }
        drop(txn);
        let update = doc.transact().encode_state_as_update_v1(&StateVector::default());
        update
    }
    let server = Server::builder().arg("--max-doc-types", 10).start();
    let path = "/api/docs/typed/update";
    let res = server.post(path, "application/octet-stream", &nested(20)).await;
    assert_eq!(res.status, 413, "{}", res.text());
    let error = res.json()["error"].as_str().unwrap().to_string();
    assert!(error.contains("more than 10 shared types"), "{error}");
    assert_eq!(server.get("/api/docs/typed").await.status, 404, "nothing stored");

    let res = server.post(path, "application/octet-stream", &nested(5)).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let content = server.get("/api/docs/typed").await.json()["content"].clone();
    assert_eq!(content["m"]["k"]["k"]["k"]["k"]["k"], json!({}));
    let reader = Client::connect(&server.ws, "typed").await.unwrap();
    reader.wait_synced().await.unwrap();
}
