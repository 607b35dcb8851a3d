//! Connection caps, counted as TCP connections are accepted: in total and
//! per client IP (or per forwarded IP behind a trusted proxy), with a small
//! reserve of places for telling connections over a cap why they are closed.
//! A place is an [`Admission`], given back when it is dropped.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};

use super::ApiError;

/// Accepted connections beyond the caps that are still answered, with their
/// refusal (and `/healthz`), before they are closed: in total, and per IP.
pub const REFUSAL_RESERVE: usize = 64;
const REFUSAL_RESERVE_PER_IP: usize = 4;

/// Counts of open connections, in total and per client IP.
#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Which cap a connection did not fit under.
enum Full {
    Total,
    Ip,
}

impl Counts {
    /// Takes a place under the caps (0 = no cap).
    fn take(&mut self, ip: IpAddr, max_total: usize, max_per_ip: usize) -> Result<(), Full> {
        if max_total > 0 && self.total >= max_total {
            return Err(Full::Total);
        }
        let mine = self.per_ip.entry(ip).or_insert(0);
        if max_per_ip > 0 && *mine >= max_per_ip {
            return Err(Full::Ip);
        }
        *mine += 1;
        self.total += 1;
        Ok(())
    }

    fn give_back(&mut self, ip: IpAddr) {
        self.total -= 1;
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }
}

/// The three sets of places a connection can hold.
#[derive(Debug, Clone, Copy)]
enum Pool {
    /// Accepted TCP connections, HTTP or WebSocket.
    Accepted,
    /// Connections over a cap, being told so.
    Refusals,
    /// Behind a trusted proxy: WebSockets per forwarded client IP.
    Forwarded,
}

/// Connection caps, counted when a TCP connection is accepted: in total and
/// per client IP. Behind a trusted proxy every connection comes from the
/// proxy, so the per-IP cap counts WebSockets per `X-Forwarded-For` address
/// at the upgrade instead.
#[derive(Debug)]
pub struct Limits {
    max_total: usize,
    max_per_ip: usize,
    trust_forwarded_for: bool,
    pools: [Mutex<Counts>; 3],
}

/// Holds one connection's place; gives it back when dropped.
#[derive(Debug)]
pub struct Admission {
    limits: Arc<Limits>,
    pool: Pool,
    ip: IpAddr,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.limits.pools[self.pool as usize].lock().unwrap().give_back(self.ip);
    }
}

/// What to do with a connection just accepted.
#[derive(Debug)]
pub enum Accepted {
    /// Serve it.
    Serve(Admission),
    /// Answer `/healthz`, and every other request with this refusal.
    Refuse(Admission, ApiError),
    /// Close it at once: even the refusals are at their cap.
    Close,
}

impl Limits {
    /// `max_total` 0: no cap (the server lowers it to fit the open-file limit).
    pub fn new(max_total: usize, max_per_ip: usize, trust_forwarded_for: bool) -> Self {
        Self {
            max_total,
            max_per_ip,
            trust_forwarded_for,
            pools: Default::default(),
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

    fn take(self: &Arc<Self>, pool: Pool, ip: IpAddr, max_total: usize, max_per_ip: usize) -> Result<Admission, Full> {
        self.pools[pool as usize]
            .lock()
            .unwrap()
            .take(ip, max_total, max_per_ip)?;
        Ok(Admission {
            limits: self.clone(),
            pool,
            ip,
        })
    }

    fn refusal(&self, full: Full, ip: IpAddr) -> ApiError {
        match full {
            Full::Total => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("server is at its limit of {} connections", self.max_total),
            ),
            Full::Ip => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("too many connections from {ip} (limit {})", self.max_per_ip),
            ),
        }
    }

