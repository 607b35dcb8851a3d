//! Many loaded documents and restart at scale (issue 17, scenarios 3 and 4).
//!
//! Loaded: `docs` documents, each the end state of a real editing trace
//! (the three flat traces of `../shared/data/traces`, in turn), sent by one
//! client that stays connected, so every document is in memory at once.
//! Measured: the server's RSS per loaded document (with its one
//! connection) against the document's encoded size, weft beside the
//! reference server.
//!
//! Restart (weft only; the reference keeps nothing): weft is stopped
//! (SIGTERM) and started again on the same database, and two clients per
//! document reconnect at once, holding the document as clients that were
//! connected before the restart do. Measured: the time until every client is
//! synced (from the moment all start), and what was refused or timed out
//! (such a client tries again after 0.5 s, as a y-websocket client would
//! reconnect).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::sleep;
use tokio_tungstenite::tungstenite::Message;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

use crate::c100k::{proc_file_limits, raise_own_limit};
use crate::conn::{open_many, refused_status, Error, Target, Ws};
use crate::load::{run_tag, stopped};
use crate::replay::load_trace;
use crate::servers::{Kind, Server, Servers};
use crate::stats::{self, round3, Histogram};
use crate::wire;

/// Sizes of the scenario.
#[derive(Clone, Debug)]
pub struct ManyLoaded {
    pub docs: usize,
    /// Connections being opened at once while loading.
    pub in_flight: usize,
    pub headroom: u64,
    pub settle: Duration,
    /// Restart weft and reconnect two clients a document.
    pub restart: bool,
    /// A reconnecting client not synced within this long counts as failed.
    pub restart_timeout: Duration,
}

/// The traces whose end states are the documents: people typing a
/// component and two essays, each ~20,000 characters.
const TRACES: [&str; 3] = [
    "sveltecomponent.json.gz",
    "friendsforever_flat.json.gz",
    "clownschool_flat.json.gz",
];

/// A document's end state: its update, its state vector (for a step1 that
/// asks for nothing back), what a client holding it answers a server's
/// step1 with (no block, its deletions) and its name.
struct TraceDoc {
    name: String,
    state: Vec<u8>,
    vector: Vec<u8>,
    step2: Vec<u8>,
}

fn trace_docs(trace: &Path) -> Result<Vec<TraceDoc>, Error> {
    let dirs = [
        trace.parent().map(Path::to_path_buf).unwrap_or_default(),
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/traces"),
    ];
    let mut found: Vec<(PathBuf, Option<usize>)> = TRACES
        .iter()
        .filter_map(|t| dirs.iter().map(|d| d.join(t)).find(|p| p.exists()))
        .map(|p| (p, None))
        .collect();
    if found.is_empty() {
        // Only automerge-paper (tests/data): its first 20,000 edits.
        found.push((trace.to_path_buf(), Some(20_000)));
    }
    let mut out = Vec::new();
    for (path, limit) in found {
        let t = load_trace(&path, limit)?;
        let doc = Doc::new();
        {
            let mut txn = doc.transact_mut();
            for frame in &t.frames {
                let update = wire::sync_payload(frame).ok_or("a trace frame without an update")?;
                txn.apply_update(Update::decode_v1(update)?)?;
            }
        }
        let txn = doc.transact();
        out.push(TraceDoc {
            name: t.name,
            state: txn.encode_state_as_update_v1(&StateVector::default()),
            vector: txn.state_vector().encode_v1(),
            step2: txn.encode_state_as_update_v1(&txn.state_vector()),
        });
    }
    Ok(out)
}

