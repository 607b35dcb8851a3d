//! The web demo, embedded in the binary: `/` is its `index.html`, and
//! `/assets/...` its scripts, styles and icons.
//!
//! The files come from `web-demo/dist` through `build.rs`. Their names under
//! `assets/` carry a content hash, so they are cached for a year as immutable;
//! `index.html` is revalidated on every load (by ETag) so that a new weft
//! binary serves its own demo at once. Text files are also embedded gzipped
//! and sent that way to clients that accept it.
//!
//! One asset has a fixed name: `assets/sw.js`, the demo's service worker
//! (it keeps the page for reloads while the server is down). A browser looks
//! for a new worker at the address it registered, so it is revalidated like
//! `index.html`, and `Service-Worker-Allowed: /` lets it serve `/`, above
//! its own directory.

use axum::extract::Path;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// One embedded file.
struct Asset {
    /// Relative to `web-demo/dist`, with `/` separators.
    path: &'static str,
    body: &'static [u8],
    /// The same bytes gzipped, when that saves enough to be worth it.
    gzip: Option<&'static [u8]>,
    /// A quoted content hash.
    etag: &'static str,
}

static ASSETS: &[Asset] = include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

/// Hashed names never change content.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Cached, but asked again each time (a cheap 304 while unchanged).
const REVALIDATE: &str = "no-cache";

/// The page may load only its own scripts and styles, and talk only to its
/// own server (HTTP API and WebSocket). y-prosemirror colours remote
/// selections with inline styles, hence `'unsafe-inline'` for styles alone.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; connect-src 'self' ws: wss:; object-src 'none'; \
                   base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// `GET /`: the demo's page. The document to open is in the query string,
/// which the page reads itself.
pub async fn index(headers: HeaderMap) -> Response {
    match find("index.html") {
        Some(asset) => {
            let mut response = serve(asset, &headers, REVALIDATE);
            let h = response.headers_mut();
            h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
            // The URL may carry an access token (?token=): never send it on.
            h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
            h.insert(
                HeaderName::from_static("x-frame-options"),
                HeaderValue::from_static("DENY"),
            );
            response
        }
        None => {
            ApiError::not_found("this weft was built without its web demo (web-demo/dist was empty)").into_response()
        }
    }
}

/// The service worker's fixed name under `assets/`.
const SERVICE_WORKER: &str = "sw.js";

/// `GET /assets/{*path}`
pub async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    match find(&format!("assets/{path}")) {
        Some(asset) if path == SERVICE_WORKER => {
            let mut response = serve(asset, &headers, REVALIDATE);
            response.headers_mut().insert(
                HeaderName::from_static("service-worker-allowed"),
                HeaderValue::from_static("/"),
            );
            response
        }
        Some(asset) => serve(asset, &headers, IMMUTABLE),
        None => ApiError::not_found(format!("no asset '/assets/{path}'")).into_response(),
    }
}

fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

fn serve(asset: &'static Asset, request: &HeaderMap, cache_control: &'static str) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache_control));
    headers.insert(header::ETAG, HeaderValue::from_static(asset.etag));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if asset.gzip.is_some() {
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    if etag_matches(request, asset.etag) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(asset.path)));
    let body = match asset.gzip {
        Some(gz) if accepts_gzip(request) => {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            gz
        }
        _ => asset.body,
    };
    (StatusCode::OK, headers, body).into_response()
}

/// `If-None-Match` lists this ETag (or is `*`).
fn etag_matches(request: &HeaderMap, etag: &str) -> bool {
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == etag || tag == "*")
}

/// `Accept-Encoding` names gzip (or `*`) without `q=0`.
fn accepts_gzip(request: &HeaderMap) -> bool {
    request
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or_default();
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
        })
}

fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, ext)| ext).unwrap_or_default();
    match ext {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: HeaderName, value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn the_demo_is_embedded_with_hashed_assets() {
        let index = find("index.html").expect("index.html embedded");
        let html = std::str::from_utf8(index.body).unwrap();
        let referenced: Vec<&str> = html.split('"').filter_map(|s| s.strip_prefix("/assets/")).collect();
        assert!(
            referenced.iter().any(|p| p.ends_with(".js")),
            "index.html loads no script"
        );
        assert!(
            referenced.iter().any(|p| p.ends_with(".css")),
            "index.html loads no stylesheet"
        );
        for path in referenced {
            assert!(
                find(&format!("assets/{path}")).is_some(),
                "index.html refers to missing /assets/{path}"
            );
        }
    }

    #[test]
    fn gzip_is_sent_only_when_accepted() {
        assert!(accepts_gzip(&headers(header::ACCEPT_ENCODING, "gzip, deflate, br")));
        assert!(accepts_gzip(&headers(header::ACCEPT_ENCODING, "br;q=1.0, GZIP;q=0.5")));
        assert!(accepts_gzip(&headers(header::ACCEPT_ENCODING, "*")));
        assert!(!accepts_gzip(&headers(header::ACCEPT_ENCODING, "gzip;q=0")));
        assert!(!accepts_gzip(&headers(header::ACCEPT_ENCODING, "br, identity")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn etags_match_in_lists_and_weakly() {
        assert!(etag_matches(&headers(header::IF_NONE_MATCH, "\"a\", \"b\""), "\"b\""));
        assert!(etag_matches(&headers(header::IF_NONE_MATCH, "W/\"b\""), "\"b\""));
        assert!(etag_matches(&headers(header::IF_NONE_MATCH, "*"), "\"b\""));
        assert!(!etag_matches(&headers(header::IF_NONE_MATCH, "\"a\""), "\"b\""));
    }

    #[test]
    fn content_types_by_extension() {
        assert_eq!(content_type("assets/app-X.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("assets/app-X.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("assets/favicon-X.svg"), "image/svg+xml");
        assert_eq!(content_type("LICENSE"), "application/octet-stream");
    }
}
