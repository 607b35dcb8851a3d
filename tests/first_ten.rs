//! What a new user trips over in their first ten minutes (issue 19), held
//! against the real binary: each answer says what to do instead.

mod common;

use common::tokens::{token_server, KEY};
use common::{enc, http, upgrade_headers, Server};
use weft::auth::Perm;

/// A JSON body is read whatever its media type, and a field weft does not
/// know is refused instead of silently dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_labels_are_never_dropped_silently() {
    let server = Server::start();
    let path = format!("/api/docs/{}/update", enc("labels/doc"));
    let created = server
        .post(&path, "application/octet-stream", &common::ydoc::text_update("hello"))
        .await;
    assert_eq!(created.status, 200, "{}", created.text());
    let versions = format!("/api/docs/{}/versions", enc("labels/doc"));

    let as_octets = server
        .post(&versions, "application/octet-stream", br#"{"label": "draft"}"#)
        .await;
    assert_eq!(as_octets.status, 201, "{}", as_octets.text());
    assert_eq!(
        as_octets.json()["label"],
        "draft",
        "the label sent as octet-stream is kept"
    );

    let unknown = server.post(&versions, "application/json", br#"{"name": "x"}"#).await;
    assert_eq!(unknown.status, 400, "{}", unknown.text());
    let reason = unknown.json()["error"].as_str().unwrap().to_string();
    assert!(reason.contains("unknown field `name`"), "{reason}");
    assert!(reason.contains(r#"{"label": "..."}"#), "{reason}");

    let no_type = http(&server.addr, "POST", &versions, &[], Some(br#"{"label": "x"}"#)).await;
    assert_eq!(no_type.status, 415, "{}", no_type.text());

    let empty = server.post(&versions, "application/json", b"").await;
    assert!(
        matches!(empty.status, 200 | 201),
        "an empty body is an unlabelled version: {}",
        empty.text()
    );
    let listed = server.get(&versions).await.json();
    let labels: Vec<_> = listed["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["label"].clone())
        .collect();
    assert!(labels.contains(&serde_json::json!("draft")), "{listed}");
}

/// `/api/docs/notes/today` is the likeliest wrong path: the 404 says how to
/// write the name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unencoded_slash_in_an_api_path_gets_a_hint() {
    let server = Server::start();
    let res = server.get("/api/docs/notes/today").await;
    assert_eq!(res.status, 404);
    let reason = res.json()["error"].as_str().unwrap().to_string();
    assert!(reason.contains("%2F"), "{reason}");
    assert!(reason.contains("/api/docs/notes%2Ftoday"), "{reason}");
    let versions = server.get("/api/docs/notes/today/versions").await;
    assert!(
        versions.json()["error"]
            .as_str()
            .unwrap()
            .contains("/api/docs/notes%2Ftoday"),
        "{}",
        versions.text()
    );
    let other = server.get("/api/nothing").await;
    assert_eq!(other.status, 404);
    assert!(
        !other.text().contains("%2F"),
        "no hint where it does not apply: {}",
        other.text()
    );
}

/// A browser that opens a document's address is sent to the demo with the
/// document open; a client that is neither still gets the 426.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_opening_a_document_path_is_sent_to_the_demo() {
    let server = Server::start();
    let html = "text/html,application/xhtml+xml,*/*;q=0.8";
    let res = http(&server.addr, "GET", "/notes/today%20%C3%A9", &[("Accept", html)], None).await;
    assert_eq!(res.status, 303, "{}", res.text());
    assert_eq!(res.header("location"), Some("/?doc=notes%2Ftoday%20%C3%A9"));

    let with_token = http(&server.addr, "GET", "/notes?token=a.b%2Bc", &[("Accept", html)], None).await;
    assert_eq!(with_token.header("location"), Some("/?doc=notes&token=a%2Eb%2Bc"));

    let curl = http(&server.addr, "GET", "/notes/today", &[("Accept", "*/*")], None).await;
    assert_eq!(curl.status, 426, "{}", curl.text());
}

/// A WebSocket pointed at a path weft keeps for itself is refused with a
/// JSON 400 that says so, not answered with the route's content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_paths_refuse_upgrades_with_a_reason() {
    let server = Server::start();
    for path in ["/metrics", "/healthz", "/api/foo", "/api/docs", "/assets/x.js", "/"] {
        let res = http(&server.addr, "GET", path, &upgrade_headers(), None).await;
        assert_eq!(res.status, 400, "{path}: {}", res.text());
        let reason = res.json()["error"].as_str().unwrap().to_string();
        assert!(reason.contains("not a document"), "{path}: {reason}");
    }
    // a name that only starts like a reserved one is a document
    server.connect("metrics-dashboard").await.wait_synced().await.unwrap();
}

/// `--metrics`: open by default (no document names in it), the admin key
/// only, or off; `/healthz` stays open for load balancers whatever it says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_access_follows_the_flag() {
    let (open, _dir) = token_server(&[]);
    assert_eq!(open.get("/metrics").await.status, 200);
    assert_eq!(open.get("/healthz").await.status, 200);

    let (admin, _dir2) = token_server(&[("--metrics", "admin")]);
    assert_eq!(admin.get("/healthz").await.status, 200);
    let anonymous = admin.get("/metrics").await;
    assert_eq!(anonymous.status, 401, "{}", anonymous.text());
    let reader = common::tokens::token("*", Perm::Read, 600);
    let bearer = format!("Bearer {reader}");
    let token = http(&admin.addr, "GET", "/metrics", &[("Authorization", &bearer)], None).await;
    assert_eq!(
        token.status,
        403,
        "a document token is not the admin key: {}",
        token.text()
    );
    let key = format!("Bearer {KEY}");
    let with_key = http(&admin.addr, "GET", "/metrics", &[("Authorization", &key)], None).await;
    assert_eq!(with_key.status, 200);
    assert!(with_key.text().contains("weft_connections_open"), "{}", with_key.text());

    let off = Server::builder().arg("--metrics", "off").start();
    let res = off.get("/metrics").await;
    assert_eq!(res.status, 404);
    assert!(
        res.json()["error"].as_str().unwrap().contains("--metrics"),
        "{}",
        res.text()
    );
}

/// Wrong credentials say what is wrong with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_mistakes_are_named() {
    let (server, _dir) = token_server(&[]);
    let wrong_key = "0123456789abcdef".repeat(4);
    let res = http(
        &server.addr,
        "GET",
        "/api/docs",
        &[("Authorization", &format!("Bearer {wrong_key}"))],
        None,
    )
    .await;
    assert_eq!(res.status, 401);
    let reason = res.json()["error"].as_str().unwrap().to_string();
    assert!(
        reason.contains("admin key"),
        "a mistyped admin key is not 'malformed token': {reason}"
    );

    let res = http(&server.addr, "GET", "/api/docs", &[("Authorization", KEY)], None).await;
    assert_eq!(res.status, 401);
    let reason = res.json()["error"].as_str().unwrap().to_string();
    assert!(reason.contains("Bearer <token>"), "{reason}");

    // A token in the query still wins over a proxy's Basic header.
    let reader = common::tokens::token("*", Perm::Read, 600);
    let res = http(
        &server.addr,
        "GET",
        &format!("/api/docs?token={reader}"),
        &[("Authorization", "Basic dXNlcjpwYXNz")],
        None,
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text());
}

/// `weft token`: `--json` writes one JSON object to stdout, and patterns
/// that would match nothing are refused.
#[test]
fn the_token_command_writes_json_to_stdout_and_refuses_useless_patterns() {
    let token = |args: &[&str]| {
        common::run_with_deadline(
            std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
                .arg("token")
                .args(args)
                .env("WEFT_AUTH_KEY", KEY),
            common::PROCESS_DEADLINE,
        )
    };
    let out = token(&["--doc", "team-a/*", "--perm", "read", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON object");
    assert_eq!(json["claims"]["doc"], "team-a/*");
    assert_eq!(json["claims"]["perm"], "read");
    assert_eq!(json["token_id"], json["claims"]["jti"]);
    assert_eq!(json["token"].as_str().unwrap().split('.').count(), 3);

    for pattern in ["team-a/**", "*/notes", "team-*/x"] {
        let out = token(&["--doc", pattern, "--perm", "read"]);
        assert!(!out.status.success(), "{pattern} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("not a pattern weft supports"), "{pattern}: {stderr}");
        assert!(out.stdout.is_empty());
    }
}

/// The API refuses the same patterns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_patterns_that_match_nothing() {
    let (server, _dir) = token_server(&[]);
    let key = format!("Bearer {KEY}");
    let body = br#"{"doc": "team-a/**", "perm": "read", "ttl_secs": 60}"#;
    let headers = [("Authorization", key.as_str()), ("Content-Type", "application/json")];
    let res = http(&server.addr, "POST", "/api/tokens", &headers, Some(body)).await;
    assert_eq!(res.status, 400, "{}", res.text());
    assert!(res.text().contains("not a pattern weft supports"), "{}", res.text());
}

/// `--addr` takes a host name, and a missing port is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addr_takes_host_names() {
    let server = Server::builder().arg("--addr", "localhost:0").start();
    assert!(server.addr.starts_with("127.0.0.1:"), "{}", server.addr);
    assert_eq!(server.get("/healthz").await.status, 200);

    let out = Server::builder().arg("--addr", "localhost").run_to_exit();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("has no port"), "{stderr}");
}
