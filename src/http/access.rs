//! Who may do what: tokens, revocations, origins and hosts, as the HTTP
//! edge applies them. Refusals happen here, before a WebSocket is accepted,
//! with a status and a JSON reason. How many connections may be open is
//! `limits`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

use axum::extract::{FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::broadcast;

use super::budget::{has_body, BODY_TYPES};
use super::origin::{HostName, Origin, OriginError, Provenance};
use super::{ApiError, AppState};
use crate::auth::{self, AuthError, AuthKey, Claims, Perm, CLOCK_LEEWAY_SECS, MAX_TOKEN_TTL_SECS};
use crate::clock;
use crate::doc::DocName;
use crate::storage::{DocStore, StoreError};

/// Token mode (a key) or open mode (none), with the revoked token ids.
pub struct Access {
    key: Option<AuthKey>,
    revoked: RwLock<HashSet<String>>,
    /// Token ids as they are revoked, for live connections to watch.
    revocations: broadcast::Sender<String>,
    store: Arc<dyn DocStore>,
}

/// The party behind a request.
#[derive(Debug, Clone)]
pub enum Caller {
    /// The admin key, or anyone in open mode.
    Admin,
    Token(Claims),
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let status = match e {
            AuthError::WrongDocument { .. } | AuthError::ReadOnly | AuthError::AdminOnly => StatusCode::FORBIDDEN,
            AuthError::KeyTooShort(_) | AuthError::KeyFile { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            AuthError::BadPattern(_) | AuthError::BadLifetime => StatusCode::BAD_REQUEST,
            _ => StatusCode::UNAUTHORIZED,
        };
        ApiError::new(status, e.to_string())
    }
}

// Kept for `http/ws.rs` until it reads `crate::clock` itself; remove then.
pub use crate::clock::now_secs;

impl Access {
    pub async fn new(key: Option<AuthKey>, store: Arc<dyn DocStore>) -> Result<Self, StoreError> {
        let revoked = if key.is_some() {
            store.revoked_tokens().await?
        } else {
            Vec::new()
        };
        Ok(Self {
            key,
            revoked: RwLock::new(revoked.into_iter().collect()),
            revocations: broadcast::channel(64).0,
            store,
        })
    }

    pub fn is_open(&self) -> bool {
        self.key.is_none()
    }

    pub fn key(&self) -> Option<&AuthKey> {
        self.key.as_ref()
    }

    /// Who presented `credential` (a token or the admin key).
    pub fn authenticate(&self, credential: Option<&str>) -> Result<Caller, AuthError> {
        let Some(key) = &self.key else {
            return Ok(Caller::Admin);
        };
        let credential = credential
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .ok_or(AuthError::Missing)?;
        if key.is_admin(credential) {
            return Ok(Caller::Admin);
        }
        if credential == NOT_BEARER {
            return Err(AuthError::NotBearer);
        }
        let claims = auth::verify(key, credential, clock::now_secs()).map_err(|e| match e {
            // Most likely a mistyped admin key: say that it is not one.
            AuthError::Malformed(_) if !credential.contains('.') => AuthError::NotTokenNorKey,
            e => e,
        })?;
        if self.revoked.read().unwrap().contains(&claims.jti) {
            return Err(AuthError::Revoked);
        }
        Ok(Caller::Token(claims))
    }

    /// Revokes a token id: stored, so it stays refused after a restart, and
    /// announced, so live connections holding it close at once.
    pub async fn revoke(&self, token_id: &str) -> Result<(), StoreError> {
        self.store
            // As long as a token it names can still be accepted (auth::verify).
            .revoke_token(
                token_id.to_string(),
                clock::now_secs() + MAX_TOKEN_TTL_SECS + CLOCK_LEEWAY_SECS,
            )
            .await?;
        self.revoked.write().unwrap().insert(token_id.to_string());
        let _ = self.revocations.send(token_id.to_string());
        Ok(())
    }

    /// Cluster mode: another node revoked a token id (and stored it):
    /// refused here too from now on, and live connections holding it close.
    pub fn revoked_elsewhere(&self, token_id: &str) {
        self.revoked.write().unwrap().insert(token_id.to_string());
        let _ = self.revocations.send(token_id.to_string());
    }

    pub fn is_revoked(&self, token_id: &str) -> bool {
        self.revoked.read().unwrap().contains(token_id)
    }

    pub fn watch_revocations(&self) -> broadcast::Receiver<String> {
        self.revocations.subscribe()
    }
}

impl Caller {
    /// Whom the token names, if it names anyone (events say who edited).
    pub fn user(&self) -> Option<crate::doc::User> {
        match self {
            Caller::Token(claims) if claims.sub.is_some() || claims.name.is_some() => Some(crate::doc::User {
                id: claims.sub.clone(),
                name: claims.name.clone(),
            }),
            _ => None,
        }
    }

    pub fn read(&self, doc: &DocName) -> Result<(), AuthError> {
        match self {
            Caller::Admin => Ok(()),
            Caller::Token(claims) => claims.check(doc, false),
        }
    }

    pub fn write(&self, doc: &DocName) -> Result<(), AuthError> {
        match self {
            Caller::Admin => Ok(()),
            Caller::Token(claims) => claims.check(doc, true),
        }
    }

    pub fn admin(&self) -> Result<(), AuthError> {
        match self {
            Caller::Admin => Ok(()),
            Caller::Token(_) => Err(AuthError::AdminOnly),
        }
    }

    /// Whether documents named `name` show in this caller's listing.
    pub fn sees(&self, name: &str) -> bool {
        match self {
            Caller::Admin => true,
            Caller::Token(claims) => auth::pattern_matches(&claims.doc, name),
        }
    }

    pub fn may_write(&self) -> bool {
        match self {
            Caller::Admin => true,
            Caller::Token(claims) => claims.perm == Perm::Write,
        }
    }
}

/// Stands for an `Authorization` header of another scheme (or none), so
/// that `authenticate` can say what is wrong with it instead of "no token".
/// Cannot collide with a real credential: those have no spaces.
const NOT_BEARER: &str = "not a Bearer header";

/// The credential of a request: `Authorization: Bearer ...`, else `?token=`.
pub fn credential(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    let authorization = headers.get(header::AUTHORIZATION);
    let bearer = authorization
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::to_string);
    bearer
        .or_else(|| query_param(query, "token"))
        .or_else(|| authorization.map(|_| NOT_BEARER.to_string()))
}

