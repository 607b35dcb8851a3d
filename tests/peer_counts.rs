//! Live peer counts (`document.peers`, issue 19 item 5): pushed on the
//! feed by default, at most once a second per document, to subscribers
//! that ask for them; never stored in the outbox (no `id:`, not replayed,
//! not sent to webhooks); a token sees only the documents it covers.

mod common;

use common::sse::Feed;
use common::tokens::{claims, key_file, mint, KEY};
use common::{Server, SECOND};
use serde_json::{json, Value};
use weft::auth::Perm;
use weft_bench::client::Client;

const PEERS: &str = "?types=document.peers";

/// Reads counts until `doc`'s latest is `want`; returns the messages' ids
/// (all `None`: counts are not outbox events).
async fn until_count(feed: &mut Feed, doc: &str, want: u64) -> Vec<Option<i64>> {
    let seen = feed
        .until(&format!("{doc} at {want}"), 5 * SECOND, |s| {
            s.iter()
                .rev()
                .map(|m| m.json())
                .find(|v| v["document"] == doc)
                .is_some_and(|v| v["data"]["peers"] == want)
        })
        .await;
    for m in &seen {
        let v = m.json();
        assert_eq!(v["type"], "document.peers", "{v}");
        assert!(v.get("id").is_none(), "{v}");
    }
    seen.iter().map(|m| m.id).collect()
}

/// Without `--events-peers`, a subscriber that asks for counts sees each
/// join and leave; one that does not ask, and the outbox, see nothing.
#[tokio::test]
async fn counts_are_live_by_default_and_never_stored() {
    let server = Server::start();
    let mut counts = Feed::open(&server, PEERS, &[]).await;
    let mut everything = Feed::open(&server, "", &[]).await;
    let first = server.connect("room").await;
    let ids = until_count(&mut counts, "room", 1).await;
    assert!(ids.iter().all(Option::is_none), "no id: nothing to resume");
    let second = server.connect("room").await;
    until_count(&mut counts, "room", 2).await;
    drop(first);
    drop(second);
    until_count(&mut counts, "room", 0).await;
    assert!(everything.next(SECOND).await.is_none(), "not sent to who did not ask");
    let mut replay = Feed::open(&server, "?last_event_id=0", &[]).await;
    assert!(replay.next(SECOND).await.is_none(), "nothing in the outbox");
}

/// A class joining at once costs a message or two, not one per joiner.
#[tokio::test]
async fn counts_are_debounced() {
    let server = Server::start();
    let mut counts = Feed::open(&server, PEERS, &[]).await;
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(Client::connect(&server.ws, "class").await.unwrap());
    }
    let ids = until_count(&mut counts, "class", 20).await;
    assert!(ids.len() <= 4, "{} messages for 20 joins", ids.len());
}

/// A token sees the counts of the documents it covers; the admin all.
#[tokio::test]
async fn a_token_sees_its_documents_counts_only() {
    let (_dir, key) = key_file();
    let server = Server::builder().arg("--auth-key-file", key.display()).start();
    let team = format!("Bearer {}", mint(&claims("team/*", Perm::Read, 3600)));
    let admin = format!("Bearer {KEY}");
    let mut feed = Feed::open(&server, PEERS, &[("Authorization", &team)]).await;
    let mut all = Feed::open(&server, PEERS, &[("Authorization", &admin)]).await;
    let mut clients = Vec::new();
    for name in ["other/x", "team/a"] {
        let t = mint(&claims(name, Perm::Write, 3600));
        let c = Client::connect(&server.ws, &format!("{name}?token={t}")).await.unwrap();
        c.wait_synced().await.unwrap();
        clients.push(c);
    }
    until_count(&mut all, "other/x", 1).await;
    until_count(&mut all, "team/a", 1).await;
    let seen = until_count(&mut feed, "team/a", 1).await;
    assert_eq!(seen.len(), 1);
    assert!(feed.next(SECOND).await.is_none(), "other/x is not the token's");
}

/// A webhook cannot subscribe to counts: they are never stored.
#[tokio::test]
async fn webhooks_refuse_counts() {
    let server = Server::builder().flag("--webhook-allow-private").start();
    let body = json!({ "url": "http://127.0.0.1:9/hook", "events": ["document.peers"] }).to_string();
    let r = server.post("/api/webhooks", "application/json", body.as_bytes()).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let v: Value = r.json();
    assert!(v.to_string().contains("only on the feed"), "{v}");
}
