//! Rate limits: one token bucket, and the book that keeps buckets per client.
//!
//! Every rate limit in weft is a [`TokenBucket`]: messages on a WebSocket,
//! API requests, new documents. A [`RateBook`] keeps the buckets of recent
//! clients so that their state outlives a connection or a request: a client
//! that is closed for flooding and reconnects gets back the bucket it
//! emptied, not a fresh burst.
//!
//! A connection *checks out* its bucket for its lifetime ([`RateLimiter`])
//! and the book takes it back when the connection ends. Buckets are not
//! shared between a client's simultaneous connections: two tabs behind one
//! address (or every local test in open mode) must not slow each other down.
//! A request takes from the book directly ([`RateBook::take`]).
//!
//! The book is bounded: a bucket that has refilled is forgotten (a fresh one
//! is the same), and past `capacity` buckets the ones nearest to full are
//! forgotten first. Time is an argument everywhere, so the rules are tested
//! with a made-up clock.
//!
//! A leaf module: the HTTP edge fills the book, the session holds a bucket.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a y-websocket client sends when it connects (step1, step2,
/// awareness, query-awareness), with room to spare. A connection handed a
/// bucket with less is refused at the upgrade: it could not even say hello.
pub const HANDSHAKE: f64 = 8.0;

/// `burst` tokens, refilled at `rate` per second.
#[derive(Debug, Clone)]
struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn full(rate: f64, burst: f64, now: Instant) -> Self {
        Self {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = self.last.max(now);
    }

    /// Tokens in the bucket at `now`.
    fn available(&mut self, now: Instant) -> f64 {
        self.refill(now);
        self.tokens
    }

    /// Takes `n` tokens; when there are fewer, takes none and says how long
    /// until there are `n`.
    pub fn take(&mut self, n: f64, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= n {
            self.tokens -= n;
            Ok(())
        } else {
            Err(self.wait_for(n))
        }
    }

    /// Takes `n` tokens even when there are fewer, leaving the bucket in
    /// debt; then says how long until the debt is paid. For what has
    /// already happened (bytes read) and can only be paced, not refused.
    fn spend(&mut self, n: f64, now: Instant) -> Option<Duration> {
        self.refill(now);
        self.tokens -= n;
        (self.tokens < 0.0).then(|| self.wait_for(0.0))
    }

    /// How long until the bucket holds `n` tokens (as of its last refill).
    fn wait_for(&self, n: f64) -> Duration {
        Duration::try_from_secs_f64((n - self.tokens).max(0.0) / self.rate).unwrap_or(Duration::MAX)
    }

    /// Whether the bucket is full at `now`: then a fresh one is the same.
    fn is_full(&mut self, now: Instant) -> bool {
        self.available(now) >= self.burst
    }

    /// When it will be full; `None`: never (it does not refill).
    fn full_at(&self) -> Option<Instant> {
        self.last.checked_add(self.wait_for(self.burst))
    }
}

/// Who a rate limit counts: the client's IP and, in token mode, its token's
/// id. One user's token from one address is one client.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientKey {
    pub ip: IpAddr,
    pub token: Option<String>,
}

/// What the book holds of one client.
#[derive(Debug)]
struct Entry {
    /// Buckets no connection holds right now, not yet refilled.
    buckets: Vec<TokenBucket>,
    /// Tops a checked-out bucket up to a handshake. It refills at the
    /// bucket's rate, so reconnecting over and over gains no more than the
    /// rate itself.
    allowance: TokenBucket,
}

impl Entry {
    /// Everything in it is full: the client can be forgotten.
    fn is_spent(&mut self, now: Instant) -> bool {
        self.allowance.is_full(now) && self.buckets.iter_mut().all(|b| b.is_full(now))
    }

    /// When forgetting it will change nothing.
    fn full_at(&self) -> Option<Instant> {
        let mut at = self.allowance.full_at();
        for bucket in &self.buckets {
            at = at.zip(bucket.full_at()).map(|(a, b)| a.max(b));
        }
        at
    }

    /// Slots it takes in the book: the client plus each of its buckets.
    fn slots(&self) -> usize {
        1 + self.buckets.len()
    }
}

/// Token buckets of recent clients, kept between connections and requests.
#[derive(Debug)]
pub struct RateBook<K> {
    rate: f64,
    burst: f64,
    /// Tokens a checked-out bucket is topped up to (at most `burst`).
    handshake: f64,
    /// Most slots (clients plus their buckets) held.
    capacity: usize,
    inner: Mutex<Inner<K>>,
}

