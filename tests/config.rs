//! Configuration against the real binary: every `WEFT_*` variable and its
//! flag reach the configuration weft runs with (table-driven, checked
//! against README's table), and the settings whose effect is easy to get
//! wrong do what README says.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{http, Client, Server, Store, SECOND};
use serde_json::json;
use yrs::{Map, Text, Transact};

/// How one setting is given and what weft's start-up summary then shows.
struct Setting {
    /// The flag, and its value (`None` for a switch); "" for a setting
    /// that only has a variable.
    flag: &'static str,
    flag_value: Option<&'static str>,
    /// The variable and its value.
    var: &'static str,
    var_value: &'static str,
    /// The summary's key, and what it shows for the flag's value and for
    /// the variable's.
    key: &'static str,
    flag_shown: &'static str,
    var_shown: &'static str,
}

/// Every setting weft has, each with a value other than its default.
/// A new flag gets a row here (and one in README's table; the test below
/// fails until both agree). `{key}` is replaced by a key file's path.
const SETTINGS: &[Setting] = &[
    row("--addr", "127.0.0.1:0", "WEFT_ADDR", "addr", "127.0.0.1:0"),
    row("--db", "{dir}/other.db", "WEFT_DB", "db", "{dir}/other.db"),
    row("--storage", "none", "WEFT_STORAGE", "storage", "none"),
    // Needs PostgreSQL and Redis running: not started here (see below);
    // tests/cluster.rs starts nodes with the flag and with the variable.
    row(
        "--redis",
        "redis://127.0.0.1:1",
        "WEFT_REDIS",
        "redis",
        "redis://127.0.0.1:1",
    ),
    row("--trim-grace-ms", "4321", "WEFT_TRIM_GRACE_MS", "trim_grace_ms", "4321"),
    row(
        "--webhook-debounce-ms",
        "1500",
        "WEFT_WEBHOOK_DEBOUNCE_MS",
        "webhook_debounce_ms",
        "1500",
    ),
    row(
        "--webhook-max-wait-ms",
        "12000",
        "WEFT_WEBHOOK_MAX_WAIT_MS",
        "webhook_max_wait_ms",
        "12000",
    ),
    switch("--events-peers", "WEFT_EVENTS_PEERS", "events_peers"),
    row(
        "--events-retention",
        "2h",
        "WEFT_EVENTS_RETENTION",
        "events_retention",
        "7200",
    ),
    row("--sync", "full", "WEFT_SYNC", "sync", "full"),
    row(
        "--db-password-file",
        "{dir}/pw",
        "WEFT_DB_PASSWORD_FILE",
        "db_password_file",
        "{dir}/pw",
    ),
    row(
        "--db-statement-timeout-ms",
        "1234",
        "WEFT_DB_STATEMENT_TIMEOUT_MS",
        "db_statement_timeout_ms",
        "1234",
    ),
    row(
        "--db-busy-timeout-ms",
        "1234",
        "WEFT_DB_BUSY_TIMEOUT_MS",
        "db_busy_timeout_ms",
        "1234",
    ),
    row(
        "--max-message-size",
        "123456",
        "WEFT_MAX_MESSAGE_SIZE",
        "max_message_size",
        "123456",
    ),
    row("--peer-queue", "7", "WEFT_PEER_QUEUE", "peer_queue", "7"),
    row(
        "--unload-after-ms",
        "4321",
        "WEFT_UNLOAD_AFTER_MS",
        "unload_after_ms",
        "4321",
    ),
    row(
        "--dormant-after-ms",
        "5432",
        "WEFT_DORMANT_AFTER_MS",
        "dormant_after_ms",
        "5432",
    ),
    row(
        "--max-loading-docs",
        "17",
        "WEFT_MAX_LOADING_DOCS",
        "max_loading_docs",
        "17",
    ),
    row(
        "--awareness-timeout-ms",
        "5432",
        "WEFT_AWARENESS_TIMEOUT_MS",
        "awareness_timeout_ms",
        "5432",
    ),
    row(
        "--compact-updates",
        "77",
        "WEFT_COMPACT_UPDATES",
        "compact_updates",
        "77",
    ),
    row(
        "--compact-bytes",
        "99999",
        "WEFT_COMPACT_BYTES",
        "compact_bytes",
        "99999",
    ),
    row(
        "--version-idle-secs",
        "11",
        "WEFT_VERSION_IDLE_SECS",
        "version_idle_secs",
        "11",
    ),
    row(
        "--version-every-secs",
        "22",
        "WEFT_VERSION_EVERY_SECS",
        "version_every_secs",
        "22",
    ),
    row(
        "--version-hourly-after-hours",
        "3",
        "WEFT_VERSION_HOURLY_AFTER_HOURS",
        "version_hourly_after_hours",
        "3",
    ),
    row(
        "--version-daily-after-days",
        "4",
        "WEFT_VERSION_DAILY_AFTER_DAYS",
        "version_daily_after_days",
        "4",
    ),
    row("--auth-key-file", "{key}", "WEFT_AUTH_KEY_FILE", "auth", "token"),
    Setting {
        flag: "",
        flag_value: None,
        var: "WEFT_AUTH_KEY",
        var_value: "config-test-key-0123456789abcdef0123",
        key: "auth",
        flag_shown: "",
        var_shown: "token",
    },
    switch("--allow-open", "WEFT_ALLOW_OPEN", "allow_open"),
    // Needs a secret beside it: not started here (see below);
    // tests/webhooks.rs starts weft with the flag and with the variable.
    row(
        "--webhook",
        "http://127.0.0.1:9/hook",
        "WEFT_WEBHOOKS",
        "webhooks",
        "[\"http://127.0.0.1:9/***\"]",
    ),
    row(
        "--webhook-secret-file",
        "{dir}/whsec",
        "WEFT_WEBHOOK_SECRET_FILE",
        "webhook_secret",
        "set",
    ),
    Setting {
        flag: "",
        flag_value: None,
        var: "WEFT_WEBHOOK_SECRET",
        var_value: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        key: "webhook_secret",
        flag_shown: "",
        var_shown: "set",
    },
    row(
        "--webhook-max-attempts",
        "3",
        "WEFT_WEBHOOK_MAX_ATTEMPTS",
        "webhook_max_attempts",
        "3",
    ),
    row(
        "--webhook-timeout-ms",
        "1234",
        "WEFT_WEBHOOK_TIMEOUT_MS",
        "webhook_timeout_ms",
        "1234",
    ),
    switch(
        "--webhook-allow-private",
        "WEFT_WEBHOOK_ALLOW_PRIVATE",
        "webhook_allow_private",
    ),
    // repeatable: once as a flag, twice (comma-separated) in the variable
    Setting {
        flag: "--allowed-origin",
        flag_value: Some("https://a.example"),
        var: "WEFT_ALLOWED_ORIGINS",
        var_value: "https://a.example,https://b.example",
        key: "allowed_origins",
        flag_shown: r#"["https://a.example"]"#,
        var_shown: r#"["https://a.example","https://b.example"]"#,
    },
    row(
        "--max-connections",
        "55",
        "WEFT_MAX_CONNECTIONS",
        "max_connections",
        "55",
    ),
    row(
        "--max-connections-per-ip",
        "0",
        "WEFT_MAX_CONNECTIONS_PER_IP",
        "max_connections_per_ip",
        "0",
    ),
    switch(
        "--trust-forwarded-for",
        "WEFT_TRUST_FORWARDED_FOR",
        "trust_forwarded_for",
    ),
    row("--rate-limit", "0", "WEFT_RATE_LIMIT", "rate_limit", "0"),
    row("--rate-burst", "17", "WEFT_RATE_BURST", "rate_burst", "17"),
    row("--byte-rate-limit", "0", "WEFT_BYTE_RATE_LIMIT", "byte_rate_limit", "0"),
    row("--max-doc-size", "0", "WEFT_MAX_DOC_SIZE", "max_doc_size", "0"),
    row("--max-doc-types", "1234", "WEFT_MAX_DOC_TYPES", "max_doc_types", "1234"),
    row("--metrics", "admin", "WEFT_METRICS", "metrics", "admin"),
    row("--log-format", "json", "WEFT_LOG_FORMAT", "log_format", "json"),
    row("--log", "info,weft=trace", "WEFT_LOG", "log", "info,weft=trace"),
    row(
        "--peer-queue-bytes",
        "123456",
        "WEFT_PEER_QUEUE_BYTES",
        "peer_queue_bytes",
        "123456",
    ),
    Setting {
        flag: "--allowed-host",
        flag_value: Some("weft.lan"),
        var: "WEFT_ALLOWED_HOSTS",
        var_value: "weft.lan,other.lan:1234",
        key: "allowed_hosts",
        flag_shown: r#"["weft.lan"]"#,
        var_shown: r#"["weft.lan","other.lan:1234"]"#,
    },
    row("--http-rate-limit", "0", "WEFT_HTTP_RATE_LIMIT", "http_rate_limit", "0"),
    row(
        "--http-rate-burst",
        "17",
        "WEFT_HTTP_RATE_BURST",
        "http_rate_burst",
        "17",
    ),
    row(
        "--max-new-docs-per-minute",
        "0",
        "WEFT_MAX_NEW_DOCS_PER_MINUTE",
        "max_new_docs_per_minute",
        "0",
    ),
    row("--rate-clients", "99", "WEFT_RATE_CLIENTS", "rate_clients", "99"),
    row(
        "--max-awareness-clients",
        "0",
        "WEFT_MAX_AWARENESS_CLIENTS",
        "max_awareness_clients",
        "0",
    ),
    row(
        "--max-awareness-state",
        "1234",
        "WEFT_MAX_AWARENESS_STATE",
        "max_awareness_state",
        "1234",
    ),
    row(
        "--hocuspocus-max-docs",
        "7",
        "WEFT_HOCUSPOCUS_MAX_DOCS",
        "hocuspocus_max_docs",
        "7",
    ),
    row(
        "--hocuspocus-pending-bytes",
        "1234",
        "WEFT_HOCUSPOCUS_PENDING_BYTES",
        "hocuspocus_pending_bytes",
        "1234",
    ),
    row("--max-versions", "0", "WEFT_MAX_VERSIONS", "max_versions", "0"),
    row("--max-doc-storage", "0", "WEFT_MAX_DOC_STORAGE", "max_doc_storage", "0"),
    row(
        "--header-read-timeout-ms",
        "4321",
        "WEFT_HEADER_READ_TIMEOUT_MS",
        "header_read_timeout_ms",
        "4321",
    ),
    row("--idle-timeout-ms", "0", "WEFT_IDLE_TIMEOUT_MS", "idle_timeout_ms", "0"),
    row(
        "--partial-message-budget",
        "33554433",
        "WEFT_PARTIAL_MESSAGE_BUDGET",
        "partial_message_budget",
        "33554433",
    ),
    row(
        "--message-deadline-ms",
        "0",
        "WEFT_MESSAGE_DEADLINE_MS",
        "message_deadline_ms",
        "0",
    ),
    row(
        "--message-stall-ms",
        "2345",
        "WEFT_MESSAGE_STALL_MS",
        "message_stall_ms",
        "2345",
    ),
    row(
        "--state-encodes-per-minute",
        "0",
        "WEFT_STATE_ENCODES_PER_MINUTE",
        "state_encodes_per_minute",
        "0",
    ),
];

