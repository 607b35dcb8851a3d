//! The retry rule, pure: what an attempt's outcome means, and how long to
//! wait before the next one (exponential backoff with full jitter, AWS
//! Architecture Blog, "Exponential Backoff and Jitter").

use std::time::{Duration, SystemTime};

use super::client::Outcome;

/// The first retry waits up to this long; each next one up to twice more.
pub const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// No wait is longer than this.
pub const BACKOFF_CAP: Duration = Duration::from_secs(60);
/// A receiver's `Retry-After` is honoured up to this: longer, and weft
/// tries again after this anyway (each attempt holds back the
/// subscription's later events, and the attempts are counted).
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(300);

/// What to do after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Worth another attempt: 5xx, 408, 429, no answer.
    Retry(String),
    /// Never worth another: any other 4xx, a redirect (not followed), an
    /// address weft refuses.
    Final(String),
}

pub fn judge(outcome: &Outcome) -> Verdict {
    match outcome {
        Outcome::Status(s) if (200..300).contains(s) => Verdict::Delivered,
        Outcome::Status(s @ 300..=399) => Verdict::Final(format!(
            "the receiver answered {s}, a redirect: weft does not follow redirects (a receiver could point it \
             at an address it must not reach); give the final URL"
        )),
        Outcome::Later(s, wait) => Verdict::Retry(format!(
            "the receiver answered {s} with Retry-After: {} s",
            wait.as_secs()
        )),
        Outcome::Status(s @ (408 | 429)) => Verdict::Retry(format!("the receiver answered {s}")),
        Outcome::Status(s @ 500..=599) => Verdict::Retry(format!("the receiver answered {s}")),
        Outcome::Status(s) => Verdict::Final(format!("the receiver answered {s}")),
        Outcome::NoAnswer(e) => Verdict::Retry(e.clone()),
        Outcome::Refused(e) => Verdict::Final(e.clone()),
    }
}

/// The wait after failed attempt `attempt` (1 for the first), `random`
/// uniform in [0, 1): full jitter over `min(cap, base * 2^(attempt-1))`,
/// so receivers that come back are not hit by every retry at once.
pub fn backoff(attempt: u32, random: f64) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(BACKOFF_CAP);
    ceiling.mul_f64(random.clamp(0.0, 1.0))
}

/// The wait before the attempt after failed attempt `attempt`: what the
/// receiver asked for with `Retry-After` (429, 503), at most
/// [`RETRY_AFTER_CAP`]; otherwise the [`backoff`].
pub fn next_wait(outcome: &Outcome, attempt: u32, random: f64) -> Duration {
    match outcome {
        Outcome::Later(_, wait) => (*wait).min(RETRY_AFTER_CAP),
        _ => backoff(attempt, random),
    }
}

/// The wait a `Retry-After` value asks for at `now` (RFC 9110, 10.2.3):
/// delay-seconds, or an HTTP-date (a date past is no wait). `None`: not
/// a value of either form, which is ignored as if absent.
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Digits past u64 are a very long wait: the cap applies anyway.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A uniform value in [0, 1) from the OS's random source.
pub fn random_unit() -> f64 {
    let bits = getrandom::u32().unwrap_or(0);
    f64::from(bits) / (f64::from(u32::MAX) + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_judged_as_the_issue_says() {
        assert_eq!(judge(&Outcome::Status(200)), Verdict::Delivered);
        assert_eq!(judge(&Outcome::Status(204)), Verdict::Delivered);
        for retried in [500, 502, 503, 599, 408, 429] {
            assert!(
                matches!(judge(&Outcome::Status(retried)), Verdict::Retry(_)),
                "{retried}"
            );
        }
        for last in [400, 401, 403, 404, 410, 422] {
            assert!(matches!(judge(&Outcome::Status(last)), Verdict::Final(_)), "{last}");
        }
        let Verdict::Final(why) = judge(&Outcome::Status(302)) else {
            panic!("a redirect is final");
        };
        assert!(why.contains("redirect"));
        assert!(matches!(judge(&Outcome::NoAnswer("timeout".into())), Verdict::Retry(_)));
        assert!(matches!(judge(&Outcome::Refused("private".into())), Verdict::Final(_)));
    }

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_083_200); // 2026-12-01T00:00:00Z
        assert_eq!(retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
        // The three forms of HTTP-date.
        for date in [
            "Tue, 01 Dec 2026 00:00:30 GMT",
            "Tuesday, 01-Dec-26 00:00:30 GMT",
            "Tue Dec  1 00:00:30 2026",
        ] {
            assert_eq!(retry_after(date, now), Some(Duration::from_secs(30)), "{date}");
        }
        assert_eq!(
            retry_after("Mon, 30 Nov 2026 23:00:00 GMT", now),
            Some(Duration::ZERO),
            "a date past is no wait"
        );
        for bad in ["", "-5", "1.5", "soon", "Tue, 01 Dec 2026"] {
            assert_eq!(retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn retry_after_replaces_the_backoff_up_to_its_cap() {
        let later = |secs| Outcome::Later(429, Duration::from_secs(secs));
        assert_eq!(next_wait(&later(7), 1, 0.0), Duration::from_secs(7));
        assert_eq!(next_wait(&later(0), 5, 0.9), Duration::ZERO);
        assert_eq!(next_wait(&later(86_400), 1, 0.5), RETRY_AFTER_CAP);
        assert_eq!(next_wait(&Outcome::Status(503), 3, 0.5), backoff(3, 0.5));
        assert!(matches!(judge(&later(7)), Verdict::Retry(why) if why.contains("Retry-After: 7 s")));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_full_jitter() {
        assert_eq!(backoff(1, 0.0), Duration::ZERO);
        assert_eq!(backoff(1, 0.999_999), BACKOFF_BASE.mul_f64(0.999_999));
        assert_eq!(backoff(3, 0.5), BACKOFF_BASE * 2);
        assert_eq!(backoff(20, 0.5), BACKOFF_CAP / 2);
        assert_eq!(backoff(u32::MAX, 1.0), BACKOFF_CAP);
        let r = random_unit();
        assert!((0.0..1.0).contains(&r));
    }
}
