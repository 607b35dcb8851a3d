//! Disk and document quotas against the real binary, each test the attack
//! of issue 11 (item 5, and the rate state of item 3) and the bound weft now
//! holds: identical versions stored once, a cap on versions per document,
//! versions inside a storage quota, the API rate-limited per client, new
//! documents per minute capped on every route, and a rate bucket that a
//! reconnect does not refill.

mod common;

use std::time::{Duration, Instant};

use common::tokens::{token, token_server, token_server_on};
use common::{http, Client, Response, Server, Store, SECOND};
use serde_json::{json, Value};
use weft::auth::Perm;
use yrs::{Doc, Text, Transact};

for_both_stores!(
    identical_versions_are_stored_once,
    versions_per_document_are_capped_autos_first,
    versions_count_toward_the_storage_quota,
);

async fn call(server: &Server, method: &str, path: &str, token: Option<&str>, body: Option<(&str, &[u8])>) -> Response {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = Vec::new();
    if let Some(b) = &bearer {
        headers.push(("Authorization", b.as_str()));
    }
    if let Some((content_type, _)) = body {
        headers.push(("Content-Type", content_type));
    }
    http(&server.addr, method, path, &headers, body.map(|(_, b)| b)).await
}

async fn post_update(server: &Server, doc: &str, token: Option<&str>, update: &[u8]) -> Response {
    let path = format!("/api/docs/{}/update", common::enc(doc));
    call(server, "POST", &path, token, Some(("application/octet-stream", update))).await
}

async fn take_version(server: &Server, doc: &str, token: Option<&str>, label: &str) -> Response {
    let path = format!("/api/docs/{}/versions", common::enc(doc));
    let body = json!({ "label": label }).to_string();
    call(
        server,
        "POST",
        &path,
        token,
        Some(("application/json", body.as_bytes())),
    )
    .await
}

async fn versions(server: &Server, doc: &str, token: Option<&str>) -> Vec<Value> {
    let path = format!("/api/docs/{}/versions", common::enc(doc));
    let res = call(server, "GET", &path, token, None).await;
    assert_eq!(res.status, 200, "{}", res.text());
    res.json()["versions"].as_array().cloned().unwrap()
}

/// An update appending `s` to the text "t" of `doc`.
fn append(doc: &Doc, s: &str) -> Vec<u8> {
    let text = doc.get_or_insert_text("t");
    let mut txn = doc.transact_mut();
    text.push(&mut txn, s);
    txn.encode_update_v1()
}

fn error_of(res: &Response) -> String {
    res.json()["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no JSON error in {}", res.text()))
        .to_string()
}

fn retry_after(res: &Response) -> u64 {
    res.header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After in {:?}", res.headers))
}

/// The attack: 100 `POST .../versions` of an unchanged 1.9 MB document with
/// a write token grew the database by 197 MB. A named version identical to
/// the latest is now answered with the existing one (200, `existing`).
async fn identical_versions_are_stored_once(store: Store) {
    let (server, _key) = token_server_on(store, &[]);
    let writer = token("big/*", Perm::Write, 3600);
    let doc = Doc::new();
    let res = post_update(&server, "big/doc", Some(&writer), &append(&doc, &"x".repeat(1_900_000))).await;
    assert_eq!(res.status, 200, "{}", res.text());

    let first = take_version(&server, "big/doc", Some(&writer), "release").await;
    assert_eq!(first.status, 201, "{}", first.text());
    let first = first.json();
    assert_eq!(first["existing"], false);
    let before = server.db_bytes();
    let started = Instant::now();
    for _ in 0..100 {
        let again = take_version(&server, "big/doc", Some(&writer), "release").await;
        assert_eq!(again.status, 200, "{}", again.text());
        let again = again.json();
        assert_eq!(again["id"], first["id"]);
        assert_eq!(again["existing"], true);
    }
    let took = started.elapsed();
    let grown = server.db_bytes().saturating_sub(before);
    eprintln!("100 identical version requests: {took:?}, database grew by {grown} bytes");
    assert!(grown < 4 << 20, "the database grew by {grown} bytes");
    assert_eq!(versions(&server, "big/doc", Some(&writer)).await.len(), 1);

    // Another label for the same content names the same version: the label
    // it has is kept, and the answer says it already existed.
    let relabelled = take_version(&server, "big/doc", Some(&writer), "final").await;
    assert_eq!(relabelled.status, 200);
    assert_eq!(relabelled.json()["label"], "release");

    // After a change, a version is new again.
    post_update(&server, "big/doc", Some(&writer), &append(&doc, "!")).await;
    let changed = take_version(&server, "big/doc", Some(&writer), "final").await;
    assert_eq!(changed.status, 201, "{}", changed.text());
    assert_ne!(changed.json()["id"], first["id"]);

    // A deletion changes the content without changing the state vector: it
    // is a new version too, not the previous one.
    {
        let text = doc.get_or_insert_text("t");
        let mut txn = doc.transact_mut();
        text.remove_range(&mut txn, 0, 10);
        let update = txn.encode_update_v1();
        drop(txn);
        post_update(&server, "big/doc", Some(&writer), &update).await;
    }
    let deleted = take_version(&server, "big/doc", Some(&writer), "shorter").await;
    assert_eq!(deleted.status, 201, "{}", deleted.text());
    assert_eq!(versions(&server, "big/doc", Some(&writer)).await.len(), 3);
}

