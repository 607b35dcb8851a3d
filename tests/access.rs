//! Access control against the real binary: token mode, read-only peers,
//! expiry and revocation, origins, and the limits against abuse.

mod common;

use std::time::Duration;

use common::tokens::{self, key_file, token_server, token_server_on, KEY};
use common::{enc, http, Client, Server, Store, SECOND};
use serde_json::json;
use weft::auth::{self, AuthKey, Claims, Perm};
use weft::clock::now_secs;
use yrs::{Text, Transact};

for_both_stores!(
    refusals_happen_at_the_upgrade_with_a_reason,
    read_only_peers_cannot_change_the_document,
    revocation_closes_live_connections_and_survives_restart,
    a_flooding_peer_is_closed_while_others_continue,
    document_size_limit_refuses_and_keeps_what_was_stored,
    connection_limits_refuse_with_a_status,
    api_permissions_follow_the_token,
);

/// A token and its id; sub and name as a backend would set them.
fn token(doc: &str, perm: Perm, ttl: u64) -> (String, String) {
    let mut claims = tokens::claims(doc, perm, ttl);
    claims.sub = Some("u1".into());
    claims.name = Some("Ada".into());
    (tokens::mint(&claims), claims.jti)
}

async fn connect(server: &Server, room: &str, token: &str) -> Client {
    let client = Client::connect(&server.ws, &format!("{room}?token={token}"))
        .await
        .expect("connect");
    client.wait_synced().await.unwrap();
    client
}

/// Every refusal happens at the upgrade, with a status and a JSON reason.
async fn refusals_happen_at_the_upgrade_with_a_reason(store: Store) {
    let (server, _key) = token_server_on(store, &[("--allowed-origin", "https://app.example")]);
    let (good, _) = token("team-a/*", Perm::Write, 60);
    let other_key = AuthKey::new(b"some other key that is long enough".to_vec()).unwrap();
    let forged = auth::mint(
        &other_key,
        &Claims {
            doc: "*".into(),
            perm: Perm::Write,
            exp: now_secs() + 60,
            jti: "x".into(),
            sub: None,
            name: None,
            iat: None,
        },
    );
    let (expired, _) = {
        let key = AuthKey::new(KEY.as_bytes().to_vec()).unwrap();
        let claims = Claims {
            doc: "*".into(),
            perm: Perm::Write,
            exp: now_secs() - 1,
            jti: "old".into(),
            sub: None,
            name: None,
            iat: None,
        };
        (auth::mint(&key, &claims), ())
    };
    let cases = [
        ("/team-a/plan".to_string(), 401, "no token"),
        ("/team-a/plan?token=garbage".to_string(), 401, "malformed token"),
        (format!("/team-a/plan?token={forged}"), 401, "signature does not match"),
        (format!("/team-a/plan?token={expired}"), 401, "token expired"),
        (
            format!("/team-b/plan?token={good}"),
            403,
            "token is for 'team-a/*', not for 'team-b/plan'",
        ),
    ];
    for (path, status, reason) in cases {
        let refused = Client::refused(&server.ws, &path).await.unwrap();
        assert_eq!(refused.status, status, "{path}: {}", refused.body);
        let body: serde_json::Value = serde_json::from_str(&refused.body).expect("JSON reason");
        assert!(
            body["error"].as_str().unwrap().contains(reason),
            "{path}: {}",
            refused.body
        );
    }
    // a good token is accepted, also as a bearer header on the API
    connect(&server, "team-a/plan", &good).await;

    // origins: allowed, own, and foreign
    let handshake = |origin: &str| {
        format!(
            "GET /team-a/plan?token={good} HTTP/1.1\r\nHost: {}\r\nOrigin: {origin}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            server.addr
        )
    };
    for (origin, status) in [
        ("https://app.example", "101"),
        (&format!("http://{}", server.addr)[..], "101"),
        ("https://evil.example", "403"),
    ] {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut raw = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
        raw.write_all(handshake(origin).as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 2048];
        let n = raw.read(&mut buf).await.unwrap();
        let head = String::from_utf8_lossy(&buf[..n]);
        assert!(head.starts_with(&format!("HTTP/1.1 {status}")), "{origin}: {head}");
        if status == "403" {
            assert!(head.contains("origin https://evil.example is not allowed"), "{head}");
        }
    }
}

