//! Cluster mode (`--redis`, docs/CLUSTER.md): three real weft nodes on one
//! machine, one PostgreSQL database (`WEFT_TEST_POSTGRES`) and one Redis
//! (`WEFT_TEST_REDIS`, or a redis-server of the test's own when it kills
//! it), clients spread over the nodes. Like the PostgreSQL tests, these
//! fail when their servers are missing, unless the variable says `skip`.
//!
//! Over 500 lines on purpose: every test here starts the same three-node
//! cluster with the helpers below, and each guards one promise of
//! docs/CLUSTER.md; splitting them would split those helpers too.

mod common;

use common::redis::{shared_redis, OwnRedis};
use common::tokens::{self, KEY};
use common::{enc, http, map_get, Client, Server, Store, SECOND};
use weft::auth::Perm;
use yrs::{Map, ReadTxn, StateVector, Text, Transact};

/// `n` nodes sharing a fresh PostgreSQL database and the Redis at
/// `redis` (no password: the summary shows it as given).
fn nodes(redis: &str, n: usize) -> Vec<Server> {
    nodes_with(redis, n, &[])
}

/// `nodes`, each also given `args` (flag, value).
fn nodes_with(redis: &str, n: usize, args: &[(&str, &str)]) -> Vec<Server> {
    let first = builder_with(args).store(Store::Postgres).arg("--redis", redis).start();
    let mut nodes = vec![];
    for i in 1..n {
        // The flag and the variable both make a node (the wiring test in
        // tests/config.rs cannot start one).
        let builder = builder_with(args).on_database_of(&first);
        let builder = if i % 2 == 0 {
            builder.env("WEFT_REDIS", redis)
        } else {
            builder.arg("--redis", redis)
        };
        let node = builder.start();
        assert_eq!(node.summary().get("redis").map(String::as_str), Some(redis));
        nodes.push(node);
    }
    nodes.insert(0, first);
    nodes
}

fn builder_with(args: &[(&str, &str)]) -> common::Builder {
    let mut builder = Server::builder();
    for &(flag, value) in args {
        builder = builder.arg(flag, value);
    }
    builder
}

/// Both servers the cluster needs, or `None` to skip (each says why).
fn servers() -> Option<String> {
    let redis = shared_redis();
    common::postgres::shared_server()?;
    redis
}

/// A document name no other run has used: the shared Redis keeps streams
/// between runs, and a test must not find its document already written.
fn room(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{name}-{}-{nanos}", std::process::id())
}

fn state_vector(client: &Client) -> StateVector {
    client.doc.transact().state_vector()
}

/// The guarantee of a cluster: clients on different nodes edit one
/// document at once and converge; a late joiner on a third node loads
/// everything from the stream; nobody gets its own edits back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_on_three_nodes_converge_and_a_late_joiner_gets_everything() {
    let Some(redis) = servers() else { return };
    let doc = room("team/plan");
    let nodes = nodes(&redis, 3);
    let a = nodes[0].connect(&doc).await;
    let b = nodes[1].connect(&doc).await;
    let (ta, tb) = (a.doc.get_or_insert_text("t"), b.doc.get_or_insert_text("t"));
    let (ma, mb) = (a.doc.get_or_insert_map("m"), b.doc.get_or_insert_map("m"));
    for i in 0..30 {
        a.edit(|txn| ta.insert(txn, 0, &format!("a{i} ")));
        b.edit(|txn| tb.insert(txn, 0, &format!("b{i} ")));
        a.edit(|txn| {
            ma.insert(txn, "shared", format!("a{i}"));
        });
        b.edit(|txn| {
            mb.insert(txn, "shared", format!("b{i}"));
        });
    }
    a.wait_for("b's edits on node 1", 10 * SECOND, |a| {
        state_vector(a) == state_vector(&b)
    })
    .await
    .unwrap();
    b.wait_for("a's edits on node 2", 10 * SECOND, |b| {
        state_vector(b) == state_vector(&a)
    })
    .await
    .unwrap();
    assert_eq!(a.text("t"), b.text("t"));
    assert_eq!(map_get(&a, "shared"), map_get(&b, "shared"));
    assert!(a.text("t").contains("a29 ") && a.text("t").contains("b0 "));

    let late = nodes[2].connect(&doc).await;
    late.wait_for("everything, on node 3", 10 * SECOND, |c| {
        state_vector(c) == state_vector(&a) && c.text("t") == a.text("t")
    })
    .await
    .unwrap();

    // Each got the other's edits (one frame per update at most) but never
    // its own back: a node does not relay what it reads back of its own.
    let (seen_a, seen_b) = (a.seen().updates, b.seen().updates);
    assert!(seen_a <= 1 + 60, "a got {seen_a} update frames for b's 60 updates");
    assert!(seen_b <= 1 + 60, "b got {seen_b} update frames for a's 60 updates");

    // What to watch: append latency and replication lag, and health.
    for node in &nodes[..2] {
        assert!(node.metric("weft_stream_append_duration_seconds_count").await >= 1.0);
        assert!(node.metric("weft_stream_lag_seconds_count").await >= 1.0);
        let health = node.get("/healthz").await;
        assert_eq!(
            (health.status, health.text()),
            (200, "postgres: ok\nredis: ok\n".to_string())
        );
    }
}

