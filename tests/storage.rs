//! Durable storage: what survives restarts, crashes and storage faults.
//! The tests that hold for every store run against SQLite and PostgreSQL
//! (`for_both_stores!`); those about one engine's own features follow.

mod common;

use std::time::Duration;

use common::{Client, Server, Store, SECOND};
use yrs::encoding::read::{Cursor, Read};
use yrs::{ReadTxn, Text, Transact};

fn sqlite(server: &Server) -> rusqlite::Connection {
    rusqlite::Connection::open(&server.db).unwrap()
}

for_both_stores!(
    restart_on_the_same_database_keeps_content,
    sigkill_loses_nothing_an_observer_saw,
    compaction_keeps_content_and_shrinks_the_log,
    trace_replay_survives_restart,
    write_failure_closes_the_writer_and_loses_nothing,
    corrupt_document_is_reported_and_others_still_load,
    newer_schema_is_refused_at_start,
);

/// Content written before a SIGKILL is there after a restart.
async fn restart_on_the_same_database_keeps_content(store: Store) {
    let server = Server::start_on(store);
    let a = server.connect("kept").await;
    let text = a.doc.get_or_insert_text("t");
    a.edit(|txn| text.push(txn, "survives"));
    let b = server.connect("kept").await;
    b.wait_for("edit", 5 * SECOND, |b| b.text("t") == "survives")
        .await
        .unwrap();
    let server = server.restart();
    let c = server.connect("kept").await;
    assert_eq!(c.text("t"), "survives");
}

/// Nothing an observer received is lost when the server is killed at once
/// afterwards: every update is committed before it is relayed. Repeated,
/// on one database, with a compaction threshold low enough to interleave
/// compactions with the crashes.
async fn sigkill_loses_nothing_an_observer_saw(store: Store) {
    const ROUNDS: usize = 12;
    const UPDATES: usize = 150;
    let mut server = Server::builder().store(store).arg("--compact-updates", 100).start();
    let mut expected = String::new();
    for round in 0..ROUNDS {
        let writer = server.connect("crash").await;
        assert_eq!(writer.text("t"), expected, "round {round}: content after restart");
        let observer = server.connect("crash").await;
        let text = writer.doc.get_or_insert_text("t");
        for i in 0..UPDATES {
            let piece = format!("{}", (round * UPDATES + i) % 10);
            writer.edit(|txn| text.push(txn, &piece));
            expected.push_str(&piece);
        }
        let want = expected.clone();
        observer
            .wait_for("every update", 10 * SECOND, |o| o.text("t") == want)
            .await
            .unwrap();
        server = server.restart(); // SIGKILL, then start again
    }
    let last = server.connect("crash").await;
    assert_eq!(last.text("t"), expected);
    assert_eq!(expected.len(), ROUNDS * UPDATES);
}

