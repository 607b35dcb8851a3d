//! Counters and gauges, rendered at `/metrics` in the Prometheus text format.
//!
//! Plain atomics: every hot path only does a relaxed `fetch_add`, and the
//! handful of series does not justify a metrics framework.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Why the server closed a connection; one counter each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kick {
    SlowConsumer,
    BadMessage,
    BadUpdate,
    TooBig,
    TextFrame,
    StorageFailed,
    Deleted,
    DocTooLarge,
    RateLimited,
    TokenExpired,
    TokenRevoked,
}

impl Kick {
    const ALL: [Kick; 11] = [
        Kick::SlowConsumer,
        Kick::BadMessage,
        Kick::BadUpdate,
        Kick::TooBig,
        Kick::TextFrame,
        Kick::StorageFailed,
        Kick::Deleted,
        Kick::DocTooLarge,
        Kick::RateLimited,
        Kick::TokenExpired,
        Kick::TokenRevoked,
    ];

    fn label(self) -> &'static str {
        match self {
            Kick::SlowConsumer => "slow_consumer",
            Kick::BadMessage => "bad_message",
            Kick::BadUpdate => "bad_update",
            Kick::TooBig => "too_big",
            Kick::TextFrame => "text_frame",
            Kick::StorageFailed => "storage_failed",
            Kick::Deleted => "deleted",
            Kick::DocTooLarge => "doc_too_large",
            Kick::RateLimited => "rate_limited",
            Kick::TokenExpired => "token_expired",
            Kick::TokenRevoked => "token_revoked",
        }
    }
}

#[derive(Default)]
pub struct Metrics {
    pub connections_open: AtomicU64,
    pub connections_total: AtomicU64,
    pub docs_loaded: AtomicU64,
    pub docs_loaded_total: AtomicU64,
    pub docs_unloaded_total: AtomicU64,
    pub updates_applied: AtomicU64,
    pub update_bytes: AtomicU64,
    pub updates_refused: AtomicU64,
    /// Upgrades and API calls refused by access control or limits.
    pub requests_refused: AtomicU64,
    pub awareness_updates: AtomicU64,
    pub frames_sent: AtomicU64,
    /// Step1 answers the actor encoded: the full state when the shared
    /// encoding was stale, or a diff (the costly part of an answer).
    pub state_encodes: AtomicU64,
    /// Step1 answers that waited for their client's encoding budget.
    pub answers_deferred: AtomicU64,
    pub compactions: AtomicU64,
    pub actor_panics: AtomicU64,
    storage_commits: AtomicU64,
    storage_jobs: AtomicU64,
    storage_commit_micros: AtomicU64,
    storage_errors: AtomicU64,
    kicks: [AtomicU64; Kick::ALL.len()],
}

impl Metrics {
    pub fn kick(&self, why: Kick) {
        self.kicks[why as usize].fetch_add(1, Relaxed);
    }

    pub fn kicked(&self, why: Kick) -> u64 {
        self.kicks[why as usize].load(Relaxed)
    }

    pub fn storage_commit(&self, jobs: usize, took: Duration) {
        self.storage_commits.fetch_add(1, Relaxed);
        self.storage_jobs.fetch_add(jobs as u64, Relaxed);
        self.storage_commit_micros.fetch_add(took.as_micros() as u64, Relaxed);
    }

    pub fn storage_error(&self) {
        self.storage_errors.fetch_add(1, Relaxed);
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let mut series = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        let get = |a: &AtomicU64| a.load(Relaxed).to_string();
        series(
            "weft_connections_open",
            "gauge",
            "WebSocket connections now open.",
            get(&self.connections_open),
        );
        series(
            "weft_connections_total",
            "counter",
            "WebSocket connections accepted.",
            get(&self.connections_total),
        );
        series(
            "weft_documents_loaded",
            "gauge",
            "Documents now held in memory.",
            get(&self.docs_loaded),
        );
        series(
            "weft_documents_loaded_total",
            "counter",
            "Document loads from storage.",
            get(&self.docs_loaded_total),
        );
        series(
            "weft_documents_unloaded_total",
            "counter",
            "Documents dropped from memory after their last peer left.",
            get(&self.docs_unloaded_total),
        );
        series(
            "weft_updates_applied_total",
            "counter",
            "Document updates applied and stored.",
            get(&self.updates_applied),
        );
        series(
            "weft_update_bytes_total",
            "counter",
            "Bytes of document updates applied.",
            get(&self.update_bytes),
        );
        series(
            "weft_updates_refused_total",
            "counter",
            "Document updates refused (bad input, read-only, limits).",
            get(&self.updates_refused),
        );
        series(
            "weft_requests_refused_total",
            "counter",
            "Upgrades and API calls refused (auth, origin, limits).",
            get(&self.requests_refused),
        );
        series(
            "weft_awareness_updates_total",
            "counter",
            "Awareness messages applied.",
            get(&self.awareness_updates),
        );
        series(
            "weft_frames_sent_total",
            "counter",
            "Frames queued to peers.",
            get(&self.frames_sent),
        );
        series(
            "weft_state_encodes_total",
            "counter",
            "Step1 answers encoded by a document's actor (the full state when the shared one was stale, or a diff).",
            get(&self.state_encodes),
        );
        series(
            "weft_answers_deferred_total",
            "counter",
            "Step1 answers that waited because their client had used its budget of encodings.",
            get(&self.answers_deferred),
        );
        series(
            "weft_compactions_total",
            "counter",
            "Update logs compacted into a snapshot.",
            get(&self.compactions),
        );
        series(
            "weft_actor_panics_total",
            "counter",
            "Document actors that panicked and were restarted (a bug: please report it).",
            get(&self.actor_panics),
        );
        series(
            "weft_storage_commits_total",
            "counter",
            "Storage transactions committed (group commits).",
            get(&self.storage_commits),
        );
        series(
            "weft_storage_jobs_total",
            "counter",
            "Storage jobs committed; jobs/commits is the mean group size.",
            get(&self.storage_jobs),
        );
        series(
            "weft_storage_commit_seconds_total",
            "counter",
            "Time spent in storage commits.",
            format!("{:.6}", self.storage_commit_micros.load(Relaxed) as f64 / 1e6),
        );
        series(
            "weft_storage_errors_total",
            "counter",
            "Storage transactions that failed.",
            get(&self.storage_errors),
        );
        let _ = writeln!(
            out,
            "# HELP weft_disconnects_total Connections closed by the server, by reason.\n# TYPE weft_disconnects_total counter"
        );
        for why in Kick::ALL {
            let _ = writeln!(
                out,
                "weft_disconnects_total{{reason=\"{}\"}} {}",
                why.label(),
                self.kicked(why)
            );
        }
        out
    }
}