const fn row(
    flag: &'static str,
    value: &'static str,
    var: &'static str,
    key: &'static str,
    shown: &'static str,
) -> Setting {
    Setting {
        flag,
        flag_value: Some(value),
        var,
        var_value: value,
        key,
        flag_shown: shown,
        var_shown: shown,
    }
}

const fn switch(flag: &'static str, var: &'static str, key: &'static str) -> Setting {
    Setting {
        flag,
        flag_value: None,
        var,
        var_value: "true",
        key,
        flag_shown: "true",
        var_shown: "true",
    }
}

/// `{dir}` and `{key}` in a value.
fn fill(value: &str, dir: &std::path::Path, key: &std::path::Path) -> String {
    value
        .replace("{dir}", &dir.display().to_string())
        .replace("{key}", &key.display().to_string())
}

/// The rows of README's configuration table: flag, variable, default.
fn readme_table() -> Vec<(String, String, String)> {
    let readme = include_str!("../README.md");
    let section = &readme[readme.find("## Configuration").unwrap()..];
    let section = &section[..section[3..].find("\n## ").unwrap()];
    section
        .lines()
        .filter(|l| l.starts_with("| `--"))
        .map(|l| {
            let cells: Vec<String> = l.split('|').map(|c| c.trim().trim_matches('`').to_string()).collect();
            (cells[1].clone(), cells[2].clone(), cells[3].clone())
        })
        .collect()
}

