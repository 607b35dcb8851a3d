//! The wall clock, in the units weft stores and signs: Unix milliseconds for
//! rows (`created_at`, versions), Unix seconds for tokens (`exp`, `nbf`).
//!
//! One place to read it, so that every layer agrees on the epoch and on what
//! a clock set before 1970 reads as (0). Rules that depend on time take `now`
//! as an argument instead, so their tests choose it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Whole seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    (now_ms() / 1000) as u64
}
