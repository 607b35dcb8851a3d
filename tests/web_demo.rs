//! The embedded web demo, over real HTTP from the real binary: `/` and
//! `/assets/...` with their content types and cache headers. (What the page
//! does in a browser is tested in `tests/node/browser/`.)

mod common;

use std::io::Read;

use common::{http, Server};

/// The `/assets/...` paths `index.html` refers to.
fn asset_refs(html: &str) -> Vec<String> {
    html.split('"')
        .filter(|s| s.starts_with("/assets/"))
        .map(str::to_string)
        .collect()
}

fn expected_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("txt") => "text/plain; charset=utf-8",
        other => panic!("unexpected asset type {other:?} in {path}"),
    }
}

/// Guards against a binary that serves a page whose scripts are missing, or
/// serves them with a type the browser refuses for a module script.
#[tokio::test]
async fn root_serves_the_page_and_every_asset_it_names() {
    let server = Server::start();
    let page = server.get("/?doc=welcome").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(page.header("cache-control"), Some("no-cache"));
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
    let csp = page.header("content-security-policy").expect("a CSP");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let refs = asset_refs(&page.text());
    assert!(
        refs.iter().any(|r| r.ends_with(".js")) && refs.iter().any(|r| r.ends_with(".css")),
        "{refs:?}"
    );
    for path in refs {
        let asset = server.get(&path).await;
        assert_eq!(asset.status, 200, "{path}");
        assert_eq!(asset.header("content-type"), Some(expected_type(&path)), "{path}");
        assert_eq!(
            asset.header("cache-control"),
            Some("public, max-age=31536000, immutable"),
            "{path}"
        );
        assert_eq!(asset.header("x-content-type-options"), Some("nosniff"), "{path}");
        assert!(asset.header("etag").is_some(), "{path}");
        assert!(!asset.body.is_empty(), "{path}");
    }
}

/// Guards against re-sending unchanged files, and against a gzip copy that
/// is not the same file.
#[tokio::test]
async fn etags_revalidate_and_gzip_is_sent_when_accepted() {
    let server = Server::start();
    let page = server.get("/").await;
    let etag = page.header("etag").expect("etag").to_string();
    let again = http(&server.addr, "GET", "/", &[("If-None-Match", &etag)], None).await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag"), Some(etag.as_str()));

    let script = asset_refs(&page.text())
        .into_iter()
        .find(|r| r.ends_with(".js"))
        .unwrap();
    let plain = server.get(&script).await;
    assert_eq!(plain.header("content-encoding"), None);
    let gz = http(
        &server.addr,
        "GET",
        &script,
        &[("Accept-Encoding", "gzip, deflate, br")],
        None,
    )
    .await;
    assert_eq!(gz.status, 200);
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    assert_eq!(gz.header("vary"), Some("accept-encoding"));
    assert!(
        gz.body.len() * 2 < plain.body.len(),
        "gzip {} vs {}",
        gz.body.len(),
        plain.body.len()
    );
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&gz.body[..])
        .read_to_end(&mut unzipped)
        .unwrap();
    assert_eq!(unzipped, plain.body);
}

/// Guards against the demo's routes swallowing document paths or the API.
#[tokio::test]
async fn unknown_assets_are_json_404s_and_other_paths_stay_documents() {
    let server = Server::start();
    let missing = server.get("/assets/nope.js").await;
    assert_eq!(missing.status, 404);
    assert!(missing.json()["error"].as_str().unwrap().contains("nope.js"));

    // A plain GET of a document path is still a (refused) WebSocket upgrade.
    let doc = server.get("/welcome").await;
    assert_eq!(doc.status, 426);
    assert_eq!(server.get("/api/docs").await.status, 200);
}

/// The service worker (it keeps the page for reloads while weft is down):
/// at its fixed address, revalidated rather than cached for a year (a
/// browser must see a new demo's worker), allowed to serve `/` from under
/// `/assets/`, and keeping every asset the page names. Guards against a
/// worker that serves a stale page forever, or that cannot be registered
/// for `/`.
#[tokio::test]
async fn the_service_worker_keeps_the_page_and_every_asset_it_names() {
    let server = Server::start();
    let page = server.get("/").await;
    let sw = server.get("/assets/sw.js").await;
    assert_eq!(sw.status, 200);
    assert_eq!(sw.header("content-type"), Some("text/javascript; charset=utf-8"));
    assert_eq!(sw.header("cache-control"), Some("no-cache"));
    assert_eq!(sw.header("service-worker-allowed"), Some("/"));
    let text = sw.text();
    for path in asset_refs(&page.text()) {
        assert!(text.contains(&format!("\"{path}\"")), "sw.js does not keep {path}");
    }
}