/// Compaction replaces the log by a snapshot; content is identical.
async fn compaction_keeps_content_and_shrinks_the_log(store: Store) {
    let server = Server::builder().store(store).arg("--compact-updates", 100).start();
    let a = server.connect("compact").await;
    let text = a.doc.get_or_insert_text("t");
    for i in 0..1000 {
        a.edit(|txn| text.insert(txn, (i * 7 % (i + 1)) as u32, "ab"));
        if i % 3 == 0 {
            a.edit(|txn| text.remove_range(txn, 0, 1));
        }
    }
    let b = server.connect("compact").await;
    let want = a.text("t");
    b.wait_for("everything", 10 * SECOND, |b| b.text("t") == want)
        .await
        .unwrap();
    // Compaction runs after a batch's relays: wait for the log to be what
    // the configuration allows after the last batch. How many rows that is
    // depends on how the updates fell into commits; how many updates and
    // bytes it holds is what `--compact-updates 100` bounds.
    let deadline = std::time::Instant::now() + 10 * SECOND;
    loop {
        let log = LogSize::read(&server);
        if !log.compaction_due(100, 4 << 20) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the log stays past what --compact-updates 100 allows: {log:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        server.sql_count("SELECT COUNT(*) FROM snapshots WHERE kind = 'compaction'"),
        1
    );
    // 1,334 updates past a threshold of 100: compacted more than once.
    assert!(server.metric("weft_compactions_total").await >= 2.0);

    let sv = a.doc.transact().state_vector();
    let server = server.restart();
    let c = server.connect("compact").await;
    assert_eq!(c.text("t"), want);
    assert_eq!(c.doc.transact().state_vector(), sv, "identical state");
}

/// What a document's log holds, read from its rows: updates, their bytes
/// (unpacked from the rows), and the size of the compaction snapshot.
#[derive(Debug)]
struct LogSize {
    updates: u64,
    bytes: u64,
    snapshot: u64,
}

impl LogSize {
    fn read(server: &Server) -> LogSize {
        let mut updates = 0;
        let mut bytes = 0;
        for row in server.sql("SELECT count, data FROM updates") {
            let n: u64 = row[0].parse().unwrap();
            let data = unhex(&row[1]);
            updates += n;
            bytes += if n == 1 { data.len() as u64 } else { unpacked_len(&data) };
        }
        let snapshot =
            server.sql_count("SELECT COALESCE(MAX(length(state)), 0) FROM snapshots WHERE kind = 'compaction'") as u64;
        LogSize {
            updates,
            bytes,
            snapshot,
        }
    }

    /// README: compaction is due past `--compact-updates` updates and a
    /// quarter of the last snapshot's bytes, or past `--compact-bytes`.
    fn compaction_due(&self, compact_updates: u64, compact_bytes: u64) -> bool {
        (self.updates >= compact_updates && self.bytes >= self.snapshot / 4)
            || self.bytes >= compact_bytes.max(self.snapshot)
    }
}

/// A blob as `Server::sql` gives it: hex, with PostgreSQL's `\x` prefix.
fn unhex(text: &str) -> Vec<u8> {
    let hex = text.strip_prefix("\\x").unwrap_or(text);
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// The bytes of the updates in a row holding several: each is its length
/// (a varint) followed by that many bytes.
fn unpacked_len(data: &[u8]) -> u64 {
    let mut cursor = Cursor::new(data);
    let mut total = 0;
    while cursor.has_content() {
        let len: usize = cursor.read_var().unwrap();
        cursor.read_exact(len).unwrap();
        total += len as u64;
    }
    total
}

/// The automerge-paper trace, one update per edit, through a socket; after a
/// restart the text is exactly the trace's end.
async fn trace_replay_survives_restart(store: Store) {
    let trace = common::automerge_paper();
    assert_eq!(trace.patches.len(), 259_778);
    // One socket sending a quarter million messages as fast as it can is a
    // flood by the default rate limit; this test is about storage.
    let server = Server::builder().store(store).arg("--rate-limit", 0).start();
    let writer = server.connect("paper").await;
    let text = writer.doc.get_or_insert_text("t");
    for (pos, del, ins) in &trace.patches {
        writer.edit(|txn| {
            if *del > 0 {
                text.remove_range(txn, *pos, *del);
            }
            if !ins.is_empty() {
                text.insert(txn, *pos, ins);
            }
        });
    }
    assert_eq!(
        writer.text("t"),
        trace.end,
        "the replay itself must reproduce the trace"
    );
    let observer = Client::connect(&server.ws, "paper").await.unwrap();
    observer
        .wait_for("the whole trace", 120 * SECOND, |o| {
            o.text("t").len() == trace.end.len()
        })
        .await
        .unwrap();
    server
        .wait_metric("weft_updates_applied_total", 120 * SECOND, |v| v >= 259_778.0)
        .await;
    let server = server.restart();
    let reader = server.connect("paper").await;
    assert_eq!(reader.text("t"), trace.end);
}

/// Another process holding the lock writes need, until released.
enum Lock {
    Sqlite(rusqlite::Connection),
    Postgres(common::postgres::Session),
}

impl Lock {
    fn take(server: &Server) -> Lock {
        match &server.pg {
            None => {
                let lock = sqlite(server);
                lock.execute_batch("BEGIN IMMEDIATE").unwrap();
                Lock::Sqlite(lock)
            }
            Some(db) => {
                let mut session = common::postgres::Session::open(&db.url);
                session.run("BEGIN; LOCK TABLE updates IN EXCLUSIVE MODE;");
                Lock::Postgres(session)
            }
        }
    }

    fn release(self) {
        match self {
            Lock::Sqlite(lock) => lock.execute_batch("COMMIT").unwrap(),
            Lock::Postgres(mut session) => session.run("COMMIT;"),
        }
    }
}

/// A write that fails (the database locked by another process past the
/// busy/lock timeout) is neither relayed nor kept: its sender is closed
/// with 4500 and resends it after reconnecting. What was relayed before
/// stays.
async fn write_failure_closes_the_writer_and_loses_nothing(store: Store) {
    let server = Server::builder().store(store).arg("--db-busy-timeout-ms", 100).start();
    let writer = server.connect("locked").await;
    let observer = server.connect("locked").await;
    let text = writer.doc.get_or_insert_text("t");
    writer.edit(|txn| text.push(txn, "stored "));
    observer
        .wait_for("first edit", 5 * SECOND, |o| o.text("t") == "stored ")
        .await
        .unwrap();

    let lock = Lock::take(&server);
    writer.edit(|txn| text.push(txn, "later"));
    let closed = writer.wait_closed(10 * SECOND).await.unwrap();
    assert_eq!(closed.map(|c| c.0), Some(4500));
    assert_eq!(
        observer.text("t"),
        "stored ",
        "an update that was not stored must not be relayed"
    );
    server.wait_log("could not store updates", SECOND).await.unwrap();
    assert!(server.log().contains("doc=locked"));
    lock.release();

    // The writer still has its edit and sends it again on reconnect.
    let again = Client::connect_with(&server.ws, "locked", writer.doc.clone())
        .await
        .unwrap();
    again.wait_synced().await.unwrap();
    observer
        .wait_for("the resent edit", 5 * SECOND, |o| o.text("t") == "stored later")
        .await
        .unwrap();
    let server = server.restart();
    assert_eq!(server.connect("locked").await.text("t"), "stored later");
}

/// A stored row that does not decode is reported with its document's name,
/// at the upgrade; other documents load.
async fn corrupt_document_is_reported_and_others_still_load(store: Store) {
    let mut server = Server::start_on(store);
    for room in ["broken", "healthy"] {
        let c = server.connect(room).await;
        let observer = server.connect(room).await;
        let text = c.doc.get_or_insert_text("t");
        c.edit(|txn| text.push(txn, room));
        // relayed, so committed
        observer
            .wait_for("the edit", 5 * SECOND, |o| o.text("t") == room)
            .await
            .unwrap();
        c.close();
        observer.close();
    }
    assert!(server.terminate().success());
    let garbage = match store {
        Store::Sqlite => "x'ff01ff'",
        Store::Postgres => "'\\xff01ff'::bytea",
    };
    let broken = "doc_id = (SELECT id FROM documents WHERE name = 'broken')";
    server.sql(&format!("UPDATE snapshots SET state = {garbage} WHERE {broken}"));
    server.sql(&format!("UPDATE updates SET data = {garbage} WHERE {broken}"));
    let rows = server.sql_count(&format!(
        "SELECT (SELECT COUNT(*) FROM updates WHERE {broken}) + (SELECT COUNT(*) FROM snapshots WHERE {broken})"
    ));
    assert!(rows > 0, "nothing stored for 'broken'");
    let server = server.restart();
    let refused = Client::refused(&server.ws, "/broken").await.unwrap();
    assert_eq!(refused.status, 500);
    assert!(
        refused.body.contains("'broken' could not be loaded"),
        "{}",
        refused.body
    );
    assert_eq!(server.connect("healthy").await.text("t"), "healthy");
    let api = server.get("/api/docs/broken").await;
    assert_eq!(api.status, 500);
    assert!(api.text().contains("broken"));
}

/// README's backups of a live database (`.backup`, `VACUUM INTO`) taken
/// while weft runs and writes hold everything committed: a server started on
/// each copy has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_of_a_live_database_are_complete() {
    let server = Server::start();
    let writer = server.connect("backed-up").await;
    let observer = server.connect("backed-up").await;
    let text = writer.doc.get_or_insert_text("t");
    let mut want = String::new();
    for i in 0..50 {
        let piece = format!("{i};");
        writer.edit(|txn| text.push(txn, &piece));
        want.push_str(&piece);
    }
    let committed = want.clone();
    observer
        .wait_for("every edit", 10 * SECOND, |o| o.text("t") == committed)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dot_backup = dir.path().join("dot-backup.db");
    let vacuumed = dir.path().join("vacuumed.db");
    let out = common::run_with_deadline(
        std::process::Command::new("sqlite3")
            .arg(&server.db)
            .arg(format!(".backup '{}'", dot_backup.display())),
        common::PROCESS_DEADLINE,
    );
    assert!(
        out.status.success(),
        "sqlite3 .backup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    sqlite(&server)
        .execute_batch(&format!("VACUUM INTO '{}'", vacuumed.display()))
        .unwrap();
    // weft keeps writing meanwhile; the copies hold what was committed.
    writer.edit(|txn| text.push(txn, "after"));
    for copy in [&dot_backup, &vacuumed] {
        let restored = Server::builder().db(copy).start();
        let reader = restored.connect("backed-up").await;
        assert_eq!(reader.text("t"), committed, "{}", copy.display());
    }
}

/// A database written by a newer weft is refused at start-up, untouched.
async fn newer_schema_is_refused_at_start(store: Store) {
    match store {
        Store::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("future.db");
            let db = rusqlite::Connection::open(&path).unwrap();
            db.execute_batch("PRAGMA user_version = 99; CREATE TABLE t (x);")
                .unwrap();
            drop(db);
            let out = Server::builder().db(&path).run_to_exit();
            assert!(!out.status.success());
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains("schema version 99 is newer"), "{stderr}");
            let db = rusqlite::Connection::open(&path).unwrap();
            assert_eq!(
                db.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0)).unwrap(),
                99
            );
        }
        Store::Postgres => {
            let server = common::postgres::shared_server().unwrap();
            let db = common::postgres::Database::create(&server);
            db.query("CREATE TABLE weft_schema (version INTEGER NOT NULL); INSERT INTO weft_schema VALUES (99)");
            let out = Server::builder().arg("--db", &db.url).run_to_exit();
            assert!(!out.status.success());
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains("schema version 99 is newer"), "{stderr}");
            assert_eq!(
                db.query("SELECT version FROM weft_schema"),
                vec![vec!["99".to_string()]]
            );
            assert_eq!(
                db.query("SELECT to_regclass('documents') IS NULL"),
                vec![vec!["t".to_string()]]
            );
        }
    }
}

