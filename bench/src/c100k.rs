//! C100K (issue 17, scenario 1): many WebSocket connections over documents
//! at `per_doc` a document, opened at a fixed rate, then 1% of them (the
//! first connection of every tenth document) writing one edit a second
//! while the rest read. Measured: the connection rate reached, delivery
//! latency (send to arrival at each other client of the document), the
//! server's RSS per connection and CPU, and every error.
//!
//! The size asked for (100,000) is often more than the machine allows: a
//! connection is a descriptor in the server and one in this process, and
//! neither can raise its soft limit past its hard limit without
//! `CAP_SYS_RESOURCE`. The scenario then runs at the largest size both
//! limits allow, less headroom for each process's own files, and says so
//! in its result (`capped_by`), which the report prints.
//!
//! The connections are spread over loopback source addresses 127.0.0.2,
//! 127.0.0.3, ... so that no address runs out of ephemeral ports.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::{sleep, sleep_until};
use tokio_tungstenite::tungstenite::Message;

use crate::conn::Error;
use crate::load::{run_tag, stopped, LOST_MS};
use crate::servers::{Kind, Server, Servers};
use crate::stats::{self, micros_since, round3, CpuMeter, Histogram};
use crate::wire::{self, Appender, Mark};

/// Sizes of the scenario.
#[derive(Clone, Debug)]
pub struct C100k {
    /// Connections asked for; fewer when the file limits do not allow it.
    pub connections: usize,
    pub per_doc: usize,
    /// Connections opened per second (the schedule; what is reached is measured).
    pub rate: f64,
    /// At most this many connections being opened at once.
    pub in_flight: usize,
    /// Descriptors left to each process for its own files (database,
    /// listener, runtime, the generator's /proc reads).
    pub headroom: u64,
    pub warmup: Duration,
    pub measure: Duration,
    /// Pause before each RSS sample.
    pub settle: Duration,
}

/// Edits a second per writer.
const EDIT_RATE: f64 = 1.0;
/// One writer per this many documents (its first connection): with 10 a
/// document, 1% of the connections.
const WRITER_EVERY: usize = 10;

/// This process's open-file limits (soft, hard) after raising the soft one
/// to the hard one.
pub fn raise_own_limit() -> (u64, u64) {
    #[repr(C)]
    struct Rlimit {
        cur: u64,
        max: u64,
    }
    extern "C" {
        fn getrlimit(resource: i32, rlim: *mut Rlimit) -> i32;
        fn setrlimit(resource: i32, rlim: *const Rlimit) -> i32;
    }
    const RLIMIT_NOFILE: i32 = 7;
    let mut l = Rlimit { cur: 0, max: 0 };
    // SAFETY: both calls only read or write the struct on this stack frame.
    unsafe {
        if getrlimit(RLIMIT_NOFILE, &mut l) != 0 {
            return (1024, 1024);
        }
        if l.cur < l.max {
            let raised = Rlimit { cur: l.max, max: l.max };
            if setrlimit(RLIMIT_NOFILE, &raised) == 0 {
                l.cur = l.max;
            }
        }
    }
    (l.cur, l.max)
}

/// A process's open-file limits from `/proc/PID/limits` (soft, hard);
/// `u64::MAX` for unlimited.
pub fn proc_file_limits(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let mut f = line["Max open files".len()..].split_whitespace();
    let parse = |s: Option<&str>| s.map(|s| s.parse().unwrap_or(u64::MAX));
    Some((parse(f.next())?, parse(f.next())?))
}

/// Whether this process may raise its hard limits (`CAP_SYS_RESOURCE`,
/// bit 24 of the effective capabilities).
fn has_cap_sys_resource() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << 24) != 0)
}

/// The size that fits: `asked`, or less, in whole groups of writer
/// documents (`per_doc × WRITER_EVERY` connections); and what capped it.
fn fit(asked: usize, per_doc: usize, generator: u64, server: u64, headroom: u64) -> (usize, Option<&'static str>) {
    let unit = per_doc * WRITER_EVERY;
    let gen_room = generator.saturating_sub(headroom) as usize;
    let server_room = server.saturating_sub(headroom) as usize;
    let fits = asked.min(gen_room).min(server_room);
    let n = (fits / unit * unit).max(unit);
    let by = if n >= asked {
        None
    } else if server_room <= gen_room {
        Some("server")
    } else {
        Some("generator")
    };
    (n, by)
}