/// Peers on different nodes see each other's awareness (cursors); a late
/// joiner on a third node sees both at once; a client that leaves is
/// removed everywhere, and a node that dies has its clients' states
/// removed by the others within the awareness timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awareness_crosses_nodes_and_a_dead_nodes_clients_expire() {
    let Some(redis) = servers() else { return };
    let doc = room("team/cursors");
    let mut nodes = nodes_with(&redis, 3, &[("--awareness-timeout-ms", "2000")]);
    let mut a = nodes[0].connect(&doc).await;
    let mut b = nodes[1].connect(&doc).await;
    a.set_awareness(r#"{"user":{"name":"alice"}}"#);
    b.set_awareness(r#"{"user":{"name":"bob"}}"#);
    let (alice, bob) = (a.client_id(), b.client_id());
    let both = {
        let mut ids = vec![alice, bob];
        ids.sort();
        ids
    };
    for (who, client) in [("a", &a), ("b", &b)] {
        client
            .wait_for(&format!("both cursors at {who}"), 5 * SECOND, |c| {
                c.seen().present() == both
            })
            .await
            .unwrap();
    }
    let late = nodes[2].connect(&doc).await;
    late.wait_for("both cursors on node 3", 5 * SECOND, |c| c.seen().present() == both)
        .await
        .unwrap();

    // bob leaves: removed on the other nodes at once (null, clock + 1).
    b.close();
    for (who, client) in [("a", &a), ("the late joiner", &late)] {
        client
            .wait_for(&format!("bob gone at {who}"), 5 * SECOND, |c| {
                c.seen().present() == vec![alice]
            })
            .await
            .unwrap();
    }

    // alice's node dies: nobody says goodbye for her; her state expires on
    // node 3 once not renewed for the timeout (2 s here).
    nodes[0].kill();
    late.wait_for("alice expired on node 3", 10 * SECOND, |c| {
        c.seen().present().is_empty()
    })
    .await
    .unwrap();
}

/// Control events reach every node: a token revoked through node 1 closes
/// the connection holding it on node 2 (4403), others untouched; a
/// document deleted through node 1 closes its peers on node 2 (4404), and
/// node 2 then serves it empty (its stream went with it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_and_deletion_on_one_node_close_peers_on_another() {
    let Some(redis) = servers() else { return };
    let doc = room("control/doc");
    let (_dir, key) = tokens::key_file();
    let key = key.display().to_string();
    let nodes = nodes_with(&redis, 2, &[("--auth-key-file", &key)]);
    let connect = |node: usize, token: String| {
        let url = format!("{}?token={token}", enc(&doc).replace("%2F", "/"));
        let ws = nodes[node].ws.clone();
        async move {
            let client = Client::connect(&ws, &url).await.expect("connect");
            client.wait_synced().await.unwrap();
            client
        }
    };
    let claims = tokens::claims(&doc, Perm::Write, 3600);
    let victim_id = claims.jti.clone();
    let writer = connect(0, tokens::token(&doc, Perm::Write, 3600)).await;
    let victim = connect(1, tokens::mint(&claims)).await;
    let bystander = connect(1, tokens::token(&doc, Perm::Write, 3600)).await;
    let text = writer.doc.get_or_insert_text("t");
    writer.edit(|txn| text.push(txn, "to be deleted"));
    bystander
        .wait_for("the edit on node 2", 10 * SECOND, |c| c.text("t") == "to be deleted")
        .await
        .unwrap();

    let admin = format!("Bearer {KEY}");
    let body = serde_json::json!({ "token_id": victim_id }).to_string();
    let headers = [("Authorization", admin.as_str()), ("Content-Type", "application/json")];
    let res = http(
        &nodes[0].addr,
        "POST",
        "/api/tokens/revoke",
        &headers,
        Some(body.as_bytes()),
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(victim.wait_closed(5 * SECOND).await.unwrap().map(|c| c.0), Some(4403));
    assert!(!bystander.seen().ended, "other tokens are untouched");

    let path = format!("/api/docs/{}", enc(&doc));
    let res = http(&nodes[0].addr, "DELETE", &path, &[("Authorization", &admin)], None).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(writer.wait_closed(5 * SECOND).await.unwrap().map(|c| c.0), Some(4404));
    assert_eq!(
        bystander.wait_closed(5 * SECOND).await.unwrap().map(|c| c.0),
        Some(4404)
    );
    let fresh = connect(1, tokens::token(&doc, Perm::Write, 3600)).await;
    assert_eq!(fresh.text("t"), "", "deleted everywhere, its stream too");
}

/// Nodes SIGKILLed in turn while their clients write: everything an
/// observer on another node saw is there afterwards, on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_loses_nothing_an_observer_on_another_node_saw() {
    let Some(redis) = servers() else { return };
    let doc = room("crash/notes");
    let mut nodes = nodes(&redis, 3);
    let observer = nodes[1].connect(&doc).await;
    let mut seen_at_kills = vec![];
    for round in 0..4 {
        // Nodes 1 and 3 die in turn; the observer's node 2 stays.
        let victim = if round % 2 == 0 { 0 } else { 2 };
        let writer = nodes[victim].connect(&doc).await;
        let text = writer.doc.get_or_insert_text("t");
        for i in 0..20 {
            writer.edit(|txn| text.push(txn, &format!("r{round}w{i} ")));
        }
        let last = format!("r{round}w19 ");
        observer
            .wait_for("this round's first edits", 10 * SECOND, |o| o.text("t").contains(&last))
            .await
            .unwrap();
        assert_eq!(
            writer.seen().updates,
            1,
            "only the initial step2: the writer must not get its own edits back"
        );
        // More edits, and the node dies while they are on their way.
        for i in 20..120 {
            writer.edit(|txn| text.push(txn, &format!("r{round}w{i} ")));
        }
        nodes[victim].kill();
        // Whatever the observer has now is part of what anyone saw.
        seen_at_kills.push(observer.text("t"));
        let node = nodes.remove(victim);
        nodes.insert(victim, node.restart());
    }

    let seen = observer.text("t");
    for (i, node) in nodes.iter().enumerate() {
        let after = node.connect(&doc).await;
        after
            .wait_for(&format!("what the observer saw, on node {}", i + 1), 10 * SECOND, |c| {
                c.text("t").starts_with(&seen)
            })
            .await
            .unwrap();
        for at_kill in &seen_at_kills {
            assert!(after.text("t").starts_with(at_kill));
        }
    }
}