/// `--sync full` fsyncs every commit before its update is relayed, which is
/// what survives a power loss; `--sync normal` leaves syncing to SQLite's
/// checkpoints. Nothing short of pulling the plug shows the difference in
/// content, so the test counts weft's fsync calls (strace, attached to every
/// thread) while a known number of commits happen, each confirmed by a peer.
/// Both modes keep everything a peer saw through a SIGKILL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_full_fsyncs_every_commit_and_normal_does_not() {
    const EDITS: usize = 20;
    for mode in ["full", "normal"] {
        let server = Server::builder().arg("--sync", mode).start();
        let writer = server.connect("synced").await;
        let observer = server.connect("synced").await;
        let text = writer.doc.get_or_insert_text("t");
        let mut want = String::new();
        let mut edit = |i: usize| {
            let piece = format!("{i};");
            writer.edit(|txn| text.push(txn, &piece));
            want.push_str(&piece);
            want.clone()
        };
        // The first commit creates the document's row; not counted.
        let first = edit(0);
        observer
            .wait_for("the first edit", 5 * SECOND, |o| o.text("t") == first)
            .await
            .unwrap();

        let commits_before = server.metric("weft_storage_commits_total").await;
        let strace = Strace::attach(server.pid());
        for i in 1..=EDITS {
            let want = edit(i);
            // relayed, so committed: one commit per edit
            observer
                .wait_for("the edit", 5 * SECOND, |o| o.text("t") == want)
                .await
                .unwrap();
        }
        let syncs = strace.detach();
        let commits = server.metric("weft_storage_commits_total").await - commits_before;
        assert!(commits >= EDITS as f64, "{mode}: {commits} commits");
        match mode {
            "full" => assert!(
                syncs as f64 >= commits,
                "--sync full: {syncs} fsyncs for {commits} commits"
            ),
            _ => assert!(
                (syncs as f64) < commits / 2.0,
                "--sync normal: {syncs} fsyncs for {commits} commits"
            ),
        }
        let server = server.restart(); // SIGKILL
        assert_eq!(server.connect("synced").await.text("t"), want, "{mode}");
    }
}