/// Guards against a flag or a variable that does not reach the
/// configuration (a typo in `env = ...`, a renamed flag), and against
/// README's table drifting from what weft has: each setting, given as a
/// flag and then as its variable, shows in the start-up summary.
#[test]
fn every_setting_is_wired_to_its_flag_and_its_variable() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "config-test-key-0123456789abcdef0123\n").unwrap();
    std::fs::write(dir.path().join("whsec"), "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").unwrap();

    // README's table and this one name the same flags and variables.
    let documented: Vec<(String, String)> = readme_table().into_iter().map(|(f, v, _)| (f, v)).collect();
    let tested: Vec<(String, String)> = SETTINGS
        .iter()
        .filter(|s| !s.flag.is_empty())
        .map(|s| (s.flag.to_string(), s.var.to_string()))
        .collect();
    for pair in &documented {
        assert!(
            tested.contains(pair),
            "README documents {pair:?}: add a row to SETTINGS in tests/config.rs"
        );
    }
    for pair in &tested {
        assert!(documented.contains(pair), "{pair:?} is not in README's table");
    }

    // Each setting, as a flag and as a variable, several servers at a time.
    let runs: Vec<(&Setting, bool)> = SETTINGS
        .iter()
        .flat_map(|s| [(s, true), (s, false)])
        .filter(|(s, as_flag)| !(*as_flag && s.flag.is_empty()))
        .filter(|(s, _)| s.flag != "--redis" && s.flag != "--webhook")
        .collect();
    let failures: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = runs
            .chunks(runs.len().div_ceil(4))
            .map(|chunk| {
                let (dir, key) = (dir.path(), key.as_path());
                scope.spawn(move || {
                    let mut failures = Vec::new();
                    for (setting, as_flag) in chunk {
                        let mut builder = Server::builder();
                        let how = if *as_flag {
                            match setting.flag_value {
                                Some(value) => builder = builder.arg(setting.flag, fill(value, dir, key)),
                                None => builder = builder.flag(setting.flag),
                            }
                            setting.flag
                        } else {
                            builder = builder.env(setting.var, fill(setting.var_value, dir, key));
                            setting.var
                        };
                        let server = builder.start();
                        let summary = server.summary();
                        let shown = if *as_flag {
                            setting.flag_shown
                        } else {
                            setting.var_shown
                        };
                        let want = fill(shown, dir, key);
                        let got = summary.get(setting.key).cloned().unwrap_or_default();
                        if got != want {
                            failures.push(format!("{how}: {}={got}, want {want}", setting.key));
                        }
                        if setting.flag == "--auth-key-file" {
                            let file = summary.get("auth_key_file").cloned().unwrap_or_default();
                            if file != key.display().to_string() {
                                failures.push(format!("{how}: auth_key_file={file}"));
                            }
                        }
                    }
                    failures
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Guards against README's defaults drifting from weft's: a server given
/// nothing but a port and a database shows README's defaults.
#[test]
fn defaults_are_as_documented() {
    let server = Server::builder().bare().start();
    let summary: BTreeMap<String, String> = server.summary();
    let mut wrong = Vec::new();
    for (flag, _, default) in readme_table() {
        let Some(setting) = SETTINGS.iter().find(|s| s.flag == flag) else {
            continue; // reported by the wiring test
        };
        if ["--addr", "--db"].contains(&flag.as_str()) {
            continue; // the harness gives these
        }
        // README's words for an unset value, as the summary prints them
        let (key, want): (&str, Vec<&str>) = match (setting.key, default.as_str()) {
            ("auth", _) => ("auth_key_file", vec!["null"]),
            (key, "none" | "any") => (key, vec!["null", "[]"]),
            (key, "off") => (key, vec!["false"]),
            (key, default) => (key, vec![default]),
        };
        let got = summary.get(key).cloned().unwrap_or_default();
        if !want.contains(&got.as_str()) {
            wrong.push(format!("{flag}: README says {default}, weft runs with {key}={got}"));
        }
    }
    assert_eq!(summary.get("auth").map(String::as_str), Some("open"));
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// Guards against `--storage none` writing anything: documents live in
/// memory only and are gone after a restart; no database file appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_none_keeps_nothing_on_disk() {
    let server = Server::builder().arg("--storage", "none").start();
    let a = server.connect("ephemeral").await;
    let text = a.doc.get_or_insert_text("t");
    a.edit(|txn| text.push(txn, "in memory"));
    let b = server.connect("ephemeral").await;
    b.wait_for("the edit", 5 * SECOND, |b| b.text("t") == "in memory")
        .await
        .unwrap();
    assert!(!server.db.exists(), "{} was created", server.db.display());
    drop((a, b));
    let server = server.restart();
    assert_eq!(server.get("/api/docs").await.json(), json!({ "docs": [] }));
    assert_eq!(server.connect("ephemeral").await.text("t"), "");
    assert!(!server.db.exists());
}

/// Guards against `--allow-open` being ignored, or the exposure check
/// being skipped without it: on an address that is not loopback, open mode
/// is refused unless allowed (flag or variable); allowed, weft goes on to
/// bind. (192.0.2.1 is a documentation address this machine does not have,
/// so the allowed run fails at binding and nothing is ever exposed.)
#[test]
fn allow_open_is_what_lets_open_mode_leave_loopback() {
    const EXPOSED: &str = "192.0.2.1:0";
    let refused = Server::builder()
        .arg("--addr", EXPOSED)
        .arg("--storage", "none")
        .run_to_exit();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("refusing to serve 192.0.2.1:0 in open mode"),
        "{stderr}"
    );
    for allowed in [
        Server::builder().arg("--addr", EXPOSED).flag("--allow-open"),
        Server::builder().arg("--addr", EXPOSED).env("WEFT_ALLOW_OPEN", "true"),
        Server::builder()
            .arg("--addr", EXPOSED)
            .env("WEFT_AUTH_KEY", "config-test-key-0123456789abcdef0123"),
    ] {
        let out = allowed.arg("--storage", "none").run_to_exit();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("refusing to serve"), "{stderr}");
        assert!(stderr.contains("could not listen"), "{stderr}");
    }
}

/// Guards against "0 = off" meaning "nothing allowed": with
/// `--max-connections-per-ip 0`, `--rate-limit 0` and `--max-doc-size 0`
/// more connections, messages and bytes get through than the smallest
/// limits would let, and nothing is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_turns_limits_off() {
    let server = Server::builder()
        .arg("--max-connections-per-ip", 0)
        .arg("--rate-limit", 0)
        .arg("--rate-burst", 1)
        .arg("--max-doc-size", 0)
        .start();
    let mut clients = Vec::new();
    for _ in 0..40 {
        clients.push(server.connect("unlimited").await);
    }
    // far past a burst of 1 message
    let flood = &clients[0];
    let text = flood.doc.get_or_insert_text("t");
    for i in 0..3000 {
        flood.edit(|txn| text.push(txn, &format!("{}", i % 10)));
    }
    // an update of 200 KB into a document with no size limit
    let big = "x".repeat(200_000);
    let map = flood.doc.get_or_insert_map("m");
    flood.edit(|txn| {
        map.insert(txn, "big", big.clone());
    });
    let last = &clients[39];
    last.wait_for("every edit", 30 * SECOND, |c| {
        c.text("t").len() == 3000 && c.doc.get_or_insert_map("m").len(&c.doc.transact()) == 1
    })
    .await
    .unwrap();
    for client in &clients {
        assert!(!client.seen().ended, "closed: {:?}", client.seen().close);
    }
    assert_eq!(server.metric("weft_requests_refused_total").await, 0.0);
    assert_eq!(server.metric("weft_updates_refused_total").await, 0.0);

    // and the same limits, set, do refuse
    let limited = Server::builder().arg("--max-connections-per-ip", 1).start();
    let _only = limited.connect("limited").await;
    assert_eq!(Client::refused(&limited.ws, "/limited").await.unwrap().status, 429);
}

/// Guards against `--compact-bytes` being ignored: with an update threshold
/// never reached, the log is compacted once it holds that many bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compact_bytes_compacts_by_size() {
    let server = Server::builder()
        .arg("--compact-updates", 1_000_000)
        .arg("--compact-bytes", 20_000)
        .start();
    let writer = server.connect("bytes").await;
    let observer = server.connect("bytes").await;
    let map = writer.doc.get_or_insert_map("m");
    let value = "v".repeat(1000);
    for i in 0..10 {
        writer.edit(|txn| {
            map.insert(txn, format!("k{i}"), value.clone());
        });
    }
    observer
        .wait_for("10 KB", 5 * SECOND, |o| {
            o.doc.get_or_insert_map("m").len(&o.doc.transact()) == 10
        })
        .await
        .unwrap();
    assert_eq!(server.metric("weft_compactions_total").await, 0.0, "compacted at 10 KB");
    for i in 10..30 {
        writer.edit(|txn| {
            map.insert(txn, format!("k{i}"), value.clone());
        });
    }
    server
        .wait_metric("weft_compactions_total", 10 * SECOND, |v| v >= 1.0)
        .await;
    let db = rusqlite::Connection::open(&server.db).unwrap();
    let snapshots: i64 = db
        .query_row("SELECT COUNT(*) FROM snapshots WHERE kind = 'compaction'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(snapshots, 1);
}

async fn versions(server: &Server, doc: &str) -> Vec<serde_json::Value> {
    server.get(&format!("/api/docs/{doc}/versions")).await.json()["versions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Guards against `--version-every-secs` being ignored: while edits never
/// stop (so the idle rule, an hour here, never applies) an automatic
/// version is taken all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_every_secs_versions_while_edits_continue() {
    // Edits as fast as they are relayed: thousands a second, a flood by the
    // default rate limit.
    let server = Server::builder()
        .arg("--version-idle-secs", 3600)
        .arg("--version-every-secs", 1)
        .arg("--rate-limit", 0)
        .start();
    let writer = server.connect("busy").await;
    let observer = server.connect("busy").await;
    let text = writer.doc.get_or_insert_text("t");
    let deadline = Instant::now() + 30 * SECOND;
    let mut n = 0;
    let taken = loop {
        n += 1;
        writer.edit(|txn| text.push(txn, "."));
        observer
            .wait_for("the edit", 5 * SECOND, |o| o.text("t").len() == n)
            .await
            .unwrap();
        let list = versions(&server, "busy").await;
        if !list.is_empty() {
            break list;
        }
        assert!(Instant::now() < deadline, "no version while edits continued");
    };
    assert_eq!(taken[0]["kind"], "auto");
    assert!(!writer.seen().ended);
}

/// Guards against automatic versions on unload being lost, taken twice, or
/// skipped when only deletions happened: a document edited and left unloads
/// with a version; loaded and left unchanged, it takes none (identical);
/// changed by a deletion only (its state vector unchanged), it takes one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_versions_on_unload_skip_identical_states_only() {
    let server = Server::builder()
        .arg("--unload-after-ms", 200)
        .arg("--version-idle-secs", 3600)
        .start();
    let unloads = |n: f64| {
        let server = &server;
        async move {
            server
                .wait_metric("weft_documents_unloaded_total", 10 * SECOND, |v| v >= n)
                .await;
        }
    };
    let visit = |edit: Option<(u32, u32, &'static str)>| {
        let server = &server;
        async move {
            let c = server.connect("unloaded").await;
            if let Some((at, delete, insert)) = edit {
                let text = c.doc.get_or_insert_text("t");
                c.edit(|txn| {
                    if delete > 0 {
                        text.remove_range(txn, at, delete);
                    }
                    if !insert.is_empty() {
                        text.insert(txn, at, insert);
                    }
                });
                let observer = server.connect("unloaded").await;
                let want = c.text("t");
                observer
                    .wait_for("the edit", 5 * SECOND, |o| o.text("t") == want)
                    .await
                    .unwrap();
            }
        }
    };
    visit(Some((0, 0, "abc"))).await;
    unloads(1.0).await;
    let list = versions(&server, "unloaded").await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["kind"], "auto");

    visit(None).await;
    unloads(2.0).await;
    assert_eq!(
        versions(&server, "unloaded").await.len(),
        1,
        "an identical version was taken"
    );

    visit(Some((1, 1, ""))).await; // "ac": a deletion only
    unloads(3.0).await;
    let list = versions(&server, "unloaded").await;
    assert_eq!(list.len(), 2, "the deletion got no version: {list:?}");
    let newest = server
        .get(&format!("/api/docs/unloaded/versions/{}", list[0]["id"]))
        .await
        .json();
    assert_eq!(newest["content"]["t"], "ac");
}

