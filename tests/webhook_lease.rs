//! Cluster mode: webhook delivery under the lease `weft:webhooks:lease`
//! (src/broker/webhook_lease.rs), against a real Redis and PostgreSQL. Two
//! nodes with the same `--webhook`: one delivers; SIGKILL it and the other
//! takes over within the lease's expiry, from the stored cursor.
//!
//! The test runs its own redis-server: the lease is one key per Redis, and
//! the shared test Redis serves other tests' clusters at the same time.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::redis::OwnRedis;
use common::{enc, http, Server, Store, SECOND};
use weft_bench::webhooks::{Sink, OK_AND_CLOSE};
use yrs::{Map, Transact};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// The lease's lifetime (`WEBHOOK_LEASE_TTL`) and renewal period
/// (`SYNC_EVERY`): a new holder takes it at most this long after the
/// old one stopped renewing.
const TAKEOVER: Duration = Duration::from_secs(12);

/// An edit through the API on `node`, to a document of its own: its
/// `document.created` now and its `document.updated` after the debounce,
/// both written by that node.
async fn edit(node: &Server, doc: &str) {
    let d = yrs::Doc::new();
    let map = d.get_or_insert_map("m");
    let update = {
        let mut txn = d.transact_mut();
        map.insert(&mut txn, "k", doc);
        txn.encode_update_v1()
    };
    let r = http(
        &node.addr,
        "POST",
        &format!("/api/docs/{}/update", enc(doc)),
        &[("Content-Type", "application/octet-stream")],
        Some(&update),
    )
    .await;
    assert!(r.status < 300, "{}", r.text());
}

/// The outbox's event ids, from the shared database.
fn stored_ids(node: &Server) -> BTreeSet<String> {
    let pg = node.pg.as_ref().expect("a PostgreSQL node");
    pg.query("SELECT id FROM events")
        .into_iter()
        .map(|r| r[0].clone())
        .collect()
}

/// How many times the sink got each id.
fn received(sink: &Sink) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for id in sink.ids() {
        *counts.entry(id).or_default() += 1;
    }
    counts
}

/// Waits until the outbox holds a `document.updated` of each of `docs`
/// and every event it holds has reached the sink; `what` names the wait
/// in the failure.
async fn all_delivered(node: &Server, sink: &Sink, docs: &[String], what: &str, within: Duration) {
    let deadline = Instant::now() + within;
    let pg = node.pg.as_ref().expect("a PostgreSQL node");
    loop {
        let updated: BTreeSet<String> = pg
            .query("SELECT document FROM events WHERE type = 'document.updated'")
            .into_iter()
            .map(|r| r[0].clone())
            .collect();
        let stored = stored_ids(node);
        let got = received(sink);
        if docs.iter().all(|d| updated.contains(d)) && stored.iter().all(|id| got.contains_key(id)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {within:?}; stored {stored:?}, received {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The node that delivers: the one whose deliveries count.
async fn deliveries(node: &Server) -> f64 {
    let body = node.get("/metrics").await.text();
    body.lines()
        .filter_map(|l| l.strip_prefix("weft_webhook_deliveries_total{"))
        .filter_map(|rest| rest.rsplit(' ').next()?.trim().parse::<f64>().ok())
        .sum()
}

/// Two nodes, one `--webhook`: every event reaches the receiver exactly
/// once while both run (one node delivers, not each); after the holder
/// is SIGKILLed, the other delivers what follows within the lease's
/// expiry, and nothing written before or after is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_delivers_and_another_takes_over_after_sigkill() {
    if common::postgres::shared_server().is_none() {
        return;
    }
    let redis = OwnRedis::start();
    let sink = Sink::start(OK_AND_CLOSE).await.unwrap();
    let node = |builder: common::Builder| {
        builder
            .arg("--redis", redis.url())
            .flag("--webhook-allow-private")
            .arg("--webhook", &sink.url)
            .env("WEFT_WEBHOOK_SECRET", SECRET)
            .arg("--webhook-debounce-ms", 100)
    };
    let first = node(Server::builder().store(Store::Postgres)).start();
    let second = node(Server::builder().on_database_of(&first)).start();
    let mut nodes = [first, second];

    // Steady state: edits on both nodes, each event once.
    let steady: Vec<String> = (0..4).map(|i| format!("steady-{i}")).collect();
    for (i, doc) in steady.iter().enumerate() {
        edit(&nodes[i % 2], doc).await;
    }
    all_delivered(&nodes[0], &sink, &steady, "the steady state", 30 * SECOND).await;
    let got = received(&sink);
    assert!(
        got.values().all(|&n| n == 1),
        "each event once while both nodes run: {got:?}"
    );
    let counts = [deliveries(&nodes[0]).await, deliveries(&nodes[1]).await];
    let types = nodes[0]
        .pg
        .as_ref()
        .unwrap()
        .query("SELECT type, document FROM events ORDER BY seq");
    assert!(
        counts.contains(&0.0) && counts.contains(&(got.len() as f64)),
        "one node delivers: {counts:?}, {} received; events {types:?}",
        got.len()
    );
    let holder = if counts[0] > 0.0 { 0 } else { 1 };
    let survivor = 1 - holder;

    // What the holder delivered is not sent again once its cursor is
    // stored (within 0.5 s of delivering, `deliver::STORE_EVERY`): wait
    // for that, then SIGKILL the holder: it cannot release the lease,
    // which expires.
    let pg = nodes[holder].pg.as_ref().unwrap();
    let deadline = Instant::now() + 10 * SECOND;
    loop {
        let number = |sql: &str| -> i64 { pg.query(sql)[0][0].parse().unwrap_or(-1) };
        let newest = number("SELECT max(seq) FROM events");
        let stored = number("SELECT max(seq) FROM webhook_cursors");
        if stored >= newest {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cursor stayed at {stored}, events up to {newest}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    nodes[holder].kill();
    let killed = Instant::now();
    let after: Vec<String> = (0..3).map(|i| format!("after-{i}")).collect();
    for doc in &after {
        edit(&nodes[survivor], doc).await;
    }
    all_delivered(&nodes[survivor], &sink, &after, "after the SIGKILL", 30 * SECOND).await;
    let took = killed.elapsed();
    eprintln!("delivery resumed on the other node {took:?} after the SIGKILL");
    assert!(
        took < TAKEOVER + 5 * SECOND,
        "the survivor took over after {took:?}, past the lease's expiry"
    );
    let got = received(&sink);
    let stored = stored_ids(&nodes[survivor]);
    assert_eq!(
        got.keys().cloned().collect::<BTreeSet<_>>(),
        stored,
        "every stored event was delivered, nothing else"
    );
    // The killed holder's delivered events are not sent again (their
    // cursor was stored); at most one in flight at the kill may be.
    let twice: Vec<_> = got.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.len() <= 1, "sent again after the takeover: {twice:?}");
    assert!(deliveries(&nodes[survivor]).await >= after.len() as f64);
}
