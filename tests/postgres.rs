//! What only the PostgreSQL store has: a server that goes away and comes
//! back, several weft processes on one database, credentials from the
//! places libpq users keep them, and a password that never shows.
//!
//! The fault tests start a PostgreSQL server of their own (initdb in a
//! temporary directory), so that they can stop and start it.

mod common;

use std::time::{Duration, Instant};

use common::postgres::{Database, PgServer};
use common::{Client, Server, Store, SECOND};
use yrs::Text;

/// `/healthz`'s status.
async fn health(server: &Server) -> u16 {
    server.get("/healthz").await.status
}

async fn wait_health(server: &Server, want: u16, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let got = health(server).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz stayed {got}, not {want}; log:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// PostgreSQL stopped mid-edit: the edit made while it is down is not
/// relayed, its sender is closed with 4500, `/healthz` says 503 and the
/// outage is logged once; once PostgreSQL is back weft reconnects by
/// itself, the sender resends, and after a SIGKILL of weft everything
/// committed is there, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_and_started_mid_edit() {
    if Store::postgres().is_none() {
        return;
    }
    let pg = PgServer::start();
    let server = Server::builder()
        .arg("--db", pg.url("postgres"))
        .arg("--db-statement-timeout-ms", 2000)
        .start();
    let writer = server.connect("outage").await;
    let observer = server.connect("outage").await;
    let text = writer.doc.get_or_insert_text("t");
    writer.edit(|txn| text.push(txn, "before "));
    observer
        .wait_for("the first edit", 5 * SECOND, |o| o.text("t") == "before ")
        .await
        .unwrap();
    assert_eq!(health(&server).await, 200);

    pg.stop();
    writer.edit(|txn| text.push(txn, "during"));
    let closed = writer.wait_closed(10 * SECOND).await.unwrap();
    assert_eq!(closed.map(|c| c.0), Some(4500), "the sender of an uncommitted edit");
    assert_eq!(observer.text("t"), "before ", "an uncommitted edit must not be relayed");
    wait_health(&server, 503, 10 * SECOND).await;
    // While down, the document cannot load: refused at the upgrade.
    let refused = Client::refused(&server.ws, "/outage").await.unwrap();
    assert_eq!(refused.status, 500);

    pg.start_again();
    wait_health(&server, 200, 30 * SECOND).await;
    let log = server.log();
    assert_eq!(
        log.matches("PostgreSQL unreachable").count(),
        1,
        "one line per outage, however many attempts:\n{log}"
    );
    assert_eq!(log.matches("PostgreSQL reachable again").count(), 1, "{log}");

    // The writer kept its edit and sends it again on reconnect.
    let again = Client::connect_with(&server.ws, "outage", writer.doc.clone())
        .await
        .unwrap();
    again.wait_synced().await.unwrap();
    let check = server.connect("outage").await;
    check
        .wait_for("the resent edit", 10 * SECOND, |c| c.text("t") == "before during")
        .await
        .unwrap();
    // Two updates were committed, each once: the first, and the resent one.
    let stored = common::postgres::psql(&pg.url("postgres"), "SELECT SUM(count) FROM updates");
    assert_eq!(stored, vec![vec!["2".to_string()]]);

    let server = server.restart(); // SIGKILL
    assert_eq!(server.connect("outage").await.text("t"), "before during");
}

/// Two weft processes starting together on a fresh database: one creates
/// the schema, the other waits on the advisory lock and finds it made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_a_fresh_database_migrate_once() {
    let Some(shared) = common::postgres::shared_server() else {
        return;
    };
    let db = Database::create(&shared);
    let starts: Vec<_> = (0..2)
        .map(|_| {
            let url = db.url.clone();
            std::thread::spawn(move || Server::builder().arg("--db", url).start())
        })
        .collect();
    let servers: Vec<Server> = starts.into_iter().map(|t| t.join().unwrap()).collect();
    let created = servers
        .iter()
        .filter(|s| s.log().contains("database schema created"))
        .count();
    assert_eq!(created, 1, "exactly one process creates the schema");
    assert_eq!(
        db.query("SELECT COUNT(*), MAX(version) FROM weft_schema"),
        vec![vec!["1".to_string(), "6".to_string()]]
    );
    // Both serve the same documents.
    let a = servers[0].connect("shared").await;
    let text = a.doc.get_or_insert_text("t");
    a.edit(|txn| text.push(txn, "from the first"));
    let observer = servers[0].connect("shared").await;
    observer
        .wait_for("the edit", 5 * SECOND, |o| o.text("t") == "from the first")
        .await
        .unwrap();
    let from_second = servers[1].get("/api/docs/shared").await;
    assert_eq!(from_second.status, 200, "{}", from_second.text());
}

