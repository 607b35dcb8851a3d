//! Events (issue 16): the outbox and the SSE feed `GET /api/events`, with
//! the real binary. Each event type once with its envelope; debouncing of
//! `document.updated` under a stream of edits; an edit committed but not
//! reported when weft is SIGKILLed is reported after the restart; resuming
//! with `Last-Event-ID` across a reconnect and a restart, and being told
//! when the events asked for were pruned; what a token sees.

mod common;

use std::time::Duration;

use common::sse::{count, kinds, Feed, Message};
use common::tokens::{claims, key_file, mint, KEY};
use common::{enc, http, Server, Store, SECOND};
use serde_json::{json, Value};
use weft::auth::Perm;
use weft_bench::client::Client;
use yrs::Text;

fn admin() -> String {
    format!("Bearer {KEY}")
}

async fn post_json(server: &Server, path: &str, body: Value) -> common::Response {
    let auth = admin();
    let body = body.to_string();
    http(
        &server.addr,
        "POST",
        path,
        &[("Authorization", &auth), ("Content-Type", "application/json")],
        Some(body.as_bytes()),
    )
    .await
}

async fn edit(client: &Client, text: &str) {
    let t = client.doc.get_or_insert_text("t");
    client.edit(|txn| t.push(txn, text));
}

/// Every event type comes once, in the feed, with its envelope; the
/// editor is named from the token.
async fn every_event_type_has_its_envelope(store: Store) {
    let (dir, key) = key_file();
    let server = Server::builder()
        .store(store)
        .arg("--auth-key-file", key.display())
        .arg("--webhook-debounce-ms", 200)
        .arg("--webhook-max-wait-ms", 1000)
        .flag("--events-peers")
        .start();
    let auth = admin();
    let mut feed = Feed::open(&server, "?last_event_id=0", &[("Authorization", &auth)]).await;
    let mut who = claims("notes/a", Perm::Write, 3600);
    who.sub = Some("u-ada".into());
    who.name = Some("Ada".into());
    let token = mint(&who);
    let client = Client::connect(&server.ws, &format!("notes/a?token={token}"))
        .await
        .unwrap();
    client.wait_synced().await.unwrap();
    edit(&client, "hello").await;
    let earlier = feed
        .until("created, joined, updated", 10 * SECOND, |s| {
            count(s, "document.updated") == 1
        })
        .await;
    assert_eq!(count(&earlier, "document.created"), 1, "{:?}", kinds(&earlier));
    assert_eq!(count(&earlier, "peer.joined"), 1, "{:?}", kinds(&earlier));
    let doc = enc("notes/a");
    let named = post_json(&server, &format!("/api/docs/{doc}/versions"), json!({"label": "v1"})).await;
    assert_eq!(named.status, 201, "{}", named.text());
    let version = named.json()["id"].as_i64().unwrap();
    edit(&client, " world").await;
    let restored = post_json(
        &server,
        &format!("/api/docs/{doc}/versions/{version}/restore"),
        json!({}),
    )
    .await;
    assert_eq!(restored.status, 200, "{}", restored.text());
    let backup = restored.json()["backup"]["id"].as_i64().unwrap();
    drop(client);
    let revoke = post_json(&server, "/api/tokens/revoke", json!({"token_id": who.jti})).await;
    assert_eq!(revoke.status, 200, "{}", revoke.text());
    let deleted = http(
        &server.addr,
        "DELETE",
        &format!("/api/docs/{doc}"),
        &[("Authorization", &auth)],
        None,
    )
    .await;
    assert!(deleted.status < 300, "{}", deleted.text());
    let seen = feed
        .until("the rest", 10 * SECOND, |s| count(s, "document.deleted") == 1)
        .await;
    let all: Vec<&Message> = seen.iter().collect();
    let by_type = |kind: &str| -> Vec<Value> { all.iter().filter(|m| m.kind() == kind).map(|m| m.json()).collect() };
    let versions = by_type("version.created");
    assert_eq!(
        versions.len(),
        2,
        "the named one and the restore's backup: {versions:?}"
    );
    assert_eq!(versions[0]["data"]["id"], version);
    assert_eq!(versions[0]["data"]["label"], "v1");
    assert_eq!(versions[0]["data"]["kind"], "named");
    assert_eq!(versions[1]["data"]["id"], backup);
    let restored = by_type("version.restored");
    assert_eq!(restored.len(), 1);
    assert_eq!(restored[0]["data"], json!({"version": version, "backup": backup}));
    let left = by_type("peer.left");
    assert_eq!(left.len(), 1, "{:?}", kinds(&seen));
    assert_eq!(left[0]["data"]["user"], json!({"id": "u-ada", "name": "Ada"}));
    let revoked = by_type("token.revoked");
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0]["document"], Value::Null);
    assert_eq!(revoked[0]["data"]["token"], who.jti.as_str());
    assert_eq!(by_type("document.deleted").len(), 1);
    let mut ids = std::collections::HashSet::new();
    let mut last_seq = 0;
    for m in &seen {
        let e = m.json();
        let seq = m.id.expect("every message has its seq as id");
        assert!(seq > last_seq, "seqs increase");
        last_seq = seq;
        let id = e["id"].as_str().unwrap();
        assert!(id.starts_with("evt_") && id.len() >= 30, "{id}");
        assert!(ids.insert(id.to_string()), "ids are unique");
        let time = e["time"].as_str().unwrap();
        assert!(
            time.len() == 24 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
            "{time}"
        );
        if e["type"] != "token.revoked" {
            assert_eq!(e["document"], "notes/a");
        }
    }
    // Every event the feed saw was counted by its type, and no other.
    let metrics = server.get("/metrics").await.text();
    let all: Vec<Message> = earlier.into_iter().chain(seen).collect();
    for kind in [
        "document.created",
        "document.updated",
        "document.deleted",
        "version.created",
        "version.restored",
        "peer.joined",
        "peer.left",
        "token.revoked",
    ] {
        let line = format!("weft_events_emitted_total{{type=\"{kind}\"}} {}", count(&all, kind));
        assert!(metrics.lines().any(|l| l == line), "no {line:?} in:\n{metrics}");
    }
    drop(dir);
}

