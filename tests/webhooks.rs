//! Webhooks against the real binary and a real receiver: the receiver
//! (`tests/node/webhook-receiver.mjs`, run by Node) verifies every request
//! with the `standardwebhooks` npm package, an implementation independent
//! of weft's, and reports each request as a JSON line. Needs
//! `npm ci` in tests/node (scripts/test.sh runs it first).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{enc, http, Client, Response, Server, Store, SECOND};
use serde_json::{json, Value};
use weft_bench::webhooks::{Sink, OK, OK_AND_CLOSE};
use yrs::{Map, Transact};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// Long enough for retries with backoff (0.5 s, 1 s, 2 s at most each).
const DELIVERY: Duration = Duration::from_secs(30);

/// The Node receiver, on a port the OS picked.
struct Receiver {
    child: Child,
    port: u16,
    seen: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    fn start() -> Self {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/node");
        assert!(
            std::path::Path::new(dir).join("node_modules/standardwebhooks").exists(),
            "tests/node/node_modules/standardwebhooks is missing: run `npm ci` in tests/node (scripts/test.sh does)"
        );
        let mut child = Command::new("node")
            .arg("webhook-receiver.mjs")
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node");
        let stdout = child.stdout.take().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let lines = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(value) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if let Some(port) = value["listening"].as_u64() {
                    let _ = port_tx.send(port as u16);
                } else {
                    lines.lock().unwrap().push(value);
                }
            }
        });
        let port = port_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the receiver did not start");
        Self { child, port, seen }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// How requests to `path` are answered (see the receiver's header).
    async fn configure(&self, config: Value) {
        let body = config.to_string();
        let r = http(
            &format!("127.0.0.1:{}", self.port),
            "POST",
            "/_config",
            &[("Content-Type", "application/json")],
            Some(body.as_bytes()),
        )
        .await;
        assert_eq!(r.status, 200);
    }

    fn requests(&self, path: &str) -> Vec<Value> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r["path"] == path)
            .cloned()
            .collect()
    }

    /// Waits until the requests to `path` satisfy `cond`.
    async fn wait(&self, path: &str, what: &str, cond: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + DELIVERY;
        loop {
            let requests = self.requests(path);
            if cond(&requests) {
                return requests;
            }
            assert!(
                Instant::now() < deadline,
                "{path}: {what} not seen within {DELIVERY:?}; requests: {requests:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn with_type<'a>(requests: &'a [Value], kind: &str) -> Vec<&'a Value> {
    requests.iter().filter(|r| r["type"] == kind).collect()
}

async fn json_request(server: &Server, method: &str, path: &str, key: Option<&str>, body: Option<Value>) -> Response {
    let auth = key.map(|k| format!("Bearer {k}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth.as_str()));
    }
    let body = body.map(|b| b.to_string());
    http(&server.addr, method, path, &headers, body.as_deref().map(str::as_bytes)).await
}

/// `POST /api/webhooks`; returns (id, secret).
async fn subscribe(server: &Server, key: Option<&str>, body: Value) -> (String, String) {
    let r = json_request(server, "POST", "/api/webhooks", key, Some(body)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    (v["id"].as_str().unwrap().into(), v["secret"].as_str().unwrap().into())
}

/// A named version of `doc` (one `version.created` event), after an edit
/// so that there is something to version.
async fn take_version(server: &Server, key: Option<&str>, doc: &str, label: &str) -> i64 {
    edit(server, key, doc, label).await;
    let r = json_request(
        server,
        "POST",
        &format!("/api/docs/{}/versions", enc(doc)),
        key,
        Some(json!({ "label": label })),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["id"].as_i64().unwrap()
}

/// An edit through the API: `m[key] = key`.
async fn edit(server: &Server, key: Option<&str>, doc: &str, value: &str) {
    let d = yrs::Doc::new();
    let map = d.get_or_insert_map("m");
    let update = {
        let mut txn = d.transact_mut();
        map.insert(&mut txn, value, value);
        txn.encode_update_v1()
    };
    let auth = key.map(|k| format!("Bearer {k}"));
    let mut headers = vec![("Content-Type", "application/octet-stream")];
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth.as_str()));
    }
    let r = http(
        &server.addr,
        "POST",
        &format!("/api/docs/{}/update", enc(doc)),
        &headers,
        Some(&update),
    )
    .await;
    assert!(r.status < 300, "{}", r.text());
}

fn webhook_server(receiver_path: &str, receiver: &Receiver) -> common::Builder {
    Server::builder()
        .flag("--webhook-allow-private")
        .arg("--webhook", receiver.url(receiver_path))
        .env("WEFT_WEBHOOK_SECRET", SECRET)
        .arg("--webhook-debounce-ms", 100)
}

/// Every event type reaches a subscription with a valid signature, the
/// headers the spec names, weft's user agent and JSON; the body's id is
/// the `webhook-id`.
#[tokio::test]
async fn every_event_type_arrives_signed() {
    let receiver = Receiver::start();
    receiver.configure(json!({ "path": "/all", "secret": SECRET })).await;
    let (_dir, key_path) = common::tokens::key_file();
    let key = common::tokens::KEY;
    let server = webhook_server("/all", &receiver)
        .arg("--auth-key-file", key_path.display())
        .flag("--events-peers")
        .start();
    // Peer events are opt-in: a subscription through the API that names them.
    let (_, peer_secret) = subscribe(
        &server,
        Some(key),
        json!({ "url": receiver.url("/peers"), "events": ["peer.joined", "peer.left"] }),
    )
    .await;
    receiver
        .configure(json!({ "path": "/peers", "secret": peer_secret }))
        .await;

    let version = take_version(&server, Some(key), "notes/a", "first").await;
    let r = json_request(
        &server,
        "POST",
        &format!("/api/docs/{}/versions/{version}/restore", enc("notes/a")),
        Some(key),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let client = Client::connect_headers(&server.ws, "notes/a", &[("Authorization", &format!("Bearer {key}"))])
        .await
        .unwrap();
    client.wait_synced().await.unwrap();
    client.close();
    // Debounced: it comes once the edits pause, so before the deletion.
    receiver
        .wait("/all", "document.updated", |rs| {
            !with_type(rs, "document.updated").is_empty()
        })
        .await;
    let mint = json_request(
        &server,
        "POST",
        "/api/tokens",
        Some(key),
        Some(json!({ "doc": "notes/*", "perm": "read", "ttl_secs": 60 })),
    )
    .await;
    let token_id = mint.json()["token_id"].as_str().unwrap().to_string();
    let r = json_request(
        &server,
        "POST",
        "/api/tokens/revoke",
        Some(key),
        Some(json!({ "token_id": token_id })),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = json_request(
        &server,
        "DELETE",
        &format!("/api/docs/{}", enc("notes/a")),
        Some(key),
        None,
    )
    .await;
    assert!(r.status < 300, "{}", r.text());

    let kinds = [
        "document.created",
        "document.updated",
        "version.created",
        "version.restored",
        "token.revoked",
        "document.deleted",
    ];
    let all = receiver
        .wait("/all", "every type", |rs| {
            kinds.iter().all(|k| !with_type(rs, k).is_empty())
        })
        .await;
    let peers = receiver
        .wait("/peers", "peer.joined and peer.left", |rs| {
            !with_type(rs, "peer.joined").is_empty() && !with_type(rs, "peer.left").is_empty()
        })
        .await;
    for r in all.iter().chain(&peers) {
        assert_eq!(r["verified"], true, "{r:#}");
        assert_eq!(r["content_type"], "application/json");
        assert!(r["user_agent"].as_str().unwrap().starts_with("weft/"), "{r:#}");
        let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["id"], r["id"], "the envelope's id is the webhook-id");
        assert!(r["id"].as_str().unwrap().starts_with("evt_"));
    }
    assert!(
        all.iter().all(|r| r["type"] != "peer.joined"),
        "peer events go only where asked for"
    );
    // The subscription without a filter and the one with: each event once.
    for kind in kinds {
        let ids: Vec<&str> = with_type(&all, kind)
            .iter()
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(ids.len(), unique.len(), "{kind} delivered twice without a failure");
    }
}

/// A receiver that fails three times (500) and then answers 200 gets four
/// attempts with the same webhook-id, and the event once successfully.
#[tokio::test]
async fn a_failing_receiver_gets_the_same_event_until_it_succeeds() {
    failing_receiver(Store::Sqlite).await;
}

#[tokio::test]
async fn a_failing_receiver_gets_the_same_event_until_it_succeeds_postgres() {
    failing_receiver(Store::Postgres).await;
}

async fn failing_receiver(store: Store) {
    let receiver = Receiver::start();
    let server = Server::builder().store(store).flag("--webhook-allow-private").start();
    let (id, secret) = subscribe(
        &server,
        None,
        json!({ "url": receiver.url("/flaky"), "events": ["version.created"] }),
    )
    .await;
    receiver
        .configure(json!({ "path": "/flaky", "secret": secret, "fail": 3 }))
        .await;
    take_version(&server, None, "flaky", "v").await;
    let requests = receiver
        .wait("/flaky", "a success", |rs| rs.iter().any(|r| r["status"] == 200))
        .await;
    assert_eq!(requests.len(), 4, "{requests:#?}");
    assert!(requests
        .iter()
        .all(|r| r["id"] == requests[0]["id"] && r["verified"] == true));
    let statuses: Vec<i64> = requests.iter().map(|r| r["status"].as_i64().unwrap()).collect();
    assert_eq!(statuses, [500, 500, 500, 200]);
    // The receiver reports a request before weft has its answer: wait for
    // weft to count the delivery.
    let delivered = format!("weft_webhook_deliveries_total{{webhook=\"{id}\"}} 1");
    let deadline = Instant::now() + DELIVERY;
    let metrics = loop {
        let metrics = server.get("/metrics").await.text();
        if metrics.lines().any(|l| l == delivered) || Instant::now() > deadline {
            break metrics;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for line in [
        format!("weft_webhook_retries_total{{webhook=\"{id}\"}} 3"),
        format!("weft_webhook_deliveries_total{{webhook=\"{id}\"}} 1"),
        format!("weft_webhook_failures_total{{webhook=\"{id}\"}} 0"),
        "weft_webhook_delivery_lag_seconds_count 1".to_string(),
    ] {
        assert!(metrics.lines().any(|l| l == line), "no {line} in\n{metrics}");
    }
    let failures = server.get(&format!("/api/webhooks/{id}/failures")).await.json();
    assert_eq!(failures["failures"], json!([]));
}

/// A 429 or 503 with `Retry-After` (seconds, or an HTTP-date) is tried
/// again no sooner than it asks, and counts as an attempt. Without it the
/// first retry waits at most 0.5 s (the backoff), so the gaps below tell.
#[tokio::test]
async fn retry_after_is_honoured() {
    let receiver = Receiver::start();
    let server = Server::builder().flag("--webhook-allow-private").start();
    let mut subscriptions = Vec::new();
    for (path, status, retry_after) in [
        ("/busy-seconds", 429, json!("2")),
        ("/busy-date", 503, json!({ "in": 3 })),
    ] {
        let (id, secret) = subscribe(
            &server,
            None,
            json!({ "url": receiver.url(path), "events": ["version.created"] }),
        )
        .await;
        receiver
            .configure(json!({
                "path": path, "secret": secret, "fail": 1, "fail_status": status, "retry_after": retry_after,
            }))
            .await;
        subscriptions.push((path, id));
    }
    take_version(&server, None, "busy", "v").await;
    for (path, id) in &subscriptions {
        let requests = receiver
            .wait(path, "a success", |rs| rs.iter().any(|r| r["status"] == 200))
            .await;
        assert_eq!(requests.len(), 2, "{requests:#?}");
        assert!(requests
            .iter()
            .all(|r| r["id"] == requests[0]["id"] && r["verified"] == true));
        let gap = requests[1]["received_ms"].as_i64().unwrap() - requests[0]["received_ms"].as_i64().unwrap();
        // An HTTP-date has whole seconds: "in 3 s" is at least 2 s away.
        assert!(
            gap >= 1_900,
            "{path}: the retry came {gap} ms after the answer asking for 2 s or more"
        );
        let metrics = server.get("/metrics").await.text();
        let line = format!("weft_webhook_retries_total{{webhook=\"{id}\"}} 1");
        assert!(metrics.lines().any(|l| l == line), "no {line} in\n{metrics}");
    }
}

/// A 4xx other than 408/429 is final: one attempt, and a failure entry
/// with the status; a redirect is not followed and is final too.
#[tokio::test]
async fn a_4xx_or_a_redirect_is_final_and_recorded() {
    final_answers(Store::Sqlite).await;
}

#[tokio::test]
async fn a_4xx_or_a_redirect_is_final_and_recorded_postgres() {
    final_answers(Store::Postgres).await;
}

async fn final_answers(store: Store) {
    let receiver = Receiver::start();
    let server = Server::builder().store(store).flag("--webhook-allow-private").start();
    let (gone, _) = subscribe(
        &server,
        None,
        json!({ "url": receiver.url("/gone"), "events": ["version.created"] }),
    )
    .await;
    let (moved, _) = subscribe(
        &server,
        None,
        json!({ "url": receiver.url("/moved"), "events": ["version.created"] }),
    )
    .await;
    receiver.configure(json!({ "path": "/gone", "status": 410 })).await;
    receiver
        .configure(json!({ "path": "/moved", "redirect": "/target" }))
        .await;
    take_version(&server, None, "final", "v").await;
    for (id, status, word) in [(&gone, 410, "410"), (&moved, 302, "redirect")] {
        let deadline = Instant::now() + DELIVERY;
        let failure = loop {
            let r = server.get(&format!("/api/webhooks/{id}/failures")).await.json();
            if let Some(f) = r["failures"].as_array().and_then(|f| f.first()).cloned() {
                break f;
            }
            assert!(Instant::now() < deadline, "no failure recorded for {id}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(failure["attempts"], 1, "{failure:#}");
        assert_eq!(failure["last_status"], status);
        assert_eq!(failure["type"], "version.created");
        assert!(failure["last_error"].as_str().unwrap().contains(word), "{failure:#}");
    }
    assert_eq!(receiver.requests("/gone").len(), 1);
    assert_eq!(receiver.requests("/moved").len(), 1);
    assert!(receiver.requests("/target").is_empty(), "the redirect was followed");
}

/// SIGKILL while events wait for a receiver that is down: after the
/// restart, every one of them is delivered.
#[tokio::test]
async fn events_pending_at_a_sigkill_are_delivered_after_the_restart() {
    let receiver = Receiver::start();
    receiver
        .configure(json!({ "path": "/later", "secret": SECRET, "status": 503 }))
        .await;
    let server = webhook_server("/later", &receiver)
        .arg("--webhook-max-attempts", 1000)
        .start();
    let mut versions = Vec::new();
    for i in 0..5 {
        versions.push(take_version(&server, None, "crash", &format!("v{i}")).await);
    }
    receiver.wait("/later", "a first attempt", |rs| !rs.is_empty()).await;
    let mut server = server;
    server.kill();
    receiver.configure(json!({ "path": "/later", "secret": SECRET })).await;
    let server = server.restart();
    let delivered = receiver
        .wait("/later", "five version.created accepted", |rs| {
            let ok: Vec<&Value> = rs
                .iter()
                .filter(|r| r["status"] == 200 && r["type"] == "version.created")
                .collect();
            let mut ids: Vec<&str> = ok.iter().map(|r| r["id"].as_str().unwrap()).collect();
            ids.sort();
            ids.dedup();
            ids.len() == 5
        })
        .await;
    assert!(delivered.iter().all(|r| r["verified"] == true));
    drop(server);
}

/// A receiver that never answers costs delivery its timeout, not editing:
/// edits still commit and relay to the other peer meanwhile.
#[tokio::test]
async fn a_hanging_receiver_does_not_hold_editing() {
    let receiver = Receiver::start();
    receiver.configure(json!({ "path": "/hang", "hang": true })).await;
    let server = webhook_server("/hang", &receiver)
        .arg("--webhook-timeout-ms", 60_000)
        .start();
    edit(&server, None, "busy", "first").await;
    receiver
        .wait("/hang", "a request that hangs", |rs| !rs.is_empty())
        .await;
    let a = server.connect("busy").await;
    let b = server.connect("busy").await;
    let started = Instant::now();
    // Taken before editing: yrs would wait for the edit's own transaction.
    let map = a.doc.get_or_insert_map("m");
    for i in 0..200 {
        a.edit(|txn| {
            map.insert(txn, format!("k{i}"), i as i64);
        });
    }
    b.wait_for("all 200 edits", 10 * SECOND, |c| {
        let map = c.doc.get_or_insert_map("m");
        let txn = c.doc.transact();
        map.len(&txn) >= 201
    })
    .await
    .unwrap();
    eprintln!("200 edits relayed in {:?} while the receiver hung", started.elapsed());
    assert_eq!(receiver.requests("/hang").len(), 1, "one attempt in flight at a time");
}

/// Without --webhook-allow-private, a loopback receiver is refused when
/// subscribing and at start-up, and the refusal names the flag.
#[tokio::test]
async fn private_addresses_are_refused_without_the_flag() {
    let server = Server::start();
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://[::1]:9/",
        "http://10.0.0.1/",
    ] {
        let r = json_request(&server, "POST", "/api/webhooks", None, Some(json!({ "url": url }))).await;
        assert_eq!(r.status, 400, "{url}: {}", r.text());
        assert!(r.text().contains("--webhook-allow-private"), "{url}: {}", r.text());
    }
    let out = Server::builder()
        .arg("--webhook", "http://127.0.0.1:9/hook")
        .env("WEFT_WEBHOOK_SECRET", SECRET)
        .run_to_exit();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("loopback") && err.contains("--webhook-allow-private"),
        "{err}"
    );
}

/// The API's refusals, the configured subscription's place in the list,
/// and start-up refusals of the secret.
#[tokio::test]
async fn the_api_checks_what_it_is_given() {
    let receiver = Receiver::start();
    // The URLs as the variable, comma-separated.
    let server = Server::builder()
        .flag("--webhook-allow-private")
        .env(
            "WEFT_WEBHOOKS",
            format!("{},{}", receiver.url("/one"), receiver.url("/two")),
        )
        .env("WEFT_WEBHOOK_SECRET", SECRET)
        .start();
    for (body, word) in [
        (json!({ "url": receiver.url("/x"), "colour": "red" }), "unknown field"),
        (json!({ "url": "not a url" }), "scheme"),
        (json!({ "url": "ftp://example.com/" }), "http:// or https://"),
        (
            json!({ "url": receiver.url("/x"), "events": ["document.exploded"] }),
            "unknown event type",
        ),
        (json!({ "events": [] }), "url"),
    ] {
        let r = json_request(&server, "POST", "/api/webhooks", None, Some(body.clone())).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(r.text().contains(word), "{body}: {}", r.text());
    }
    let (id, secret) = subscribe(
        &server,
        None,
        json!({ "url": receiver.url("/api"), "prefix": "notes/" }),
    )
    .await;
    assert!(secret.starts_with("whsec_"));
    let list = server.get("/api/webhooks").await;
    assert!(!list.text().contains("whsec_"), "secrets are shown once only");
    let hooks = list.json()["webhooks"].as_array().unwrap().clone();
    assert_eq!(hooks.len(), 3);
    let configured: Vec<&Value> = hooks.iter().filter(|h| h["configured"] == true).collect();
    assert_eq!(configured.len(), 2);
    let cfg_id = configured[0]["id"].as_str().unwrap().to_string();
    let r = server.delete(&format!("/api/webhooks/{cfg_id}")).await;
    assert_eq!(r.status, 409);
    assert!(r.text().contains("--webhook"), "{}", r.text());
    assert_eq!(
        server.get(&format!("/api/webhooks/{id}")).await.json()["prefix"],
        "notes/"
    );
    assert_eq!(server.delete(&format!("/api/webhooks/{id}")).await.status, 200);
    assert_eq!(server.get(&format!("/api/webhooks/{id}")).await.status, 404);
    assert_eq!(server.delete(&format!("/api/webhooks/{id}")).await.status, 404);

    // Configured ids stay the same across a restart.
    let server = server.restart();
    let hooks = server.get("/api/webhooks").await.json();
    assert!(hooks["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h["id"] == cfg_id.as_str()));
    drop(server);

    for (env, word) in [
        (None, "no secret"),
        (Some("whsec_c2hvcnQ="), "24 to 64 bytes"),
        (Some("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), "whsec_"),
    ] {
        let mut builder = Server::builder()
            .flag("--webhook-allow-private")
            .arg("--webhook", receiver.url("/x"));
        if let Some(secret) = env {
            builder = builder.env("WEFT_WEBHOOK_SECRET", secret);
        }
        let out = builder.run_to_exit();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(word), "{env:?}: {err}");
    }
}

/// A subscription made with `content: true` gets the document's JSON in
/// `data.content` of its `document.updated` events, signed as sent; one
/// without it gets the plain envelope.
#[tokio::test]
async fn a_content_subscription_gets_the_document_as_json() {
    let receiver = Receiver::start();
    for path in ["/content", "/plain"] {
        receiver.configure(json!({ "path": path, "secret": SECRET })).await;
    }
    let server = Server::builder()
        .flag("--webhook-allow-private")
        .arg("--webhook-debounce-ms", 100)
        .start();
    let (_, content_secret) = subscribe(
        &server,
        None,
        json!({ "url": receiver.url("/content"), "events": ["document.updated"], "content": true }),
    )
    .await;
    receiver
        .configure(json!({ "path": "/content", "secret": content_secret }))
        .await;
    let (_, plain_secret) = subscribe(
        &server,
        None,
        json!({ "url": receiver.url("/plain"), "events": ["document.updated"] }),
    )
    .await;
    receiver
        .configure(json!({ "path": "/plain", "secret": plain_secret }))
        .await;
    edit(&server, None, "with-content", "hello").await;
    let got = receiver
        .wait("/content", "a document.updated", |rs| {
            !with_type(rs, "document.updated").is_empty()
        })
        .await;
    let event = with_type(&got, "document.updated")[0];
    assert_eq!(event["verified"], true, "{event:#}");
    let body: Value = serde_json::from_str(event["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["data"]["content"]["m"]["hello"], "hello", "{body:#}");
    let plain = receiver
        .wait("/plain", "a document.updated", |rs| {
            !with_type(rs, "document.updated").is_empty()
        })
        .await;
    let body: Value = serde_json::from_str(with_type(&plain, "document.updated")[0]["body"].as_str().unwrap()).unwrap();
    assert!(body["data"].get("content").is_none(), "{body:#}");
}

/// The sum of a labelled series (every subscription's) in `/metrics`.
async fn labelled_total(server: &Server, name: &str) -> f64 {
    let body = server.get("/metrics").await.text();
    body.lines()
        .filter_map(|l| l.strip_prefix(name).filter(|rest| rest.starts_with('{')))
        .filter_map(|rest| rest.rsplit(' ').next()?.trim().parse::<f64>().ok())
        .sum()
}

/// Waits until weft counts `at_least` deliveries and the sink has
/// received as many requests as weft delivered (a later
/// `document.updated` may be on its way: counted by the receiver an
/// instant before weft counts it).
async fn delivered_to_sink(server: &Server, sink: &Sink, at_least: f64) {
    let deadline = Instant::now() + DELIVERY;
    while labelled_total(server, "weft_webhook_deliveries_total").await < at_least {
        assert!(Instant::now() < deadline, "{}", server.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    loop {
        let delivered = labelled_total(server, "weft_webhook_deliveries_total").await;
        let got = sink.posts() as f64;
        if got == delivered {
            break;
        }
        assert!(Instant::now() < deadline, "{delivered} delivered, {got} received");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Each id once in what the sink received.
fn each_once(sink: &Sink) {
    let ids = sink.ids();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "an event sent twice: {ids:?}");
}

fn sink_server(sink: &Sink) -> Server {
    Server::builder()
        .flag("--webhook-allow-private")
        .arg("--webhook", &sink.url)
        .env("WEFT_WEBHOOK_SECRET", SECRET)
        .start()
}

/// Receivers that answer and close the connection at once get each event
/// once: its answer is not taken for a connection dropped before
/// answering, and not sent again. Three of them: HTTP/1.0 (as many small
/// servers answer), HTTP/1.1 with `connection: close`, and HTTP/1.1
/// without it that closes anyway, so that weft would reuse a connection
/// the receiver has closed (it must open a new one, not fail the
/// attempt).
#[tokio::test]
async fn a_receiver_that_answers_and_closes_gets_each_event_once() {
    let sinks = [
        Sink::start(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
            .await
            .unwrap(),
        Sink::start(OK_AND_CLOSE).await.unwrap(),
        Sink::start_closing(OK).await.unwrap(),
    ];
    for sink in &sinks {
        let server = sink_server(sink);
        for i in 0..10 {
            take_version(&server, None, "closing", &format!("v{i}")).await;
        }
        // document.created and ten version.created at least
        delivered_to_sink(&server, sink, 11.0).await;
        assert_eq!(labelled_total(&server, "weft_webhook_retries_total").await, 0.0);
        each_once(sink);
        assert_eq!(sink.connections(), sink.posts(), "one connection per request");
    }
}

/// Many events over few connections: weft keeps the connection to a
/// receiver that keeps it open (HTTP/1.1 keep-alive) and sends the next
/// event on it, each event once.
#[tokio::test]
async fn events_share_a_kept_connection() {
    let sink = Sink::start(OK).await.unwrap();
    let server = sink_server(&sink);
    for i in 0..30 {
        take_version(&server, None, "kept", &format!("v{i}")).await;
    }
    delivered_to_sink(&server, &sink, 31.0).await;
    each_once(&sink);
    let (posts, connections) = (sink.posts(), sink.connections());
    eprintln!("{posts} requests over {connections} connections");
    // One, or a few if the machine stalled past the idle limit (4 s).
    assert!(connections <= 3, "{posts} requests over {connections} connections");
}
