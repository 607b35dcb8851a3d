//! A herd of loads: past `--max-loading-docs` documents loading at once, a
//! client asking for one more gets 503 with `Retry-After`, while documents
//! loaded or already loading are served; once the loads end, the refused
//! client gets in.
//!
//! A load is held in flight by a lock on the table every load reads,
//! taken from a psql session: so the test needs PostgreSQL, whose loads a
//! lock can hold (SQLite's readers never wait for a writer).

mod common;

use std::time::Duration;

use common::postgres::Session;
use common::ydoc::text_update;
use common::{http, upgrade_headers, Client, Server, Store, SECOND};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_bound_a_new_document_is_refused_with_503_until_the_loads_end() {
    let Some(store) = Store::postgres() else { return };
    let server = Server::builder().store(store).arg("--max-loading-docs", 1).start();
    let url = server.pg.as_ref().expect("a PostgreSQL database").url.clone();

    // A document that was loaded before the herd: it stays loaded while a
    // client is on it, and is served however many loads are in flight.
    let early = server.connect("early").await;

    let mut lock = Session::open(&url);
    lock.run("BEGIN; LOCK TABLE snapshots IN ACCESS EXCLUSIVE MODE;");
    let ws = server.ws.clone();
    let first = tokio::spawn(async move { Client::connect(&ws, "first").await });
    server
        .wait_metric("weft_documents_loading", 10 * SECOND, |n| n == 1.0)
        .await;

    let refused = http(&server.addr, "GET", "/second", &upgrade_headers(), None).await;
    assert_eq!(refused.status, 503, "{}", refused.text());
    let retry: u64 = refused
        .header("retry-after")
        .expect("a Retry-After header")
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After: {retry}");
    let reason = refused.json()["error"].as_str().unwrap_or_default().to_string();
    assert!(reason.contains("loading"), "{reason}");
    assert_eq!(server.metric("weft_loads_shed_total").await, 1.0);

    // The API sheds the same way: an update posted to a document that is
    // not loaded would start a load.
    let api = post_to_third(&server).await;
    assert_eq!(api.status, 503, "{}", api.text());
    assert!(api.header("retry-after").is_some());

    // A second client of the document that is loading waits for the same
    // load instead of being refused; the loaded one is served at once.
    let ws = server.ws.clone();
    let also_first = tokio::spawn(async move { Client::connect(&ws, "first").await });
    let again = Client::connect(&server.ws, "early")
        .await
        .expect("a loaded document is served");
    again.wait_synced().await.expect("synced while another document loads");
    assert!(!first.is_finished(), "the held load finished early");

    lock.run("COMMIT;");
    for (who, join) in [("first", first), ("its second client", also_first)] {
        let client = tokio::time::timeout(Duration::from_secs(20), join)
            .await
            .unwrap_or_else(|_| panic!("{who} never connected"))
            .unwrap()
            .unwrap_or_else(|e| panic!("{who} was refused: {e}"));
        client.wait_synced().await.expect("synced");
    }
    server
        .wait_metric("weft_documents_loading", 10 * SECOND, |n| n == 0.0)
        .await;
    // The refused client, back after its Retry-After, gets in.
    let second = server.connect("second").await;
    drop((early, again, second));
    assert_eq!(server.metric("weft_loads_shed_total").await, 2.0);
    let posted = post_to_third(&server).await;
    assert_eq!(posted.status, 200, "{}", posted.text());
}

/// An update posted to a document nobody has loaded: it starts a load.
async fn post_to_third(server: &Server) -> common::Response {
    server
        .post(
            "/api/docs/third/update",
            "application/octet-stream",
            &text_update("later"),
        )
        .await
}
