//! The HTTP API against the real binary: documents, state, versions, restore,
//! and every route's errors.

mod common;

use base64::Engine;
use common::ydoc::{loaded, text_update};
use common::{enc, Server, Store, SECOND};
use serde_json::{json, Value};
use yrs::updates::encoder::Encode;
use yrs::{GetString, Map, ReadTxn, Text, Transact};

for_both_stores!(
    documents_are_listed_and_read,
    posted_updates_reach_peers_and_bad_ones_are_refused,
    deleting_a_document_disconnects_its_peers,
    versions_are_taken_listed_read_and_deleted,
    restore_converges_live_clients_and_can_be_undone,
    automatic_versions_are_taken_when_a_document_goes_idle,
    every_route_reports_errors_as_json,
);

async fn post_json(server: &Server, path: &str, body: Value) -> common::Response {
    server.post(path, "application/json", body.to_string().as_bytes()).await
}

/// Listing, metadata, content, full and incremental state.
async fn documents_are_listed_and_read(store: Store) {
    let server = Server::start_on(store);
    assert_eq!(server.get("/api/docs").await.json(), json!({ "docs": [] }));

    let a = server.connect("notes/today").await;
    let text = a.doc.get_or_insert_text("t");
    let map = a.doc.get_or_insert_map("m");
    a.edit(|txn| text.push(txn, "hello"));
    a.edit(|txn| {
        map.insert(txn, "k", "v");
    });
    let path = format!("/api/docs/{}", enc("notes/today"));
    let deadline = std::time::Instant::now() + 5 * SECOND;
    let doc = loop {
        let doc = server.get(&path).await.json();
        // Content is live at once; `size` counts stored bytes, written by the next batch.
        if doc["content"]["m"]["k"] == "v" && doc["size"].as_u64() > Some(0) {
            break doc;
        }
        assert!(std::time::Instant::now() < deadline, "content never showed: {doc}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(doc["name"], "notes/today");
    assert_eq!(doc["content"], json!({ "m": { "k": "v" }, "t": "hello" }));
    assert_eq!(doc["peers"], 1);
    assert!(doc["size"].as_u64().unwrap() > 0);
    assert!(doc["created"].as_str().unwrap().ends_with('Z'));

    let list = server.get("/api/docs").await.json();
    assert_eq!(list["docs"][0]["name"], "notes/today");
    assert_eq!(list["docs"][0]["peers"], 1);

    let full = server.get(&format!("{path}/update")).await;
    assert_eq!(full.header("content-type"), Some("application/octet-stream"));
    let copy = loaded(&full.body);
    assert_eq!(copy.get_or_insert_text("t").get_string(&copy.transact()), "hello");

    // ?sv= gives only what that state vector lacks
    let sv = copy.transact().state_vector().encode_v1();
    let sv = base64::engine::general_purpose::STANDARD.encode(sv);
    let diff = server.get(&format!("{path}/update?sv={}", enc(&sv))).await;
    assert_eq!(diff.status, 200);
    assert!(diff.body.len() < full.body.len());
    let bad = server.get(&format!("{path}/update?sv=%%%")).await;
    assert_eq!(bad.status, 400);
    assert!(bad.json()["error"].as_str().unwrap().contains("base64"));
}

/// POST .../update is applied, stored and relayed like a peer's update.
async fn posted_updates_reach_peers_and_bad_ones_are_refused(store: Store) {
    let server = Server::start_on(store);
    let a = server.connect("posted").await;
    let res = server
        .post(
            "/api/docs/posted/update",
            "application/octet-stream",
            &text_update("via http"),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    a.wait_for("posted text", 5 * SECOND, |a| a.text("t") == "via http")
        .await
        .unwrap();

    for (body, reason) in [(vec![], "empty body"), (vec![1, 2, 3, 4, 5], "does not decode")] {
        let res = server
            .post("/api/docs/posted/update", "application/octet-stream", &body)
            .await;
        assert_eq!(res.status, 400);
        assert!(res.json()["error"].as_str().unwrap().contains(reason), "{}", res.text());
    }
    let server = server.restart();
    assert_eq!(server.connect("posted").await.text("t"), "via http");
}

/// DELETE removes the document and its versions and disconnects its peers.
async fn deleting_a_document_disconnects_its_peers(store: Store) {
    let server = Server::start_on(store);
    let a = server.connect("doomed").await;
    let text = a.doc.get_or_insert_text("t");
    a.edit(|txn| text.push(txn, "bye"));
    server
        .wait_metric("weft_updates_applied_total", 5 * SECOND, |v| v >= 1.0)
        .await;
    assert_eq!(
        post_json(&server, "/api/docs/doomed/versions", json!({"label": "v"}))
            .await
            .status,
        201
    );

    let res = server.delete("/api/docs/doomed").await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(a.wait_closed(5 * SECOND).await.unwrap().map(|c| c.0), Some(4404));
    assert_eq!(server.get("/api/docs/doomed").await.status, 404);
    assert_eq!(server.get("/api/docs").await.json(), json!({ "docs": [] }));
    assert_eq!(server.delete("/api/docs/doomed").await.status, 404);
    let fresh = server.connect("doomed").await;
    assert_eq!(fresh.text("t"), "", "a deleted document starts empty");
}

/// Named versions: take, list, read as JSON and binary, delete.
async fn versions_are_taken_listed_read_and_deleted(store: Store) {
    let server = Server::start_on(store);
    let a = server.connect("versioned").await;
    let text = a.doc.get_or_insert_text("t");
    a.edit(|txn| text.push(txn, "first"));
    server
        .wait_metric("weft_updates_applied_total", 5 * SECOND, |v| v >= 1.0)
        .await;

    let res = post_json(&server, "/api/docs/versioned/versions", json!({"label": "draft 1"})).await;
    assert_eq!(res.status, 201, "{}", res.text());
    let v1 = res.json();
    assert_eq!(v1["label"], "draft 1");
    assert_eq!(v1["kind"], "named");
    let id = v1["id"].as_i64().unwrap();

    a.edit(|txn| text.push(txn, " second"));
    // Applied before the request, or the version would be of "first" again
    // (and answered with the existing one).
    server
        .wait_metric("weft_updates_applied_total", 5 * SECOND, |v| v >= 2.0)
        .await;
    // no body at all: an unlabelled named version
    let res = server.post("/api/docs/versioned/versions", "", b"").await;
    assert_eq!(res.status, 201, "{}", res.text());
    assert_eq!(res.json()["label"], Value::Null);

    let list = server.get("/api/docs/versioned/versions").await.json();
    let versions = list["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[1]["id"], id, "newest first");

    let v = server.get(&format!("/api/docs/versioned/versions/{id}")).await.json();
    assert_eq!(v["content"], json!({ "t": "first" }));
    let bin = server.get(&format!("/api/docs/versioned/versions/{id}/update")).await;
    let doc = loaded(&bin.body);
    assert_eq!(doc.get_or_insert_text("t").get_string(&doc.transact()), "first");

    assert_eq!(
        server
            .delete(&format!("/api/docs/versioned/versions/{id}"))
            .await
            .status,
        200
    );
    assert_eq!(
        server.get(&format!("/api/docs/versioned/versions/{id}")).await.status,
        404
    );
    assert_eq!(
        server.get("/api/docs/versioned/versions").await.json()["versions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// Restore through the API: connected clients converge on the version's
/// content without reconnecting, and the backup version undoes it.
async fn restore_converges_live_clients_and_can_be_undone(store: Store) {
    let server = Server::start_on(store);
    let a = server.connect("restore").await;
    let b = server.connect("restore").await;
    let text = a.doc.get_or_insert_text("t");
    let map = a.doc.get_or_insert_map("m");
    a.edit(|txn| text.push(txn, "The quick brown fox"));
    a.edit(|txn| {
        map.insert(txn, "status", "draft");
    });
    let status = |c: &common::Client, key: &str| {
        let m = c.doc.get_or_insert_map("m");
        let txn = c.doc.transact();
        m.get(&txn, key).map(|v| v.to_string(&txn))
    };
    // b has both edits, so the server has stored both: the version holds them.
    b.wait_for("edits", 5 * SECOND, |b| {
        b.text("t") == "The quick brown fox" && status(b, "status").as_deref() == Some("draft")
    })
    .await
    .unwrap();
    let v = post_json(&server, "/api/docs/restore/versions", json!({"label": "original"}))
        .await
        .json();
    let id = v["id"].as_i64().unwrap();

    let tb = b.doc.get_or_insert_text("t");
    let mb = b.doc.get_or_insert_map("m");
    b.edit(|txn| tb.remove_range(txn, 4, 6));
    b.edit(|txn| tb.push(txn, " jumps"));
    b.edit(|txn| {
        mb.insert(txn, "status", "final");
        mb.insert(txn, "extra", 1i64);
    });
    a.wait_for("b's edits", 5 * SECOND, |a| a.text("t") == "The brown fox jumps")
        .await
        .unwrap();

    let res = server
        .post(&format!("/api/docs/restore/versions/{id}/restore"), "", b"")
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let restored = res.json();
    assert_eq!(restored["restored"], id);
    let backup = restored["backup"]["id"].as_i64().unwrap();
    assert!(restored["backup"]["label"]
        .as_str()
        .unwrap()
        .contains("Before restoring"));

    for c in [&a, &b] {
        c.wait_for("restored text", 5 * SECOND, |c| c.text("t") == "The quick brown fox")
            .await
            .unwrap();
    }
    b.wait_for("restored map", 5 * SECOND, |b| {
        status(b, "status").as_deref() == Some("draft")
    })
    .await
    .unwrap();
    assert_eq!(status(&b, "extra"), None);
    assert_eq!(a.doc.transact().state_vector(), b.doc.transact().state_vector());
    assert_eq!(
        server.get("/api/docs/restore").await.json()["content"]["t"],
        "The quick brown fox"
    );

    // undo: restore the backup
    let res = server
        .post(&format!("/api/docs/restore/versions/{backup}/restore"), "", b"")
        .await;
    assert_eq!(res.status, 200);
    a.wait_for("edits back", 5 * SECOND, |a| a.text("t") == "The brown fox jumps")
        .await
        .unwrap();
    b.wait_for("edits back at b", 5 * SECOND, |b| {
        status(b, "extra").as_deref() == Some("1")
    })
    .await
    .unwrap();
}

/// Edited then idle: weft takes an automatic version by itself.
async fn automatic_versions_are_taken_when_a_document_goes_idle(store: Store) {
    let server = Server::builder().store(store).arg("--version-idle-secs", 1).start();
    let a = server.connect("auto").await;
    let text = a.doc.get_or_insert_text("t");
    a.edit(|txn| text.push(txn, "typed"));
    let deadline = std::time::Instant::now() + 10 * SECOND;
    let versions = loop {
        let list = server.get("/api/docs/auto/versions").await.json();
        let versions = list["versions"].as_array().cloned().unwrap_or_default();
        if !versions.is_empty() {
            break versions;
        }
        assert!(std::time::Instant::now() < deadline, "no automatic version within 10 s");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0]["kind"], "auto");
    let id = versions[0]["id"].as_i64().unwrap();
    let v = server.get(&format!("/api/docs/auto/versions/{id}")).await.json();
    assert_eq!(v["content"]["t"], "typed");
}

/// Every route's errors are JSON with the right status.
async fn every_route_reports_errors_as_json(store: Store) {
    let server = Server::start_on(store);
    let a = server.connect("exists").await;
    let text = a.doc.get_or_insert_text("t");
    a.edit(|txn| text.push(txn, "x"));
    server
        .wait_metric("weft_updates_applied_total", 5 * SECOND, |v| v >= 1.0)
        .await;

    let cases: Vec<(&str, &str, u16, &str)> = vec![
        ("GET", "/api/docs/missing", 404, "no document 'missing'"),
        ("DELETE", "/api/docs/missing", 404, "no document"),
        ("GET", "/api/docs/missing/update", 404, "no document"),
        ("GET", "/api/docs/missing/versions", 404, "no document"),
        ("POST", "/api/docs/missing/versions", 404, "no document"),
        ("GET", "/api/docs/missing/versions/1", 404, "no document"),
        ("POST", "/api/docs/missing/versions/1/restore", 404, "no document"),
        ("GET", "/api/docs/exists/versions/999", 404, "no version 999"),
        ("GET", "/api/docs/exists/versions/abc", 404, "version ids are numbers"),
        ("GET", "/api/docs/exists/versions/999/update", 404, "no version"),
        ("DELETE", "/api/docs/exists/versions/999", 404, "no version"),
        ("POST", "/api/docs/exists/versions/999/restore", 404, "no version 999"),
        ("GET", "/api/docs/metrics", 400, "reserved"),
        ("GET", "/api/docs/a%00b", 400, "control character"),
        ("GET", "/api/nothing", 404, "no such API route"),
        ("PUT", "/api/docs", 405, "method not allowed"),
    ];
    for (method, path, status, reason) in cases {
        let res = common::http(&server.addr, method, path, &[], None).await;
        assert_eq!(res.status, status, "{method} {path}: {}", res.text());
        let error = res.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(error.contains(reason), "{method} {path}: {error}");
    }
    let res = server
        .post("/api/docs/exists/versions", "application/json", b"{not json")
        .await;
    assert_eq!(res.status, 400);
    assert!(res.json()["error"].as_str().unwrap().contains("label"));
    let res = post_json(&server, "/api/docs/exists/versions", json!({"label": "x".repeat(201)})).await;
    assert_eq!(res.status, 400);
    assert!(res.json()["error"].as_str().unwrap().contains("longer than"));
}