#[derive(Debug)]
struct Inner<K> {
    clients: HashMap<K, Entry>,
    /// Slots held: clients plus their buckets.
    slots: usize,
    /// The next sweep of refilled clients runs when `slots` reaches this:
    /// twice what was left after the last one, so sweeping is amortised O(1).
    sweep_at: usize,
}

/// Sweeps never wait for fewer slots than this.
const MIN_SWEEP: usize = 1024;

impl<K: Hash + Eq + Clone> RateBook<K> {
    /// `rate` tokens per second, `burst` at once; at most `capacity` clients
    /// and buckets remembered.
    pub fn new(rate: f64, burst: f64, capacity: usize) -> Self {
        Self {
            rate,
            burst: burst.max(1.0),
            handshake: 0.0,
            capacity: capacity.max(1),
            inner: Mutex::new(Inner {
                clients: HashMap::new(),
                slots: 0,
                sweep_at: MIN_SWEEP,
            }),
        }
    }

    /// Checked-out buckets are topped up to `handshake` tokens from the
    /// client's allowance.
    pub fn with_handshake(mut self, handshake: f64) -> Self {
        self.handshake = handshake.min(self.burst);
        self
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    pub fn burst(&self) -> f64 {
        self.burst
    }

    fn fresh(&self, now: Instant) -> TokenBucket {
        TokenBucket::full(self.rate, self.burst, now)
    }

    /// The bucket for a new connection of `key`: the emptiest one its earlier
    /// connections left (topped up to a handshake from its allowance), or a
    /// full one.
    fn check_out(&self, key: &K, now: Instant) -> TokenBucket {
        let mut inner = self.inner.lock().unwrap();
        let Some(entry) = inner.clients.get_mut(key) else {
            return self.fresh(now);
        };
        let emptiest = entry
            .buckets
            .iter_mut()
            .enumerate()
            .map(|(i, b)| (i, b.available(now)))
            .min_by(|a, b| a.1.total_cmp(&b.1));
        let Some((i, tokens)) = emptiest else {
            return self.fresh(now);
        };
        let mut bucket = entry.buckets.swap_remove(i);
        let short = self.handshake - tokens;
        if short > 0.0 {
            let allowance = entry.allowance.available(now);
            let lent = allowance.min(short);
            entry.allowance.tokens = allowance - lent;
            bucket.tokens = if lent == short { self.handshake } else { tokens + lent };
        }
        inner.slots -= 1;
        bucket
    }

    /// Takes back a bucket a connection of `key` held.
    fn check_in(&self, key: K, mut bucket: TokenBucket, now: Instant) {
        let full = bucket.is_full(now);
        let mut inner = self.inner.lock().unwrap();
        if full && !inner.clients.contains_key(&key) {
            return; // nothing to remember
        }
        self.make_room(&mut inner, 2, now);
        let inner = &mut *inner;
        let entry = inner.clients.entry(key).or_insert_with(|| {
            inner.slots += 1;
            Entry {
                buckets: Vec::new(),
                allowance: TokenBucket::full(self.rate, self.handshake, now),
            }
        });
        if !full {
            entry.buckets.push(bucket);
            inner.slots += 1;
        }
    }

    /// Takes `n` tokens from the shared bucket of each of `keys`, or from
    /// none of them: then says how long until all have `n`. For requests,
    /// which hold no bucket of their own.
    pub fn take(&self, keys: &[K], n: f64, now: Instant) -> Result<(), Duration> {
        let mut inner = self.inner.lock().unwrap();
        let mut short = 0.0f64;
        for key in keys {
            let available = inner
                .clients
                .get_mut(key)
                .and_then(|e| e.buckets.first_mut())
                .map_or(self.burst, |b| b.available(now));
            short = short.max(n - available);
        }
        if short > 0.0 {
            return Err(Duration::try_from_secs_f64(short / self.rate).unwrap_or(Duration::MAX));
        }
        self.make_room(&mut inner, 2 * keys.len(), now);
        let inner = &mut *inner;
        for key in keys {
            let entry = inner.clients.entry(key.clone()).or_insert_with(|| {
                inner.slots += 1;
                Entry {
                    buckets: Vec::new(),
                    allowance: TokenBucket::full(self.rate, 0.0, now),
                }
            });
            if entry.buckets.is_empty() {
                entry.buckets.push(self.fresh(now));
                inner.slots += 1;
            }
            let _ = entry.buckets[0].take(n, now);
        }
        Ok(())
    }

    /// Takes `n` tokens from the shared bucket of `key` even when there are
    /// fewer; when that leaves it in debt, says how long until the debt is
    /// paid. For what has happened already (bytes read), which can only be
    /// paced.
    pub fn spend(&self, key: &K, n: f64, now: Instant) -> Option<Duration> {
        let mut inner = self.inner.lock().unwrap();
        if !inner.clients.contains_key(key) {
            self.make_room(&mut inner, 2, now);
        }
        let inner = &mut *inner;
        let entry = inner.clients.entry(key.clone()).or_insert_with(|| {
            inner.slots += 1;
            Entry {
                buckets: Vec::new(),
                allowance: TokenBucket::full(self.rate, 0.0, now),
            }
        });
        if entry.buckets.is_empty() {
            entry.buckets.push(self.fresh(now));
            inner.slots += 1;
        }
        entry.buckets[0].spend(n, now)
    }

    /// Clients remembered right now.
    pub fn clients(&self) -> usize {
        self.inner.lock().unwrap().clients.len()
    }

    /// Forgets refilled clients from time to time, and the nearest to full
    /// when the book is at capacity, so that `needed` more slots fit.
    fn make_room(&self, inner: &mut Inner<K>, needed: usize, now: Instant) {
        if inner.slots + needed <= self.capacity && inner.slots < inner.sweep_at {
            return;
        }
        inner.clients.retain(|_, entry| !entry.is_spent(now));
        inner.slots = inner.clients.values().map(Entry::slots).sum();
        if inner.slots + needed > self.capacity {
            // Still full: forget an eighth of the book at once (so this
            // O(n log n) pass is rare), those that will be full soonest,
            // which loses the least.
            let target = (self.capacity - self.capacity / 8).saturating_sub(needed);
            let mut by_full: Vec<(Option<Instant>, K)> =
                inner.clients.iter().map(|(k, e)| (e.full_at(), k.clone())).collect();
            // Never full (`None`) goes last.
            by_full.sort_by_key(|(at, _)| (at.is_none(), *at));
            for (_, key) in by_full {
                if inner.slots <= target {
                    break;
                }
                if let Some(entry) = inner.clients.remove(&key) {
                    inner.slots -= entry.slots();
                }
            }
        }
        inner.sweep_at = (inner.slots * 2).max(MIN_SWEEP);
    }
}

/// One client's bucket in a book, taken from by every connection of the
/// client (unlike a [`RateLimiter`]): for what a client may make the server
/// do however many connections it opens.
#[derive(Debug, Clone)]
pub struct SharedBucket {
    book: Arc<RateBook<ClientKey>>,
    key: ClientKey,
}

impl SharedBucket {
    pub fn new(book: Arc<RateBook<ClientKey>>, key: ClientKey) -> Self {
        Self { book, key }
    }

