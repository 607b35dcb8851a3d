//! Where a webhook may post: the URL's rules, and the addresses weft
//! refuses unless `--webhook-allow-private`, so that a leaked admin key
//! cannot make weft a scanner of the network it sits in. The address rule
//! is checked when a subscription is made and again, after resolving the
//! name, at every connection, which is made to the very address checked
//! (a name that resolves to a public address at subscription time and to
//! a private one later, DNS rebinding, is refused then).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use http::uri::{Scheme, Uri};

/// Longest webhook URL accepted.
pub const MAX_URL_LEN: usize = 2048;

/// What the refusal names as the way out.
pub const ALLOW_PRIVATE_HINT: &str = "pass --webhook-allow-private (WEFT_WEBHOOK_ALLOW_PRIVATE=true) to allow it";

/// A validated webhook URL: `http` or `https`, a host, no credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookUrl {
    uri: Uri,
    https: bool,
    host: String,
    port: u16,
}

impl fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.uri)
    }
}

impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebhookUrl({})", self.uri)
    }
}

impl WebhookUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.len() > MAX_URL_LEN {
            return Err(format!("the URL is longer than {MAX_URL_LEN} bytes"));
        }
        if !text.contains("://") {
            return Err(format!("'{text}' has no scheme: write it as https://host/path"));
        }
        let uri: Uri = text
            .parse()
            .map_err(|e| format!("'{text}' is not a URL ({e}); write it as https://host/path"))?;
        let https = match uri.scheme() {
            Some(s) if *s == Scheme::HTTPS => true,
            Some(s) if *s == Scheme::HTTP => false,
            Some(s) => {
                return Err(format!(
                    "scheme '{s}' is not allowed: a webhook URL is http:// or https://"
                ))
            }
            None => return Err(format!("'{text}' has no scheme: write it as https://host/path")),
        };
        let authority = uri.authority().ok_or_else(|| format!("'{text}' has no host"))?;
        if authority.as_str().contains('@') {
            return Err("a webhook URL may not carry credentials (user@host): weft signs what it sends instead".into());
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if host.is_empty() {
            return Err(format!("'{text}' has no host"));
        }
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        Ok(Self { uri, https, host, port })
    }

    pub fn as_uri(&self) -> &Uri {
        &self.uri
    }

    pub fn is_https(&self) -> bool {
        self.https
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host:port` for the `Host` header.
    pub fn authority(&self) -> &str {
        self.uri.authority().map_or("", |a| a.as_str())
    }

    /// `/path?query`.
    pub fn path_and_query(&self) -> &str {
        self.uri.path_and_query().map_or("/", |p| p.as_str())
    }

    /// Resolves the host (an address literal as itself) and checks every
    /// address it gives: one forbidden address refuses them all, as a name
    /// that gives a private address among public ones is no safer.
    pub async fn resolve(&self, allow_private: bool) -> Result<Vec<SocketAddr>, String> {
        let addrs: Vec<SocketAddr> = match self.host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, self.port)],
            Err(_) => tokio::net::lookup_host((self.host.as_str(), self.port))
                .await
                .map_err(|e| format!("cannot resolve '{}': {e}", self.host))?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(format!("'{}' resolves to no address", self.host));
        }
        if !allow_private {
            for addr in &addrs {
                if let Some(kind) = forbidden(addr.ip()) {
                    return Err(format!(
                        "'{}' is {} ({kind}): weft does not post to such addresses unless told to; {ALLOW_PRIVATE_HINT}",
                        self.host,
                        addr.ip()
                    ));
                }
            }
        }
        Ok(addrs)
    }
}

/// Why weft refuses to post to `ip` without `--webhook-allow-private`.
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => {
            // An IPv4 address written as IPv6 (::ffff:a.b.c.d) goes where
            // the IPv4 address goes.
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden_v4(v4);
            }
            forbidden_v6(v6)
        }
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    Some(match () {
        _ if ip.is_loopback() => "loopback",
        _ if ip.is_private() => "private, RFC 1918",
        _ if ip.is_link_local() => "link-local",
        _ if a == 100 && (64..128).contains(&b) => "carrier-grade NAT, RFC 6598",
        _ if a == 0 => "unspecified",
        _ if ip.is_multicast() => "multicast",
        _ if ip.is_broadcast() || a >= 240 => "reserved",
        _ => return None,
    })
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    Some(match () {
        _ if ip.is_loopback() => "loopback",
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_multicast() => "multicast",
        _ if first & 0xfe00 == 0xfc00 => "unique-local",
        _ if first & 0xffc0 == 0xfe80 => "link-local",
        // Deprecated site-local: private in practice where it still is.
        _ if first & 0xffc0 == 0xfec0 => "site-local",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_http_or_https_with_a_host_and_no_credentials() {
        let url = WebhookUrl::parse("https://hooks.example.com/weft?x=1").unwrap();
        assert!(url.is_https());
        assert_eq!((url.host(), url.port()), ("hooks.example.com", 443));
        assert_eq!(url.path_and_query(), "/weft?x=1");
        let url = WebhookUrl::parse("http://[::1]:8080/").unwrap();
        assert_eq!((url.host(), url.port()), ("::1", 8080));
        assert!(WebhookUrl::parse("ftp://example.com/")
            .unwrap_err()
            .contains("http:// or https://"));
        assert!(WebhookUrl::parse("file:///etc/passwd").is_err());
        assert!(WebhookUrl::parse("example.com/hook").unwrap_err().contains("scheme"));
        assert!(WebhookUrl::parse("https://user:pw@example.com/")
            .unwrap_err()
            .contains("credentials"));
        assert!(WebhookUrl::parse("not a url").is_err());
        assert!(WebhookUrl::parse(&format!("https://e.com/{}", "a".repeat(MAX_URL_LEN))).is_err());
    }

    #[test]
    fn private_and_special_addresses_are_refused() {
        for (ip, kind) in [
            ("127.0.0.1", "loopback"),
            ("10.1.2.3", "private, RFC 1918"),
            ("172.16.0.1", "private, RFC 1918"),
            ("192.168.1.1", "private, RFC 1918"),
            ("169.254.169.254", "link-local"),
            ("100.64.0.1", "carrier-grade NAT, RFC 6598"),
            ("0.0.0.0", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "reserved"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fd00::1", "unique-local"),
            ("fe80::1", "link-local"),
            ("ff02::1", "multicast"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private, RFC 1918"),
        ] {
            assert_eq!(forbidden(ip.parse().unwrap()), Some(kind), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "100.128.0.1",
            "172.32.0.1",
            "2606:4700::1111",
            "8.8.8.8",
        ] {
            assert_eq!(forbidden(ip.parse().unwrap()), None, "{ip}");
        }
    }

    #[tokio::test]
    async fn resolving_refuses_a_forbidden_address_and_names_the_flag() {
        let url = WebhookUrl::parse("http://127.0.0.1:9/hook").unwrap();
        let err = url.resolve(false).await.unwrap_err();
        assert!(
            err.contains("loopback") && err.contains("--webhook-allow-private"),
            "{err}"
        );
        assert_eq!(url.resolve(true).await.unwrap(), vec!["127.0.0.1:9".parse().unwrap()]);
    }
}