/// A read-only peer receives everything, but its updates are never applied,
/// stored or relayed; it is told once.
async fn read_only_peers_cannot_change_the_document(store: Store) {
    let (server, _key) = token_server_on(store, &[]);
    let (write, _) = token("shared", Perm::Write, 60);
    let (read, _) = token("shared", Perm::Read, 60);
    let writer = connect(&server, "shared", &write).await;
    let reader = connect(&server, "shared", &read).await;
    let text = writer.doc.get_or_insert_text("t");
    writer.edit(|txn| text.push(txn, "from writer"));
    reader
        .wait_for("writer's text", 5 * SECOND, |r| r.text("t") == "from writer")
        .await
        .unwrap();

    let rt = reader.doc.get_or_insert_text("t");
    reader.edit(|txn| rt.push(txn, " EVIL"));
    reader.edit(|txn| rt.push(txn, " AGAIN"));
    reader
        .wait_for("a permission-denied message", 5 * SECOND, |r| {
            !r.seen().denied.is_empty()
        })
        .await
        .unwrap();
    // the writer's next edit arrives, the reader's never do
    writer.edit(|txn| text.push(txn, "!"));
    reader
        .wait_for("the next edit", 5 * SECOND, |r| r.seen().updates >= 3)
        .await
        .unwrap();
    assert_eq!(writer.text("t"), "from writer!");
    assert_eq!(reader.seen().denied.len(), 1, "told once");
    assert!(!reader.seen().ended, "a read-only peer stays connected");
    let late = connect(&server, "shared", &write).await;
    assert_eq!(late.text("t"), "from writer!");
    assert!(server.metric("weft_updates_refused_total").await >= 2.0);

    // and on the API
    let (status, _) = post_update(&server, "shared", &read).await;
    assert_eq!(status, 403);
}

async fn post_update(server: &Server, doc: &str, bearer: &str) -> (u16, serde_json::Value) {
    let d = yrs::Doc::new();
    let t = d.get_or_insert_text("api");
    let update = {
        let mut txn = d.transact_mut();
        t.push(&mut txn, "x");
        txn.encode_update_v1()
    };
    let auth = format!("Bearer {bearer}");
    let res = http(
        &server.addr,
        "POST",
        &format!("/api/docs/{}/update", enc(doc)),
        &[("Authorization", &auth), ("Content-Type", "application/octet-stream")],
        Some(&update),
    )
    .await;
    let body = if res.body.is_empty() { json!(null) } else { res.json() };
    (res.status, body)
}

/// A live connection closes with 4401 when its token expires, and not
/// before. The token lives an hour: the server runs in this process (the
/// same `weft::server::run` the binary runs, with the in-memory store) on
/// tokio's paused clock, so the hour passes at once, and how slow the
/// machine is cannot decide whether the connection opened in time.
#[tokio::test(start_paused = true)]
async fn expiry_closes_live_connections() {
    use clap::Parser;
    let (_dir, key) = key_file();
    let key = key.display().to_string();
    let config = weft::config::Cli::try_parse_from(["weft", "--storage", "none", "--auth-key-file", &key])
        .unwrap()
        .serve;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws = format!("ws://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(weft::server::run(config, listener, async {
        let _ = stopped.await;
    }));

    const HOUR: u64 = 3600;
    let (hour, _) = token("brief", Perm::Write, HOUR);
    let client = Client::connect(&ws, &format!("brief?token={hour}")).await.unwrap();
    client.wait_synced().await.unwrap();
    tokio::time::sleep(Duration::from_secs(HOUR - 10)).await;
    assert!(
        !client.seen().ended,
        "closed before its token expired: {:?}",
        client.seen().close
    );
    // The clock moves only when nothing else can run, so by the time it
    // reaches 10 s past the expiry, the close has been sent and read.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let seen = client.seen();
    assert!(seen.ended, "still open 10 s after its token expired");
    assert_eq!(seen.close.map(|c| c.0), Some(4401));

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

