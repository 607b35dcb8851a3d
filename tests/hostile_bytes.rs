//! Bytes on a WebSocket, against the real binary (issue 11, the
//! hostile-peer benchmark's target for honest latency): the message rate
//! limit counts messages, so a client could make weft read
//! `--max-message-size` per message, as fast as it could write. Now each
//! client (IP and token) has a byte bucket (`--byte-rate-limit`), shared by
//! its connections, and is read no faster than it allows, while other
//! clients are read as before.

mod common;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use common::{Server, SECOND};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tungstenite::protocol::Role;
use tungstenite::Message;
use yrs::Text;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// A WebSocket upgrade made by hand from `local` (another client IP on
/// 127/8), for a client that writes as fast as it can.
async fn raw_websocket(server: &Server, local: &str, path: &str) -> WebSocketStream<TcpStream> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{local}:0").parse().unwrap()).unwrap();
    let mut tcp = socket.connect(server.addr.parse().unwrap()).await.unwrap();
    let handshake = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.addr
    );
    tcp.write_all(handshake.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed during the handshake");
        raw.extend_from_slice(&buf[..n]);
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
    };
    assert!(raw.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&raw));
    WebSocketStream::from_partially_read(tcp, raw[end..].to_vec(), Role::Client, None).await
}

/// A client writing 32 MiB as fast as it can (awareness states over
/// `--max-awareness-state`, which the session reads and drops: bytes that
/// cost weft only their reading) was read at once. Now it is read at
/// `--byte-rate-limit` after its burst: its writes wait on TCP, it is not
/// closed, and an honest client (another IP) pasting a message of nearly
/// the largest size is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sending_bytes_too_fast_is_read_slower_and_others_are_not() {
    // 64 KiB/s, a burst of twice the largest message (128 KiB).
    let server = Server::builder()
        .arg("--byte-rate-limit", 64 * KIB)
        .arg("--max-message-size", 64 * KIB)
        .arg("--max-awareness-state", KIB)
        .start();
    let honest = server.connect("bytes").await;
    let watcher = server.connect("bytes").await;

    let socket = raw_websocket(&server, "127.0.0.2", "/bytes").await;
    let (mut sink, mut stream) = socket.split();
    let written = Arc::new(AtomicU64::new(0));
    let flood = {
        let written = written.clone();
        tokio::spawn(async move {
            let state = format!("\"{}\"", "x".repeat(60 * KIB));
            for clock in 1..=(32 * MIB / (60 * KIB)) as u32 {
                let frame = weft_bench::wire::awareness(77, clock, &state);
                let len = frame.len() as u64;
                if sink.send(Message::Binary(frame.into())).await.is_err() {
                    return;
                }
                written.fetch_add(len, Relaxed);
            }
        })
    };

    // The honest client pastes 48 KiB and types while the flood goes on.
    let text = honest.doc.get_or_insert_text("t");
    honest.edit(|txn| text.push(txn, &"p".repeat(48 * KIB)));
    honest.edit(|txn| text.push(txn, "!"));
    watcher
        .wait_for("the paste", 10 * SECOND, |w| w.text("t").len() == 48 * KIB + 1)
        .await
        .unwrap();
    assert!(!honest.seen().ended && !watcher.seen().ended);

    // Unpaced, weft read the 32 MiB in well under a second; paced, 5 s
    // take the burst, 5 s of the rate and what the sockets buffer.
    let finished = tokio::time::timeout(5 * SECOND, flood).await.is_ok();
    let sent = written.load(Relaxed) as usize;
    assert!(
        !finished && sent < 24 * MIB,
        "the flood was read unpaced: {} KiB written within 5 s",
        sent / KIB
    );
    // Paced, not closed: no close frame has come.
    let closed = tokio::time::timeout(Duration::from_millis(100), stream.next()).await;
    assert!(
        !matches!(closed, Ok(Some(Ok(Message::Close(_))))),
        "the flooding connection was closed: {closed:?}"
    );
}

/// A byte rate so low that a client in debt could not send a message of
/// the largest size within its deadline is worth a warning at start-up
/// (not a refusal: a short deadline alone must not stop weft starting).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byte_rate_too_low_for_the_largest_message_is_warned_of() {
    let server = Server::builder()
        .arg("--byte-rate-limit", 1000)
        .arg("--max-message-size", MIB)
        .arg("--message-deadline-ms", 1000)
        .start();
    server
        .wait_log(
            "--byte-rate-limit (1000 bytes/s) is low for --max-message-size",
            5 * SECOND,
        )
        .await
        .unwrap();
}
