//! Signed access tokens: pure code, no I/O.
//!
//! A token is a JWT signed with HMAC-SHA256 (`alg: HS256`) under the secret
//! key weft is started with, so any backend can mint one with its language's
//! JWT library or twenty lines of HMAC. Claims:
//!
//! | claim  | meaning |
//! | ------ | ------- |
//! | `doc`  | a document name (`notes/today`), a prefix pattern (`team-a/*`), or `*` for every document |
//! | `perm` | `read` or `write` |
//! | `exp`  | expiry, Unix seconds |
//! | `jti`  | token id, used to revoke it: 1 to 128 bytes |
//! | `sub`  | optional user id |
//! | `name` | optional user name |
//! | `nbf`, `iat` | optional: not before, issued at (Unix seconds) |
//!
//! Only `HS256` is accepted: a token that names another algorithm (`none`
//! included) is refused before its signature is even looked at.
//!
//! A token weft could not revoke is refused too: one without a usable `jti`,
//! and one that lives longer than revocations are kept
//! ([`MAX_TOKEN_TTL_SECS`]), which would work again once its revocation had
//! been forgotten.

use std::fmt;
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::name::DocName;

/// Shortest accepted secret key, in bytes.
const MIN_KEY_BYTES: usize = 16;
/// How long a revocation is remembered, and so the longest a token may live.
pub const MAX_TOKEN_TTL_SECS: u64 = 365 * 86_400;
/// Clock difference tolerated between weft and the backend minting tokens.
pub const CLOCK_LEEWAY_SECS: u64 = 60;
/// Longest token id (`jti`) that can be revoked, in bytes.
const MAX_TOKEN_ID_BYTES: usize = 128;

/// Why a key or a token was refused. Token messages are shown to clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the auth key is {0} bytes; at least {MIN_KEY_BYTES} are needed (e.g. `openssl rand -hex 32`)")]
    KeyTooShort(usize),
    #[error("cannot read the auth key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
    #[error("no token: pass ?token=... in the URL or an Authorization: Bearer header")]
    Missing,
    #[error("the Authorization header must read 'Bearer <token>'")]
    NotBearer,
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// A credential without dots: not a token, and not the admin key either.
    #[error("malformed token: a token has three dot-separated parts, and this is not this server's admin key either")]
    NotTokenNorKey,
    #[error("token algorithm must be HS256")]
    Algorithm,
    #[error("token signature does not match this server's key")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token is not valid yet (nbf or iat is in the future)")]
    NotYetValid,
    #[error("token lives longer than 365 days, longer than weft keeps revocations")]
    LivesTooLong,
    #[error("token has been revoked")]
    Revoked,
    #[error("token is for '{pattern}', not for '{doc}'")]
    WrongDocument { pattern: String, doc: String },
    #[error("this token may only read")]
    ReadOnly,
    #[error("this needs the admin key")]
    AdminOnly,
    /// A token asked for a `doc` that is neither a document name nor a
    /// pattern; the message is the name's.
    #[error("{0}")]
    BadPattern(String),
    /// A token asked to live 0 s or longer than [`MAX_TOKEN_TTL_SECS`].
    #[error("a token lives 1 s to 365 days")]
    BadLifetime,
}

/// The secret the tokens are signed with. Never printed.
#[derive(Clone)]
pub struct AuthKey(Vec<u8>);

impl fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuthKey({} bytes)", self.0.len())
    }
}

impl AuthKey {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, AuthError> {
        let bytes = bytes.into();
        if bytes.len() < MIN_KEY_BYTES {
            return Err(AuthError::KeyTooShort(bytes.len()));
        }
        Ok(Self(bytes))
    }