/// Redis killed (SIGKILL, `appendfsync always`) and started again while
/// clients edit: the node that could not append closes its peers (4500);
/// the followers reconnect and catch up; nothing the observer saw is lost
/// and every node converges on one state vector.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_mid_edit_loses_nothing_and_every_node_converges() {
    if servers().is_none() {
        return;
    }
    let doc = room("outage/doc");
    let mut redis = OwnRedis::start();
    let nodes = nodes(&redis.url(), 3);
    let writer = nodes[0].connect(&doc).await;
    let observer = nodes[1].connect(&doc).await;
    let text = writer.doc.get_or_insert_text("t");
    for i in 0..50 {
        writer.edit(|txn| text.push(txn, &format!("x{i} ")));
    }
    observer
        .wait_for("the edits before the outage", 10 * SECOND, |o| {
            o.text("t").contains("x49 ")
        })
        .await
        .unwrap();

    redis.kill();
    writer.edit(|txn| text.push(txn, "lost? "));
    let close = writer.wait_closed(15 * SECOND).await.unwrap();
    assert_eq!(
        close.map(|(code, _)| code),
        Some(4500),
        "an edit that cannot be appended is refused"
    );
    let seen = observer.text("t");
    let health = nodes[1].get("/healthz").await;
    // (as JSON, like every error answer)
    assert_eq!(health.status, 503);
    assert!(health.text().contains("postgres: ok") && health.text().contains("redis: unavailable"));
    redis.start_again();

    // A writer (a client that reconnected) goes on, on the same node.
    let writer = loop_connect(&nodes[0], &doc).await;
    let text = writer.doc.get_or_insert_text("t");
    for i in 50..80 {
        writer.edit(|txn| text.push(txn, &format!("x{i} ")));
    }
    observer
        .wait_for("the edits after the outage, on node 2", 20 * SECOND, |o| {
            o.text("t").contains("x79 ")
        })
        .await
        .unwrap();
    assert!(observer.text("t").starts_with(&seen), "the observer lost what it saw");
    let mut fresh = vec![];
    for node in &nodes {
        fresh.push(loop_connect(node, &doc).await);
    }
    for client in &fresh {
        client
            .wait_for("the same state on every node", 10 * SECOND, |c| {
                state_vector(c) == state_vector(&observer)
            })
            .await
            .unwrap();
        assert_eq!(client.text("t"), observer.text("t"));
    }
    assert!(nodes[1].metric("weft_redis_reconnects_total").await >= 1.0);
}

