//! `--db`: a SQLite file, or a PostgreSQL URL. The URL may hold a password,
//! so the value prints (and serialises, for the start-up line) with the
//! password replaced: only the store ever sees the real one.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// Where weft keeps documents.
#[derive(Clone, PartialEq, Eq)]
pub enum DbLocation {
    /// A SQLite database file.
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL (`postgres://` or `postgresql://`), as
    /// given: it may carry a password.
    Postgres(PostgresUrl),
}

/// A `postgres://` URL as given, password included; prints redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresUrl(String);

impl PostgresUrl {
    /// The URL with its password, for the store to connect with. Never log it.
    pub fn secret(&self) -> &str {
        &self.0
    }

    /// The URL with the password (if any) replaced by `***`.
    pub fn redacted(&self) -> String {
        redact(&self.0)
    }
}

impl fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostgresUrl({})", self.redacted())
    }
}

impl DbLocation {
    pub fn is_postgres(&self) -> bool {
        matches!(self, DbLocation::Postgres(_))
    }
}

impl FromStr for DbLocation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            // Anything past the scheme is for tokio-postgres to parse; it is
            // checked when the store opens, where its errors are reported.
            return Ok(DbLocation::Postgres(PostgresUrl(s.to_string())));
        }
        if let Some((scheme, _)) = s.split_once("://") {
            return Err(format!(
                "'{scheme}://' is not a database weft knows: give a SQLite file path or a postgres:// URL"
            ));
        }
        if s.is_empty() {
            return Err("an empty path: give a SQLite file path or a postgres:// URL".into());
        }
        Ok(DbLocation::Sqlite(PathBuf::from(s)))
    }
}

impl fmt::Display for DbLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbLocation::Sqlite(path) => write!(f, "{}", path.display()),
            DbLocation::Postgres(url) => write!(f, "{url}"),
        }
    }
}

impl fmt::Debug for DbLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl Serialize for DbLocation {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// `scheme://user:password@host/...` → `scheme://user:***@host/...`, and a
/// `password=` query parameter likewise. Anything that does not parse is
/// left as it is only up to the authority, so a malformed URL cannot leak
/// what follows the user name either.
pub(super) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    // The password ends at the last '@' of the authority (a raw '@' in it
    // would be invalid, but must not reveal the rest either).
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{hosts}"),
            None => format!("{userinfo}@{hosts}"),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => pair.to_string(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_urls_are_told_apart() {
        assert_eq!(
            "weft.db".parse::<DbLocation>().unwrap(),
            DbLocation::Sqlite("weft.db".into())
        );
        assert!("postgres://h/db".parse::<DbLocation>().unwrap().is_postgres());
        assert!("postgresql://h/db".parse::<DbLocation>().unwrap().is_postgres());
        assert!("mysql://h/db".parse::<DbLocation>().unwrap_err().contains("mysql://"));
        assert!("".parse::<DbLocation>().is_err());
    }

    #[test]
    fn passwords_never_print() {
        for (url, want) in [
            ("postgres://u:s3cret@h:5432/db", "postgres://u:***@h:5432/db"),
            ("postgres://u:s3cret@h", "postgres://u:***@h"),
            ("postgres://u@h/db", "postgres://u@h/db"),
            (
                "postgres://h/db?user=u&password=s3cret",
                "postgres://h/db?user=u&password=***",
            ),
            ("postgres://u:p@ss@h/db", "postgres://u:***@h/db"),
            ("postgres:///db?host=/tmp", "postgres:///db?host=/tmp"),
        ] {
            let location: DbLocation = url.parse().unwrap();
            assert_eq!(location.to_string(), want);
            assert_eq!(format!("{location:?}"), want);
            assert_eq!(serde_json::to_value(&location).unwrap(), want);
            assert!(!location.to_string().contains("s3cret"));
        }
    }
}