/// The first `document.updated`: state vector, size, updates, editors.
async fn document_updated_says_what_changed(store: Store) {
    let (_dir, key) = key_file();
    let server = Server::builder()
        .store(store)
        .arg("--auth-key-file", key.display())
        .arg("--webhook-debounce-ms", 100)
        .arg("--webhook-max-wait-ms", 1000)
        .start();
    let auth = admin();
    let mut feed = Feed::open(&server, "?types=document.updated", &[("Authorization", &auth)]).await;
    let mut who = claims("notes/b", Perm::Write, 3600);
    who.sub = Some("u-bo".into());
    who.name = Some("Bo".into());
    let client = Client::connect(&server.ws, &format!("notes/b?token={}", mint(&who)))
        .await
        .unwrap();
    client.wait_synced().await.unwrap();
    edit(&client, "one").await;
    edit(&client, "two").await;
    let seen = feed
        .until("document.updated", 10 * SECOND, |s| {
            s.iter()
                .map(|m| m.json()["data"]["updates"].as_u64().unwrap())
                .sum::<u64>()
                == 2
        })
        .await;
    let data = &seen[0].json()["data"];
    assert!(!data["state_vector"].as_str().unwrap().is_empty());
    assert!(data["size"].as_u64().unwrap() > 0);
    assert_eq!(data["editors"], json!([{"id": "u-bo", "name": "Bo"}]));
    assert!(seen.iter().all(|m| m.kind() == "document.updated"), "?types filters");
}

