//! `--redis`: the Redis server a cluster's nodes share. The URL may hold a
//! password, so it prints (and serialises, for the start-up line) with the
//! password replaced, as `--db` does: only the broker sees the real one.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

use super::db::redact;

/// A `redis://` (or `rediss://`, TLS) URL as given; prints redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// The URL with its password, for the broker to connect with. Never log it.
    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl FromStr for RedisUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.starts_with("redis://") || s.starts_with("rediss://") {
            // The rest is for the redis crate to parse, when the broker
            // connects at start-up, where its errors are reported.
            return Ok(RedisUrl(s.to_string()));
        }
        Err("give a redis:// or rediss:// URL (redis://host:6379)".into())
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.0))
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}

impl Serialize for RedisUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_redis_urls_and_passwords_never_print() {
        assert!("127.0.0.1:6379".parse::<RedisUrl>().is_err());
        assert!("postgres://h/db".parse::<RedisUrl>().is_err());
        for (url, want) in [
            ("redis://:s3cret@h:6379", "redis://:***@h:6379"),
            ("rediss://u:s3cret@h:6379/0", "rediss://u:***@h:6379/0"),
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
        ] {
            let parsed: RedisUrl = url.parse().unwrap();
            assert_eq!(parsed.to_string(), want);
            assert!(!format!("{parsed:?}").contains("s3cret"));
            assert_eq!(serde_json::to_value(&parsed).unwrap(), want);
        }
    }
}
