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

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// What the migration must carry for events, as rows read back as text:
/// the outbox (seq, id, type), the subscriptions, their cursors, and how
/// far each document was reported.
type EventRows = [Vec<Vec<String>>; 4];

const EVENT_QUERIES: [&str; 4] = [
    "SELECT seq, id, type FROM events ORDER BY seq",
    "SELECT id, url, secret FROM webhooks ORDER BY id",
    "SELECT webhook_id, seq FROM webhook_cursors ORDER BY webhook_id",
    "SELECT name, reported_seq FROM documents ORDER BY name",
];

fn sqlite_rows(path: &std::path::Path) -> EventRows {
    let conn = rusqlite::Connection::open(path).unwrap();
    EVENT_QUERIES.map(|sql| {
        let mut stmt = conn.prepare(sql).unwrap();
        let columns = stmt.column_count();
        stmt.query_map([], |r| {
            (0..columns)
                .map(|i| {
                    Ok(match r.get_ref(i)? {
                        rusqlite::types::ValueRef::Integer(n) => n.to_string(),
                        other => other.as_str().unwrap_or_default().to_string(),
                    })
                })
                .collect::<Result<Vec<String>, _>>()
        })
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
    })
}

fn postgres_rows(db: &Database) -> EventRows {
    EVENT_QUERIES.map(|sql| db.query(sql))
}

/// The events outbox (with its seqs), the webhook subscriptions with their
/// cursors, and how far each document's edits were reported go with the
/// documents, both ways: delivery resumes where it stopped (an event not
/// delivered yet stays to be sent, a delivered one is not sent again), and
/// no document is reported updated once more after the move (it was:
/// `reported_seq` was not copied, so every document's whole log was
/// reported again at start-up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_webhooks_go_with_the_documents() {
    let Some(shared) = common::postgres::shared_server() else {
        return;
    };
    let sink = weft_bench::webhooks::Sink::start(weft_bench::webhooks::OK_AND_CLOSE)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = dir.path().join("weft.db");
    let serve = |db: &str| {
        Server::builder()
            .arg("--db", db)
            .flag("--webhook-allow-private")
            .arg("--webhook", &sink.url)
            .env("WEFT_WEBHOOK_SECRET", SECRET)
            .arg("--webhook-debounce-ms", 100)
            .arg("--webhook-max-attempts", 1000)
    };
    let mut server = serve(sqlite.to_str().unwrap()).start();
    // A subscription whose receiver is down: its events stay to be sent.
    let body = json!({ "url": "http://127.0.0.1:9/down" }).to_string();
    let made = server.post("/api/webhooks", "application/json", body.as_bytes()).await;
    assert_eq!(made.status, 201, "{}", made.text());
    let c = server.connect("moved").await;
    let text = c.doc.get_or_insert_text("t");
    for i in 0..5 {
        c.edit(|txn| text.push(txn, &format!("edit {i} ")));
    }
    let deadline = std::time::Instant::now() + 20 * SECOND;
    while sink.posts() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "created and updated not delivered"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(c);
    assert!(server.terminate().success());
    let before = sqlite_rows(&sqlite);
    assert!(before[0].len() >= 2, "events: {:?}", before[0]);
    assert_eq!(before[2].len(), 2, "both subscriptions' cursors: {:?}", before[2]);
    assert_ne!(before[3][0][1], "0", "the edits were reported");

    // SQLite → PostgreSQL.
    let pg = Database::create(&shared);
    let out = migrate(sqlite.to_str().unwrap(), &pg.url);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("1 webhook subscriptions (2 cursors"), "{stdout}");
    assert_eq!(postgres_rows(&pg), before, "the same rows on PostgreSQL");

    // On PostgreSQL: one more edit is reported alone, after the copied
    // events (new seqs go on past them).
    let last_seq: i64 = before[0].last().unwrap()[0].parse().unwrap();
    let mut server = serve(&pg.url).start();
    let c = server.connect("moved").await;
    let text = c.doc.get_or_insert_text("t");
    c.edit(|txn| text.push(txn, "on postgres"));
    let observer = server.connect("moved").await;
    let want = c.text("t");
    observer
        .wait_for("the edit", 5 * SECOND, |o| o.text("t") == want)
        .await
        .unwrap();
    drop((c, observer));
    assert!(server.terminate().success());
    let updated = pg.query(&format!(
        "SELECT body FROM events WHERE seq > {last_seq} AND type = 'document.updated'"
    ));
    assert_eq!(updated.len(), 1, "{updated:?}");
    let updated: Value = serde_json::from_str(&updated[0][0]).unwrap();
    assert_eq!(updated["data"]["updates"], 1, "{updated}");

    // PostgreSQL → SQLite.
    let back = dir.path().join("back.db");
    let out = migrate(&pg.url, back.to_str().unwrap());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(sqlite_rows(&back), postgres_rows(&pg), "the same rows back on SQLite");

    // Into a database that holds events: refused.
    let out = migrate(sqlite.to_str().unwrap(), back.to_str().unwrap());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds"));
}
