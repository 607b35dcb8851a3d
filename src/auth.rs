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
//! | `jti`  | token id, used to revoke it |
//! | `sub`  | optional user id |
//! | `name` | optional user name |
//!
//! Only `HS256` is accepted: a token that names another algorithm (`none`
//! included) is refused before its signature is even looked at.

use std::fmt;
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::doc::DocName;

/// Shortest accepted secret key, in bytes.
pub const MIN_KEY_BYTES: usize = 16;

/// Why a key or a token was refused. Token messages are shown to clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the auth key is {0} bytes; at least {MIN_KEY_BYTES} are needed (e.g. `openssl rand -hex 32`)")]
    KeyTooShort(usize),
    #[error("cannot read the auth key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
    #[error("no token: pass ?token=... in the URL or an Authorization: Bearer header")]
    Missing,
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("token algorithm must be HS256")]
    Algorithm,
    #[error("token signature does not match this server's key")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token has been revoked")]
    Revoked,
    #[error("token is for '{pattern}', not for '{doc}'")]
    WrongDocument { pattern: String, doc: String },
    #[error("this token may only read")]
    ReadOnly,
    #[error("this needs the admin key")]
    AdminOnly,
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

    /// The file's content without its trailing newline, so that
    /// `openssl rand -hex 32 > key` works as is.
    pub fn from_file(path: &Path) -> Result<Self, AuthError> {
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

/// Checks a token's form, algorithm, signature and expiry (`now` in Unix
/// seconds) and returns its claims. Revocation is the caller's business.
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
    let claims: Claims = B64
        .decode(payload)
        .ok()
        .and_then(|p| serde_json::from_slice(&p).ok())
        .ok_or(AuthError::Malformed(
            "payload is not base64url JSON with doc, perm, exp and jti",
        ))?;
    if claims.exp <= now {
        return Err(AuthError::Expired);
    }
    Ok(claims)
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
mod tests {
    use super::*;

    fn key() -> AuthKey {
        AuthKey::new(b"0123456789abcdef0123456789abcdef".to_vec()).unwrap()
    }

    fn claims(doc: &str, perm: Perm, exp: u64) -> Claims {
        Claims {
            doc: doc.into(),
            perm,
            exp,
            jti: "t1".into(),
            sub: Some("u1".into()),
            name: None,
        }
    }

    #[test]
    fn minted_tokens_verify() {
        let token = mint(&key(), &claims("notes/today", Perm::Write, 2000));
        let got = verify(&key(), &token, 1000).unwrap();
        assert_eq!(got, claims("notes/today", Perm::Write, 2000));
        assert!(got.check(&DocName::parse("notes/today").unwrap(), true).is_ok());
    }

    #[test]
    fn tampering_expiry_and_other_keys_are_refused() {
        let token = mint(&key(), &claims("a", Perm::Read, 2000));
        assert_eq!(verify(&key(), &token, 2000), Err(AuthError::Expired));
        let other = AuthKey::new(b"another key of enough length!!".to_vec()).unwrap();
        assert_eq!(verify(&other, &token, 1000), Err(AuthError::Signature));
        // swap in a payload granting write
        let forged_payload = B64.encode(serde_json::to_vec(&claims("a", Perm::Write, 2000)).unwrap());
        let mut parts: Vec<&str> = token.split('.').collect();
        parts[1] = &forged_payload;
        assert_eq!(verify(&key(), &parts.join("."), 1000), Err(AuthError::Signature));
        assert!(matches!(verify(&key(), "abc", 1000), Err(AuthError::Malformed(_))));
        assert!(matches!(verify(&key(), "a.b.c", 1000), Err(AuthError::Malformed(_))));
    }

    #[test]
    fn alg_none_is_refused() {
        let header = B64.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let payload = B64.encode(serde_json::to_vec(&claims("*", Perm::Write, 9999)).unwrap());
        assert_eq!(
            verify(&key(), &format!("{header}.{payload}."), 1),
            Err(AuthError::Algorithm)
        );
    }

    #[test]
    fn patterns_match_prefixes() {
        assert!(pattern_matches("team-a/*", "team-a/plan"));
        assert!(!pattern_matches("team-a/*", "team-b/plan"));
        assert!(!pattern_matches("team-a/*", "team-a"));
        assert!(pattern_matches("*", "anything"));
        assert!(pattern_matches("exact", "exact"));
        assert!(!pattern_matches("exact", "exact/more"));
        let read = claims("team-a/*", Perm::Read, 1);
        let doc = DocName::parse("team-a/x").unwrap();
        assert_eq!(read.check(&doc, true), Err(AuthError::ReadOnly));
        assert!(matches!(
            read.check(&DocName::parse("b").unwrap(), false),
            Err(AuthError::WrongDocument { .. })
        ));
    }

    #[test]
    fn admin_key_compares_exactly() {
        assert!(key().is_admin("0123456789abcdef0123456789abcdef"));
        assert!(!key().is_admin("0123456789abcdef0123456789abcdeF"));
        assert!(!key().is_admin(""));
        assert_eq!(AuthKey::new(b"short".to_vec()).unwrap_err(), AuthError::KeyTooShort(5));
    }

    #[test]
    fn ttls_parse() {
        assert_eq!(parse_ttl("90"), Ok(90));
        assert_eq!(parse_ttl("15m"), Ok(900));
        assert_eq!(parse_ttl("1h"), Ok(3600));
        assert_eq!(parse_ttl("7d"), Ok(604_800));
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("1y").is_err());
        assert!(parse_ttl("h").is_err());
    }
}
