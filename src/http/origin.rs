//! Origins and hosts as browsers send them, parsed once and compared whole:
//! scheme, host and port (RFC 6454). Pure, no I/O.
//!
//! Comparing pieces of strings is how `evil://127.0.0.1:PORT` once passed as
//! weft's own origin, and how `--allowed-origin https://x/` (trailing slash)
//! passed the check but never got a CORS header.

use std::fmt;
use std::net::IpAddr;

use axum::http::uri::{Authority, Uri};

/// Why a configured origin or host was refused at start-up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    #[error("'{0}' is not an origin like https://app.example.com (scheme://host[:port], no path, query or user)")]
    Origin(String),
    #[error("'{0}' is not a host like weft.example.com, 192.168.1.5 or weft.lan:1234 (no scheme, no path)")]
    Host(String),
}

/// A web origin, normalised: lower case, no default port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// `localhost.` and `LOCALHOST` name the same host as `localhost`.
fn normalise_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

impl Origin {
    pub fn new(scheme: &str, host: &str, port: Option<u16>) -> Self {
        let scheme = scheme.to_ascii_lowercase();
        let port = port.filter(|&p| Some(p) != default_port(&scheme));
        Self {
            scheme,
            host: normalise_host(host),
            port,
        }
    }

    /// An `Origin` header or an `--allowed-origin` value. A trailing slash is
    /// tolerated (people copy URLs); a path, query or user is not.
    pub fn parse(s: &str) -> Result<Self, OriginError> {
        let err = || OriginError::Origin(s.to_string());
        let uri: Uri = s.trim().parse().map_err(|_| err())?;
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return Err(err());
        };
        let path_ok = uri
            .path_and_query()
            .map_or(true, |pq| pq.query().is_none() && matches!(pq.path(), "" | "/"));
        let origin = Self::new(scheme, authority.host(), authority.port_u16());
        if !path_ok || authority.as_str().contains('@') || origin.host.is_empty() {
            return Err(err());
        }
        Ok(origin)
    }

    /// Whether this is a page served over HTTP(S) from a loopback host: the
    /// user's own machine, which could reach weft directly anyway.
    pub fn is_loopback(&self) -> bool {
        matches!(self.scheme.as_str(), "http" | "https") && is_loopback_host(&self.host)
    }

    /// Whether a page of this origin is one weft itself served, reached under
    /// `host` (a `Host` header): `http` or `https` (behind a TLS proxy), the
    /// same host, the same port.
    fn is_same_origin(&self, host: &HostName) -> bool {
        matches!(self.scheme.as_str(), "http" | "https")
            && self.host == host.host
            && self.port == host.port.filter(|&p| Some(p) != default_port(&self.scheme))
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

/// A `Host` header, or an `--allowed-host` value: a name or address, and
/// maybe a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostName {
    host: String,
    port: Option<u16>,
}

impl HostName {
    pub fn parse(s: &str) -> Result<Self, OriginError> {
        let err = || OriginError::Host(s.to_string());
        let authority: Authority = s.trim().parse().map_err(|_| err())?;
        let host = normalise_host(authority.host());
        if authority.as_str().contains('@') || host.is_empty() {
            return Err(err());
        }
        Ok(Self {
            host,
            port: authority.port_u16(),
        })
    }

    pub fn is_loopback(&self) -> bool {
        is_loopback_host(&self.host)
    }