/// Connects, retrying while the node refuses (its document could not be
/// loaded while Redis was down), for at most 20 s.
async fn loop_connect(server: &Server, room: &str) -> Client {
    let deadline = std::time::Instant::now() + 20 * SECOND;
    loop {
        if let Ok(client) = Client::connect(&server.ws, room).await {
            if client.wait_synced().await.is_ok() {
                return client;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "could not connect to {room} for 20 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A SQLite file cannot be shared between machines: `--redis` with one is
/// refused at start-up, and the Redis password is not printed.
#[test]
fn redis_with_a_sqlite_db_is_refused() {
    let out = Server::builder()
        .arg("--redis", "redis://:s3cret@127.0.0.1:1")
        .run_to_exit();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        stderr.contains("needs a PostgreSQL --db") || stdout.contains("needs a PostgreSQL --db"),
        "{stderr}{stdout}"
    );
    assert!(
        !stderr.contains("s3cret") && !stdout.contains("s3cret"),
        "{stderr}{stdout}"
    );
}

/// The sum of a metric over the nodes.
async fn total(nodes: &[Server], metric: &str) -> f64 {
    let mut sum = 0.0;
    for node in nodes {
        sum += node.metric(metric).await;
    }
    sum
}

/// Waits until `check` holds, polling, or panics after `timeout`.
async fn eventually<F, Fut>(what: &str, timeout: std::time::Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + timeout;
    while !check().await {
        assert!(std::time::Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Entries of a document's updates stream.
fn stream_len(redis: &str, doc: &str) -> u64 {
    let mut conn = redis::Client::open(redis).unwrap().get_connection().unwrap();
    redis::cmd("XLEN")
        .arg(format!("weft:{{{doc}}}:updates"))
        .query(&mut conn)
        .unwrap()
}

/// Compaction exactly once: with three nodes holding a document, one of
/// them (the lease holder) compacts it once its log passes the limit and
/// trims the stream after the grace period; a node that loads it after
/// the trim gets everything (the snapshot, then the stream after it).
///
/// Every node's log passes the limit (its own client's edits and the
/// others' it read from the stream: 30 of 20), and every node then
/// handles one more batch (a compaction that failed is retried there), so
/// without the lease each of them would compact: the test counts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_runs_once_the_stream_is_trimmed_and_a_later_load_gets_everything() {
    let Some(redis) = servers() else { return };
    let doc = room("compact/once");
    let args = [("--compact-updates", "20"), ("--trim-grace-ms", "300")];
    let nodes = nodes_with(&redis, 3, &args);
    let mut clients = vec![];
    for node in &nodes {
        clients.push(node.connect(&doc).await);
    }
    let converged = |what: &'static str| {
        let clients = &clients;
        async move {
            for client in &clients[1..] {
                client
                    .wait_for(what, 10 * SECOND, |c| state_vector(c) == state_vector(&clients[0]))
                    .await
                    .unwrap();
            }
        }
    };
    // The document's row exists in PostgreSQL before anyone compacts (a
    // named version creates it): nodes compacting a new document at once
    // race to create it, and all but one fail, which would hide them.
    let versions = format!("/api/docs/{}/versions", enc(&doc));
    let res = nodes[0]
        .post(&versions, "application/json", br#"{"label":"start"}"#)
        .await;
    assert_eq!(res.status, 201, "{}", res.text());
    // 30 updates, 10 through each node: past the limit of 20 once, not twice.
    for i in 0..10 {
        for (n, client) in clients.iter().enumerate() {
            let text = client.doc.get_or_insert_text("t");
            client.edit(|txn| text.push(txn, &format!("{n}:{i} ")));
        }
    }
    converged("every edit").await;
    // One more batch through each node, read by every node: each has now
    // decided after the limit was passed, and retried if it had failed.
    for (n, client) in clients.iter().enumerate() {
        let text = client.doc.get_or_insert_text("t");
        client.edit(|txn| text.push(txn, &format!("{n}:last ")));
    }
    converged("the last edits").await;
    for (n, node) in nodes.iter().enumerate() {
        let applied = node.metric("weft_updates_applied_total").await;
        assert!(applied >= 30.0, "node {}: its log holds {applied} updates", n + 1);
    }
    eventually("a compaction", 10 * SECOND, || async {
        total(&nodes, "weft_compactions_total").await >= 1.0
    })
    .await;
    eventually("the stream trimmed", 10 * SECOND, || async {
        total(&nodes, "weft_stream_trims_total").await >= 1.0
    })
    .await;
    let mut per_node = vec![];
    for node in &nodes {
        per_node.push(node.metric("weft_compactions_total").await);
    }
    assert_eq!(
        per_node.iter().sum::<f64>(),
        1.0,
        "one node compacts, once: {per_node:?}"
    );
    assert_eq!(
        total(&nodes, "weft_leases_held").await,
        1.0,
        "one lease for the document"
    );
    assert_eq!(total(&nodes, "weft_stream_trims_total").await, 1.0);
    let left = stream_len(&redis, &doc);
    assert!(left < 30, "the stream keeps {left} of 30 entries after the trim");

    // A fourth node loads the document after the trim: snapshot + rest.
    let late_node = Server::builder()
        .on_database_of(&nodes[0])
        .arg("--redis", &redis)
        .start();
    let late = late_node.connect(&doc).await;
    let text = clients[0].text("t");
    late.wait_for("everything, after the trim", 10 * SECOND, |c| c.text("t") == text)
        .await
        .unwrap();
    // And it goes on with the others.
    let lt = late.doc.get_or_insert_text("t");
    late.edit(|txn| lt.push(txn, "late"));
    clients[0]
        .wait_for("the late node's edit", 10 * SECOND, |c| c.text("t").ends_with("late"))
        .await
        .unwrap();
}

/// A restore through one node's API reaches another node's peers as an
/// ordinary update. The edit it undoes was made on the other node, so the
/// restoring node computes its diff from what it read of the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_through_one_node_reaches_another_nodes_peers() {
    let Some(redis) = servers() else { return };
    let doc = room("restore/doc");
    let nodes = nodes(&redis, 2);
    let a = nodes[0].connect(&doc).await;
    let b = nodes[1].connect(&doc).await;
    let ta = a.doc.get_or_insert_text("t");
    a.edit(|txn| ta.push(txn, "original"));
    b.wait_for("the original", 10 * SECOND, |b| b.text("t") == "original")
        .await
        .unwrap();
    let versions = format!("/api/docs/{}/versions", enc(&doc));
    let res = nodes[0]
        .post(&versions, "application/json", br#"{"label":"original"}"#)
        .await;
    assert_eq!(res.status, 201, "{}", res.text());
    let id = res.json()["id"].as_i64().unwrap();
    let tb = b.doc.get_or_insert_text("t");
    b.edit(|txn| tb.push(txn, " changed"));
    a.wait_for("the change, on node 1", 10 * SECOND, |a| {
        a.text("t") == "original changed"
    })
    .await
    .unwrap();
    let res = nodes[0].post(&format!("{versions}/{id}/restore"), "", b"").await;
    assert_eq!(res.status, 200, "{}", res.text());
    b.wait_for("the restore, on node 2", 10 * SECOND, |b| b.text("t") == "original")
        .await
        .unwrap();
    a.wait_for("the same state on both", 10 * SECOND, |a| {
        a.text("t") == "original" && state_vector(a) == state_vector(&b)
    })
    .await
    .unwrap();
}

/// A node stalled (SIGSTOP) past the grace period while the others edit,
/// compact and trim: when it runs again it finds the entries it had not
/// read trimmed, reloads from PostgreSQL, and its peer gets everything
/// without reconnecting. The clients' edits follow each other, so the
/// first entry the node reads after the trim cannot apply (the ones before
/// it are gone): it notices there, or at its next tick, whichever comes
/// first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_the_trim_reloads_from_postgres() {
    behind_the_trim(Edits::Following).await;
}

/// The same with edits that each stand alone (each from a new client, a
/// map entry of its own, through the API): what the node reads after the
/// trim applies cleanly, so only the check at its tick (the trim point
/// against what it read) can tell that it missed the entries before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_the_trim_notices_at_its_tick_when_what_follows_applies() {
    behind_the_trim(Edits::Independent).await;
}

#[derive(Clone, Copy, PartialEq)]
enum Edits {
    /// The live nodes' clients append to one text, each edit after the last.
    Following,
    /// Every edit a new Yjs client's first (a map entry), posted to the API.
    Independent,
}

async fn behind_the_trim(edits: Edits) {
    const SIGSTOP: i32 = 19;
    const SIGCONT: i32 = 18;
    let Some(redis) = servers() else { return };
    let doc = room("compact/behind");
    let args = [("--compact-updates", "20"), ("--trim-grace-ms", "200")];
    let nodes = nodes_with(&redis, 3, &args);
    let mut clients = vec![];
    for node in &nodes {
        clients.push(node.connect(&doc).await);
    }
    eventually("a lease holder", 10 * SECOND, || async {
        total(&nodes, "weft_leases_held").await == 1.0
    })
    .await;
    let mut holder = 0;
    for (i, node) in nodes.iter().enumerate() {
        if node.metric("weft_leases_held").await == 1.0 {
            holder = i;
        }
    }
    let stalled = (holder + 1) % 3;
    let live: Vec<usize> = (0..3).filter(|&i| i != stalled).collect();
    nodes[stalled].signal(SIGSTOP);
    let update_path = format!("/api/docs/{}/update", enc(&doc));
    for i in 0..15 {
        for &n in &live {
            match edits {
                Edits::Following => {
                    let text = clients[n].doc.get_or_insert_text("t");
                    clients[n].edit(|txn| text.push(txn, &format!("{n}:{i} ")));
                }
                Edits::Independent => {
                    let update = standalone_update(&format!("{n}:{i}"));
                    let res = nodes[n].post(&update_path, "application/octet-stream", &update).await;
                    assert_eq!(res.status, 200, "{}", res.text());
                }
            }
        }
    }
    let live_nodes: Vec<&Server> = live.iter().map(|&i| &nodes[i]).collect();
    eventually("the stream trimmed while a node is stalled", 10 * SECOND, || async {
        let mut sum = 0.0;
        for node in &live_nodes {
            sum += node.metric("weft_stream_trims_total").await;
        }
        sum >= 1.0
    })
    .await;
    let reference = &clients[live[0]];
    reference
        .wait_for("every edit on a live node", 10 * SECOND, |c| {
            state_vector(c) == state_vector(&clients[live[1]])
        })
        .await
        .unwrap();
    nodes[stalled].signal(SIGCONT);
    clients[stalled]
        .wait_for("everything, after the stall", 10 * SECOND, |c| {
            state_vector(c) == state_vector(reference) && c.text("t") == reference.text("t")
        })
        .await
        .unwrap();
    if edits == Edits::Independent {
        let map = clients[stalled].doc.get_or_insert_map("m");
        assert_eq!(map.len(&clients[stalled].doc.transact()), 30);
    }
    assert!(!clients[stalled].seen().ended, "its peer stays connected");
    assert!(nodes[stalled].log().contains("trimmed past what this node read"));
}

/// A Yjs update that depends on nothing: a new client's first edit, the
/// map entry `m[key] = key`.
fn standalone_update(key: &str) -> Vec<u8> {
    let doc = yrs::Doc::new();
    let map = doc.get_or_insert_map("m");
    map.insert(&mut doc.transact_mut(), key, key);
    let update = doc.transact().encode_state_as_update_v1(&StateVector::default());
    update
}

/// The HTTP API of a node that has not loaded a document knows it from the
/// document's stream: edited through another node and not snapshotted to
/// PostgreSQL yet (fewer edits than `--compact-updates`, still loaded),
/// it is served there, not answered 404; a document no node has seen
/// still is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_of_another_node_serves_a_document_not_snapshotted_yet() {
    let Some(redis) = servers() else { return };
    let doc = room("fresh/api");
    let nodes = nodes(&redis, 2);
    let a = nodes[0].connect(&doc).await;
    let text = a.doc.get_or_insert_text("t");
    a.edit(|txn| text.push(txn, "hello"));
    eventually("the edit in the stream", 10 * SECOND, || async {
        stream_len(&redis, &doc) >= 1
    })
    .await;
    assert_eq!(nodes[0].metric("weft_compactions_total").await, 0.0, "no snapshot yet");

    let path = format!("/api/docs/{}", enc(&doc));
    let res = nodes[1].get(&path).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["content"]["t"], "hello");
    let res = nodes[1].get(&format!("{path}/update")).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let res = nodes[1].get(&format!("{path}/versions")).await;
    assert_eq!(res.status, 200, "{}", res.text());

    let unknown = format!("/api/docs/{}", enc(&room("fresh/never")));
    assert_eq!(nodes[1].get(&unknown).await.status, 404);
}

/// Nodes storing the same new document in PostgreSQL at once (a named
/// version taken through each node's API at the same moment) all succeed:
/// the row one of them inserts is found by the others (it was not: the
/// losers' statement could not see it, and their store then counted the
/// database as unavailable).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_storing_a_new_document_at_once_all_succeed() {
    let Some(redis) = servers() else { return };
    let nodes = nodes(&redis, 3);
    for round in 0..5 {
        let doc = room(&format!("race/new{round}"));
        let mut clients = vec![];
        for node in &nodes {
            clients.push(node.connect(&doc).await);
        }
        let path = format!("/api/docs/{}/versions", enc(&doc));
        let body = br#"{"label":"at once"}"#;
        let (a, b, c) = tokio::join!(
            nodes[0].post(&path, "application/json", body),
            nodes[1].post(&path, "application/json", body),
            nodes[2].post(&path, "application/json", body),
        );
        // 201, or 200 when another node's version was stored first and
        // holds the same content.
        for (n, res) in [a, b, c].iter().enumerate() {
            let stored = [200, 201].contains(&res.status);
            assert!(stored, "round {round}, node {}: {} {}", n + 1, res.status, res.text());
        }
    }
}

