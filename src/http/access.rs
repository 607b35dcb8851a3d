//! Who may do what: tokens, revocations, origins and connection limits, as
//! the HTTP edge applies them. Refusals happen here, before a WebSocket is
//! accepted, with a status and a JSON reason.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use tokio::sync::broadcast;

use super::{ApiError, AppState};
use crate::auth::{self, AuthError, AuthKey, Claims, Perm};
use crate::doc::DocName;
use crate::storage::{DocStore, StoreError};

/// How long a revocation is remembered; tokens may not live longer.
pub const MAX_TOKEN_TTL_SECS: u64 = 365 * 86_400;

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
            _ => StatusCode::UNAUTHORIZED,
        };
        ApiError::new(status, e.to_string())
    }
}

pub fn now_secs() -> u64 {
    (crate::storage::now_ms() / 1000) as u64
}

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
        let claims = auth::verify(key, credential, now_secs())?;
        if self.revoked.read().unwrap().contains(&claims.jti) {
            return Err(AuthError::Revoked);
        }
        Ok(Caller::Token(claims))
    }

    /// Revokes a token id: stored, so it stays refused after a restart, and
    /// announced, so live connections holding it close at once.
    pub async fn revoke(&self, token_id: &str) -> Result<(), StoreError> {
        self.store
            .revoke_token(token_id.to_string(), now_secs() + MAX_TOKEN_TTL_SECS)
            .await?;
        self.revoked.write().unwrap().insert(token_id.to_string());
        let _ = self.revocations.send(token_id.to_string());
        Ok(())
    }

    pub fn is_revoked(&self, token_id: &str) -> bool {
        self.revoked.read().unwrap().contains(token_id)
    }

    pub fn watch_revocations(&self) -> broadcast::Receiver<String> {
        self.revocations.subscribe()
    }
}

impl Caller {
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

/// The credential of a request: `Authorization: Bearer ...`, else `?token=`.
pub fn credential(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::to_string);
    bearer.or_else(|| {
        let query = query?;
        let Query(params) = Query::<HashMap<String, String>>::try_from_uri(&format!("/?{query}").parse().ok()?).ok()?;
        params.get("token").cloned()
    })
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        check_origin(&parts.headers, &state.allowed_origins)?;
        let credential = credential(&parts.headers, parts.uri.query());
        state.access.authenticate(credential.as_deref()).map_err(|e| {
            state.metrics.requests_refused.fetch_add(1, Ordering::Relaxed);
            ApiError::from(e)
        })
    }
}

/// With `--allowed-origin`, a browser request from any other origin (and
/// not from weft's own pages) is refused. Requests without an `Origin`
/// header come from programs, not pages, and pass.
pub fn check_origin(headers: &HeaderMap, allowed: &[String]) -> Result<(), ApiError> {
    if allowed.is_empty() {
        return Ok(());
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return Ok(());
    };
    let same_origin = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|host| origin.split_once("://").is_some_and(|(_, rest)| rest == host));
    if same_origin || allowed.iter().any(|a| a.trim_end_matches('/') == origin) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        format!("origin {origin} is not allowed (see --allowed-origin)"),
    ))
}

/// Connection limits: in total and per client IP.
#[derive(Debug)]
pub struct Limits {
    max_total: usize,
    max_per_ip: usize,
    trust_forwarded_for: bool,
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// Holds one connection's place; gives it back when dropped.
#[derive(Debug)]
pub struct Admission {
    limits: Arc<Limits>,
    ip: IpAddr,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.limits.total.fetch_sub(1, Ordering::Relaxed);
        let mut per_ip = self.limits.per_ip.lock().unwrap();
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

impl Limits {
    pub fn new(max_total: usize, max_per_ip: usize, trust_forwarded_for: bool) -> Self {
        Self {
            max_total,
            max_per_ip,
            trust_forwarded_for,
            total: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
        }
    }