/// One parameter of a URL's query string, percent-decoded.
pub fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    let query = query?;
    let Query(params) = Query::<HashMap<String, String>>::try_from_uri(&format!("/?{query}").parse().ok()?).ok()?;
    params.get(key).cloned()
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        // Origins were checked by `check_api_request`, for every API route.
        let credential = credential(&parts.headers, parts.uri.query());
        state.access.authenticate(credential.as_deref()).map_err(|e| {
            state.metrics.requests_refused.fetch_add(1, Ordering::Relaxed);
            ApiError::from(e)
        })
    }
}

/// Which browser pages may use weft, and under which host names.
///
/// A page on another origin can make a browser send requests to weft: a
/// form or a CORS-simple `fetch` (no preflight) reaches the server even when
/// the page may not read the answer, and a WebSocket needs no CORS at all. A
/// DNS-rebinding page is even same-origin with weft, under a host name of
/// the attacker's.
#[derive(Debug)]
pub struct OriginPolicy {
    allowed_origins: Vec<Origin>,
    allowed_hosts: Vec<HostName>,
    open: bool,
}

impl OriginPolicy {
    /// Parses `--allowed-origin` and `--allowed-host` once, at start-up.
    pub fn new(origins: &[String], hosts: &[String], open: bool) -> Result<Self, OriginError> {
        Ok(Self {
            allowed_origins: origins.iter().map(|o| Origin::parse(o)).collect::<Result<_, _>>()?,
            allowed_hosts: hosts.iter().map(|h| HostName::parse(h)).collect::<Result<_, _>>()?,
            open,
        })
    }

    pub fn has_allowed_origins(&self) -> bool {
        !self.allowed_origins.is_empty()
    }

    /// Whether CORS answers let `origin` read API responses.
    pub fn cors_allows(&self, origin: &HeaderValue) -> bool {
        origin
            .to_str()
            .ok()
            .and_then(|o| Origin::parse(o).ok())
            .is_some_and(|o| self.allowed_origins.contains(&o))
    }

    /// In open mode, a request must name weft by a loopback name or address,
    /// or by an `--allowed-host`: a DNS-rebinding page names it by the
    /// attacker's host name. Requests without `Host` do not come from a
    /// browser.
    pub fn check_host(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if !self.open {
            return Ok(());
        }
        let Some(raw) = headers.get(header::HOST) else {
            return Ok(());
        };
        let host = raw.to_str().ok().and_then(|h| HostName::parse(h).ok());
        if host.is_some_and(|h| h.is_loopback() || self.allowed_hosts.iter().any(|a| a.allows(&h))) {
            return Ok(());
        }
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "host '{}' is not allowed in open mode: use a loopback address, or start weft with --allowed-host",
                String::from_utf8_lossy(raw.as_bytes())
            ),
        ))
    }

    /// Refuses a browser request from a page that may not make it. Pages weft
    /// served itself and `--allowed-origin`s may; in open mode without that
    /// flag, so may other pages on this machine (a dev server on
    /// `localhost:3000`). Requests that change something (`changes`) are
    /// checked always; others only in open mode or with `--allowed-origin`
    /// (in token mode a page needs a token to read, and without CORS headers
    /// it cannot read the answer anyway). Requests without `Origin` do not
    /// come from a page.
    pub fn check_origin(&self, headers: &HeaderMap, changes: bool) -> Result<(), ApiError> {
        // An `Origin` that is not text is not absent: it is foreign.
        let origin = headers.get(header::ORIGIN).map(|o| o.to_str().unwrap_or(""));
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let trusted = match Provenance::of(origin, host, &self.allowed_origins) {
            Provenance::NoOrigin | Provenance::SameOrigin | Provenance::Listed => true,
            Provenance::Loopback => self.open && self.allowed_origins.is_empty(),
            Provenance::Foreign => false,
        };
        if trusted || !(changes || self.open || self.has_allowed_origins()) {
            return Ok(());
        }
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "origin {} is not allowed (see --allowed-origin)",
                origin.unwrap_or_default()
            ),
        ))
    }
}