/// strace attached to a running process and all its threads, counting
/// `fsync` and `fdatasync` calls until detached.
struct Strace {
    child: std::process::Child,
    out: tempfile::NamedTempFile,
}

impl Strace {
    fn attach(pid: u32) -> Strace {
        use std::io::{BufRead, BufReader};
        let out = tempfile::NamedTempFile::new().unwrap();
        let mut child = std::process::Command::new("strace")
            .args(["-f", "-qq", "-e", "trace=fsync,fdatasync", "-o"])
            .arg(out.path())
            .args(["-p", &pid.to_string()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("strace (apt-get install strace) tells --sync full from normal");
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("strace: {line}");
            }
        });
        // Attached once the kernel names strace as the tracer of every thread.
        let tracer = child.id().to_string();
        let attached = || {
            std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().all(|task| {
                let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap_or_default();
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("TracerPid:"))
                    .is_some_and(|v| v.trim() == tracer)
            })
        };
        let deadline = std::time::Instant::now() + common::PROCESS_DEADLINE;
        while !attached() {
            assert!(std::time::Instant::now() < deadline, "strace did not attach to weft");
            std::thread::sleep(Duration::from_millis(10));
        }
        Strace { child, out }
    }

    /// Detaches (SIGINT) and returns the number of sync calls seen.
    fn detach(mut self) -> usize {
        // SAFETY: plain libc call on a child we own.
        unsafe {
            kill(self.child.id() as i32, common::SIGINT);
        }
        let deadline = std::time::Instant::now() + common::PROCESS_DEADLINE;
        while self.child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("strace did not detach");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        std::fs::read_to_string(self.out.path())
            .unwrap()
            .lines()
            .filter(|l| l.contains("fsync(") || l.contains("fdatasync("))
            .count()
    }
}

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

