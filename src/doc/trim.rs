//! Gives the memory of documents that went dormant back to the OS.
//!
//! A document built in yrs is hundreds of thousands of small allocations
//! (~15 times its encoded size). When it goes dormant they are freed, but
//! glibc keeps freed small chunks in its arenas: the process stays as large
//! as it was at its peak, and a join storm or a herd of loads after it
//! starts from there. `malloc_trim` returns the free pages inside the
//! arenas too. It walks every arena, taking each one's lock, so it runs off
//! the runtime's threads, and only once documents worth `THRESHOLD` of
//! memory were freed since the last trim, at most once a second.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Instant;

/// Memory freed (estimated) before a trim is worth its walk.
const THRESHOLD: u64 = 32 << 20;

/// What a built document holds in memory per byte of its encoding
/// (bench/FINDINGS.md: 15.1 for the trace documents).
const BUILT_PER_ENCODED: u64 = 15;

/// Least time between two trims, in milliseconds.
const MIN_GAP_MS: u64 = 1000;

static FREED: AtomicU64 = AtomicU64::new(0);
/// When the last trim started, in milliseconds since `epoch()` (+1, so
/// that 0 means never).
static LAST: AtomicU64 = AtomicU64::new(0);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// A built document whose encoding takes `encoded` bytes was dropped.
pub(super) fn document_freed(encoded: usize) {
    let add = encoded as u64 * BUILT_PER_ENCODED;
    if FREED.fetch_add(add, Relaxed) + add < THRESHOLD {
        return;
    }
    let now = epoch().elapsed().as_millis() as u64 + 1;
    let last = LAST.load(Relaxed);
    if last != 0 && now < last + MIN_GAP_MS {
        return;
    }
    // One caller wins the slot; the others count towards the next trim.
    if LAST.compare_exchange(last, now, Relaxed, Relaxed).is_err() {
        return;
    }
    FREED.store(0, Relaxed);
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    tokio::task::spawn_blocking(|| {
        // SAFETY: malloc_trim only releases free memory; glibc takes each
        // arena's lock.
        unsafe {
            libc::malloc_trim(0);
        }
    });
}
