use super::*;

const MS: Duration = Duration::from_millis(1);

#[test]
fn a_bucket_allows_its_burst_then_the_rate() {
    let t0 = Instant::now();
    let mut b = TokenBucket::full(10.0, 5.0, t0);
    assert!((0..5).all(|_| b.take(1.0, t0).is_ok()));
    assert_eq!(b.take(1.0, t0), Err(100 * MS), "one token takes 100 ms at 10/s");
    assert!(b.take(2.0, t0 + 250 * MS).is_ok(), "2.5 tokens refilled in 250 ms");
    assert!(b.take(1.0, t0 + 250 * MS).is_err(), "a refused take takes nothing");
    assert!(b.available(t0 + 10_000 * MS) <= 5.0, "never more than the burst");
}

#[test]
fn a_connection_gets_back_the_bucket_it_emptied() {
    let t0 = Instant::now();
    let book = RateBook::new(10.0, 100.0, 1000).with_handshake(HANDSHAKE);
    let key = "10.0.0.1";
    let mut bucket = book.check_out(&key, t0);
    assert!(bucket.take(100.0, t0).is_ok());
    book.check_in(key, bucket, t0);
    // Reconnecting at once: empty but for a handshake from the allowance.
    let mut again = book.check_out(&key, t0);
    assert_eq!(again.available(t0), HANDSHAKE);
    assert!(again.take(HANDSHAKE + 1.0, t0).is_err());
    again.take(HANDSHAKE, t0).unwrap();
    book.check_in(key, again, t0);
    // Reconnecting again: the allowance is spent too.
    let mut third = book.check_out(&key, t0 + 100 * MS);
    assert!(
        (third.available(t0 + 100 * MS) - 2.0).abs() < 1e-9,
        "two tokens: 100 ms of refill each"
    );
    // Another client is not affected.
    assert_eq!(book.check_out(&"10.0.0.2", t0).available(t0), 100.0);
    book.check_in(key, third, t0 + 100 * MS);
    // Once refilled, the client is the same as a new one.
    assert_eq!(
        book.check_out(&key, t0 + 20_000 * MS).available(t0 + 20_000 * MS),
        100.0
    );
}

#[test]
fn simultaneous_connections_have_their_own_buckets() {
    let t0 = Instant::now();
    let book = RateBook::new(1.0, 10.0, 1000).with_handshake(HANDSHAKE);
    let key = "nat";
    let mut flood = book.check_out(&key, t0);
    let mut calm = book.check_out(&key, t0);
    assert!(flood.take(10.0, t0).is_ok());
    assert_eq!(calm.available(t0), 10.0, "the flood does not drain its neighbour");
    assert!(calm.take(3.0, t0).is_ok());
    book.check_in(key, calm, t0);
    book.check_in(key, flood, t0);
    // A reconnect gets the emptiest bucket the client left.
    let mut next = book.check_out(&key, t0);
    assert_eq!(next.available(t0), HANDSHAKE);
}

#[test]
fn refilled_clients_are_forgotten() {
    let t0 = Instant::now();
    let book = RateBook::new(100.0, 100.0, 100_000).with_handshake(HANDSHAKE);
    let visit = |i: u32, now: Instant| {
        let mut b = book.check_out(&i, now);
        b.take(50.0, now).unwrap();
        book.check_in(i, b, now);
    };
    for i in 0..3000 {
        visit(i, t0);
    }
    // A full bucket is never remembered.
    book.check_in(9999, book.check_out(&9999, t0), t0);
    assert_eq!(book.clients(), 3000);
    // Half a second later those have refilled: the next sweep, due when
    // the book has doubled since the last one, forgets them.
    let later = t0 + 500 * MS;
    for i in 3000..5000 {
        visit(i, later);
    }
    assert_eq!(book.clients(), 2000);
}

