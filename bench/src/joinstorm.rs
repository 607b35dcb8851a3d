//! The join storm (issue 17, scenario 2): a big document is stored, then
//! many clients join it within one second, as a class opening one document
//! at the start of a lesson does. Measured: the time from the first join
//! until the last client is synced (its step2 fully received), each
//! client's time to sync, and the server's peak RSS during the storm.
//!
//! The joiners speak WebSocket on raw TCP and never hold a message: they
//! read the server's step2 in chunks and count its bytes. A tungstenite
//! client assembles each message, so 200 joiners of a 20 MB document
//! would make the load generator hold 4 GB at once, and time its own
//! allocator rather than the server.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::bigdoc::{build_document, seed, Document};
use crate::conn::Error;
use crate::servers::{Kind, Server, Servers};
use crate::stats::{self, round3, Histogram};
use crate::wire;

/// Sizes of the scenario.
#[derive(Clone, Debug)]
pub struct JoinStorm {
    /// The document's encoded size.
    pub doc_bytes: usize,
    /// Edits of the trace typed in first (`None`: all).
    pub trace_limit: Option<usize>,
    pub clients: usize,
    /// The joins start evenly spread over this long.
    pub spread: Duration,
    /// A join not synced within this long counts as failed.
    pub timeout: Duration,
}

/// What one joiner saw.
struct Joined {
    /// From the storm's start until its step2 was complete.
    synced_at: Duration,
    /// From its own start.
    took: Duration,
    step2_bytes: usize,
}

pub async fn run(servers: &Servers, p: &JoinStorm, trace: &Path, kinds: &[Kind]) -> Result<Value, Error> {
    let started = Instant::now();
    eprintln!("join storm: building a {} byte document", p.doc_bytes);
    let doc = build_document(trace, p.trace_limit, p.doc_bytes)?;
    eprintln!("  {}", doc.info["how"].as_str().unwrap_or_default());
    let mut rows = Vec::new();
    for &kind in kinds {
        eprintln!(
            "join storm: {}, {} clients within {:?}",
            kind.name(),
            p.clients,
            p.spread
        );
        // The document's updates are larger than weft's default message
        // limit (16 MiB); a client of a 20 MB document sends its state so. 32 MiB
        // is the largest that needs no larger --partial-message-budget.
        let flags = ["--max-message-size", "33554432"];
        let extra: &[&str] = if kind == Kind::Weft { &flags } else { &[] };
        let server = servers.start(kind, &format!("joinstorm-{}", kind.name()), extra, None)?;
        let result = run_once(&server, p, &doc).await;
        let mut result = match result {
            Ok(r) => r,
            Err(e) => {
                server.kill();
                return Err(e);
            }
        };
        server.stop()?;
        result["server"] = json!(kind.name());
        eprintln!(
            "  last synced after {} s (p50 {} s), server CPU {} s, peak RSS {} MiB (seeded {} MiB), failed {}",
            result["last_synced_s"],
            result["sync_s"]["p50_ms"].as_f64().map_or(0.0, |ms| ms / 1000.0),
            result["server_cpu_s"],
            result["peak_rss_mib"],
            result["rss_seeded_mib"],
            result["failed"]
        );
        rows.push(result);
    }
    Ok(json!({
        "document": doc.info,
        "clients": p.clients,
        "spread_s": stats::secs(p.spread),
        "timeout_s": stats::secs(p.timeout),
        "load": loadavg(),
        "rows": rows,
        "scenario_s": round3(started.elapsed().as_secs_f64()),
    }))
}