/// Middleware for every route but `/healthz`: the `Host` check of open mode.
pub async fn check_host(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if request.uri().path() != "/healthz" {
        if let Err(e) = state.origins.check_host(request.headers()) {
            state.metrics.requests_refused.fetch_add(1, Ordering::Relaxed);
            return e.into_response();
        }
    }
    next.run(request).await
}

/// Middleware for the API: the origin check, and a body only with a media
/// type a page cannot send without a CORS preflight.
pub async fn check_api_request(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let changes = !matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let refusal = state
        .origins
        .check_origin(request.headers(), changes)
        .err()
        .or_else(|| (has_body(&request) && !has_body_type(&request)).then(unsupported_media_type));
    match refusal {
        Some(e) => {
            state.metrics.requests_refused.fetch_add(1, Ordering::Relaxed);
            e.into_response()
        }
        None => next.run(request).await,
    }
}

fn has_body_type(request: &Request) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .is_some_and(|t| BODY_TYPES.contains(&t.as_str()))
}

fn unsupported_media_type() -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "a request body needs Content-Type: application/json or application/octet-stream",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(origin) = origin {
            headers.insert(header::ORIGIN, origin.parse().unwrap());
        }
        headers.insert(header::HOST, host.parse().unwrap());
        headers
    }

    fn policy(origins: &[&str], hosts: &[&str], open: bool) -> OriginPolicy {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        OriginPolicy::new(&strings(origins), &strings(hosts), open).unwrap()
    }

    #[test]
    fn origins_are_checked_when_configured_in_open_mode_and_for_changes() {
        let evil = request(Some("https://evil.example"), "weft.example");
        // token mode without --allowed-origin: reads pass, changes do not
        let token = policy(&[], &[], false);
        assert!(token.check_origin(&evil, false).is_ok());
        assert_eq!(
            token.check_origin(&evil, true).unwrap_err().status,
            StatusCode::FORBIDDEN
        );
        // with --allowed-origin: those and weft's own pages
        let listed = policy(&["https://app.example/"], &[], false);
        assert_eq!(
            listed.check_origin(&evil, false).unwrap_err().status,
            StatusCode::FORBIDDEN
        );
        assert!(listed
            .check_origin(&request(Some("https://app.example"), "weft.example"), true)
            .is_ok());
        assert!(listed
            .check_origin(&request(Some("https://weft.example"), "weft.example"), true)
            .is_ok());
        assert!(listed
            .check_origin(&request(Some("evil://weft.example"), "weft.example"), false)
            .is_err());
        // open mode: pages on this machine, not others
        let open = policy(&[], &[], true);
        let local = request(Some("http://localhost:3000"), "127.0.0.1:1234");
        assert!(open.check_origin(&local, true).is_ok());
        assert!(open
            .check_origin(&request(Some("https://evil.example"), "127.0.0.1:1234"), false)
            .is_err());
        assert!(
            open.check_origin(&request(None, "127.0.0.1:1234"), true).is_ok(),
            "not a page"
        );
        // ... unless --allowed-origin says exactly which
        assert!(policy(&["https://app.example"], &[], true)
            .check_origin(&local, true)
            .is_err());
    }

    #[test]
    fn open_mode_answers_loopback_and_allowed_hosts_only() {
        let open = policy(&[], &["weft.lan"], true);
        for host in ["127.0.0.1:1234", "localhost:1234", "[::1]:1234", "weft.lan:1234"] {
            assert!(open.check_host(&request(None, host)).is_ok(), "{host}");
        }
        for host in ["evil.example:1234", "127.0.0.1.evil.example", "weft.lan.evil.example"] {
            assert_eq!(
                open.check_host(&request(None, host)).unwrap_err().status,
                StatusCode::FORBIDDEN,
                "{host}"
            );
        }
        assert!(policy(&[], &[], false)
            .check_host(&request(None, "evil.example"))
            .is_ok());
        assert!(open.check_host(&HeaderMap::new()).is_ok(), "no Host: not a browser");
        assert!(OriginPolicy::new(&["https://x/path".into()], &[], true).is_err());
    }

    #[test]
    fn cors_answers_normalised_origins() {
        let p = policy(&["https://App.example:443/"], &[], false);
        assert!(p.cors_allows(&HeaderValue::from_static("https://app.example")));
        assert!(!p.cors_allows(&HeaderValue::from_static("http://app.example")));
    }

    #[test]
    fn credentials_come_from_bearer_or_query() {
        let mut headers = HeaderMap::new();
        assert_eq!(credential(&headers, Some("a=1&token=abc.def")), Some("abc.def".into()));
        assert_eq!(credential(&headers, Some("a=1")), None);
        headers.insert(header::AUTHORIZATION, "Bearer xyz".parse().unwrap());
        assert_eq!(credential(&headers, Some("token=abc")), Some("xyz".into()));
    }
}