    /// The key weft is configured with: the file's when a file is named,
    /// else `key` (from `WEFT_AUTH_KEY`, surrounding white space dropped),
    /// else none, which is open mode. The server and `weft token` both load
    /// it here, so that a token the CLI signs is one the server accepts.
    pub fn load(file: Option<&Path>, key: Option<&str>) -> Result<Option<Self>, AuthError> {
        match (file, key) {
            (Some(path), _) => Self::from_file(path).map(Some),
            (None, Some(key)) => Self::new(key.trim().as_bytes().to_vec()).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// The file's content without its trailing newline, so that
    /// `openssl rand -hex 32 > key` works as is.
    fn from_file(path: &Path) -> Result<Self, AuthError> {
        let bytes = std::fs::read(path).map_err(|e| AuthError::KeyFile {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let trimmed = bytes.trim_ascii_end();
        Self::new(trimmed.to_vec())
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length.
        Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length")
    }

    /// Whether `presented` is this key (the admin credential), compared in
    /// constant time.
    pub fn is_admin(&self, presented: &str) -> bool {
        let mut a = self.mac();
        a.update(presented.as_bytes());
        let mut b = self.mac();
        b.update(&self.0);
        a.verify(&b.finalize().into_bytes()).is_ok()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Perm {
    Read,
    Write,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub doc: String,
    pub perm: Perm,
    pub exp: u64,
    pub jti: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Issued at (Unix seconds): with it, a token's whole lifetime is known
    /// and bounded (see `check_period`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
}

impl Claims {
    /// Whether the token covers `doc`.
    pub fn allows(&self, doc: &DocName) -> bool {
        pattern_matches(&self.doc, doc.as_str())
    }

    /// Refuses unless the token covers `doc` (and may write, if asked).
    pub fn check(&self, doc: &DocName, write: bool) -> Result<(), AuthError> {
        if !self.allows(doc) {
            return Err(AuthError::WrongDocument {
                pattern: self.doc.clone(),
                doc: doc.to_string(),
            });
        }
        if write && self.perm != Perm::Write {
            return Err(AuthError::ReadOnly);
        }
        Ok(())
    }
}

/// `*` matches everything, `prefix/*` (or any pattern ending in `*`) every
/// name with that prefix, anything else exactly itself.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// What a token's `doc` may be: a document name, `prefix*` or `*`. A `*`
/// anywhere but at the end (`team-a/**`, `*/notes`) would match nothing
/// and is refused rather than minted into a useless token.
fn check_pattern(doc: &str) -> Result<(), AuthError> {
    let unsupported = || {
        AuthError::BadPattern(format!(
            "'{doc}' is not a pattern weft supports: use a document name, a prefix ending in one '*' (team-a/*), or '*'"
        ))
    };
    match doc.strip_suffix('*') {
        Some(prefix) if prefix.contains('*') => Err(unsupported()),
        Some(_) => Ok(()),
        None if doc.contains('*') => Err(unsupported()),
        None => DocName::parse(doc)
            .map(|_| ())
            .map_err(|e| AuthError::BadPattern(e.to_string())),
    }
}

const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// Signs claims into a token.
pub fn mint(key: &AuthKey, claims: &Claims) -> String {
    let header = B64.encode(HEADER);
    let payload = B64.encode(serde_json::to_vec(claims).expect("claims serialize"));
    let signing_input = format!("{header}.{payload}");
    let mut mac = key.mac();
    mac.update(signing_input.as_bytes());
    let signature = B64.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

/// The registered time claims weft honours besides `exp`.
#[derive(Deserialize)]
struct Validity {
    #[serde(default)]
    nbf: Option<u64>,
    #[serde(default)]
    iat: Option<u64>,
}

/// Checks a token's form, algorithm, signature, id and validity period
/// (`now` in Unix seconds) and returns its claims. Whether its id was revoked
/// is the caller's business. Never panics, whatever the claims hold.
pub fn verify(key: &AuthKey, token: &str, now: u64) -> Result<Claims, AuthError> {
    let malformed = AuthError::Malformed("expected three dot-separated parts");
    let (signing_input, signature) = token.trim().rsplit_once('.').ok_or(malformed.clone())?;
    let (header, payload) = signing_input.split_once('.').ok_or(malformed.clone())?;
    if payload.contains('.') {
        return Err(malformed);
    }
    let header: Header = B64
        .decode(header)
        .ok()
        .and_then(|h| serde_json::from_slice(&h).ok())
        .ok_or(AuthError::Malformed("header is not base64url JSON"))?;
    if header.alg != "HS256" {
        return Err(AuthError::Algorithm);
    }
    let signature = B64
        .decode(signature)
        .map_err(|_| AuthError::Malformed("signature is not base64url"))?;
    let mut mac = key.mac();
    mac.update(signing_input.as_bytes());
    mac.verify_slice(&signature).map_err(|_| AuthError::Signature)?;
    let payload = B64
        .decode(payload)
        .map_err(|_| AuthError::Malformed("payload is not base64url"))?;
    let claims: Claims = serde_json::from_slice(&payload)
        .map_err(|_| AuthError::Malformed("payload is not JSON with doc, perm, exp (whole seconds) and jti"))?;
    let validity: Validity =
        serde_json::from_slice(&payload).map_err(|_| AuthError::Malformed("nbf and iat must be whole seconds"))?;
    if claims.jti.is_empty() || claims.jti.len() > MAX_TOKEN_ID_BYTES {
        return Err(AuthError::Malformed(
            "jti must be 1 to 128 bytes, so that the token can be revoked",
        ));
    }
    check_period(claims.exp, &validity, now)?;
    Ok(claims)
}

/// `exp` in the future, `nbf` and `iat` not, and a lifetime no longer than
/// revocations are kept: from the earliest of `iat` and `nbf`, or from now
/// for a token that names neither.
fn check_period(exp: u64, validity: &Validity, now: u64) -> Result<(), AuthError> {
    if exp <= now {
        return Err(AuthError::Expired);
    }
    let soon = now.saturating_add(CLOCK_LEEWAY_SECS);
    if validity.nbf.is_some_and(|t| t > soon) || validity.iat.is_some_and(|t| t > soon) {
        return Err(AuthError::NotYetValid);
    }
    let start = [validity.nbf, validity.iat].into_iter().flatten().min().unwrap_or(now);
    if exp.saturating_sub(start) > MAX_TOKEN_TTL_SECS + CLOCK_LEEWAY_SECS {
        return Err(AuthError::LivesTooLong);
    }
    Ok(())
}

/// What a new token is for and how long it lives; [`issue`] adds the rest.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    /// A document name, a prefix pattern (`team-a/*`) or `*`.
    pub doc: String,
    pub perm: Perm,
    pub ttl_secs: u64,
    pub sub: Option<String>,
    pub name: Option<String>,
}

/// Checks what a token is for and how long it lives, gives it a fresh id and
/// signs it (`now` in Unix seconds): what `weft token` and `POST /api/tokens`
/// both do. Returns the token and its claims.
pub fn issue(key: &AuthKey, spec: TokenSpec, now: u64) -> Result<(String, Claims), AuthError> {
    check_pattern(&spec.doc)?;
    if spec.ttl_secs == 0 || spec.ttl_secs > MAX_TOKEN_TTL_SECS {
        return Err(AuthError::BadLifetime);
    }
    let claims = Claims {
        doc: spec.doc,
        perm: spec.perm,
        exp: now + spec.ttl_secs,
        jti: new_token_id(),
        sub: spec.sub,
        name: spec.name,
        iat: Some(now),
    };
    Ok((mint(key, &claims), claims))
}

/// A new random token id.
pub fn new_token_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Parses a duration like `90s`, `15m`, `1h`, `7d` (a bare number is seconds).
pub fn parse_ttl(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("'{s}' is not a duration like 90s, 15m, 1h or 7d"))?;
    let factor = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("'{s}': unknown unit '{unit}' (use s, m, h or d)")),
    };
    n.checked_mul(factor)
        .filter(|&t| t > 0)
        .ok_or_else(|| format!("'{s}' is not a positive duration"))
}

#[cfg(test)]
mod tests;