    /// Whether a request for `host` is one this entry allows: the same name,
    /// and the same port when the entry names one.
    pub fn allows(&self, host: &HostName) -> bool {
        self.host == host.host && self.port.map_or(true, |p| Some(p) == host.port)
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

/// `localhost` (and names under it, which browsers resolve to loopback
/// themselves, RFC 6761), `127.x.y.z`, `[::1]`. A DNS name that merely
/// resolves to 127.0.0.1 is not one: that is what DNS rebinding uses.
fn is_loopback_host(host: &str) -> bool {
    let host = normalise_host(host);
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(&host);
    bare.parse::<IpAddr>().is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// What an `Origin` header says about a request, against the configured
/// `--allowed-origin` list and the request's `Host`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provenance {
    /// No `Origin`: not a browser page (curl, a backend, a native client).
    NoOrigin,
    /// A page weft served itself.
    SameOrigin,
    /// An origin listed with `--allowed-origin`.
    Listed,
    /// Another page on this machine (`http://localhost:3000`).
    Loopback,
    /// Any other web page, or an `Origin` that does not parse (`null`).
    Foreign,
}

impl Provenance {
    pub fn of(origin: Option<&str>, host: Option<&str>, allowed: &[Origin]) -> Self {
        let Some(origin) = origin else {
            return Provenance::NoOrigin;
        };
        let Ok(origin) = Origin::parse(origin) else {
            return Provenance::Foreign;
        };
        if allowed.contains(&origin) {
            Provenance::Listed
        } else if host
            .and_then(|h| HostName::parse(h).ok())
            .is_some_and(|h| origin.is_same_origin(&h))
        {
            Provenance::SameOrigin
        } else if origin.is_loopback() {
            Provenance::Loopback
        } else {
            Provenance::Foreign
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn origin(s: &str) -> Origin {
        Origin::parse(s).unwrap()
    }

    #[test]
    fn origins_are_normalised() {
        assert_eq!(origin("https://App.Example.com/"), origin("https://app.example.com"));
        assert_eq!(origin("https://app.example.com:443"), origin("https://app.example.com"));
        assert_eq!(origin("http://x:80").to_string(), "http://x");
        assert_eq!(origin("http://x:8080").to_string(), "http://x:8080");
        assert_eq!(origin("http://[::1]:3000").to_string(), "http://[::1]:3000");
        assert_ne!(origin("http://x"), origin("https://x"));
        assert_ne!(origin("http://x:1"), origin("http://x:2"));
        for bad in [
            "",
            "null",
            "app.example.com",
            "https://x/path",
            "https://x/?q=1",
            "https://user@x",
            "https://",
            "*",
            "https://.",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn loopback_hosts_are_names_or_addresses_not_lookups() {
        for host in [
            "localhost",
            "LOCALHOST.",
            "app.localhost",
            "127.0.0.1",
            "127.8.9.10",
            "[::1]",
            "[::ffff:127.0.0.1]",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "evil.example",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "10.0.0.1",
            "[::2]",
            "",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
        assert!(HostName::parse("127.0.0.1:1234").unwrap().is_loopback());
        assert!(HostName::parse("[::1]:1234").unwrap().is_loopback());
        assert!(!HostName::parse("evil.example:1234").unwrap().is_loopback());
    }

    #[test]
    fn allowed_hosts_match_name_and_port_when_given() {
        let any_port = HostName::parse("weft.lan").unwrap();
        let one_port = HostName::parse("Weft.Lan:1234").unwrap();
        let req = |s: &str| HostName::parse(s).unwrap();
        assert!(any_port.allows(&req("weft.lan:1234")));
        assert!(any_port.allows(&req("weft.lan")));
        assert!(one_port.allows(&req("weft.lan:1234")));
        assert!(!one_port.allows(&req("weft.lan:99")));
        assert!(!any_port.allows(&req("evil.lan:1234")));
        assert!(HostName::parse("http://weft.lan").is_err());
        assert!(HostName::parse("weft.lan/x").is_err());
        assert!(HostName::parse("").is_err());
    }

    /// A DNS-rebinding page is same-origin with the `Host` it sends (that is
    /// the point of rebinding: only the `Host` check stops it); a scheme that
    /// is not HTTP never is.
    #[test]
    fn provenance_compares_scheme_host_and_port() {
        let allowed = vec![origin("https://app.example")];
        let p = |o: Option<&str>, host: &str| Provenance::of(o, Some(host), &allowed);
        assert_eq!(p(None, "127.0.0.1:1234"), Provenance::NoOrigin);
        assert_eq!(p(Some("https://app.example"), "127.0.0.1:1234"), Provenance::Listed);
        assert_eq!(p(Some("https://app.example/"), "127.0.0.1:1234"), Provenance::Listed);
        assert_eq!(p(Some("http://app.example"), "127.0.0.1:1234"), Provenance::Foreign);
        assert_eq!(
            p(Some("http://127.0.0.1:1234"), "127.0.0.1:1234"),
            Provenance::SameOrigin
        );
        assert_eq!(p(Some("https://weft.example"), "weft.example"), Provenance::SameOrigin);
        assert_eq!(
            p(Some("http://weft.example:80"), "weft.example"),
            Provenance::SameOrigin
        );
        assert_eq!(p(Some("evil://127.0.0.1:1234"), "127.0.0.1:1234"), Provenance::Foreign);
        assert_eq!(p(Some("http://127.0.0.1:9999"), "127.0.0.1:1234"), Provenance::Loopback);
        assert_eq!(p(Some("http://localhost:3000"), "127.0.0.1:1234"), Provenance::Loopback);
        assert_eq!(
            p(Some("http://evil.example:1234"), "127.0.0.1:1234"),
            Provenance::Foreign
        );
        assert_eq!(
            p(Some("http://evil.example:1234"), "evil.example:1234"),
            Provenance::SameOrigin
        );
        assert_eq!(p(Some("null"), "127.0.0.1:1234"), Provenance::Foreign);
    }

    proptest! {
        /// Parsing never panics, and what parses prints as something that
        /// parses back to itself (the form CORS headers are compared in).
        #[test]
        fn origin_parsing_round_trips(s in "\\PC{0,40}", scheme in "[a-zA-Z][a-zA-Z0-9+.-]{0,8}",
                                      host in "[a-zA-Z0-9.-]{1,20}", port in proptest::option::of(any::<u16>())) {
            let _ = Origin::parse(&s);
            let _ = HostName::parse(&s);
            let _ = Provenance::of(Some(&s), Some(&s), &[]);
            let text = match port {
                Some(p) => format!("{scheme}://{host}:{p}"),
                None => format!("{scheme}://{host}"),
            };
            if let Ok(o) = Origin::parse(&text) {
                prop_assert_eq!(Origin::parse(&o.to_string()), Ok(o));
            }
        }
    }
}