/// Edits the document through `client`, waits until the server has it, and
/// takes a named version.
async fn named(server: &Server, client: &Client, label: &str) -> Response {
    let text = client.doc.get_or_insert_text("t");
    client.edit(|txn| text.push(txn, label));
    let want = client.text("t");
    let deadline = Instant::now() + 5 * SECOND;
    loop {
        let doc = call(server, "GET", "/api/docs/capped", None, None).await.json();
        if doc["content"]["t"] == want.as_str() {
            break;
        }
        assert!(Instant::now() < deadline, "the edit never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    take_version(server, "capped", None, label).await
}

/// With `--max-versions`, the oldest automatic versions go first; when only
/// named ones are left, a new named version is refused with 409 and a reason
/// naming what to delete, and nothing is deleted.
async fn versions_per_document_are_capped_autos_first(store: Store) {
    let server = Server::builder()
        .store(store)
        .arg("--max-versions", 3)
        .arg("--version-idle-secs", 2)
        .start();
    let client = server.connect("capped").await;
    let text = client.doc.get_or_insert_text("t");
    let kinds = |list: &[Value]| -> Vec<String> {
        list.iter()
            .rev()
            .map(|v| format!("{}:{}", v["kind"].as_str().unwrap(), v["label"].as_str().unwrap_or("")))
            .collect()
    };
    // Two automatic versions, taken when the document was left alone.
    for n in 1..=2 {
        client.edit(|txn| text.push(txn, "a"));
        let deadline = Instant::now() + 20 * SECOND;
        while versions(&server, "capped", None).await.len() < n {
            assert!(Instant::now() < deadline, "no automatic version");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(named(&server, &client, "n1").await.status, 201);
    assert_eq!(
        kinds(&versions(&server, "capped", None).await),
        ["auto:", "auto:", "named:n1"]
    );
    assert_eq!(named(&server, &client, "n2").await.status, 201);
    assert_eq!(
        kinds(&versions(&server, "capped", None).await),
        ["auto:", "named:n1", "named:n2"],
        "the oldest automatic version made room"
    );
    assert_eq!(named(&server, &client, "n3").await.status, 201);
    let full = versions(&server, "capped", None).await;
    assert_eq!(kinds(&full), ["named:n1", "named:n2", "named:n3"]);

    let refused = named(&server, &client, "n4").await;
    assert_eq!(refused.status, 409, "{}", refused.text());
    let reason = error_of(&refused);
    let oldest = full.last().unwrap()["id"].as_i64().unwrap();
    assert!(reason.contains("--max-versions"), "{reason}");
    assert!(
        reason.contains(&format!("version {oldest}")),
        "names the oldest: {reason}"
    );
    assert_eq!(versions(&server, "capped", None).await, full, "nothing deleted");

    // An automatic version at the cap is skipped rather than deleting a named one.
    server.wait_log("automatic version skipped", 20 * SECOND).await.unwrap();
    assert_eq!(versions(&server, "capped", None).await, full);

    let res = call(
        &server,
        "DELETE",
        &format!("/api/docs/capped/versions/{oldest}"),
        None,
        None,
    )
    .await;
    assert_eq!(res.status, 200);
    assert_eq!(named(&server, &client, "n5").await.status, 201);
}

/// With `--max-doc-storage`, the document's stored size plus its versions
/// stays within the quota: named versions past it are refused (409), and
/// edits are still accepted.
async fn versions_count_toward_the_storage_quota(store: Store) {
    const QUOTA: u64 = 1_000_000;
    let server = Server::builder().store(store).arg("--max-doc-storage", QUOTA).start();
    let doc = Doc::new();
    assert_eq!(
        post_update(&server, "quota", None, &append(&doc, &"q".repeat(200_000)))
            .await
            .status,
        200
    );
    let mut refused = None;
    for i in 0..10 {
        assert_eq!(
            post_update(&server, "quota", None, &append(&doc, "+")).await.status,
            200
        );
        let res = take_version(&server, "quota", None, &format!("v{i}")).await;
        match res.status {
            201 => {}
            409 => {
                refused = Some(error_of(&res));
                break;
            }
            other => panic!("{other}: {}", res.text()),
        }
    }
    let reason = refused.expect("ten 200 KB versions of a document fit a 1 MB quota");
    assert!(reason.contains("--max-doc-storage"), "{reason}");
    let stored = call(&server, "GET", "/api/docs/quota", None, None).await.json()["size"]
        .as_u64()
        .unwrap();
    let in_versions: u64 = versions(&server, "quota", None)
        .await
        .iter()
        .map(|v| v["size"].as_u64().unwrap())
        .sum();
    assert!(stored + in_versions <= QUOTA, "{stored} + {in_versions} bytes");

    // Edits are bounded by --max-doc-size, not by the versions.
    let res = post_update(&server, "quota", None, &append(&doc, "still editable")).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let content = call(&server, "GET", "/api/docs/quota", None, None).await.json();
    assert!(content["content"]["t"].as_str().unwrap().ends_with("still editable"));
}

/// The API had no rate limit. Now each client (IP and token) has a bucket:
/// past it, 429 with a JSON reason and `Retry-After`; another token is not
/// affected, and neither are health checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_is_rate_limited_per_client() {
    let (server, _key) = token_server(&[("--http-rate-limit", "1"), ("--http-rate-burst", "5")]);
    let a = token("*", Perm::Read, 3600);
    let b = token("*", Perm::Read, 3600);
    let started = Instant::now();
    let mut served = 0;
    let limited = loop {
        let res = call(&server, "GET", "/api/docs", Some(&a), None).await;
        if res.status != 200 {
            break res;
        }
        served += 1;
        assert!(served < 50, "never limited");
    };
    // The burst, and what the rate (1/s) refilled meanwhile.
    let refilled = started.elapsed().as_secs() + 1;
    assert!((5..=5 + refilled).contains(&served), "{served} requests served");
    assert_eq!(limited.status, 429, "{}", limited.text());
    assert!(error_of(&limited).contains("too many requests"), "{}", limited.text());
    assert!((1..=2).contains(&retry_after(&limited)));
    assert_eq!(call(&server, "GET", "/api/docs", Some(&b), None).await.status, 200);
    assert_eq!(server.get("/healthz").await.status, 200);
}

/// A `spam/*` token created 5,000 documents in 1.6 s over HTTP. Now one
/// client IP, and one token, may create `--max-new-docs-per-minute`: past
/// that, 429 on the API and at the WebSocket upgrade (before it is
/// accepted), while existing documents stay open to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_documents_per_minute_are_capped_on_every_route() {
    let (server, _key) = token_server(&[("--max-new-docs-per-minute", "5")]);
    let spam = token("spam/*", Perm::Write, 3600);
    let doc = Doc::new();
    let update = append(&doc, "spam");
    for i in 0..5 {
        let res = post_update(&server, &format!("spam/{i}"), Some(&spam), &update).await;
        assert_eq!(res.status, 200, "{}", res.text());
    }
    let refused = post_update(&server, "spam/5", Some(&spam), &update).await;
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert!(error_of(&refused).contains("new documents"), "{}", refused.text());
    assert!(retry_after(&refused) >= 1);

    let upgrade = Client::refused(&server.ws, &format!("/spam/ws?token={spam}"))
        .await
        .unwrap();
    assert_eq!(upgrade.status, 429, "{}", upgrade.body);
    let body: Value = serde_json::from_str(&upgrade.body).unwrap();
    assert!(body["error"].as_str().unwrap().contains("new documents"));

    // The same IP with another token: the IP's allowance is spent too.
    let other = token("other/*", Perm::Write, 3600);
    assert_eq!(post_update(&server, "other/1", Some(&other), &update).await.status, 429);

    // What exists stays usable.
    let more = append(&doc, " more");
    assert_eq!(post_update(&server, "spam/1", Some(&spam), &more).await.status, 200);
    let client = Client::connect(&server.ws, &format!("spam/0?token={spam}"))
        .await
        .unwrap();
    client.wait_synced().await.unwrap();
    let listed = call(&server, "GET", "/api/docs", Some(&spam), None).await.json();
    assert_eq!(listed["docs"].as_array().unwrap().len(), 5);
}

/// Reconnecting refilled an attacker's message bucket (22 forced
/// disconnects in 10 s). The bucket now stays with the client IP and token:
/// a reconnect gets what is left of it (plus a handshake's worth), not a
/// fresh burst, and one that has nothing left is refused at the upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_does_not_refill_the_rate_bucket() {
    let server = Server::builder()
        .arg("--rate-limit", 1)
        .arg("--rate-burst", 100)
        .start();
    let flood = server.connect("flood").await;
    let text = flood.doc.get_or_insert_text("t");
    for _ in 0..150 {
        flood.edit(|txn| text.push(txn, "f"));
    }
    assert_eq!(flood.wait_closed(10 * SECOND).await.unwrap().map(|c| c.0), Some(4429));
    let before = server.metric("weft_updates_applied_total").await;

    // Straight back, with another 50 messages: well within a fresh burst.
    let again = server.connect("flood").await;
    let text = again.doc.get_or_insert_text("t");
    for _ in 0..50 {
        again.edit(|txn| text.push(txn, "g"));
    }
    assert_eq!(
        again.wait_closed(10 * SECOND).await.unwrap().map(|c| c.0),
        Some(4429),
        "the reconnect got a fresh bucket"
    );
    let applied = server.metric("weft_updates_applied_total").await - before;
    assert!(applied <= 20.0, "{applied} updates applied after the reconnect");

    // And once more: nothing left, refused before the upgrade.
    let refused = Client::refused(&server.ws, "/flood").await.unwrap();
    assert_eq!(refused.status, 429, "{}", refused.body);
    let body: Value = serde_json::from_str(&refused.body).unwrap();
    assert!(body["error"].as_str().unwrap().contains("too many messages"));
}
