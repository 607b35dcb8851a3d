//! The Hocuspocus scenarios (issue 15): weft's `/hocuspocus` beside
//! `@hocuspocus/server` with its SQLite extension, driven by the same load
//! generator speaking the Hocuspocus protocol (see conn.rs).
//!
//! - fan-out and many documents: the y-websocket scenarios of load.rs, as
//!   they are measured there, over the other protocol;
//! - crash: a writer sends edits, counts those the server acknowledged
//!   (SyncStatus `8 · 1`), the server is SIGKILLed right after the last
//!   acknowledgement (or a deadline), restarted on the same database, and a
//!   fresh client counts which acknowledged edits are missing.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::conn::{Error, Target, Ws, HOCUS_SYNC_STATUS, SYNC_TIMEOUT};
use crate::load::{self, FanoutSearch, ManyDocs};
use crate::servers::{Kind, Server, Servers};
use crate::stats::{micros_since, round3};
use crate::wire::{self, Appender, Mark};

/// Sizes of the Hocuspocus scenarios.
#[derive(Clone, Debug)]
pub struct HocusPlan {
    pub fanout_readers: Vec<usize>,
    /// The search's bounds; it starts lower than the y-websocket one, where
    /// @hocuspocus/server passes.
    pub fanout: FanoutSearch,
    pub many: ManyDocs,
    /// Edits the crash writer sends, and how many per second.
    pub crash_edits: u64,
    pub crash_rate: f64,
    /// How long the writer waits for the last acknowledgement.
    pub crash_ack_wait: Duration,
}

impl HocusPlan {
    /// `--quick` for CI, the default for the record.
    pub fn new(quick: bool) -> Self {
        let ms = Duration::from_millis;
        let (readers, max_deliveries, refine, max_trials, warmup, measure) = if quick {
            (vec![32], 4_000_000.0, 0, 8, ms(200), ms(600))
        } else {
            (vec![32, 256], 8_000_000.0, 2, 16, ms(500), ms(2000))
        };
        HocusPlan {
            fanout_readers: readers,
            fanout: FanoutSearch {
                readers: 0,
                start_deliveries: 5_000.0,
                max_deliveries,
                refine,
                max_trials,
                warmup,
                measure,
                p99_limit_ms: 50.0,
            },
            many: ManyDocs {
                docs: if quick { 50 } else { 1000 },
                clients: 4,
                rate: 1.0,
                warmup: if quick { ms(1000) } else { ms(3000) },
                measure: if quick { ms(2000) } else { ms(20_000) },
            },
            crash_edits: if quick { 200 } else { 2000 },
            crash_rate: if quick { 200.0 } else { 500.0 },
            crash_ack_wait: if quick { ms(3000) } else { ms(5000) },
        }
    }
}

const KINDS: [Kind; 2] = [Kind::Weft, Kind::Hocuspocus];

async fn hocus_target(server: &Server) -> Result<Target, Error> {
    Ok(server.target().await?.with_hocuspocus())
}

/// Fan-out, many documents and crash, on weft and `@hocuspocus/server`.
pub async fn run(servers: &Servers, plan: &HocusPlan) -> Result<Value, Error> {
    let mut fanout = Vec::new();
    for &readers in &plan.fanout_readers {
        for kind in KINDS {
            eprintln!("hocuspocus fanout: {} with {readers} readers", kind.name());
            let server = servers.start(kind, &format!("hocus-fanout-{}-{readers}", kind.name()), &[], None)?;
            let target = hocus_target(&server).await?;
            let search = FanoutSearch {
                readers,
                ..plan.fanout.clone()
            };
            let label = format!("hocus-{}", kind.name());
            let result = load::fanout_search(&target, Some(server.pid), &search, &label).await;
            fanout.push(tagged(server, kind, result)?);
        }
    }
    let mut many = Vec::new();
    for kind in KINDS {
        eprintln!("hocuspocus many documents: {}", kind.name());
        let server = servers.start(kind, &format!("hocus-many-{}", kind.name()), &[], None)?;
        let target = hocus_target(&server).await?.with_sources(2);
        let result = load::many_docs(&target, Some(server.pid), &plan.many).await;
        let row = tagged(server, kind, result)?;
        eprintln!(
            "  p50 {} ms p99 {} ms, {} deliveries/s, missing {}, server CPU {}",
            row["latency"]["p50_ms"], row["latency"]["p99_ms"], row["deliveries_s"], row["missing"], row["server_cpu"]
        );
        many.push(row);
    }
    let mut crash = Vec::new();
    for kind in KINDS {
        eprintln!("hocuspocus crash: {}", kind.name());
        let server = servers.start(kind, &format!("hocus-crash-{}", kind.name()), &[], None)?;
        let mut row = crash_run(server, plan).await?;
        eprintln!(
            "  {} sent, {} acknowledged, {} acknowledged edits lost after SIGKILL",
            row["sent"], row["acknowledged"], row["lost_acknowledged"]
        );
        row["server"] = json!(kind.name());
        crash.push(row);
    }
    Ok(json!({ "fanout": fanout, "manydocs": many, "crash": crash }))
}

