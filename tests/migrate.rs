//! `weft migrate`: SQLite to PostgreSQL and back, everything kept.

mod common;

use common::postgres::Database;
use common::tokens::{key_file, KEY};
use common::{http, Response, Server, SECOND};
use serde_json::{json, Value};
use yrs::{Map, Text};

async fn admin(server: &Server, method: &str, path: &str, body: Option<Value>) -> Response {
    let bearer = format!("Bearer {KEY}");
    let body = body.map(|b| b.to_string());
    let mut headers = vec![("Authorization", bearer.as_str())];
    if body.is_some() {
        headers.push(("Content-Type", "application/json"));
    }
    http(&server.addr, method, path, &headers, body.as_deref().map(str::as_bytes)).await
}

fn migrate(from: &str, to: &str) -> std::process::Output {
    common::run_with_deadline(
        std::process::Command::new(env!("CARGO_BIN_EXE_weft")).args(["migrate", "--from", from, "--to", to]),
        60 * SECOND,
    )
}

/// What a document looks like through the API: content and versions.
async fn snapshot_of(server: &Server, doc: &str) -> (Value, Value) {
    let content = admin(server, "GET", &format!("/api/docs/{doc}"), None).await.json()["content"].clone();
    let versions = admin(server, "GET", &format!("/api/docs/{doc}/versions"), None)
        .await
        .json();
    (content, versions)
}

/// Documents with compacted logs, named and automatic versions, and a
/// revoked token go from SQLite to PostgreSQL and back; each copy serves
/// the same content, versions (ids and times) and revocations, and keeps
/// working (new versions do not collide with copied ids).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_to_postgres_and_back_keeps_everything() {
    let Some(shared) = common::postgres::shared_server() else {
        return;
    };
    let (_keys, key) = key_file();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = dir.path().join("weft.db");
    let serve = |db: &str| {
        Server::builder()
            .arg("--db", db)
            .arg("--auth-key-file", key.display())
            .arg("--compact-updates", 20)
            .arg("--version-idle-secs", 1)
    };
    let mut server = serve(sqlite.to_str().unwrap()).start();
    for doc in ["notes", "team/plan"] {
        let c = server.connect(&format!("{doc}?token={KEY}")).await;
        let text = c.doc.get_or_insert_text("t");
        for i in 0..50 {
            c.edit(|txn| text.push(txn, &format!("{doc}{i} ")));
        }
        let map = c.doc.get_or_insert_map("m");
        c.edit(|txn| {
            map.insert(txn, "k", "v");
        });
        let want = c.text("t");
        let observer = server.connect(&format!("{doc}?token={KEY}")).await;
        observer
            .wait_for("every edit", 10 * SECOND, |o| o.text("t") == want)
            .await
            .unwrap();
        let res = admin(
            &server,
            "POST",
            &format!("/api/docs/{}/versions", common::enc(doc)),
            Some(json!({"label": "named"})),
        )
        .await;
        assert_eq!(res.status, 201, "{}", res.text());
    }
    // An edit after the named version, and an automatic version once
    // "notes" has been idle for a second.
    let c = server.connect(&format!("notes?token={KEY}")).await;
    let text = c.doc.get_or_insert_text("t");
    c.edit(|txn| text.push(txn, "after the named version"));
    let deadline = std::time::Instant::now() + 20 * SECOND;
    while admin(&server, "GET", "/api/docs/notes/versions", None).await.json()["versions"]
        .as_array()
        .unwrap()
        .len()
        < 2
    {
        assert!(std::time::Instant::now() < deadline, "no automatic version");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let claims = common::tokens::claims("notes", weft::auth::Perm::Write, 3600);
    let (revoked, id) = (common::tokens::mint(&claims), claims.jti.clone());
    let res = admin(&server, "POST", "/api/tokens/revoke", Some(json!({ "token_id": id }))).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let before = [
        snapshot_of(&server, "notes").await,
        snapshot_of(&server, "team%2Fplan").await,
    ];
    assert!(server.terminate().success());
    let compactions: i64 = rusqlite::Connection::open(&sqlite)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM snapshots WHERE kind = 'compaction'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(compactions, 2, "both documents' logs were compacted");

    // SQLite → PostgreSQL.
    let pg = Database::create(&shared);
    let out = migrate(sqlite.to_str().unwrap(), &pg.url);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("copied 2 documents"), "{stdout}");
    assert!(stdout.contains("1 revocations"), "{stdout}");
    let password = pg
        .url
        .split("://")
        .nth(1)
        .unwrap()
        .split('@')
        .next()
        .unwrap()
        .split(':')
        .nth(1)
        .unwrap();
    assert!(
        !stdout.contains(password) && !stderr.contains(password),
        "{stdout}{stderr}"
    );

    let mut server = serve(&pg.url).start();
    let after = [
        snapshot_of(&server, "notes").await,
        snapshot_of(&server, "team%2Fplan").await,
    ];
    assert_eq!(before, after, "content and versions on PostgreSQL");
    let refused = common::Client::refused(&server.ws, &format!("/notes?token={revoked}"))
        .await
        .unwrap();
    assert_eq!(refused.status, 401, "still revoked");
    // It keeps working: an edit and a new version with a fresh id.
    let c = server.connect(&format!("notes?token={KEY}")).await;
    let text = c.doc.get_or_insert_text("t");
    c.edit(|txn| text.push(txn, "on postgres"));
    let observer = server.connect(&format!("notes?token={KEY}")).await;
    let want = c.text("t");
    observer
        .wait_for("the edit", 5 * SECOND, |o| o.text("t") == want)
        .await
        .unwrap();
    let res = admin(
        &server,
        "POST",
        "/api/docs/notes/versions",
        Some(json!({"label": "on pg"})),
    )
    .await;
    assert_eq!(res.status, 201, "{}", res.text());
    let before = [
        snapshot_of(&server, "notes").await,
        snapshot_of(&server, "team%2Fplan").await,
    ];
    assert!(server.terminate().success());

    // Into a database that holds documents: refused, untouched.
    let out = migrate(sqlite.to_str().unwrap(), &pg.url);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds 2 documents"));

    // PostgreSQL → SQLite.
    let back = dir.path().join("back.db");
    let out = migrate(&pg.url, back.to_str().unwrap());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let server = serve(back.to_str().unwrap()).start();
    let after = [
        snapshot_of(&server, "notes").await,
        snapshot_of(&server, "team%2Fplan").await,
    ];
    assert_eq!(before, after, "content and versions back on SQLite");
    assert!(after[0].0["t"].as_str().unwrap().ends_with("on postgres"));
    let refused = common::Client::refused(&server.ws, &format!("/notes?token={revoked}"))
        .await
        .unwrap();
    assert_eq!(refused.status, 401, "still revoked");
}