pub async fn run(servers: &Servers, p: &ManyLoaded, trace: &Path, kinds: &[Kind]) -> Result<Value, Error> {
    let started = Instant::now();
    let docs = Arc::new(trace_docs(trace)?);
    let encoded: Vec<Value> = docs
        .iter()
        .map(|d| json!({ "trace": d.name, "bytes": d.state.len() }))
        .collect();
    eprintln!("many loaded documents: {encoded:?}");
    let (gen_soft, _) = raise_own_limit();
    let mut rows = Vec::new();
    let mut restart = Value::Null;
    for &kind in kinds {
        // weft's budget of full-state encodings is per client (IP and
        // token): to weft the load generator is two clients, where 10,000
        // documents' readers are thousands. Off, like the other abuse
        // limits (servers.rs), or a restart would measure the budget.
        let extra: &[&str] = if kind == Kind::Weft {
            &["--state-encodes-per-minute", "0"]
        } else {
            &[]
        };
        let server = servers.start(kind, &format!("manyloaded-{}", kind.name()), extra, None)?;
        let (srv_soft, _) = proc_file_limits(server.pid).unwrap_or((1024, 1024));
        let fits = gen_soft.min(srv_soft).saturating_sub(p.headroom) as usize;
        let n = p.docs.min(fits);
        eprintln!(
            "many loaded documents: {}, {n} documents (asked {})",
            kind.name(),
            p.docs
        );
        let result = load_all(&server, p, n, &docs).await;
        let mut result = match result {
            Ok(r) => r,
            Err(e) => {
                server.kill();
                return Err(e);
            }
        };
        result["server"] = json!(kind.name());
        eprintln!(
            "  {} KiB per loaded document ({}× encoded), loaded in {} s, failed {}",
            result["kib_per_doc"], result["times_encoded"], result["load_s"], result["failed"]
        );
        rows.push(result);
        if kind == Kind::Weft && p.restart {
            // Two clients a document must fit the file limits too.
            let m = n.min(fits / 2);
            eprintln!("restart at scale: weft, {m} documents, {} clients at once", 2 * m);
            let server = server.restart_after("stop")?;
            let result = reconnect_all(&server, p, m, &docs).await;
            match result {
                Ok(r) => {
                    eprintln!(
                        "  all synced after {} s (first sync p99 {} ms), failed {}, refused {}, retried {}",
                        r["all_synced_s"], r["first_sync"]["p99_ms"], r["failed"], r["refused"], r["retried"]
                    );
                    restart = r;
                    restart["asked_docs"] = json!(p.docs);
                    restart["asked_clients"] = json!(2 * p.docs);
                    server.stop()?;
                }
                Err(e) => {
                    server.kill();
                    return Err(e);
                }
            }
        } else {
            server.stop()?;
        }
    }
    Ok(json!({
        "asked": p.docs,
        "documents": encoded,
        "how": "Each document is the end state of an editing trace (in turn: the three flat traces of \
                ../shared/data/traces), sent as one update by a client that joined it empty and stays \
                connected; RSS growth ÷ documents, after every document answered a step1 carrying its \
                state vector. The figure includes each document's one connection.",
        "rows": rows,
        "restart": restart,
        "scenario_s": round3(started.elapsed().as_secs_f64()),
    }))
}