    /// The client's IP: the peer address, or behind a trusted proxy the last
    /// `X-Forwarded-For` entry (the one the proxy itself appended).
    pub fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        if self.trust_forwarded_for {
            // Only the last entry: any earlier one is whatever the client
            // sent, and one it could not parse must not fall back to them.
            let forwarded = headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .next_back()
                .and_then(|ip| ip.trim().parse::<IpAddr>().ok());
            if let Some(ip) = forwarded {
                return ip;
            }
        }
        peer.ip()
    }

    /// Takes a place for a new connection, or says why there is none.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admission, ApiError> {
        let mut per_ip = self.per_ip.lock().unwrap();
        if self.total.load(Ordering::Relaxed) >= self.max_total {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("server is at its limit of {} connections", self.max_total),
            ));
        }
        let mine = per_ip.entry(ip).or_insert(0);
        if self.max_per_ip > 0 && *mine >= self.max_per_ip {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("too many connections from {ip} (limit {})", self.max_per_ip),
            ));
        }
        *mine += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        Ok(Admission {
            limits: self.clone(),
            ip,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_count_per_ip_and_give_back() {
        let limits = Arc::new(Limits::new(3, 2, false));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = limits.admit(a).unwrap();
        let _a2 = limits.admit(a).unwrap();
        assert_eq!(limits.admit(a).unwrap_err().status, StatusCode::TOO_MANY_REQUESTS);
        let _b1 = limits.admit(b).unwrap();
        assert_eq!(limits.admit(b).unwrap_err().status, StatusCode::SERVICE_UNAVAILABLE);
        drop(a1);
        assert!(limits.admit(b).is_ok());
    }

    #[test]
    fn forwarded_for_is_used_only_when_trusted() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "1.2.3.4, 5.6.7.8".parse().unwrap());
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(
            Limits::new(1, 1, true).client_ip(peer, &headers),
            "5.6.7.8".parse::<IpAddr>().unwrap()
        );
        assert_eq!(Limits::new(1, 1, false).client_ip(peer, &headers), peer.ip());
    }

    #[test]
    fn origins_are_checked_only_when_configured() {
        let mut headers = HeaderMap::new();
        headers.insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        headers.insert(header::HOST, "weft.example".parse().unwrap());
        assert!(check_origin(&headers, &[]).is_ok());
        let allowed = vec!["https://app.example".to_string()];
        assert_eq!(
            check_origin(&headers, &allowed).unwrap_err().status,
            StatusCode::FORBIDDEN
        );
        headers.insert(header::ORIGIN, "https://app.example".parse().unwrap());
        assert!(check_origin(&headers, &allowed).is_ok());
        headers.insert(header::ORIGIN, "https://weft.example".parse().unwrap());
        assert!(check_origin(&headers, &allowed).is_ok(), "same origin");
    }

    #[test]
    fn credentials_come_from_bearer_or_query() {
        let mut headers = HeaderMap::new();
        assert_eq!(credential(&headers, Some("a=1&token=abc.def")), Some("abc.def".into()));
        assert_eq!(credential(&headers, Some("a=1")), None);
        headers.insert(header::AUTHORIZATION, "Bearer xyz".parse().unwrap());
        assert_eq!(credential(&headers, Some("token=abc")), Some("xyz".into()));
    }

    /// Behind a trusted proxy only the entry the proxy appended counts: the
    /// client writes the earlier ones, and must not choose its own IP.
    #[test]
    fn forwarded_for_takes_the_last_entry_only() {
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let headers = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append("x-forwarded-for", v.parse().unwrap());
            }
            h
        };
        let trusted = Limits::new(10, 10, true);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(trusted.client_ip(peer, &headers(&["1.1.1.1, 2.2.2.2"])), ip("2.2.2.2"));
        assert_eq!(
            trusted.client_ip(peer, &headers(&["1.1.1.1", "3.3.3.3"])),
            ip("3.3.3.3")
        );
        assert_eq!(trusted.client_ip(peer, &headers(&["1.1.1.1, junk"])), ip("127.0.0.1"));
        assert_eq!(trusted.client_ip(peer, &headers(&[])), ip("127.0.0.1"));
        let direct = Limits::new(10, 10, false);
        assert_eq!(direct.client_ip(peer, &headers(&["1.1.1.1"])), ip("127.0.0.1"));
    }
}
