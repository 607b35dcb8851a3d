//! Browser origins on the HTTP API and the WebSocket (`--allowed-origin`),
//! against the real binary: a foreign origin is refused with 403 and changes
//! nothing, a preflight gets exactly the allowed origin's CORS headers, and
//! without the flag no CORS header is ever sent.

mod common;

use common::ydoc::text_update;
use common::{enc, http, Client, Response, Server};

const APP: &str = "https://app.example";
const OTHER_APP: &str = "https://other-app.example";
const EVIL: &str = "https://evil.example";

/// The CORS preflight a browser sends before POSTing JSON to the API from
/// a page of `origin`.
async fn preflight(server: &Server, origin: &str) -> Response {
    http(
        &server.addr,
        "OPTIONS",
        "/api/docs/doc/update",
        &[
            ("Origin", origin),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "content-type"),
        ],
        None,
    )
    .await
}

fn cors_headers(res: &Response) -> Vec<(String, String)> {
    res.headers
        .iter()
        .filter(|(k, _)| k.to_ascii_lowercase().starts_with("access-control-"))
        .cloned()
        .collect()
}

/// The comma-separated list of a header, lower-cased.
fn list(res: &Response, name: &str) -> Vec<String> {
    res.header(name)
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

/// A server with a stored document `doc` holding "stored".
async fn server_with_doc(builder: common::Builder) -> Server {
    let server = builder.start();
    let res = server
        .post(
            "/api/docs/doc/update",
            "application/octet-stream",
            &text_update("stored"),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    server
}

async fn content(server: &Server) -> serde_json::Value {
    server.get("/api/docs/doc").await.json()["content"].clone()
}

/// Guards against an allow-list that lets other pages read or change
/// documents: every API route answers a foreign origin with 403 and a JSON
/// reason, and nothing it asked for happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_origin_is_refused_on_every_route_and_changes_nothing() {
    let server = server_with_doc(Server::builder().arg("--allowed-origin", APP)).await;
    let update = text_update("EVIL");
    let label = br#"{"label": "evil"}"#.to_vec();
    /// method, path, and a body with its content type
    type Case = (&'static str, &'static str, Option<(&'static str, Vec<u8>)>);
    let cases: Vec<Case> = vec![
        ("GET", "/api/docs", None),
        ("GET", "/api/docs/doc", None),
        ("GET", "/api/docs/doc/update", None),
        ("GET", "/api/docs/doc/versions", None),
        (
            "POST",
            "/api/docs/doc/update",
            Some(("application/octet-stream", update)),
        ),
        ("POST", "/api/docs/doc/versions", Some(("application/json", label))),
        ("DELETE", "/api/docs/doc", None),
    ];
    for (method, path, body) in cases {
        let mut headers = vec![("Origin", EVIL)];
        if let Some((content_type, _)) = &body {
            headers.push(("Content-Type", content_type));
        }
        let res = http(&server.addr, method, path, &headers, body.as_ref().map(|(_, b)| &b[..])).await;
        assert_eq!(res.status, 403, "{method} {path}: {}", res.text());
        assert!(
            res.json()["error"].as_str().unwrap().contains("origin"),
            "{method} {path}: {}",
            res.text()
        );
        assert_eq!(res.header("access-control-allow-origin"), None, "{method} {path}");
    }
    // nothing happened: the document, its content and its versions are as they were
    assert_eq!(content(&server).await, serde_json::json!({ "t": "stored" }));
    let versions = server.get("/api/docs/doc/versions").await.json();
    assert_eq!(versions["versions"], serde_json::json!([]));

    // and the WebSocket upgrade
    let refused = Client::refused_headers(&server.ws, "/doc", &[("Origin", EVIL)])
        .await
        .unwrap();
    assert_eq!(refused.status, 403);
    assert!(
        refused.body.contains("origin https://evil.example is not allowed"),
        "{}",
        refused.body
    );
    // and the Hocuspocus endpoint's
    let refused = Client::refused_headers(&server.ws, "/hocuspocus", &[("Origin", EVIL)])
        .await
        .unwrap();
    assert_eq!(refused.status, 403, "{}", refused.body);
}

/// Guards against CORS answers that let any page in: an allowed origin's
/// requests and preflights name exactly that origin (never `*`, never
/// another), with the methods and headers the API needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_origins_get_exactly_their_own_cors_headers() {
    let server = server_with_doc(
        Server::builder()
            .arg("--allowed-origin", APP)
            .arg("--allowed-origin", OTHER_APP),
    )
    .await;
    for origin in [APP, OTHER_APP] {
        let res = http(&server.addr, "GET", "/api/docs/doc", &[("Origin", origin)], None).await;
        assert_eq!(res.status, 200, "{origin}: {}", res.text());
        assert_eq!(res.header("access-control-allow-origin"), Some(origin));
        assert!(list(&res, "vary").contains(&"origin".to_string()), "{res:?}");
        assert_eq!(res.header("access-control-allow-credentials"), None);

        let preflight = http(
            &server.addr,
            "OPTIONS",
            &format!("/api/docs/{}/update", enc("doc")),
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", "POST"),
                ("Access-Control-Request-Headers", "authorization, content-type"),
            ],
            None,
        )
        .await;
        assert!((200..300).contains(&preflight.status), "{origin}: {preflight:?}");
        assert_eq!(preflight.header("access-control-allow-origin"), Some(origin));
        let methods = list(&preflight, "access-control-allow-methods");
        for method in ["get", "post", "delete"] {
            assert!(methods.contains(&method.to_string()), "{origin}: {methods:?}");
        }
        let headers = list(&preflight, "access-control-allow-headers");
        for header in ["authorization", "content-type"] {
            assert!(headers.contains(&header.to_string()), "{origin}: {headers:?}");
        }
        assert_eq!(preflight.header("access-control-allow-credentials"), None);

        // and what the preflight allowed works
        let res = http(
            &server.addr,
            "POST",
            "/api/docs/doc/update",
            &[("Origin", origin), ("Content-Type", "application/octet-stream")],
            Some(&text_update(origin)),
        )
        .await;
        assert_eq!(res.status, 200, "{origin}: {}", res.text());
        assert_eq!(res.header("access-control-allow-origin"), Some(origin));
    }
    let text = content(&server).await["t"].as_str().unwrap().to_string();
    assert!(text.contains(APP) && text.contains(OTHER_APP), "{text}");

    // A foreign origin's preflight names no origin at all (whatever its
    // status), so the browser refuses to send the request.
    let preflight = preflight(&server, EVIL).await;
    assert_eq!(preflight.header("access-control-allow-origin"), None, "{preflight:?}");

    // A page of an allowed origin connects to the WebSocket.
    let client = Client::connect_headers(&server.ws, "doc", &[("Origin", OTHER_APP)])
        .await
        .unwrap();
    client.wait_synced().await.unwrap();
    assert!(client.text("t").contains("stored"));
}

/// Guards against CORS headers leaking into the default configuration:
/// without `--allowed-origin` the API is same-origin only for browsers, as
/// README says, and sends no CORS header to anyone, whatever it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_flag_no_cors_headers_are_sent() {
    let server = server_with_doc(Server::builder()).await;
    let res = http(&server.addr, "GET", "/api/docs/doc", &[], None).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(cors_headers(&res), vec![], "{res:?}");
    let res = http(&server.addr, "GET", "/api/docs/doc", &[("Origin", EVIL)], None).await;
    assert_eq!(cors_headers(&res), vec![], "{res:?}");
    let preflight = preflight(&server, EVIL).await;
    assert_eq!(cors_headers(&preflight), vec![], "{preflight:?}");
    let res = http(
        &server.addr,
        "POST",
        "/api/docs/doc/versions",
        &[("Origin", EVIL), ("Content-Type", "application/json")],
        Some(b"{}"),
    )
    .await;
    assert_eq!(cors_headers(&res), vec![], "{res:?}");
}