    /// Takes `n` tokens at `now`, or none and says how long until there
    /// are `n`.
    pub fn take(&self, n: f64, now: Instant) -> Result<(), Duration> {
        self.book.take(std::slice::from_ref(&self.key), n, now)
    }

    /// Takes `n` tokens at `now` even when there are fewer; when that
    /// leaves the bucket in debt, how long until it is paid.
    pub fn spend(&self, n: f64, now: Instant) -> Option<Duration> {
        self.book.spend(&self.key, n, now)
    }
}

/// The bucket a connection holds for its lifetime. Checked out of a book, it
/// goes back to it when the connection ends (when this is dropped).
#[derive(Debug)]
pub struct RateLimiter {
    bucket: TokenBucket,
    home: Option<(Arc<RateBook<ClientKey>>, ClientKey)>,
}

impl RateLimiter {
    /// The bucket `book` holds for `key`.
    pub fn from_book(book: Arc<RateBook<ClientKey>>, key: ClientKey) -> Self {
        let bucket = book.check_out(&key, Instant::now());
        Self {
            bucket,
            home: Some((book, key)),
        }
    }

    /// Takes `n` tokens; `false` when there are fewer (and then takes none).
    pub fn take(&mut self, n: usize) -> bool {
        self.bucket.take(n as f64, Instant::now()).is_ok()
    }

    /// `Ok` when the bucket holds a handshake's worth of tokens, otherwise
    /// how long until it does.
    pub fn ready(&mut self) -> Result<(), Duration> {
        let need = HANDSHAKE.min(self.bucket.burst);
        if self.bucket.available(Instant::now()) >= need {
            Ok(())
        } else {
            Err(self.bucket.wait_for(need))
        }
    }
}

impl Drop for RateLimiter {
    fn drop(&mut self) {
        if let Some((book, key)) = self.home.take() {
            book.check_in(key, self.bucket.clone(), Instant::now());
        }
    }
}

#[cfg(test)]
mod tests;