#[test]
fn a_full_book_forgets_the_nearest_to_full_first() {
    let t0 = Instant::now();
    let book = RateBook::new(1.0, 100.0, 64);
    // Client i took i tokens: the low ones are nearly full.
    for i in 1..=100u32 {
        book.take(&[i], f64::from(i), t0).unwrap();
    }
    let mut inner = book.inner.lock().unwrap();
    assert!(inner.slots <= 64, "{} slots", inner.slots);
    assert!(inner.clients.contains_key(&100), "the emptiest is kept");
    assert!(!inner.clients.contains_key(&1), "the fullest is forgotten");
    assert!(inner.clients.get_mut(&100).unwrap().buckets[0].available(t0) < 1.0);
}

#[test]
fn a_request_takes_from_every_key_or_none() {
    let t0 = Instant::now();
    let book = RateBook::new(1.0 / 60.0, 2.0, 100);
    assert!(book.take(&["ip", "token-a"], 1.0, t0).is_ok());
    assert!(book.take(&["ip", "token-b"], 1.0, t0).is_ok());
    let wait = book.take(&["ip", "token-c"], 1.0, t0).unwrap_err();
    assert!(
        wait > Duration::from_secs(59) && wait <= Duration::from_secs(60),
        "{wait:?}"
    );
    // token-c was not charged for the refusal.
    assert!(book.take(&["token-c"], 2.0, t0).is_ok());
    assert!(book.take(&["other-ip", "token-a"], 1.0, t0).is_ok());
    assert!(
        book.take(&["other-ip", "token-a"], 1.0, t0).is_err(),
        "token-a is spent"
    );
}

#[test]
fn a_limiter_goes_back_to_its_book_when_dropped() {
    let book = Arc::new(RateBook::new(1.0, 50.0, 100).with_handshake(HANDSHAKE));
    let key = ClientKey {
        ip: "127.0.0.1".parse().unwrap(),
        token: None,
    };
    let mut limiter = RateLimiter::from_book(book.clone(), key.clone());
    assert!(limiter.ready().is_ok());
    assert!(limiter.take(50));
    assert!(!limiter.take(1));
    drop(limiter);
    let mut again = RateLimiter::from_book(book.clone(), key.clone());
    assert!(again.ready().is_ok(), "a handshake from the allowance");
    assert!(again.take(HANDSHAKE as usize));
    drop(again);
    let mut third = RateLimiter::from_book(book, key);
    let wait = third.ready().unwrap_err();
    assert!(wait > Duration::from_secs(6), "{wait:?}");
}

/// Bytes already read cannot be refused, only paced: a spend goes into
/// debt and says how long until it is paid; every connection of the client
/// spends from one bucket, so reconnecting or opening more connections
/// gains nothing.
#[test]
fn a_spend_leaves_a_debt_shared_by_the_clients_connections() {
    let t0 = Instant::now();
    let mut b = TokenBucket::full(1000.0, 4000.0, t0);
    assert_eq!(b.spend(3000.0, t0), None, "within the burst: no pause");
    assert_eq!(b.spend(2000.0, t0), Some(1000 * MS), "1000 in debt at 1000/s");
    assert_eq!(b.spend(0.0, t0 + 500 * MS), Some(500 * MS));
    assert_eq!(b.spend(0.0, t0 + 1000 * MS), None, "paid");

    let book = Arc::new(RateBook::new(1000.0, 4000.0, 100));
    let key = |ip: [u8; 4]| ClientKey {
        ip: IpAddr::from(ip),
        token: None,
    };
    let one = SharedBucket::new(book.clone(), key([10, 0, 0, 1]));
    let same = SharedBucket::new(book.clone(), key([10, 0, 0, 1]));
    let other = SharedBucket::new(book, key([10, 0, 0, 2]));
    assert_eq!(one.spend(5000.0, t0), Some(1000 * MS));
    assert_eq!(same.spend(1000.0, t0), Some(2000 * MS), "the same client's debt");
    assert_eq!(other.spend(1000.0, t0), None, "another client's bucket is full");
}