/// What every connection adds to.
#[derive(Default)]
struct Shared {
    hist: Mutex<Histogram>,
    counted: AtomicU64,
    sent_in_window: AtomicU64,
    connected: AtomicU64,
    connect_hist: Mutex<Histogram>,
    connect_errors: Mutex<Vec<String>>,
    disconnects: AtomicU64,
}

pub async fn run(servers: &Servers, p: &C100k, kinds: &[Kind]) -> Result<Value, Error> {
    let started = Instant::now();
    let (gen_soft, gen_hard) = raise_own_limit();
    let mut rows = Vec::new();
    for &kind in kinds {
        let server = servers.start(kind, &format!("c100k-{}", kind.name()), &[], None)?;
        // weft raises its own soft limit; Node keeps the one it inherited.
        let (srv_soft, srv_hard) = proc_file_limits(server.pid).unwrap_or((1024, 1024));
        let (n, capped_by) = fit(p.connections, p.per_doc, gen_soft, srv_soft, p.headroom);
        eprintln!(
            "c100k: {}, {n} connections over {} documents (asked {}; files: server {srv_soft}/{srv_hard}, generator {gen_soft}/{gen_hard})",
            kind.name(),
            n / p.per_doc,
            p.connections
        );
        let result = run_once(&server, p, n).await;
        let mut result = match result {
            Ok(r) => r,
            Err(e) => {
                server.kill();
                return Err(e);
            }
        };
        server.stop()?;
        result["server"] = json!(kind.name());
        result["asked"] = json!(p.connections);
        result["capped_by"] = json!(capped_by);
        result["server_files"] = json!({ "soft": srv_soft, "hard": srv_hard });
        eprintln!(
            "  {}/{} connected at {} /s, p50 {} ms p99 {} ms max {} ms, {} KiB per connection, \
             CPU {} (connecting {}), connect errors {}, missing {}, disconnects {}",
            result["connected"],
            n,
            result["connect_rate_s"],
            result["latency"]["p50_ms"],
            result["latency"]["p99_ms"],
            result["latency"]["max_ms"],
            result["kib_per_connection"],
            result["server_cpu"],
            result["connect_server_cpu"],
            result["connect_errors"],
            result["missing"],
            result["disconnects"]
        );
        rows.push(result);
    }
    Ok(json!({
        "asked": p.connections,
        "per_doc": p.per_doc,
        "writers_share": 1.0 / (p.per_doc * WRITER_EVERY) as f64,
        "edit_rate": EDIT_RATE,
        "rate_target_s": p.rate,
        "generator_files": { "soft": gen_soft, "hard": gen_hard },
        "cap_sys_resource": has_cap_sys_resource(),
        "headroom": p.headroom,
        "rows": rows,
        "scenario_s": round3(started.elapsed().as_secs_f64()),
    }))
}

