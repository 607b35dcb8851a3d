//! What a webhook subscription costs editing (issue 16: at most 5 %): the
//! durable-writes and many-documents loads on weft without a webhook and
//! with one, alternated round by round so that both see the same machine.
//!
//! The receiver is a plain HTTP/1.1 responder inside this process that
//! answers 200 at once and counts requests: it measures weft's side
//! (writing events to the outbox, signing, connecting, posting), not a
//! receiver's; it keeps connections open. With the default debounce every edited document sends at
//! most one `document.updated` per 2 s, so the many-documents load (1,000
//! documents edited every second) makes about 500 posts a second.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::compare::Plan;
use crate::conn::Error;
use crate::load;
use crate::servers::{Kind, Servers};

/// A secret in the Standard Webhooks format (`whsec_` + base64 of 36 bytes).
const SECRET: &str = "whsec_d2VmdC1iZW5jaC13ZWJob29rLXNlY3JldC0wMTIzNDU2Nzg5";

/// A webhook receiver that answers every request with `answer`, counting
/// requests and connections: the benchmark's, and the tests'. It keeps a
/// connection open for the next request (HTTP/1.1 keep-alive) unless the
/// answer closes it (`connection: close`, or HTTP/1.0) or it was started
/// with [`Sink::start_closing`].
pub struct Sink {
    pub url: String,
    posts: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
    /// The `webhook-id` of every request, in order of arrival (tests).
    ids: Arc<Mutex<Vec<String>>>,
}

/// An answer that closes the connection, HTTP/1.1.
pub const OK_AND_CLOSE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
/// An answer that keeps the connection open, HTTP/1.1.
pub const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";

impl Sink {
    pub async fn start(answer: &'static [u8]) -> Result<Self, Error> {
        let head = String::from_utf8_lossy(answer).to_ascii_lowercase();
        let closes = head.starts_with("http/1.0") || head.contains("connection: close");
        Self::listen(answer, closes).await
    }

    /// Closes the connection after every answer, whatever the answer says:
    /// a receiver that drops connections the client may think it can reuse.
    pub async fn start_closing(answer: &'static [u8]) -> Result<Self, Error> {
        Self::listen(answer, true).await
    }

    async fn listen(answer: &'static [u8], close: bool) -> Result<Self, Error> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        let posts = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicU64::new(0));
        let ids = Arc::new(Mutex::new(Vec::new()));
        let (counter, accepted, seen) = (posts.clone(), connections.clone(), ids.clone());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::Relaxed);
                let counter = counter.clone();
                let seen = seen.clone();
                tokio::spawn(async move {
                    // Read a request's head and body (its content-length),
                    // answer, and go on with the next one on the same
                    // connection unless closing.
                    let mut buf = Vec::with_capacity(4096);
                    let mut chunk = [0u8; 4096];
                    loop {
                        let request = loop {
                            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                                let length = head
                                    .lines()
                                    .find_map(|l| l.strip_prefix("content-length:"))
                                    .and_then(|v| v.trim().parse::<usize>().ok())
                                    .unwrap_or(0);
                                if buf.len() >= end + 4 + length {
                                    break Some((head, end + 4 + length));
                                }
                            }
                            match socket.read(&mut chunk).await {
                                Ok(0) | Err(_) => break None,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let Some((head, used)) = request else { return };
                        buf.drain(..used);
                        if let Some(id) = head.lines().find_map(|l| l.strip_prefix("webhook-id:")) {
                            seen.lock().unwrap().push(id.trim().to_string());
                        }
                        counter.fetch_add(1, Ordering::Relaxed);
                        if socket.write_all(answer).await.is_err() || close {
                            return;
                        }
                    }
                });
            }
        });
        Ok(Self {
            url,
            posts,
            connections,
            ids,
        })
    }

    /// The `webhook-id` of every request answered so far (lower-cased).
    pub fn ids(&self) -> Vec<String> {
        self.ids.lock().unwrap().clone()
    }

    /// Requests answered so far.
    pub fn posts(&self) -> u64 {
        self.posts.load(Ordering::Relaxed)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

pub async fn run(servers: &Servers, plan: &Plan) -> Result<Value, Error> {
    // Keeps connections open, as most receivers do: weft reuses one per
    // subscription.
    let sink = Sink::start(OK).await?;
    let secret_file = servers.work.join("webhook-secret");
    std::fs::write(&secret_file, SECRET)?;
    let secret_path = secret_file.display().to_string();
    let with = [
        "--webhook",
        sink.url.as_str(),
        "--webhook-secret-file",
        secret_path.as_str(),
        "--webhook-allow-private",
    ];
    let rounds = if plan.quick { 1 } else { 3 };
    let mut rows = Vec::new();
    for round in 1..=rounds {
        // Which goes first alternates: the second of a pair ran after the
        // first's writes, on a machine that had warmed to the load.
        let mut pair = [("none", &[][..]), ("webhook", &with[..])];
        if round % 2 == 0 {
            pair.reverse();
        }
        for (mode, flags) in pair {
            eprintln!("webhook cost, round {round}: {mode}");
            let before = sink.posts();
            let connections_before = sink.connections();
            let server = servers.start(Kind::Weft, &format!("webhook-durable-{mode}-{round}"), flags, None)?;
            let target = server.target().await?;
            let durable = load::durable(&target, Some(server.pid), &plan.durable, mode).await;
            server.stop()?;
            let durable = durable?;
            let server = servers.start(Kind::Weft, &format!("webhook-many-{mode}-{round}"), flags, None)?;
            let target = server.target().await?;
            let many = load::many_docs(&target.with_sources(2), Some(server.pid), &plan.many).await;
            server.stop()?;
            let many = many?;
            let posts = sink.posts() - before;
            let connections = sink.connections() - connections_before;
            let cpu_us = cpu_per_update(&durable);
            eprintln!(
                "  durable {} updates/s, {} µs of server CPU per update; many documents p99 {} ms, server CPU {}; {posts} posts",
                durable["updates_s"], cpu_us, many["latency"]["p99_ms"], many["server_cpu"]
            );
            eprintln!("  {posts} posts over {connections} connections");
            rows.push(json!({
                "round": round,
                "mode": mode,
                "durable_updates_s": durable["updates_s"],
                "durable_server_cpu": durable["server_cpu"],
                "durable_cpu_us_per_update": cpu_us,
                "many_p50_ms": many["latency"]["p50_ms"],
                "many_p99_ms": many["latency"]["p99_ms"],
                "many_server_cpu": many["server_cpu"],
                "many_missing": many["missing"],
                "posts": posts,
                "connections": connections,
            }));
        }
    }
    Ok(json!({ "rounds": rounds, "rows": rows }))
}

/// The server's CPU time per update relayed, in µs: its CPU (a share of
/// one core, over the measured window) over the updates that arrived in
/// that window. The work an update costs, which a busy machine moves far
/// less than the throughput (a neighbour's load takes cores, not
/// instructions): what tells whether a webhook costs editing anything.
fn cpu_per_update(durable: &Value) -> Value {
    match (durable["server_cpu"].as_f64(), durable["updates_s"].as_f64()) {
        (Some(cpu), Some(rate)) if rate > 0.0 => json!((cpu * 1e6 / rate * 1000.0).round() / 1000.0),
        _ => Value::Null,
    }
}