/// A node that fell behind the stream (stalled) reads what it missed in
/// large batches when it runs again: its peers get each batch as one
/// merged update, not a frame per entry, so a backlog larger than a peer's
/// queue does not drop the peer as too slow (4503).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_catching_up_on_the_stream_keeps_its_peers() {
    const SIGSTOP: i32 = 19;
    const SIGCONT: i32 = 18;
    let Some(redis) = servers() else { return };
    let doc = room("catch/up");
    let first = nodes(&redis, 1).remove(0);
    let behind = Server::builder()
        .on_database_of(&first)
        .arg("--redis", &redis)
        .arg("--peer-queue", "64")
        .start();
    let writer = first.connect(&doc).await;
    let reader = behind.connect(&doc).await;
    behind.signal(SIGSTOP);
    let text = writer.doc.get_or_insert_text("t");
    for i in 0..300 {
        writer.edit(|txn| text.push(txn, &format!("{i} ")));
    }
    eventually("the edits in the stream", 10 * SECOND, || async {
        stream_len(&redis, &doc) >= 300
    })
    .await;
    behind.signal(SIGCONT);
    let want = writer.text("t");
    reader
        .wait_for("everything, after the stall", 10 * SECOND, |c| c.text("t") == want)
        .await
        .unwrap();
    assert!(!reader.seen().ended, "the reader stays connected");
    assert!(!behind.log().contains("too slow"), "no peer dropped as too slow");
}