for_both_stores!(thinning_follows_its_settings);

/// Guards against thinning ignoring its settings: with automatic versions
/// aged by rewriting their times in the database, `--version-hourly-after-hours 1`
/// keeps one per hour of those older than an hour, and
/// `--version-daily-after-days 2` one per day of those older than two days;
/// newer and named versions stay. (With the defaults all of them stay.)
async fn thinning_follows_its_settings(store: Store) {
    const HOUR: i64 = 3_600_000;
    const DAY: i64 = 24 * HOUR;
    // A named version, then an automatic one (taken as the document
    // unloads), each of its own content.
    let mut server = Server::builder()
        .store(store)
        .arg("--version-idle-secs", 3600)
        .arg("--unload-after-ms", 200)
        .start();
    let writer = server.connect("aging").await;
    let observer = server.connect("aging").await;
    let text = writer.doc.get_or_insert_text("t");
    writer.edit(|txn| text.push(txn, "v"));
    observer
        .wait_for("the edit", 5 * SECOND, |o| o.text("t") == "v")
        .await
        .unwrap();
    let named = server.post("/api/docs/aging/versions", "", b"").await;
    assert_eq!(named.status, 201, "{}", named.text());
    writer.edit(|txn| text.push(txn, "w"));
    observer
        .wait_for("the edit", 5 * SECOND, |o| o.text("t") == "vw")
        .await
        .unwrap();
    drop((writer, observer));
    let deadline = Instant::now() + 30 * SECOND;
    while !versions(&server, "aging").await.iter().any(|v| v["kind"] == "auto") {
        assert!(Instant::now() < deadline, "no automatic version on unload");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(server.terminate().success());

    // Copies of the automatic version, at chosen times: clock-aligned
    // hours and days so each falls in a known bucket.
    let now = weft::clock::now_ms();
    let hour = now.div_euclid(HOUR) * HOUR;
    let day = now.div_euclid(DAY) * DAY;
    let recent = [now - 10 * 60_000, now - 20 * 60_000];
    let same_hour = [hour - 5 * HOUR + 10 * 60_000, hour - 5 * HOUR + 20 * 60_000];
    let other_hour = [hour - 6 * HOUR + 30 * 60_000];
    let same_day = [day - 4 * DAY + 2 * HOUR, day - 4 * DAY + 5 * HOUR];
    // Every column of the automatic version but its id and time, whatever
    // the schema holds.
    let columns_sql = match store {
        Store::Sqlite => "SELECT name FROM pragma_table_info('snapshots') WHERE name NOT IN ('id', 'created_at')",
        Store::Postgres => {
            "SELECT column_name FROM information_schema.columns
             WHERE table_name = 'snapshots' AND column_name NOT IN ('id', 'created_at')"
        }
    };
    let columns: Vec<String> = server.sql(columns_sql).into_iter().map(|r| r[0].clone()).collect();
    let columns = columns.join(", ");
    let mut ids = BTreeMap::new();
    for (what, times) in [
        ("recent", &recent[..]),
        ("same hour", &same_hour[..]),
        ("other hour", &other_hour[..]),
        ("same day", &same_day[..]),
    ] {
        for &t in times {
            let id = server.sql_count(&format!(
                "INSERT INTO snapshots ({columns}, created_at) SELECT {columns}, {t}
                 FROM snapshots WHERE kind = 'version' AND trigger = 'auto' LIMIT 1 RETURNING id"
            ));
            ids.insert(id, (what, t));
        }
    }
    // the original automatic version is a recent one too
    let named_id = named.json()["id"].as_i64().unwrap();

    let server = Server::builder()
        .on_database_of(&server)
        .arg("--version-idle-secs", 1)
        .arg("--version-hourly-after-hours", 1)
        .arg("--version-daily-after-days", 2)
        .start();
    // Thinning runs right after each automatic version: take one, and wait
    // until it is listed and the thinning after it has deleted versions.
    let writer = server.connect("aging").await;
    let text = writer.doc.get_or_insert_text("t");
    let listed = versions(&server, "aging").await;
    let newest_before = listed.iter().filter_map(|v| v["id"].as_i64()).max().unwrap();
    writer.edit(|txn| text.push(txn, "w"));
    let deadline = Instant::now() + 30 * SECOND;
    let kept = loop {
        let list = versions(&server, "aging").await;
        let taken = list
            .iter()
            .any(|v| v["kind"] == "auto" && v["id"].as_i64() > Some(newest_before));
        if taken && list.len() <= listed.len() {
            break list;
        }
        assert!(Instant::now() < deadline, "no thinning after the new version: {list:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let kept_ids: Vec<i64> = kept.iter().map(|v| v["id"].as_i64().unwrap()).collect();
    let survivors = |what: &str| {
        ids.iter()
            .filter(|(id, (w, _))| *w == what && kept_ids.contains(id))
            .count()
    };
    assert_eq!(survivors("recent"), 2, "versions newer than an hour stay");
    assert_eq!(survivors("same hour"), 1, "one per hour after an hour");
    assert_eq!(survivors("other hour"), 1, "each hour keeps one");
    assert_eq!(survivors("same day"), 1, "one per day after two days");
    assert!(kept_ids.contains(&named_id), "named versions stay");
    // the newest of a bucket is the one kept
    let newest_same_hour = ids
        .iter()
        .find(|(_, (w, t))| *w == "same hour" && *t == same_hour[1])
        .unwrap()
        .0;
    assert!(kept_ids.contains(newest_same_hour));
}

/// Guards against the per-IP limit counting the proxy instead of clients:
/// with `--trust-forwarded-for` each forwarded address has its own limit
/// (429 names it); without it, the header is ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_gives_each_client_its_own_limit() {
    let xff = |ip: &'static str| [("X-Forwarded-For", ip)];
    let server = Server::builder()
        .arg("--max-connections-per-ip", 1)
        .flag("--trust-forwarded-for")
        .start();
    let first = Client::connect_headers(&server.ws, "proxied", &xff("10.0.0.1"))
        .await
        .unwrap();
    first.wait_synced().await.unwrap();
    let refused = Client::refused_headers(&server.ws, "/proxied", &xff("10.0.0.1"))
        .await
        .unwrap();
    assert_eq!(refused.status, 429);
    assert!(
        refused.body.contains("too many connections from 10.0.0.1"),
        "{}",
        refused.body
    );
    // the proxy appends the client's address: only the last entry counts
    let refused = Client::refused_headers(&server.ws, "/proxied", &[("X-Forwarded-For", "10.0.0.9, 10.0.0.1")])
        .await
        .unwrap();
    assert_eq!(refused.status, 429);
    let other = Client::connect_headers(&server.ws, "proxied", &xff("10.0.0.2"))
        .await
        .unwrap();
    other.wait_synced().await.unwrap();

    let direct = Server::builder().arg("--max-connections-per-ip", 1).start();
    let first = Client::connect_headers(&direct.ws, "direct", &xff("10.0.0.1"))
        .await
        .unwrap();
    first.wait_synced().await.unwrap();
    let refused = Client::refused_headers(&direct.ws, "/direct", &xff("10.0.0.2"))
        .await
        .unwrap();
    assert_eq!(refused.status, 429);
    assert!(
        refused.body.contains("too many connections from 127.0.0.1"),
        "{}",
        refused.body
    );
}

/// Guards against comma-separated origins in the variable being read as
/// one origin: each is allowed, others are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comma_separated_origins_are_each_allowed() {
    let server = Server::builder()
        .env("WEFT_ALLOWED_ORIGINS", "https://a.example,https://b.example")
        .start();
    for (origin, status) in [
        ("https://a.example", 200),
        ("https://b.example", 200),
        ("https://c.example", 403),
    ] {
        let res = http(&server.addr, "GET", "/api/docs", &[("Origin", origin)], None).await;
        assert_eq!(res.status, status, "{origin}: {}", res.text());
        let allowed = res.header("access-control-allow-origin");
        assert_eq!(allowed, (status == 200).then_some(origin), "{origin}");
    }
}

/// Guards against `--log-format json` mixing formats: every line weft
/// writes is one JSON object, and connection lines carry the document and
/// the peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_json_object_per_line() {
    let server = Server::builder().arg("--log-format", "json").start();
    let a = server.connect("logged").await;
    a.send_raw(vec![0, 2, 200, 1, 2, 3]); // a warning too
    a.wait_closed(5 * SECOND).await.unwrap();
    server.wait_log("\"left\"", 5 * SECOND).await.unwrap();
    let log = server.log();
    let mut joined = None;
    for line in log.lines() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(value["timestamp"].is_string() && value["level"].is_string(), "{line}");
        if value["fields"]["message"] == "joined" {
            joined = Some(value);
        }
    }
    let joined = joined.expect("a joined line");
    assert_eq!(joined["span"]["doc"], "logged", "{joined}");
    assert_eq!(joined["span"]["peer"], "p1", "{joined}");
    assert!(log.contains("\"level\":\"WARN\""), "{log}");
}