async fn run_once(server: &Server, p: &JoinStorm, doc: &Document) -> Result<Value, Error> {
    let pid = server.pid;
    let target = server.target().await?;
    let rss_start = stats::status_kib(pid, "VmRSS").unwrap_or(0);
    let path = "joinstorm";
    let seed_s = seed(&target, path, doc).await?;
    // Let the seeding's writes and frees settle before the baseline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_seeded = stats::status_kib(pid, "VmRSS").unwrap_or(0);
    let peak_setup = stats::peak_rss_kib(pid).unwrap_or(0);
    let peak_reset = stats::reset_peak_rss(pid).is_ok();
    let addr: SocketAddr = server
        .base
        .trim_start_matches("ws://")
        .trim_start_matches("http://")
        .parse()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let sampler = tokio::spawn(sample_rss(pid, stop_rx.clone()));
    // Every joiner reports once synced (or failed) and then keeps reading
    // until told to stop, so that no connection ends before the last sync.
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel(p.clients.max(1));
    let cpu_before = (stats::sample(pid), stats::self_sample());
    let epoch = Instant::now();
    let mut tasks = Vec::with_capacity(p.clients);
    for i in 0..p.clients {
        let start = epoch + p.spread.mul_f64(i as f64 / p.clients.max(1) as f64);
        let stop = stop_rx.clone();
        let done = done_tx.clone();
        let (timeout, want) = (p.timeout, doc.bytes * 95 / 100);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(start.into()).await;
            join_raw(addr, path, want, epoch, timeout, stop, done).await
        }));
    }
    drop(done_tx);
    let mut joined = Vec::new();
    let mut failures = Vec::new();
    // Each joiner keeps its sender while it drains: count the answers.
    while joined.len() + failures.len() < p.clients {
        let Some(out) = done_rx.recv().await else { break };
        match out {
            Ok(j) => joined.push(j),
            Err(e) => failures.push(e),
        }
    }
    let storm_s = epoch.elapsed().as_secs_f64();
    // CPU seconds over the storm: is the server or the generator the limit?
    let cpu_s = |a: Option<stats::ProcSample>, b: Option<stats::ProcSample>| match (a, b) {
        (Some(a), Some(b)) => Some(round3(b.cpu_s - a.cpu_s)),
        _ => None,
    };
    let server_cpu_s = cpu_s(cpu_before.0, stats::sample(pid));
    let gen_cpu_s = cpu_s(cpu_before.1, stats::self_sample());
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }
    let (peak_sampled, series) = sampler.await.unwrap_or_default();
    let peak = stats::peak_rss_kib(pid).unwrap_or(0);
    let mut hist = Histogram::default();
    for j in &joined {
        hist.record(j.took.as_micros() as u64);
    }
    let last = joined.iter().map(|j| j.synced_at).max().unwrap_or_default();
    failures.sort();
    failures.dedup();
    Ok(json!({
        "seed_s": round3(seed_s),
        "synced": joined.len(),
        "failed": p.clients - joined.len(),
        "failures": failures.into_iter().take(5).collect::<Vec<_>>(),
        "last_synced_s": round3(last.as_secs_f64()),
        "storm_s": round3(storm_s),
        "server_cpu_s": server_cpu_s,
        "generator_cpu_s": gen_cpu_s,
        "sync_s": hist.summary_ms(),
        "step2_mib": round3(joined.first().map_or(0, |j| j.step2_bytes) as f64 / 1048576.0),
        "rss_start_mib": mib(rss_start),
        "rss_seeded_mib": mib(rss_seeded),
        "peak_rss_setup_mib": mib(peak_setup),
        "peak_rss_mib": mib(if peak_reset { peak } else { peak_sampled }),
        "peak_rss_reset": peak_reset,
        "peak_rss_sampled_mib": mib(peak_sampled),
        "rss_after_mib": mib(stats::status_kib(pid, "VmRSS").unwrap_or(0)),
        "rss_series": series,
        "load": loadavg(),
    }))
}

fn mib(kib: u64) -> f64 {
    round3(kib as f64 / 1024.0)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The server's RSS every 10 ms until told to stop: its peak, and a series
/// (every 100 ms) for the report.
async fn sample_rss(pid: u32, mut stop: watch::Receiver<bool>) -> (u64, Vec<[f64; 2]>) {
    let epoch = Instant::now();
    let mut peak = 0;
    let mut series = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return (peak, series),
        }
        let rss = stats::status_kib(pid, "VmRSS").unwrap_or(0);
        peak = peak.max(rss);
        if n.is_multiple_of(10) {
            series.push([round3(epoch.elapsed().as_secs_f64()), mib(rss)]);
        }
        n += 1;
    }
}

/// A masked client frame (the mask is zero: the server must accept any).
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n < 65536 => {
            f.push(0x80 | 126);
            f.extend((n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend((n as u64).to_be_bytes());
        }
    }
    f.extend([0, 0, 0, 0]);
    f.extend(payload);
    f
}

