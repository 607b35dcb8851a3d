//! `/metrics` against the real binary: the series users scrape, and the
//! histograms filled by one edit.

mod common;

use common::{Server, SECOND};
use yrs::Text;

/// One edit relayed between two peers fills every histogram (storage
/// commit time and size, apply time, receipt-to-relay delay), and the
/// series weft exposed before the histograms are still there, by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_edit_fills_the_histograms_and_the_old_series_stay() {
    let server = Server::start();
    let a = server.connect("measured").await;
    let b = server.connect("measured").await;
    let text = a.doc.get_or_insert_text("t");
    a.edit(|txn| text.push(txn, "hello"));
    b.wait_for("the edit", 5 * SECOND, |b| b.text("t") == "hello")
        .await
        .unwrap();
    for histogram in [
        "weft_storage_commit_duration_seconds",
        "weft_storage_commit_updates",
        "weft_storage_commit_bytes",
        "weft_update_apply_duration_seconds",
        "weft_update_relay_delay_seconds",
    ] {
        // The relay is recorded just after the frame is queued: the peer
        // may have it a moment before the histogram does.
        let count = format!("{histogram}_count");
        server.wait_metric(&count, 5 * SECOND, |n| n >= 1.0).await;
        let inf = format!("{histogram}_bucket{{le=\"+Inf\"}}");
        assert!(server.metric(&inf).await >= 1.0, "{inf}");
    }
    assert!(server.metric("weft_storage_commit_updates_sum").await >= 1.0);
    assert!(server.metric("weft_storage_commit_bytes_sum").await > 0.0);
    assert!(server.metric("weft_update_relay_delay_seconds_sum").await > 0.0);

    let body = server.get("/metrics").await.text();
    for (name, kind) in [
        ("weft_connections_open", "gauge"),
        ("weft_connections_total", "counter"),
        ("weft_documents_loaded", "gauge"),
        ("weft_documents_loaded_total", "counter"),
        ("weft_documents_unloaded_total", "counter"),
        ("weft_updates_applied_total", "counter"),
        ("weft_update_bytes_total", "counter"),
        ("weft_updates_refused_total", "counter"),
        ("weft_requests_refused_total", "counter"),
        ("weft_awareness_updates_total", "counter"),
        ("weft_frames_sent_total", "counter"),
        ("weft_compactions_total", "counter"),
        ("weft_actor_panics_total", "counter"),
        ("weft_storage_commits_total", "counter"),
        ("weft_storage_jobs_total", "counter"),
        ("weft_storage_commit_seconds_total", "counter"),
        ("weft_storage_errors_total", "counter"),
        ("weft_disconnects_total", "counter"),
    ] {
        assert!(
            body.contains(&format!("\n# TYPE {name} {kind}\n")),
            "no {kind} {name} in:\n{body}"
        );
    }
    assert_eq!(server.metric("weft_connections_open").await, 2.0);
    assert_eq!(server.metric("weft_updates_applied_total").await, 1.0);
    assert!(server.metric("weft_storage_commits_total").await >= 1.0);
    assert!(server.metric("weft_storage_commit_seconds_total").await > 0.0);
    assert_eq!(
        server.metric("weft_disconnects_total{reason=\"rate_limited\"}").await,
        0.0
    );
}