/// The password in `--db` shows nowhere in weft's output: not in the
/// configuration line, not in debug logs, not in the error when the server
/// cannot be reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_never_shows_in_the_log() {
    let Some(shared) = common::postgres::shared_server() else {
        return;
    };
    let db = Database::create(&shared);
    let password = password_of(&db.url);
    assert!(password.len() >= 8, "the test server has a password: {}", db.url);
    let server = Server::builder().arg("--db", &db.url).arg("--log", "debug").start();
    let a = server.connect("secret").await;
    let text = a.doc.get_or_insert_text("t");
    a.edit(|txn| text.push(txn, "x"));
    server
        .wait_metric("weft_updates_applied_total", 5 * SECOND, |v| v >= 1.0)
        .await;
    let summary = server.summary();
    assert_eq!(summary["storage"], "postgres");
    assert!(summary["db"].contains(":***@"), "{}", summary["db"]);
    let log = server.log();
    assert!(!log.contains(&password), "the password is in the log:\n{log}");

    // Unreachable (a port nobody listens on): the error names the
    // database, without the password.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://weft:{password}@127.0.0.1:{port}/weft");
    let out = Server::builder().arg("--db", &url).run_to_exit();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("postgres://weft:***@127.0.0.1:{port}/weft")),
        "{stderr}"
    );
    assert!(!stderr.contains(&password), "{stderr}");
}

/// Credentials as libpq users keep them: `PG*` variables fill a URL that
/// leaves them out, the password comes from `--db-password-file`,
/// `PGPASSWORD` or a `PGPASSFILE`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_come_from_pg_variables_and_password_files() {
    let Some(shared) = common::postgres::shared_server() else {
        return;
    };
    let db = Database::create(&shared);
    let password = password_of(&db.url);
    let (host, port) = host_port_of(&db.url);
    let dir = tempfile::tempdir().unwrap();
    let pgpass = dir.path().join("pgpass");
    std::fs::write(&pgpass, format!("{host}:{port}:{}:postgres:{password}\n", db.name)).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let bare = format!("postgres://{host}:{port}/{}", db.name);

    // User from PGUSER, password from PGPASSFILE.
    let server = Server::builder()
        .arg("--db", &bare)
        .env("PGUSER", "postgres")
        .env("PGPASSFILE", pgpass.display())
        .env("PGPASSWORD", "")
        .start();
    edit_and_check(&server, "from-pgpass").await;
    drop(server);

    // Everything from the variables.
    let server = Server::builder()
        .arg("--db", "postgres://")
        .env("PGHOST", &host)
        .env("PGPORT", &port)
        .env("PGUSER", "postgres")
        .env("PGDATABASE", &db.name)
        .env("PGPASSWORD", &password)
        .start();
    edit_and_check(&server, "from-variables").await;
    drop(server);

    // --db-password-file (as WEFT_DB_PASSWORD_FILE).
    let file = dir.path().join("password");
    std::fs::write(&file, format!("{password}\n")).unwrap();
    let server = Server::builder()
        .arg("--db", format!("postgres://postgres@{host}:{port}/{}", db.name))
        .env("WEFT_DB_PASSWORD_FILE", file.display())
        .start();
    edit_and_check(&server, "from-file").await;
    assert!(!server.log().contains(&password));
    drop(server);

    // A wrong password is refused at start-up with the server's reason.
    std::fs::write(&file, "wrong\n").unwrap();
    let out = Server::builder()
        .arg("--db", format!("postgres://postgres@{host}:{port}/{}", db.name))
        .arg("--db-password-file", file.display())
        .run_to_exit();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("password authentication failed"), "{stderr}");
}

