//! Gives the memory of documents that left yrs back to the OS.
//!
//! A document built in yrs is hundreds of thousands of small allocations
//! (~15 times its encoded size). When it goes dormant or unloads they are
//! freed, but glibc keeps freed small chunks in its arenas: the process
//! stays as large as it was at its peak, and a join storm or a herd of
//! loads after it starts from there. `malloc_trim` returns the free pages
//! inside the arenas too. It walks every arena, so it runs off the
//! runtime's threads and only once documents worth `THRESHOLD` of memory
//! were freed since the last time, at most once a second.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Memory freed (estimated) before a trim is worth its walk.
const THRESHOLD: u64 = 32 << 20;

/// What a built document holds in memory per byte of its encoding
/// (bench/FINDINGS.md: 15.1 for the trace documents).
const BUILT_PER_ENCODED: u64 = 15;

static FREED: AtomicU64 = AtomicU64::new(0);
static RUNNING: AtomicBool = AtomicBool::new(false);

/// A built document whose encoding takes `encoded` bytes was dropped.
pub(super) fn document_freed(encoded: usize) {
    let freed = FREED.fetch_add(encoded as u64 * BUILT_PER_ENCODED, Relaxed) + encoded as u64 * BUILT_PER_ENCODED;
    if freed < THRESHOLD || RUNNING.swap(true, Relaxed) {
        return;
    }
    FREED.store(0, Relaxed);
    tokio::task::spawn_blocking(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only releases free memory; glibc takes each
        // arena's lock.
        unsafe {
            libc::malloc_trim(0);
        }
        std::thread::sleep(Duration::from_secs(1));
        RUNNING.store(false, Relaxed);
    });
}