/// A database written by the first schema version is migrated in place: its
/// documents load, and its tables end up as a new database's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_database_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.db");
    let v1 = rusqlite::Connection::open(&path).unwrap();
    v1.execute_batch(include_str!("../migrations/0001_initial.sql"))
        .unwrap();
    v1.execute_batch("PRAGMA user_version = 1").unwrap();
    let doc = yrs::Doc::new();
    let text = doc.get_or_insert_text("t");
    let mut updates = Vec::new();
    for word in ["written ", "by ", "v1"] {
        let mut txn = doc.transact_mut();
        text.push(&mut txn, word);
        updates.push(txn.encode_update_v1());
    }
    v1.execute(
        "INSERT INTO documents (id, name, created_at, updated_at) VALUES (1, 'old', 0, 0)",
        [],
    )
    .unwrap();
    for (i, u) in updates.iter().enumerate() {
        v1.execute(
            "INSERT INTO updates (doc_id, seq, data, created_at) VALUES (1, ?1, ?2, 0)",
            rusqlite::params![i as i64 + 1, u],
        )
        .unwrap();
    }
    drop(v1);

    let server = Server::builder().db(&path).start();
    let c = server.connect("old").await;
    let observer = server.connect("old").await;
    assert_eq!(c.text("t"), "written by v1");
    let t = c.doc.get_or_insert_text("t");
    c.edit(|txn| t.push(txn, " and v2"));
    // relayed, so committed: the SIGKILL below cannot lose it
    observer
        .wait_for("the new edit", 5 * SECOND, |o| o.text("t") == "written by v1 and v2")
        .await
        .unwrap();
    server
        .wait_log("database schema migrated from=1 to=2", SECOND)
        .await
        .unwrap();
    server
        .wait_log("database schema migrated from=2 to=3", SECOND)
        .await
        .unwrap();
    server
        .wait_log("database schema migrated from=3 to=4", SECOND)
        .await
        .unwrap();
    let server = server.restart();
    assert_eq!(server.connect("old").await.text("t"), "written by v1 and v2");

    let fresh = Server::start();
    let columns = |db: &rusqlite::Connection| -> Vec<String> {
        let mut out = Vec::new();
        let tables: Vec<String> = db
            .prepare("SELECT name FROM sqlite_master WHERE type IN ('table', 'index') ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        for table in tables {
            let mut stmt = db.prepare(&format!("PRAGMA table_info('{table}')")).unwrap();
            let cols = stmt
                .query_map([], |r| {
                    Ok(format!(
                        "{table}.{}:{}:{}:{:?}:{}",
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, i64>(5)?
                    ))
                })
                .unwrap()
                .map(Result::unwrap);
            out.push(table.clone());
            out.extend(cols);
        }
        out
    };
    let migrated = rusqlite::Connection::open(&path).unwrap();
    let new = sqlite(&fresh);
    assert_eq!(columns(&migrated), columns(&new));
    let version = |db: &rusqlite::Connection| db.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0)).unwrap();
    assert_eq!(version(&migrated), 5);
    assert_eq!(version(&new), 5);
}