    /// Counts a TCP connection from `peer` as it is accepted.
    pub fn accept(self: &Arc<Self>, peer: IpAddr) -> Accepted {
        let per_ip = if self.trust_forwarded_for { 0 } else { self.max_per_ip };
        match self.take(Pool::Accepted, peer, self.max_total, per_ip) {
            Ok(admission) => Accepted::Serve(admission),
            Err(full) => match self.take(Pool::Refusals, peer, REFUSAL_RESERVE, REFUSAL_RESERVE_PER_IP) {
                Ok(admission) => Accepted::Refuse(admission, self.refusal(full, peer)),
                Err(_) => Accepted::Close,
            },
        }
    }

    /// Behind a trusted proxy, takes a place for a WebSocket from the
    /// forwarded client `ip`; without one, connections were counted when
    /// accepted and this holds nothing.
    pub fn admit_forwarded(self: &Arc<Self>, ip: IpAddr) -> Result<Option<Admission>, ApiError> {
        if !self.trust_forwarded_for {
            return Ok(None);
        }
        self.take(Pool::Forwarded, ip, 0, self.max_per_ip)
            .map(Some)
            .map_err(|full| self.refusal(full, ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(accepted: Accepted) -> Admission {
        match accepted {
            Accepted::Serve(a) => a,
            other => panic!("not served: {other:?}"),
        }
    }

    fn refused(accepted: &Accepted) -> StatusCode {
        match accepted {
            Accepted::Refuse(_, e) => e.status,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn limits_count_per_ip_and_give_back() {
        let limits = Arc::new(Limits::new(3, 2, false));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = served(limits.accept(a));
        let _a2 = served(limits.accept(a));
        assert_eq!(refused(&limits.accept(a)), StatusCode::TOO_MANY_REQUESTS);
        let _b1 = served(limits.accept(b));
        assert_eq!(refused(&limits.accept(b)), StatusCode::SERVICE_UNAVAILABLE);
        drop(a1);
        served(limits.accept(b));
    }

    /// Connections over a cap are answered (with their refusal, or
    /// `/healthz`) only up to a reserve, a few per IP; beyond it they close.
    #[test]
    fn refusals_have_a_reserve_of_their_own() {
        let limits = Arc::new(Limits::new(1, 0, false));
        let _only = served(limits.accept("10.0.0.1".parse().unwrap()));
        let one: IpAddr = "10.0.0.2".parse().unwrap();
        let mut held: Vec<Accepted> = (0..REFUSAL_RESERVE_PER_IP).map(|_| limits.accept(one)).collect();
        assert!(held.iter().all(|a| refused(a) == StatusCode::SERVICE_UNAVAILABLE));
        assert!(matches!(limits.accept(one), Accepted::Close));
        held.pop();
        assert_eq!(refused(&limits.accept(one)), StatusCode::SERVICE_UNAVAILABLE);
        let many: Vec<Accepted> = (0..REFUSAL_RESERVE)
            .map(|i| limits.accept(IpAddr::from([10, 1, (i / 256) as u8, i as u8])))
            .collect();
        assert!(
            many.iter().any(|a| matches!(a, Accepted::Close)),
            "the reserve is bounded"
        );
    }

    /// Behind a trusted proxy every connection comes from the proxy: only the
    /// total is counted at accept, and WebSockets per forwarded IP.
    #[test]
    fn behind_a_proxy_the_per_ip_cap_counts_forwarded_ips() {
        let limits = Arc::new(Limits::new(10, 1, true));
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        let _c: Vec<Admission> = (0..3).map(|_| served(limits.accept(proxy))).collect();
        let client: IpAddr = "1.2.3.4".parse().unwrap();
        let held = limits.admit_forwarded(client).unwrap();
        assert!(held.is_some());
        assert_eq!(
            limits.admit_forwarded(client).unwrap_err().status,
            StatusCode::TOO_MANY_REQUESTS
        );
        drop(held);
        assert!(limits.admit_forwarded(client).unwrap().is_some());
        let direct = Arc::new(Limits::new(10, 1, false));
        assert!(direct.admit_forwarded(client).unwrap().is_none());
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