/// Joins as an empty y-websocket client on raw TCP: upgrade, step1, answer
/// the server's step1 with an empty step2, count the server's step2 until
/// its last frame. Then reads (and drops) whatever comes until `stop`.
async fn join_raw(
    addr: SocketAddr,
    path: &str,
    want: usize,
    epoch: Instant,
    timeout: Duration,
    stop: watch::Receiver<bool>,
    done: tokio::sync::mpsc::Sender<Result<Joined, String>>,
) {
    let began = Instant::now();
    match sync_raw(addr, path, want, timeout).await {
        Ok((r, step2_bytes)) => {
            let joined = Joined {
                synced_at: epoch.elapsed(),
                took: began.elapsed(),
                step2_bytes,
            };
            let _ = done.send(Ok(joined)).await;
            drain(r, stop).await;
        }
        Err(e) => {
            let _ = done.send(Err(e.to_string())).await;
        }
    }
}

/// Connects and syncs; the connection, and the step2's size.
async fn sync_raw(
    addr: SocketAddr,
    path: &str,
    want: usize,
    timeout: Duration,
) -> Result<(BufReader<TcpStream>, usize), Error> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut r = BufReader::with_capacity(64 << 10, stream);
    let request = format!(
        "GET /{path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    r.get_mut().write_all(request.as_bytes()).await?;
    r.get_mut().write_all(&client_frame(2, &wire::empty_step1())).await?;
    let sync = async {
        // The answer's head, byte by byte up to the blank line.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(r.read_u8().await?);
            if head.len() > 16 << 10 {
                return Err::<usize, Error>("an answer head over 16 KiB".into());
            }
        }
        if !head.starts_with(b"HTTP/1.1 101") {
            let line = String::from_utf8_lossy(&head);
            return Err(format!("upgrade refused: {}", line.lines().next().unwrap_or_default()).into());
        }
        // Which message the frames belong to: its first two bytes.
        let mut message: Option<[u8; 2]> = None;
        let mut bytes = 0usize;
        let mut chunk = vec![0u8; 64 << 10];
        loop {
            let (fin, opcode, len) = read_header(&mut r).await?;
            match opcode {
                8 => return Err("closed by the server before sync".into()),
                9 => {
                    let mut ping = vec![0u8; len as usize];
                    r.read_exact(&mut ping).await?;
                    r.get_mut().write_all(&client_frame(10, &ping)).await?;
                    continue;
                }
                10 => {
                    skip(&mut r, len, &mut chunk).await?;
                    continue;
                }
                _ => {}
            }
            let mut left = len;
            if message.is_none() && opcode != 0 {
                let mut kind = [0u8; 2];
                let n = left.min(2) as usize;
                r.read_exact(&mut kind[..n]).await?;
                left -= n as u64;
                message = Some(kind);
                bytes = n;
            }
            skip(&mut r, left, &mut chunk).await?;
            bytes += left as usize;
            if !fin {
                continue;
            }
            match message.take() {
                Some([0, 0]) => r.get_mut().write_all(&client_frame(2, &wire::empty_step2())).await?,
                Some([0, 1]) if bytes >= want => return Ok(bytes),
                Some([0, 1]) => return Err(format!("a step2 of {bytes} bytes, not {want}").into()),
                _ => {}
            }
        }
    };
    let step2_bytes = tokio::time::timeout(timeout, sync)
        .await
        .map_err(|_| format!("not synced within {timeout:?}"))??;
    Ok((r, step2_bytes))
}

/// Keeps the connection (and reads what comes) until the storm is over.
async fn drain(mut r: BufReader<TcpStream>, mut stop: watch::Receiver<bool>) {
    let mut sink = vec![0u8; 16 << 10];
    loop {
        tokio::select! {
            n = r.read(&mut sink) => if n.unwrap_or(0) == 0 { break },
            _ = stop.changed() => break,
        }
    }
}

async fn read_header(r: &mut BufReader<TcpStream>) -> Result<(bool, u8, u64), Error> {
    let b0 = r.read_u8().await?;
    let b1 = r.read_u8().await?;
    let len = match b1 & 0x7f {
        126 => u64::from(r.read_u16().await?),
        127 => r.read_u64().await?,
        n => u64::from(n),
    };
    if b1 & 0x80 != 0 {
        // A server never masks; skip the key if one does.
        r.read_u32().await?;
    }
    Ok((b0 & 0x80 != 0, b0 & 0x0f, len))
}

async fn skip(r: &mut BufReader<TcpStream>, mut left: u64, chunk: &mut [u8]) -> Result<(), Error> {
    while left > 0 {
        let n = (left as usize).min(chunk.len());
        r.read_exact(&mut chunk[..n]).await?;
        left -= n as u64;
    }
    Ok(())
}
