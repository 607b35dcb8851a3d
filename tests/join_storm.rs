//! A join storm (issue 17, scenario 2), small enough for a test: many
//! clients join a big document at the same moment. The server must encode
//! the full state once and send the same bytes to every joiner, and no
//! connection may keep a copy of what it sent. Had each joiner cost its own
//! copy, 40 joiners of a 4 MiB document would take 160 MiB; timing targets
//! are the benchmark's (`bench/compare.sh --only joinstorm`), not this test's.

mod common;

use common::{peak_rss, reset_peak_rss, Client, Server, SECOND};
use yrs::Text;

const MIB: u64 = 1 << 20;
const BYTES: usize = 4 << 20;
const JOINERS: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joiners_of_a_big_document_share_one_encoding() {
    let server = Server::start();
    let writer = server.connect("storm").await;
    let text = writer.doc.get_or_insert_text("t");
    writer.edit(|txn| text.push(txn, &"x".repeat(BYTES)));
    // Stored, and its full state encoded once, when a first reader syncs.
    let probe = server.connect("storm").await;
    probe
        .wait_for("the big document", 30 * SECOND, |p| p.text("t").len() == BYTES)
        .await
        .unwrap();
    reset_peak_rss(server.pid());
    let base = peak_rss(server.pid());

    let joins = (0..JOINERS).map(|_| {
        let ws = server.ws.clone();
        tokio::spawn(async move {
            let client = Client::connect(&ws, "storm").await.expect("connect");
            client
                .wait_for("the whole document", 60 * SECOND, |c| c.text("t").len() == BYTES)
                .await
                .unwrap();
            client
        })
    });
    let joined = futures_util::future::join_all(joins).await;
    let grown = peak_rss(server.pid()).saturating_sub(base);
    assert_eq!(joined.len(), JOINERS);
    assert!(joined.iter().all(|j| j.as_ref().is_ok_and(|c| !c.seen().ended)));
    // One encoding is 4 MiB; a copy per joiner would be 160 MiB. Allowed:
    // a fresh encoding or two, and each connection's buffers.
    assert!(
        grown < 24 * MIB,
        "peak RSS grew by {} MiB while {JOINERS} clients joined a {} MiB document",
        grown / MIB,
        BYTES as u64 / MIB
    );
}
