//! The retry rule, pure: what an attempt's outcome means, and how long to
//! wait before the next one (exponential backoff with full jitter, AWS
//! Architecture Blog, "Exponential Backoff and Jitter").

use std::time::Duration;

use super::client::Outcome;

/// The first retry waits up to this long; each next one up to twice more.
pub const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// No wait is longer than this.
pub const BACKOFF_CAP: Duration = Duration::from_secs(60);

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
