//! `DocName`: a validated document name.
//!
//! A leaf module: every layer names documents (storage keys its rows by
//! them, tokens grant them, the HTTP edge parses them from paths), so the
//! name depends on nothing of weft's and `doc` re-exports it. Were it in
//! `doc`, `storage` and `doc` would import each other.

use std::fmt;
use std::sync::Arc;

/// Longest accepted name, in bytes of UTF-8.
const MAX_NAME_BYTES: usize = 512;

/// Top-level paths the HTTP layer keeps for itself. A document may not be
/// named after them, or no WebSocket client could ever reach it.
/// `hocuspocus` is the Hocuspocus endpoint (`http/hocuspocus.rs`).
const RESERVED: &[&str] = &["api", "assets", "healthz", "hocuspocus", "metrics"];

/// Whether a URL path is one weft keeps for itself (its first segment is
/// reserved, or it is `/`, the web demo) rather than a document's.
pub fn is_reserved_path(path: &str) -> bool {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or_default();
    path == "/" || RESERVED.contains(&first)
}

/// Why a string is not a document name. The message is shown to clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("document name is empty")]
    Empty,
    #[error("document name is {0} bytes long; the limit is {MAX_NAME_BYTES}")]
    TooLong(usize),
    #[error("document name contains a control character")]
    ControlChar,
    #[error("document name is not valid UTF-8 once percent-decoded")]
    NotUtf8,
    #[error("document name '{0}' is reserved for the HTTP API")]
    Reserved(String),
}

/// A document name: 1 to 512 bytes of UTF-8 without control characters.
///
/// `/` is allowed inside a name (`notes/today`), as the y-websocket provider
/// simply appends the room to the server URL. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DocName(Arc<str>);

impl DocName {
    pub fn parse(name: &str) -> Result<Self, NameError> {
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.len() > MAX_NAME_BYTES {
            return Err(NameError::TooLong(name.len()));
        }
        if name.chars().any(char::is_control) {
            return Err(NameError::ControlChar);
        }
        let first = name.split('/').next().unwrap_or_default();
        if RESERVED.contains(&first) {
            return Err(NameError::Reserved(first.to_string()));
        }
        Ok(Self(name.into()))
    }

    /// The name a WebSocket URL path stands for: the path without its leading
    /// `/`, percent-decoded. The query string is not part of the path.
    pub fn from_url_path(path: &str) -> Result<Self, NameError> {
        let raw = path.strip_prefix('/').unwrap_or(path);
        Self::from_percent_encoded(raw)
    }

    /// A name given percent-encoded.
    fn from_percent_encoded(raw: &str) -> Result<Self, NameError> {
        let decoded = percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| NameError::NotUtf8)?;
        Self::parse(&decoded)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DocName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DocName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_slashes_and_unicode() {
        assert_eq!(DocName::from_url_path("/notes/today").unwrap().as_str(), "notes/today");
        assert_eq!(
            DocName::from_url_path("/caf%C3%A9%20menu").unwrap().as_str(),
            "café menu"
        );
        assert_eq!(DocName::from_url_path("/a%2Fb").unwrap().as_str(), "a/b");
    }

    #[test]
    fn refuses_bad_names() {
        assert_eq!(DocName::from_url_path("/"), Err(NameError::Empty));
        assert_eq!(DocName::parse(&"x".repeat(513)), Err(NameError::TooLong(513)));
        assert!(DocName::parse(&"x".repeat(512)).is_ok());
        assert_eq!(DocName::from_url_path("/a%0Ab"), Err(NameError::ControlChar));
        assert_eq!(DocName::from_url_path("/%FF"), Err(NameError::NotUtf8));
        assert!(matches!(DocName::parse("api/docs"), Err(NameError::Reserved(_))));
        assert!(matches!(DocName::parse("metrics"), Err(NameError::Reserved(_))));
        assert!(DocName::parse("metrics-2024").is_ok());
    }
}