/// Loads `n` documents through one client each, which stays.
async fn load_all(server: &Server, p: &ManyLoaded, n: usize, docs: &Arc<Vec<TraceDoc>>) -> Result<Value, Error> {
    let pid = server.pid;
    let target = server.target().await?.with_read_buffer(4 << 10);
    let tag = run_tag();
    sleep(p.settle).await;
    let base = stats::sample(pid).ok_or("server gone")?;
    let started = Instant::now();
    let loaded = open_many(n, p.in_flight, |i| {
        let target = target
            .clone()
            .with_source_ip(std::net::Ipv4Addr::new(127, 0, 0, 2 + (i % 2) as u8));
        let docs = docs.clone();
        let name = format!("loaded-{tag}-{i}");
        async move {
            let doc = &docs[i % docs.len()];
            Ok(load_one(&target, &name, doc).await.map_err(|e| e.to_string()))
        }
    })
    .await?;
    let load_s = started.elapsed().as_secs_f64();
    let cpu_s = stats::sample(pid).map(|s| s.cpu_s - base.cpu_s);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut errors = Vec::new();
    let mut holders = Vec::new();
    for out in loaded {
        match out {
            Ok(ws) => holders.push(tokio::spawn(hold(ws, stop_rx.clone()))),
            Err(e) => errors.push(e),
        }
    }
    sleep(p.settle).await;
    let all = stats::sample(pid).ok_or("server gone")?;
    let ok = n - errors.len();
    // weft: the same documents once they are dormant, held as their
    // encoding after --dormant-after-ms without an edit (10 s by default),
    // their clients still connected.
    let dormant = match server.kind {
        Kind::Weft => wait_dormant(server, ok, Duration::from_secs(60)).await,
        _ => None,
    };
    let _ = stop_tx.send(true);
    for h in holders {
        let _ = h.await;
    }
    let encoded = (0..n).map(|i| docs[i % docs.len()].state.len()).sum::<usize>() as f64 / n.max(1) as f64;
    let kib_per_doc = (all.rss_kib as f64 - base.rss_kib as f64) / ok.max(1) as f64;
    let kib_dormant = dormant.map(|(after, s)| (after, (s.rss_kib as f64 - base.rss_kib as f64) / ok.max(1) as f64));
    let failed = errors.len();
    errors.sort();
    errors.dedup();
    Ok(json!({
        "docs": n,
        "failed": failed,
        "errors": errors.into_iter().take(5).collect::<Vec<_>>(),
        "load_s": round3(load_s),
        "server_cpu_s": cpu_s.map(round3),
        "encoded_kib": round3(encoded / 1024.0),
        "kib_per_doc": round3(kib_per_doc),
        "times_encoded": round3(kib_per_doc * 1024.0 / encoded.max(1.0)),
        "rss_base_mib": round3(base.rss_kib as f64 / 1024.0),
        "rss_all_mib": round3(all.rss_kib as f64 / 1024.0),
        "dormant_after_s": kib_dormant.map(|(after, _)| round3(after)),
        "kib_per_doc_dormant": kib_dormant.map(|(_, kib)| round3(kib)),
        "times_encoded_dormant": kib_dormant.map(|(_, kib)| round3(kib * 1024.0 / encoded.max(1.0))),
    }))
}

/// Waits until weft holds `docs` documents dormant (`weft_documents_dormant`),
/// then samples the server: how long it took from now, and the sample.
/// `None` if they are not all dormant within `timeout`.
async fn wait_dormant(server: &Server, docs: usize, timeout: Duration) -> Option<(f64, stats::ProcSample)> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        let metrics = crate::compare::weft_metrics_all(&server.base).await;
        if metrics["documents_dormant"].as_f64().is_some_and(|d| d >= docs as f64) {
            // Let the freed memory settle as it does after the load.
            sleep(Duration::from_secs(1)).await;
            return Some((started.elapsed().as_secs_f64(), stats::sample(server.pid)?));
        }
        sleep(Duration::from_millis(250)).await;
    }
    eprintln!("  not every document went dormant within {timeout:?}");
    None
}

/// Joins `name` empty, sends the document, and waits for the answer to a
/// step1 that holds the document's state vector: the server has it.
async fn load_one(target: &Target, name: &str, doc: &TraceDoc) -> Result<Ws, Error> {
    let mut ws = target.join(name, 0).await?;
    ws.send(Message::Binary(wire::sync_frame(wire::SYNC_UPDATE, &doc.state).into()))
        .await?;
    ws.send(Message::Binary(wire::sync_frame(0, &doc.vector).into()))
        .await?;
    let wait = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(frame))) if wire::kind(&frame) == wire::Kind::Step2 => return Ok(()),
                Some(Ok(Message::Close(frame))) => return Err::<(), Error>(format!("closed: {frame:?}").into()),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Err("closed while loading".into()),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .map_err(|_| "not loaded within 60 s")??;
    Ok(ws)
}

/// Joins `name` as a y-websocket client holding the document does after a
/// reconnect: step1 with its state vector, its step2 (no block, its
/// deletions) in answer to the server's step1, synced at the server's
/// step2.
async fn rejoin(target: &Target, name: &str, nth: usize, doc: &TraceDoc) -> Result<Ws, Error> {
    let mut ws = target.connect(name, nth).await?;
    ws.send(Message::Binary(wire::sync_frame(wire::SYNC_STEP1, &doc.vector).into()))
        .await?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(frame))) => match wire::kind(&frame) {
                wire::Kind::Step1 => {
                    ws.send(Message::Binary(wire::sync_frame(wire::SYNC_STEP2, &doc.step2).into()))
                        .await?
                }
                wire::Kind::Step2 => return Ok(ws),
                _ => {}
            },
            Some(Ok(Message::Close(frame))) => return Err(format!("closed: {frame:?}").into()),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => return Err("closed before sync".into()),
        }
    }
}