async fn run_once(server: &Server, p: &C100k, n: usize) -> Result<Value, Error> {
    let pid = server.pid;
    let target = server.target().await?.with_read_buffer(4 << 10);
    let docs = n / p.per_doc;
    // ~20,000 connections per source address: the ephemeral range is ~28,000.
    let sources = n.div_ceil(20_000).max(2);
    let tag = run_tag();
    let shared = Arc::new(Shared::default());
    let (go_tx, go_rx) = watch::channel(None::<Instant>);
    let (stop_tx, stop_rx) = watch::channel(false);
    let window = |go: Instant| (go + p.warmup, go + p.warmup + p.measure);

    sleep(p.settle).await;
    let base = stats::sample(pid).ok_or("server gone")?;
    let mut tasks = Vec::with_capacity(n);
    let permits = Arc::new(tokio::sync::Semaphore::new(p.in_flight.max(1)));
    let mut phase_s = 0.0;
    let mut connect_cpu = 0.0;
    let mut one_each = base;
    // Phase one: a connection per document; phase two: the rest.
    for (from, to) in [(0, docs), (docs, n)] {
        let epoch = Instant::now();
        let cpu_before = stats::sample(pid);
        for i in from..to {
            let at = epoch + Duration::from_secs_f64((i - from) as f64 / p.rate);
            sleep_until(at.into()).await;
            let permit = permits.clone().acquire_owned().await?;
            let (doc, slot) = (i % docs, i / docs);
            let writer = slot == 0 && doc.is_multiple_of(WRITER_EVERY);
            let source = Ipv4Addr::new(127, 0, 0, 2 + (i % sources) as u8);
            let target = target.clone().with_source_ip(source);
            let name = format!("c100k-{tag}-{doc}");
            let shared = shared.clone();
            let (go, stop) = (go_rx.clone(), stop_rx.clone());
            let measure = (p.warmup, p.measure);
            tasks.push(tokio::spawn(async move {
                let began = Instant::now();
                let ws = target.join(&name, i).await;
                drop(permit);
                let ws = match ws {
                    Ok(ws) => ws,
                    Err(e) => {
                        let mut errors = shared.connect_errors.lock().unwrap();
                        if errors.len() < 1000 {
                            errors.push(e.to_string());
                        }
                        return;
                    }
                };
                shared
                    .connect_hist
                    .lock()
                    .unwrap()
                    .record(began.elapsed().as_micros() as u64);
                shared.connected.fetch_add(1, Relaxed);
                let writer = writer.then_some((doc / WRITER_EVERY) as u64);
                hold(ws, i as u64, writer, measure, go, stop, &shared).await;
            }));
        }
        // Every connection of the phase opened (or failed).
        while (shared.connected.load(Relaxed) as usize + shared.connect_errors.lock().unwrap().len()) < to {
            sleep(Duration::from_millis(10)).await;
        }
        phase_s += epoch.elapsed().as_secs_f64();
        if let (Some(a), Some(b)) = (cpu_before, stats::sample(pid)) {
            connect_cpu += b.cpu_s - a.cpu_s;
        }
        sleep(p.settle).await;
        if from == 0 {
            one_each = stats::sample(pid).ok_or("server gone")?;
        }
    }
    let all = stats::sample(pid).ok_or("server gone")?;
    let connected = shared.connected.load(Relaxed) as usize;

    let go = Instant::now();
    let _ = go_tx.send(Some(go));
    let (from, to) = window(go);
    sleep_until(from.into()).await;
    let meter = CpuMeter::start(Some(pid));
    sleep_until(to.into()).await;
    let usage = meter.finish();
    let expected = shared.sent_in_window.load(Relaxed) * (p.per_doc as u64 - 1);
    let drain_until = Instant::now() + Duration::from_millis(1500);
    while shared.counted.load(Relaxed) < expected && Instant::now() < drain_until {
        sleep(Duration::from_millis(5)).await;
    }
    let rss_end = stats::sample(pid).map_or(0, |s| s.rss_kib);
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    let counted = shared.counted.load(Relaxed);
    let missing = expected.saturating_sub(counted);
    let mut hist = shared.hist.lock().unwrap().clone();
    hist.record_n(LOST_MS * 1000, missing);
    let mut errors = shared.connect_errors.lock().unwrap().clone();
    let connect_errors = errors.len();
    errors.sort();
    errors.dedup();
    let extra = connected.saturating_sub(docs).max(1);
    let kib = |a: &stats::ProcSample, b: &stats::ProcSample| b.rss_kib as f64 - a.rss_kib as f64;
    let mut out = json!({
        "connections": n,
        "docs": docs,
        "writers": docs / WRITER_EVERY,
        "connected": connected,
        "connect_errors": connect_errors,
        "connect_error_kinds": errors.into_iter().take(5).collect::<Vec<_>>(),
        "connect_s": round3(phase_s),
        "connect_rate_s": round3(n as f64 / phase_s.max(1e-6)),
        "connect_time": shared.connect_hist.lock().unwrap().summary_ms(),
        "connect_server_cpu": round3(connect_cpu / phase_s.max(1e-6)),
        "deliveries_s": round3(counted as f64 / p.measure.as_secs_f64()),
        "expected": expected,
        "missing": missing,
        "disconnects": shared.disconnects.load(Relaxed),
        "latency": hist.summary_ms(),
        "rss_base_mib": round3(base.rss_kib as f64 / 1024.0),
        "rss_one_per_doc_mib": round3(one_each.rss_kib as f64 / 1024.0),
        "rss_all_mib": round3(all.rss_kib as f64 / 1024.0),
        "rss_end_mib": round3(rss_end as f64 / 1024.0),
        "kib_per_connection": round3(kib(&one_each, &all) / extra as f64),
        "kib_per_connection_all": round3(kib(&base, &all) / connected.max(1) as f64),
        "kib_per_document": round3(kib(&base, &one_each) / docs as f64 - kib(&one_each, &all) / extra as f64),
    });
    if let (Some(o), Value::Object(u)) = (out.as_object_mut(), usage) {
        o.extend(u);
    }
    Ok(out)
}