/// Stops the server, then gives its result tagged with the server.
/// @hocuspocus/server gets SIGKILL: on SIGTERM it stores every document and
/// closes every socket first, which took over 20 s after the many-documents
/// scenario; nothing measured here depends on that shutdown.
fn tagged(server: Server, kind: Kind, result: Result<Value, Error>) -> Result<Value, Error> {
    match kind {
        Kind::Hocuspocus => server.kill(),
        _ => server.stop()?,
    }
    let mut result = result?;
    result["server"] = json!(kind.name());
    Ok(result)
}

/// One crash: send, count acknowledgements, SIGKILL, restart, count losses.
async fn crash_run(server: Server, plan: &HocusPlan) -> Result<Value, Error> {
    let doc = format!("crash-{}", load::run_tag());
    let target = hocus_target(&server).await?;
    // No sync: a fresh client on a new document appends from clock 0, and
    // without a step2 of its own every acknowledgement is one of an edit.
    let mut ws = target.connect(&doc, 0).await?;
    let epoch = Instant::now();
    let period = Duration::from_secs_f64(1.0 / plan.crash_rate);
    let mut appender = Appender::new(7);
    let (mut sent, mut acked, mut refused) = (0u64, 0u64, 0u64);
    let mut next = epoch;
    let ack_deadline = |sent_all: Instant| sent_all + plan.crash_ack_wait;
    let mut sent_all: Option<Instant> = None;
    loop {
        if sent_all.is_some_and(|t| Instant::now() > ack_deadline(t)) || (sent_all.is_some() && acked >= sent) {
            break;
        }
        let sending = sent < plan.crash_edits;
        let wake = sent_all.map_or(next, ack_deadline);
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()), if sending => {
                let mark = Mark { seq: sent, micros: micros_since(epoch) };
                ws.send(Message::Binary(appender.frame(mark).into())).await?;
                sent += 1;
                next += period;
                if sent == plan.crash_edits {
                    sent_all = Some(Instant::now());
                }
            }
            _ = tokio::time::sleep_until(wake.into()), if !sending => {}
            msg = ws.next() => match msg {
                Some(Ok(Message::Binary(frame))) => match frame.as_ref() {
                    [t, 1, ..] if u64::from(*t) == HOCUS_SYNC_STATUS => acked += 1,
                    [t, 0, ..] if u64::from(*t) == HOCUS_SYNC_STATUS => refused += 1,
                    _ => {}
                },
                Some(Ok(_)) => {}
                _ => return Err(format!("{}: the writer's connection ended", server.kind.name()).into()),
            },
        }
    }
    let send_s = sent_all.map_or(0.0, |t| (t - epoch).as_secs_f64());
    let acked_after_s = epoch.elapsed().as_secs_f64();
    // Acknowledgements come in the order the edits were sent: the first
    // `acked` edits are the acknowledged ones.
    let server = server.restart_after("kill")?;
    drop(ws);
    let target = hocus_target(&server).await?;
    let stored = stored_marks(&target, &doc).await;
    if server.kind == Kind::Hocuspocus {
        server.kill();
    } else {
        server.stop()?;
    }
    let stored = stored?;
    let lost = (0..acked).filter(|seq| !stored.contains(seq)).count();
    Ok(json!({
        "sent": sent,
        "acknowledged": acked,
        "refused": refused,
        "send_s": round3(send_s),
        "killed_after_s": round3(acked_after_s),
        "stored_after_restart": stored.len(),
        "lost_acknowledged": lost,
    }))
}

/// The marks (sequence numbers) in a document as a fresh client syncs it.
async fn stored_marks(target: &Target, doc: &str) -> Result<HashSet<u64>, Error> {
    let attempt = async {
        let mut ws: Ws = target.connect(doc, 0).await?;
        ws.send(Message::Binary(wire::empty_step1().into())).await?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(frame))) if wire::kind(&frame) == wire::Kind::Step2 => {
                    let update = wire::sync_payload(&frame).ok_or("a step2 without an update")?;
                    let _ = ws.close(None).await;
                    return Ok::<_, Error>(wire::all_marks(update).map(|m| m.seq).collect());
                }
                Some(Ok(_)) => {}
                _ => return Err("closed before the document arrived".into()),
            }
        }
    };
    tokio::time::timeout(SYNC_TIMEOUT, attempt)
        .await
        .map_err(|_| format!("syncing {doc} after the restart took over {SYNC_TIMEOUT:?}"))?
}