async fn hold(mut ws: Ws, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => break,
            msg = ws.next() => if !matches!(msg, Some(Ok(_))) { return },
        }
    }
    let _ = ws.close(None).await;
}

/// After a restart: two clients for each of the first `m` documents, all
/// at once, each holding the document as a y-websocket client that was
/// connected before does (`rejoin`); each retries a refusal (503, 429) or
/// a join that took over 20 s after 0.5 s, until `restart_timeout`.
async fn reconnect_all(server: &Server, p: &ManyLoaded, m: usize, docs: &Arc<Vec<TraceDoc>>) -> Result<Value, Error> {
    let pid = server.pid;
    let target = server.target().await?.with_read_buffer(4 << 10);
    let tag = run_tag();
    let base = stats::sample(pid).ok_or("server gone")?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<Result<(Duration, u32, u32), String>>(2 * m + 1);
    let epoch = Instant::now();
    let timeout = p.restart_timeout;
    let mut tasks = Vec::with_capacity(2 * m);
    for i in 0..2 * m {
        let target = target
            .clone()
            .with_source_ip(std::net::Ipv4Addr::new(127, 0, 0, 2 + (i % 2) as u8));
        // The names the load phase gave (the same run tag).
        let name = format!("loaded-{tag}-{}", i % m);
        let (stop, done) = (stop_rx.clone(), done_tx.clone());
        let docs = docs.clone();
        tasks.push(tokio::spawn(async move {
            let (mut refused, mut retried) = (0u32, 0u32);
            let doc = &docs[(i % m) % docs.len()];
            loop {
                let attempt = tokio::time::timeout(Duration::from_secs(20), rejoin(&target, &name, i, doc));
                let joined = attempt.await.unwrap_or_else(|_| Err("not synced within 20 s".into()));
                match joined {
                    Ok(ws) => {
                        let _ = done.send(Ok((epoch.elapsed(), refused, retried))).await;
                        hold(ws, stop).await;
                        return;
                    }
                    Err(e) => {
                        if epoch.elapsed() > timeout {
                            let _ = done.send(Err(e.to_string())).await;
                            return;
                        }
                        // A refusal (503, 429) or a join that took over
                        // 20 s: y-websocket reconnects after at most 2.5 s.
                        if refused_status(&e).is_some() {
                            refused += 1;
                        } else {
                            retried += 1;
                        }
                        sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        }));
    }
    drop(done_tx);
    let mut hist = Histogram::default();
    let (mut refused, mut retried) = (0u64, 0u64);
    let mut errors = Vec::new();
    let mut last = Duration::ZERO;
    let deadline = epoch + timeout + Duration::from_secs(30);
    while hist.count() as usize + errors.len() < 2 * m {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, done_rx.recv()).await {
            Ok(Some(Ok((synced, r, t)))) => {
                hist.record(synced.as_micros() as u64);
                refused += u64::from(r);
                retried += u64::from(t);
                last = last.max(synced);
            }
            Ok(Some(Err(e))) => errors.push(e),
            Ok(None) | Err(_) => break,
        }
    }
    let synced = hist.count() as usize;
    let cpu_s = stats::sample(pid).map(|s| round3(s.cpu_s - base.cpu_s));
    sleep(p.settle).await;
    let all = stats::sample(pid).ok_or("server gone")?;
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    let failed = 2 * m - synced;
    errors.sort();
    errors.dedup();
    Ok(json!({
        "docs": m,
        "clients": 2 * m,
        "synced": synced,
        "failed": failed,
        "errors": errors.into_iter().take(5).collect::<Vec<_>>(),
        "refused": refused,
        "retried": retried,
        "all_synced_s": round3(last.as_secs_f64()),
        "first_sync": hist.summary_ms(),
        "server_cpu_s": cpu_s,
        "rss_started_mib": round3(base.rss_kib as f64 / 1024.0),
        "rss_all_mib": round3(all.rss_kib as f64 / 1024.0),
        "kib_per_doc_from_store": round3((all.rss_kib as f64 - base.rss_kib as f64) / m.max(1) as f64),
    }))
}