/// One connection after its sync: reads until told to stop, recording the
/// marked updates of other writers that were sent in the window; a writer
/// (given its index, the first digits of its marks) also sends one edit a
/// second from `go`.
async fn hold(
    mut ws: crate::conn::Ws,
    me: u64,
    writer: Option<u64>,
    (warmup, measure): (Duration, Duration),
    mut go: watch::Receiver<Option<Instant>>,
    mut stop: watch::Receiver<bool>,
    shared: &Shared,
) {
    let period = Duration::from_secs_f64(1.0 / EDIT_RATE);
    let mut appender = Appender::new(1000 + me);
    let mut epoch: Option<Instant> = None;
    let mut next = None;
    let mut k = 0u64;
    loop {
        let wake = next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            biased;
            _ = stopped(&mut stop) => break,
            changed = go.changed(), if epoch.is_none() => {
                if changed.is_err() { break }
                if let Some(at) = *go.borrow() {
                    epoch = Some(at);
                    // Writers' phases spread over one period.
                    next = writer.map(|_| at + period.mul_f64((me % 997) as f64 / 997.0));
                }
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Binary(frame))) => {
                    let Some(epoch) = epoch else { continue };
                    let now = micros_since(epoch);
                    let from = warmup.as_micros() as u64;
                    let to = from + measure.as_micros() as u64;
                    for mark in wire::frame_marks(&frame) {
                        let own = writer.is_some_and(|w| mark.seq / 10_000 == w);
                        if !own && (from..to).contains(&mark.micros) {
                            shared.hist.lock().unwrap().record(now.saturating_sub(mark.micros));
                            shared.counted.fetch_add(1, Relaxed);
                        }
                    }
                }
                Some(Ok(_)) => {}
                _ => {
                    shared.disconnects.fetch_add(1, Relaxed);
                    return;
                }
            },
            _ = sleep_until(wake.into()), if next.is_some() => {
                let epoch = epoch.unwrap_or_else(Instant::now);
                let w = writer.unwrap_or_default();
                // A mark's sequence has 8 digits: 10,000 writers of 10,000 edits.
                let mark = Mark { seq: w * 10_000 + k % 10_000, micros: micros_since(epoch) };
                let from = warmup.as_micros() as u64;
                if (from..from + measure.as_micros() as u64).contains(&mark.micros) {
                    shared.sent_in_window.fetch_add(1, Relaxed);
                }
                if ws.send(Message::Binary(appender.frame(mark).into())).await.is_err() {
                    shared.disconnects.fetch_add(1, Relaxed);
                    return;
                }
                k += 1;
                next = next.map(|t| t + period);
            }
        }
    }
    let _ = ws.close(None).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_size_fits_both_limits_in_whole_groups() {
        assert_eq!(fit(100_000, 10, 20_000, 20_000, 256), (19_700, Some("server")));
        assert_eq!(fit(100_000, 10, 20_000, 1_000_000, 256), (19_700, Some("generator")));
        assert_eq!(fit(2_000, 10, 20_000, 20_000, 256), (2_000, None));
    }
}