/// A document deleted while its `document.updated` waits for the debounce:
/// the report is written first, so a receiver sees the edits, then the
/// deletion (it was dropped: only `document.deleted` came).
async fn a_deletion_reports_pending_edits_first(store: Store) {
    let server = Server::builder()
        .store(store)
        .arg("--webhook-debounce-ms", 60_000)
        .arg("--webhook-max-wait-ms", 60_000)
        .start();
    let mut feed = Feed::open(&server, "?types=document.updated,document.deleted", &[]).await;
    let client = server.connect("doomed").await;
    let observer = server.connect("doomed").await;
    edit(&client, "one").await;
    edit(&client, "two").await;
    // Relayed, so committed: what the deletion finds unreported.
    observer
        .wait_for("the edits relayed", 5 * SECOND, |c| c.text("t") == "onetwo")
        .await
        .unwrap();
    let deleted = http(&server.addr, "DELETE", "/api/docs/doomed", &[], None).await;
    assert!(deleted.status < 300, "{}", deleted.text());
    let seen = feed
        .until("document.deleted", 10 * SECOND, |s| count(s, "document.deleted") == 1)
        .await;
    assert_eq!(kinds(&seen), ["document.updated", "document.deleted"]);
    assert_eq!(seen[0].json()["data"]["updates"], 2);
    assert_eq!(seen[0].json()["document"], "doomed");
}

/// Under a stream of edits: at most one event per debounce, at least one
/// per maximum wait, and every update reported exactly once.
async fn document_updated_is_debounced(store: Store) {
    let server = Server::builder()
        .store(store)
        .arg("--webhook-debounce-ms", 300)
        .arg("--webhook-max-wait-ms", 1000)
        .start();
    let mut feed = Feed::open(&server, "?types=document.updated", &[]).await;
    let client = server.connect("stream").await;
    let started = std::time::Instant::now();
    let mut edits = 0u64;
    let mut pace = tokio::time::interval(Duration::from_millis(50));
    while started.elapsed() < Duration::from_secs(4) {
        pace.tick().await;
        edit(&client, "x").await;
        edits += 1;
    }
    let streamed = started.elapsed();
    let seen = feed
        .until("every update reported", 20 * SECOND, |s| {
            s.iter()
                .map(|m| m.json()["data"]["updates"].as_u64().unwrap())
                .sum::<u64>()
                >= edits
        })
        .await;
    let reported: u64 = seen.iter().map(|m| m.json()["data"]["updates"].as_u64().unwrap()).sum();
    assert_eq!(reported, edits, "each update in exactly one event");
    let n = seen.len() as u64;
    let most = streamed.as_millis() as u64 / 300 + 2;
    let least = streamed.as_millis() as u64 / 1000;
    assert!(
        n <= most,
        "{n} events for {streamed:?} of edits: at most one per debounce ({most})"
    );
    assert!(
        n >= least,
        "{n} events for {streamed:?} of edits without a pause: at least one per maximum wait ({least})"
    );
}

/// An edit committed (relayed) but not yet reported when weft is
/// SIGKILLed is reported after the restart.
async fn an_unreported_edit_survives_sigkill(store: Store) {
    let mut server = Server::builder()
        .store(store)
        .arg("--webhook-debounce-ms", 60_000)
        .arg("--webhook-max-wait-ms", 60_000)
        .start();
    let writer = server.connect("crash").await;
    let observer = server.connect("crash").await;
    edit(&writer, "kept").await;
    observer
        .wait_for("the edit", 5 * SECOND, |o| o.text("t") == "kept")
        .await
        .unwrap();
    let before = server.sql("SELECT COUNT(*) FROM events WHERE type = 'document.updated'");
    assert_eq!(before, vec![vec!["0".to_string()]], "not reported before the kill");
    server.kill();
    let server = Server::builder()
        .on_database_of(&server)
        .arg("--webhook-debounce-ms", 100)
        .arg("--webhook-max-wait-ms", 1000)
        .start();
    let mut feed = Feed::open(&server, "?last_event_id=0&types=document.updated", &[]).await;
    let seen = feed
        .until("the report after the restart", 15 * SECOND, |s| !s.is_empty())
        .await;
    let e = seen[0].json();
    assert_eq!(e["document"], "crash");
    assert_eq!(e["data"]["updates"], 1);
    // Reported once: a second restart finds nothing left to report.
    let server = server.restart();
    let mut feed = Feed::open(&server, "?last_event_id=0&types=document.updated", &[]).await;
    let again = feed.until("the one report", 5 * SECOND, |s| !s.is_empty()).await;
    assert_eq!(again.len(), 1);
    assert!(feed.next(SECOND).await.is_none(), "no second report");
}

