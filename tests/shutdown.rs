//! Graceful shutdown under load, against the real binary: clients stream
//! updates when SIGTERM (or SIGINT) arrives. README: weft stops accepting,
//! closes every socket with 1001 while still applying what clients sent
//! before they saw the close, saves every document, checkpoints the
//! database (so `weft.db` alone is a complete copy) and exits 0.

mod common;

use std::time::{Duration, Instant};

use common::{Client, Server, SECOND, SIGINT, SIGTERM};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use yrs::Text;

const DOCS: [&str; 2] = ["load/a", "load/b"];

/// Bytes waiting to be read by the server on its end of the TCP connection
/// from `client` (`/proc/net/tcp`): `Some(0)` once weft has read everything
/// the client sent.
fn unread_by_server(server: &Server, client: std::net::SocketAddr) -> Option<u64> {
    let server_port = server.addr.rsplit(':').next().unwrap().parse::<u16>().unwrap();
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap();
    tcp.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let port = |field: &str| u16::from_str_radix(field.rsplit(':').next()?, 16).ok();
        if port(fields[1])? != server_port || port(fields[2])? != client.port() {
            return None;
        }
        u64::from_str_radix(fields[4].split(':').nth(1)?, 16).ok()
    })
}

/// The edits a writer makes, in order: `0;1;2;...`.
fn edits(n: usize) -> String {
    (0..n).map(|i| format!("{i};")).collect()
}

async fn shutdown_under_load(signal: i32) {
    let mut server = Server::builder().arg("--rate-limit", 0).start();
    let writers = [server.connect(DOCS[0]).await, server.connect(DOCS[1]).await];
    let texts = writers.each_ref().map(|w| w.doc.get_or_insert_text("t"));

    // An upgrade request under way when the signal comes: its first line
    // read by weft before, the rest sent once weft is stopping. (A
    // connection made after the signal finds nothing listening.)
    let mut late = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
    late.write_all(format!("GET /{} HTTP/1.1\r\n", DOCS[0]).as_bytes())
        .await
        .unwrap();
    let deadline = Instant::now() + 10 * SECOND;
    while unread_by_server(&server, late.local_addr().unwrap()) != Some(0) {
        assert!(Instant::now() < deadline, "weft never read the request's first line");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Stream until each writer has seen the server's close.
    let mut made = [0usize; 2];
    let mut signalled = false;
    let deadline = Instant::now() + 60 * SECOND;
    while writers.iter().any(|w| w.seen().close.is_none() && !w.seen().ended) {
        assert!(Instant::now() < deadline, "the writers were never closed");
        for (i, writer) in writers.iter().enumerate() {
            let seen = writer.seen();
            if seen.close.is_some() || seen.ended {
                continue;
            }
            // keep a bounded number queued, so what was made is soon sent
            if made[i] as u64 - seen.updates_sent < 64 {
                let piece = format!("{};", made[i]);
                writer.edit(|txn| texts[i].push(txn, &piece));
                made[i] += 1;
            }
        }
        if !signalled && made.iter().all(|&n| n >= 300) {
            server.signal(signal);
            signalled = true;
        }
        tokio::task::yield_now().await;
        if made
            .iter()
            .zip(&writers)
            .all(|(&n, w)| n as u64 - w.seen().updates_sent >= 64)
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let sent: Vec<u64> = writers.iter().map(|w| w.seen().updates_sent).collect();
    for writer in &writers {
        let closed = writer.wait_closed(10 * SECOND).await.unwrap();
        assert_eq!(closed.map(|c| c.0), Some(1001), "{}", server.log());
    }

    // The writers' 1001 means weft is stopping: the late upgrade is refused
    // with 503 and a reason, never accepted.
    let rest = format!(
        "Host: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.addr
    );
    late.write_all(rest.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(10 * SECOND, late.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}\n{}", server.log());
    assert!(answer.contains("shutting down"), "{answer}");

    let status = server.wait_exit();
    assert!(status.success(), "exit status {status:?}\n{}", server.log());

    // Everything each writer put on the wire before its close: an exact
    // prefix of its edits, at least as long as what it sent.
    let check = |server: &Server, what: &'static str| {
        let addr = server.ws.clone();
        let sent = sent.clone();
        async move {
            for (i, doc) in DOCS.iter().enumerate() {
                let reader = Client::connect(&addr, doc).await.unwrap();
                reader.wait_synced().await.unwrap();
                let text = reader.text("t");
                let kept = text.matches(';').count();
                assert_eq!(text, edits(kept), "{what}: {doc} is not a prefix of the edits");
                assert!(
                    kept as u64 >= sent[i],
                    "{what}: {doc} kept {kept} of the {} updates sent before the close",
                    sent[i]
                );
            }
        }
    };
    // After the exit the WAL is folded back: the database file alone, copied
    // without its -wal and -shm, is complete.
    let copy = tempfile::tempdir().unwrap();
    let alone = copy.path().join("weft.db");
    std::fs::copy(&server.db, &alone).unwrap();
    let wal = server.db.with_extension("db-wal");
    assert!(
        std::fs::metadata(&wal).map_or(0, |m| m.len()) == 0,
        "the WAL still holds commits after a clean exit"
    );
    let from_copy = Server::builder().db(&alone).start();
    check(&from_copy, "weft.db alone").await;
    drop(from_copy);
    let server = server.restart();
    check(&server, "after the restart").await;
}

/// Guards against losing what clients sent while the server was stopping,
/// against accepting upgrades during shutdown, and against a database file
/// that needs its WAL after a clean exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_keeps_everything_sent_before_the_close() {
    shutdown_under_load(SIGTERM).await;
}

/// The same for SIGINT (Ctrl-C).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_under_load_keeps_everything_sent_before_the_close() {
    shutdown_under_load(SIGINT).await;
}