/// Revocation closes live connections at once (4403) and stays in force
/// after a restart.
async fn revocation_closes_live_connections_and_survives_restart(store: Store) {
    let (dir, path) = key_file();
    let server = Server::builder()
        .store(store)
        .arg("--auth-key-file", path.display())
        .start();
    let (t, id) = token("revoked", Perm::Write, 3600);
    let (other, _) = token("revoked", Perm::Write, 3600);
    let victim = connect(&server, "revoked", &t).await;
    let bystander = connect(&server, "revoked", &other).await;

    let admin = format!("Bearer {KEY}");
    let body = json!({ "token_id": id }).to_string();
    let res = http(
        &server.addr,
        "POST",
        "/api/tokens/revoke",
        &[("Authorization", &admin), ("Content-Type", "application/json")],
        Some(body.as_bytes()),
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(victim.wait_closed(5 * SECOND).await.unwrap().map(|c| c.0), Some(4403));
    assert!(!bystander.seen().ended, "other tokens are untouched");
    let refused = Client::refused(&server.ws, &format!("/revoked?token={t}"))
        .await
        .unwrap();
    assert_eq!(refused.status, 401);
    assert!(refused.body.contains("revoked"));

    let server = server.restart();
    let refused = Client::refused(&server.ws, &format!("/revoked?token={t}"))
        .await
        .unwrap();
    assert_eq!(refused.status, 401, "still revoked after a restart");
    connect(&server, "revoked", &other).await;
    drop(dir);
}

/// A peer sending faster than the rate limit is closed (4429); the others
/// keep working.
async fn a_flooding_peer_is_closed_while_others_continue(store: Store) {
    let server = Server::builder()
        .store(store)
        .arg("--rate-limit", 50)
        .arg("--rate-burst", 100)
        .start();
    let flood = server.connect("flood").await;
    let calm = server.connect("flood").await;
    let text = flood.doc.get_or_insert_text("t");
    for i in 0..1000 {
        flood.edit(|txn| text.push(txn, &format!("{}", i % 10)));
    }
    assert_eq!(flood.wait_closed(10 * SECOND).await.unwrap().map(|c| c.0), Some(4429));
    let ct = calm.doc.get_or_insert_text("c");
    calm.edit(|txn| ct.push(txn, "calm"));
    let check = server.connect("flood").await;
    check
        .wait_for("calm's edit", 5 * SECOND, |c| c.text("c") == "calm")
        .await
        .unwrap();
    assert!(!calm.seen().ended);
    // what the flooder got in before the limit is stored, nothing after
    let got = check.text("t").len();
    // the burst (100 messages, two of them the sync handshake) and a little refill
    assert!((90..1000).contains(&got), "{got} characters kept");
}

/// An update that would grow a document past the size limit is refused and
/// not stored (4413, HTTP 413); what was stored before stays.
async fn document_size_limit_refuses_and_keeps_what_was_stored(store: Store) {
    let server = Server::builder().store(store).arg("--max-doc-size", 10_000).start();
    let a = server.connect("bounded").await;
    let text = a.doc.get_or_insert_text("t");
    a.edit(|txn| text.push(txn, &"k".repeat(4000)));
    server
        .wait_metric("weft_updates_applied_total", 5 * SECOND, |v| v >= 1.0)
        .await;
    a.edit(|txn| text.push(txn, &"x".repeat(8000)));
    assert_eq!(a.wait_closed(5 * SECOND).await.unwrap().map(|c| c.0), Some(4413));

    let big = {
        let d = yrs::Doc::new();
        let t = d.get_or_insert_text("t");
        let mut txn = d.transact_mut();
        t.push(&mut txn, &"y".repeat(8000));
        txn.encode_update_v1()
    };
    let res = server
        .post("/api/docs/bounded/update", "application/octet-stream", &big)
        .await;
    assert_eq!(res.status, 413);
    assert!(res.json()["error"]
        .as_str()
        .unwrap()
        .contains("size limit of 10000 bytes"));

    let server = server.restart();
    let b = server.connect("bounded").await;
    assert_eq!(b.text("t"), "k".repeat(4000));
    let _ = Duration::ZERO;
}

/// Connection limits: per client IP (429) and in total (503).
async fn connection_limits_refuse_with_a_status(store: Store) {
    let server = Server::builder()
        .store(store)
        .arg("--max-connections-per-ip", 2)
        .start();
    let _a = server.connect("limits").await;
    let b = server.connect("limits").await;
    let refused = Client::refused(&server.ws, "/limits").await.unwrap();
    assert_eq!(refused.status, 429);
    assert!(
        refused.body.contains("too many connections from 127.0.0.1"),
        "{}",
        refused.body
    );
    b.close();
    b.wait_closed(5 * SECOND).await.unwrap();
    // the place is given back once the connection is gone
    let deadline = std::time::Instant::now() + 5 * SECOND;
    while Client::refused(&server.ws, "/limits").await.is_ok() {
        assert!(std::time::Instant::now() < deadline, "place never given back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let server = Server::builder().store(store).arg("--max-connections", 1).start();
    let _only = server.connect("limits").await;
    let refused = Client::refused(&server.ws, "/limits").await.unwrap();
    assert_eq!(refused.status, 503);
    assert!(refused.body.contains("limit of 1 connections"));
}

/// The API in token mode: the admin key does everything; a document token
/// reads (read) or also writes (write) its documents, nothing else.
async fn api_permissions_follow_the_token(store: Store) {
    let (server, _key) = token_server_on(store, &[]);
    let admin = KEY.to_string();
    let (read, _) = token("team-a/*", Perm::Read, 60);
    let (write, _) = token("team-a/*", Perm::Write, 60);

    assert_eq!(post_update(&server, "team-a/doc", &write).await.0, 200);
    assert_eq!(post_update(&server, "team-b/doc", &admin).await.0, 200);
    assert_eq!(post_update(&server, "team-a/doc", &read).await.0, 403);
    assert_eq!(post_update(&server, "team-b/doc", &write).await.0, 403);

    let get = |path: String, bearer: Option<String>| {
        let addr = server.addr.clone();
        async move {
            let auth = bearer.map(|b| format!("Bearer {b}"));
            let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
            http(&addr, "GET", &path, &headers, None).await
        }
    };
    assert_eq!(get("/api/docs".into(), None).await.status, 401);
    let listed = get("/api/docs".into(), Some(read.clone())).await.json();
    let names: Vec<&str> = listed["docs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["team-a/doc"], "a token lists only its documents");
    assert_eq!(
        get("/api/docs".into(), Some(admin.clone())).await.json()["docs"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        get(format!("/api/docs/{}", enc("team-a/doc")), Some(read.clone()))
            .await
            .status,
        200
    );
    assert_eq!(
        get(format!("/api/docs/{}", enc("team-b/doc")), Some(read.clone()))
            .await
            .status,
        403
    );
    // ?token= works for the API too (download links)
    assert_eq!(
        get(format!("/api/docs/{}/update?token={read}", enc("team-a/doc")), None)
            .await
            .status,
        200
    );

    let versions = format!("/api/docs/{}/versions", enc("team-a/doc"));
    let with = |b: &str| format!("Bearer {b}");
    for (bearer, status) in [(&read, 403), (&write, 201)] {
        let auth = with(bearer);
        let res = http(&server.addr, "POST", &versions, &[("Authorization", &auth)], None).await;
        assert_eq!(res.status, status, "{}", res.text());
    }
    let auth = with(&write);
    let res = http(
        &server.addr,
        "DELETE",
        &format!("/api/docs/{}", enc("team-a/doc")),
        &[("Authorization", &auth)],
        None,
    )
    .await;
    assert_eq!(res.status, 403, "deleting a document needs the admin key");

    // minting: admin only
    let body = json!({"doc": "team-a/*", "perm": "read", "ttl_secs": 60}).to_string();
    for (bearer, status) in [(&write, 403), (&admin, 201)] {
        let auth = with(bearer);
        let res = http(
            &server.addr,
            "POST",
            "/api/tokens",
            &[("Authorization", &auth), ("Content-Type", "application/json")],
            Some(body.as_bytes()),
        )
        .await;
        assert_eq!(res.status, status, "{}", res.text());
        if status == 201 {
            let minted = res.json()["token"].as_str().unwrap().to_string();
            connect(&server, "team-a/doc", &minted).await;
        }
    }
}

/// `weft token` prints a token the server accepts; open mode has no tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_mints_tokens_and_open_mode_refuses_exposure() {
    let (server, _dir) = token_server(&[]);
    let out = common::run_with_deadline(
        std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
            .args(["token", "--doc", "cli-doc", "--perm", "write", "--ttl", "10m"])
            .env("WEFT_AUTH_KEY", KEY),
        common::PROCESS_DEADLINE,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let minted = String::from_utf8(out.stdout).unwrap().trim().to_string();
    connect(&server, "cli-doc", &minted).await;

    assert_eq!(
        server.get("/api/info").await.json()["auth"],
        "token",
        "public, no token needed"
    );
    let open = Server::start();
    assert_eq!(open.get("/api/info").await.json()["auth"], "open");
    let res = http(
        &open.addr,
        "POST",
        "/api/tokens",
        &[("Content-Type", "application/json")],
        Some(b"{}"),
    )
    .await;
    assert_eq!(res.status, 409);
    assert!(res.json()["error"].as_str().unwrap().contains("open mode"));

    let out = Server::builder()
        .arg("--addr", "0.0.0.0:0")
        .arg("--storage", "none")
        .run_to_exit();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to serve 0.0.0.0:0 in open mode"));
}