/// A consumer that reconnects with `Last-Event-ID` gets exactly what it
/// missed, across a reconnect and across a restart of weft.
async fn last_event_id_resumes_across_reconnect_and_restart(store: Store) {
    let server = Server::builder().store(store).start();
    let mut feed = Feed::open(&server, "?types=version.created", &[]).await;
    let v1 = take_version(&server, "v1").await;
    let first = feed.until("v1", 5 * SECOND, |s| !s.is_empty()).await;
    assert_eq!(first[0].json()["data"]["id"], v1);
    let last = first[0].id.unwrap().to_string();
    drop(feed);
    let v2 = take_version(&server, "v2").await;
    let v3 = take_version(&server, "v3").await;
    let mut feed = Feed::open(&server, "?types=version.created", &[("Last-Event-ID", &last)]).await;
    let missed = feed.until("v2, v3", 5 * SECOND, |s| s.len() >= 2).await;
    let ids: Vec<Value> = missed.iter().map(|m| m.json()["data"]["id"].clone()).collect();
    assert_eq!(ids, vec![json!(v2), json!(v3)]);
    assert!(feed.next(SECOND / 2).await.is_none(), "nothing twice");
    let last = missed[1].id.unwrap().to_string();
    drop(feed);
    let server = server.restart();
    let v4 = take_version(&server, "v4").await;
    let mut feed = Feed::open(&server, "?types=version.created", &[("Last-Event-ID", &last)]).await;
    let after = feed.until("v4 after the restart", 5 * SECOND, |s| !s.is_empty()).await;
    assert_eq!(after[0].json()["data"]["id"], v4);
    assert_eq!(after.len(), 1);
}