async fn edit_and_check(server: &Server, word: &str) {
    let a = server.connect("creds").await;
    let observer = server.connect("creds").await;
    let text = a.doc.get_or_insert_text(word);
    a.edit(|txn| text.push(txn, word));
    observer
        .wait_for("the edit", 5 * SECOND, |o| o.text(word) == word)
        .await
        .unwrap();
}

fn password_of(url: &str) -> String {
    let userinfo = url.split("://").nth(1).unwrap().split('@').next().unwrap();
    userinfo.split_once(':').map(|(_, p)| p.to_string()).unwrap_or_default()
}

fn host_port_of(url: &str) -> (String, String) {
    let authority = url.split("://").nth(1).unwrap().split('/').next().unwrap();
    let hostport = authority.rsplit('@').next().unwrap();
    let (host, port) = hostport.split_once(':').unwrap_or((hostport, "5432"));
    (host.to_string(), port.to_string())
}

/// TLS: against a server that accepts only encrypted connections,
/// `sslmode=require` connects (encrypted, certificate unchecked, as libpq),
/// `verify-full` connects with the CA given in `sslrootcert` and is refused
/// without it, and `disable` is refused by the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_sslmode_require_and_verify_full() {
    if Store::postgres().is_none() {
        return;
    }
    let (pg, ca) = PgServer::start_with_tls();
    let url = |host: &str, query: &str| {
        format!(
            "postgres://postgres:{}@{host}:{}/postgres?{query}",
            pg.password, pg.port
        )
    };
    let server = Server::builder()
        .arg("--db", url("127.0.0.1", "sslmode=require"))
        .start();
    edit_and_check(&server, "require").await;
    let encrypted = common::postgres::psql(
        &url("127.0.0.1", "sslmode=require"),
        "SELECT COUNT(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid)
         WHERE ssl AND application_name = 'weft'",
    );
    assert_ne!(encrypted, vec![vec!["0".to_string()]], "weft's sessions use TLS");
    drop(server);

    let verified = url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
    );
    let server = Server::builder().arg("--db", &verified).start();
    edit_and_check(&server, "verify-full").await;
    drop(server);

    let out = Server::builder()
        .arg("--db", url("localhost", "sslmode=verify-full"))
        .run_to_exit();
    assert!(!out.status.success(), "an unknown CA must be refused");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");

    let out = Server::builder()
        .arg("--db", url("127.0.0.1", "sslmode=disable"))
        .run_to_exit();
    assert!(!out.status.success(), "the server accepts only TLS");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no encryption") || stderr.contains("pg_hba.conf"),
        "{stderr}"
    );
}

/// A database of schema version 3 (before snapshots kept their stream
/// position) is brought to the current version at start-up, keeping what
/// it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_3_database_is_migrated_to_4() {
    let Some(shared) = common::postgres::shared_server() else {
        return;
    };
    let db = Database::create(&shared);
    let mut first = Server::builder().arg("--db", db.url.clone()).start();
    let a = first.connect("kept").await;
    let text = a.doc.get_or_insert_text("t");
    a.edit(|txn| text.push(txn, "before the upgrade"));
    let observer = first.connect("kept").await;
    observer
        .wait_for("the edit", 5 * SECOND, |o| o.text("t") == "before the upgrade")
        .await
        .unwrap();
    // Stored before it was relayed; SIGTERM writes the snapshot too.
    assert!(first.terminate().success());
    db.query(
        "ALTER TABLE snapshots DROP COLUMN stream_id; DROP TABLE events; \
         ALTER TABLE documents DROP COLUMN reported_seq; \
         DROP TABLE webhooks; DROP TABLE webhook_cursors; DROP TABLE webhook_failures; \
         UPDATE weft_schema SET version = 3",
    );
    let second = Server::builder().arg("--db", db.url.clone()).start();
    assert!(second.log().contains("database schema migrated"), "{}", second.log());
    assert_eq!(
        db.query("SELECT MAX(version) FROM weft_schema"),
        vec![vec!["6".to_string()]]
    );
    assert_eq!(
        db.query("SELECT COUNT(*) FROM information_schema.columns WHERE table_name = 'snapshots' AND column_name = 'stream_id'"),
        vec![vec!["1".to_string()]]
    );
    let b = second.connect("kept").await;
    b.wait_for("the stored text", 5 * SECOND, |b| b.text("t") == "before the upgrade")
        .await
        .unwrap();
}