/// An edit of `resume` (so the content differs), then a named version of
/// it; its id.
async fn take_version(server: &Server, label: &str) -> i64 {
    let client = server.connect("resume").await;
    edit(&client, label).await;
    let observer = server.connect("resume").await;
    observer
        .wait_for("the edit", 5 * SECOND, |o| o.text("t").ends_with(label))
        .await
        .unwrap();
    let body = json!({ "label": label }).to_string();
    let r = http(
        &server.addr,
        "POST",
        "/api/docs/resume/versions",
        &[("Content-Type", "application/json")],
        Some(body.as_bytes()),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["id"].as_i64().unwrap()
}

/// A consumer resuming after events that were pruned is told so first,
/// and gets what is left.
async fn resuming_after_pruned_events_is_told(store: Store) {
    let server = Server::builder().store(store).arg("--events-retention", "1s").start();
    let mut feed = Feed::open(&server, "?last_event_id=0", &[]).await;
    let client = server.connect("old").await;
    edit(&client, "x").await;
    let created = feed.until("document.created", 5 * SECOND, |s| !s.is_empty()).await;
    let first = created[0].id.unwrap();
    drop(feed);
    let deadline = std::time::Instant::now() + 20 * SECOND;
    let gone = format!("SELECT COUNT(*) FROM events WHERE seq = {first}");
    while server.sql(&gone)[0][0] != "0" {
        assert!(std::time::Instant::now() < deadline, "pruned within 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await; // polling the condition
    }
    let mut feed = Feed::open(&server, &format!("?last_event_id={first}"), &[]).await;
    let told = feed.next(5 * SECOND).await.expect("a first message");
    assert_eq!(told.event.as_deref(), Some("pruned"), "{told:?}");
    assert_eq!(told.json()["last_event_id"], first);
}

/// A token sees the events of the documents it covers, and no revoked
/// tokens; a bad filter is a 400.
async fn a_token_sees_its_documents_only(store: Store) {
    let (_dir, key) = key_file();
    let server = Server::builder()
        .store(store)
        .arg("--auth-key-file", key.display())
        .start();
    let team = mint(&claims("team/*", Perm::Read, 3600));
    let auth = format!("Bearer {team}");
    let mut feed = Feed::open(&server, "", &[("Authorization", &auth)]).await;
    let mut prefixed = Feed::open(&server, "?prefix=team/b", &[("Authorization", &auth)]).await;
    let admin_auth = admin();
    for name in ["other/x", "team/a", "team/b"] {
        let t = mint(&claims(name, Perm::Write, 3600));
        let c = Client::connect(&server.ws, &format!("{name}?token={t}")).await.unwrap();
        c.wait_synced().await.unwrap();
        edit(&c, "x").await;
        c.wait_for("stored", 5 * SECOND, |c| c.text("t") == "x").await.unwrap();
    }
    let revoke = post_json(
        &server,
        "/api/tokens/revoke",
        json!({"token_id": claims("x", Perm::Read, 60).jti}),
    )
    .await;
    assert_eq!(revoke.status, 200, "{}", revoke.text());
    let seen = feed
        .until("team/a and team/b created", 10 * SECOND, |s| {
            count(s, "document.created") == 2
        })
        .await;
    // Sorted: the two documents' actors commit independently, and the test
    // does not wait for team/a's commit before team/b's client connects.
    let mut docs: Vec<String> = seen.iter().map(|m| m.json()["document"].to_string()).collect();
    docs.sort();
    assert_eq!(docs, ["\"team/a\"", "\"team/b\""]);
    let only_b = prefixed.until("team/b", 10 * SECOND, |s| !s.is_empty()).await;
    assert_eq!(only_b[0].json()["document"], "team/b");
    // Nothing else comes: not other/x, not the revocation.
    let mut all = Feed::open(&server, "?last_event_id=0", &[("Authorization", &admin_auth)]).await;
    all.until("the admin sees the revocation", 10 * SECOND, |s| {
        count(s, "token.revoked") == 1
    })
    .await;
    assert!(feed.next(SECOND).await.is_none(), "a token sees no more");
    let bad = http(
        &server.addr,
        "GET",
        "/api/events?types=document.touched",
        &[("Authorization", &auth)],
        None,
    )
    .await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert!(bad.text().contains("document.touched"));
    let none = http(&server.addr, "GET", "/api/events", &[], None).await;
    assert_eq!(none.status, 401, "{}", none.text());
}

/// Cluster mode: a node's feed carries the events another node wrote
/// (it polls the shared database), once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodes_feed_sees_another_nodes_events() {
    let Some(redis) = common::redis::shared_redis() else {
        return;
    };
    if common::postgres::shared_server().is_none() {
        return;
    }
    let first = Server::builder().store(Store::Postgres).arg("--redis", &redis).start();
    let second = Server::builder().on_database_of(&first).arg("--redis", &redis).start();
    let mut feed = Feed::open(&second, "?types=version.created", &[]).await;
    let doc = format!("events-cluster-{}", std::process::id());
    let client = first.connect(&doc).await;
    edit(&client, "on the first node").await;
    client
        .wait_for("stored", 5 * SECOND, |c| c.text("t") == "on the first node")
        .await
        .unwrap();
    let body = json!({ "label": "from the first node" }).to_string();
    let taken = http(
        &first.addr,
        "POST",
        &format!("/api/docs/{}/versions", enc(&doc)),
        &[("Content-Type", "application/json")],
        Some(body.as_bytes()),
    )
    .await;
    assert_eq!(taken.status, 201, "{}", taken.text());
    let seen = feed
        .until("the first node's version", 10 * SECOND, |s| !s.is_empty())
        .await;
    assert_eq!(seen[0].json()["data"]["label"], "from the first node");
    assert_eq!(seen[0].json()["document"], doc.as_str());
    assert!(feed.next(SECOND).await.is_none(), "once");
}

for_both_stores!(
    every_event_type_has_its_envelope,
    document_updated_says_what_changed,
    document_updated_is_debounced,
    a_deletion_reports_pending_edits_first,
    an_unreported_edit_survives_sigkill,
    last_event_id_resumes_across_reconnect_and_restart,
    resuming_after_pruned_events_is_told,
    a_token_sees_its_documents_only,
);
