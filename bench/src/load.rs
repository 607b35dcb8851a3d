//! The load scenarios that measure latency with marked updates: fan-out,
//! many documents, durable writes; and idle connections (memory).
//!
//! Each scenario drives any y-websocket server at a [`Target`]; given the
//! server's pid it also reads the server's CPU time and RSS from `/proc`.
//! Latency is measured on the load generator's one clock: from the time an
//! update was *scheduled* to be sent (open loop: a writer that falls behind
//! shows up as latency, not as a slower offered rate) to its arrival at a
//! reader. Updates that never arrive count as [`LOST_MS`] late.
//!
//! Over 500 lines on purpose: the four scenarios share the marked-update
//! machinery at the top (tallies, draining, readers), and keeping them in
//! one file keeps them measured the same way.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::{sleep, sleep_until};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::conn::{open_many, Error, Target, Ws};
use crate::stats::{self, micros_since, round3, CpuMeter, Histogram};
use crate::wire::{self, Appender, Mark};

/// The latency an update that never arrived is counted with.
pub const LOST_MS: u64 = 10_000;
/// How long readers wait for the last updates after the writers stopped.
const DRAIN: Duration = Duration::from_millis(1500);

/// The measured window, in µs since a run's epoch: `measure` long, after
/// the warm-up.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub from_us: u64,
    pub to_us: u64,
}

impl Window {
    pub fn new(warmup: Duration, measure: Duration) -> Self {
        let from_us = warmup.as_micros() as u64;
        Self {
            from_us,
            to_us: from_us + measure.as_micros() as u64,
        }
    }

    pub fn contains(&self, micros: u64) -> bool {
        (self.from_us..self.to_us).contains(&micros)
    }
}

/// A reader's findings.
#[derive(Default)]
struct Tally {
    hist: Histogram,
    counted: u64,
    disconnected: bool,
}

/// Every reader's tally together.
#[derive(Default)]
struct Totals {
    hist: Histogram,
    counted: u64,
    disconnects: u64,
}

impl Totals {
    /// Waits for the readers and adds up what they found.
    async fn gather(readers: Vec<JoinHandle<Tally>>) -> Result<Self, Error> {
        let mut totals = Self::default();
        for reader in readers {
            let tally = reader.await?;
            totals.hist.merge(&tally.hist);
            totals.counted += tally.counted;
            totals.disconnects += u64::from(tally.disconnected);
        }
        Ok(totals)
    }

    /// How many of `expected` deliveries were never counted; each is
    /// recorded as [`LOST_MS`] late.
    fn missing(&mut self, expected: u64) -> u64 {
        let missing = expected.saturating_sub(self.counted);
        self.hist.record_n(LOST_MS * 1000, missing);
        missing
    }
}

impl Tally {
    /// Takes one read off a socket: records the latency of a marked update
    /// that `counts` accepts (given the mark and the time it arrived, in µs
    /// since `epoch`). `false` once the connection is gone.
    fn read(
        &mut self,
        msg: Option<Result<Message, WsError>>,
        epoch: Instant,
        counter: &AtomicU64,
        counts: &mut impl FnMut(&Mark, u64) -> bool,
    ) -> bool {
        match msg {
            Some(Ok(Message::Binary(frame))) => {
                // Every mark: a server may merge updates into one frame
                // (@hocuspocus/server batches its broadcasts).
                let now = micros_since(epoch);
                for mark in wire::frame_marks(&frame) {
                    if counts(&mark, now) {
                        self.hist.record(now.saturating_sub(mark.micros));
                        self.counted += 1;
                        counter.fetch_add(1, Relaxed);
                    }
                }
                true
            }
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                self.disconnected = true;
                false
            }
            Some(Ok(_)) => true,
        }
    }
}

/// Reads frames until `stop`, recording the latency of every marked update
/// that `counts` accepts (given the mark and the time it arrived, in µs
/// since `epoch`): the measurement window, own echoes left out.
async fn read_marks(
    mut ws: Ws,
    epoch: Instant,
    mut stop: watch::Receiver<bool>,
    counter: Arc<AtomicU64>,
    mut counts: impl FnMut(&Mark, u64) -> bool,
) -> Tally {
    let mut tally = Tally::default();
    loop {
        tokio::select! {
            biased;
            _ = stopped(&mut stop) => break,
            msg = ws.next() => if !tally.read(msg, epoch, &counter, &mut counts) {
                break;
            }
        }
    }
    let _ = ws.close(None).await;
    tally
}

/// Resolves once `stop` turns true (or its sender is gone).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Waits until `counter` reaches `expected` or `DRAIN` passed.
async fn drain(counter: &AtomicU64, expected: u64) {
    let deadline = Instant::now() + DRAIN;
    while counter.load(Relaxed) < expected && Instant::now() < deadline {
        sleep(Duration::from_millis(5)).await;
    }
}

/// Parameters of one fan-out trial.
#[derive(Clone, Debug)]
pub struct FanoutTrial {
    pub readers: usize,
    /// Updates per second the one writer sends.
    pub rate: f64,
    pub warmup: Duration,
    pub measure: Duration,
}

/// One document, one writer at a fixed rate, `readers` readers.
pub async fn fanout_trial(target: &Target, pid: Option<u32>, doc: &str, p: &FanoutTrial) -> Result<Value, Error> {
    let spread = Spread {
        writer: target,
        readers: std::slice::from_ref(target),
        watched: &[],
    };
    fanout_spread(&spread, pid, doc, p).await
}

/// Where a fan-out trial's clients connect: the writer to one server, the
/// readers spread round-robin over others (the nodes of a cluster); and
/// other processes whose CPU time the trial reads (`cpu_s` in its result,
/// in the order given), beside the one `pid` it reports as `server_cpu`.
pub struct Spread<'a> {
    pub writer: &'a Target,
    pub readers: &'a [Target],
    pub watched: &'a [u32],
}

/// [`fanout_trial`] with its clients spread as `spread` says. Its result
/// also has `sent` (every update the writer sent, warm-up included) and
/// `span_s`, the time over which CPU was read (from the first send to the
/// last update drained): CPU per update is `cpu_s / sent`.
pub async fn fanout_spread(spread: &Spread<'_>, pid: Option<u32>, doc: &str, p: &FanoutTrial) -> Result<Value, Error> {
    let targets = spread.readers;
    if targets.is_empty() {
        return Err("a fan-out trial needs somewhere to put its readers".into());
    }
    let readers = open_many(p.readers, 64, |i| {
        let target = targets[i % targets.len()].clone();
        let doc = doc.to_string();
        async move { target.join(&doc, i).await }
    })
    .await?;
    let mut writer = spread.writer.join(doc, p.readers).await?;

    let epoch = Instant::now();
    let window = Window::new(p.warmup, p.measure);
    let (stop_tx, stop_rx) = watch::channel(false);
    let counter = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = readers
        .into_iter()
        .map(|ws| {
            tokio::spawn(read_marks(
                ws,
                epoch,
                stop_rx.clone(),
                counter.clone(),
                move |mark, _| window.contains(mark.micros),
            ))
        })
        .collect();

    let meter = CpuMeter::start(pid);
    let watched_before: Vec<_> = spread.watched.iter().map(|&w| stats::sample(w)).collect();
    let total = ((window.to_us as f64 / 1e6) * p.rate).ceil() as u64;
    let scheduled = |seq: u64| (seq as f64 * 1e6 / p.rate) as u64;
    let mut appender = Appender::new(1);
    let mut seq = 0u64;
    let mut in_window = 0u64;
    let mut writer_error = None;
    'send: while seq < total {
        let now = micros_since(epoch);
        let mut fed = 0;
        while seq < total && scheduled(seq) <= now && fed < 4096 {
            let micros = scheduled(seq);
            if window.contains(micros) {
                in_window += 1;
            }
            let frame = appender.frame(Mark { seq, micros });
            if let Err(e) = writer.feed(Message::Binary(frame.into())).await {
                writer_error = Some(e.to_string());
                break 'send;
            }
            seq += 1;
            fed += 1;
        }
        if let Err(e) = writer.flush().await {
            writer_error = Some(e.to_string());
            break;
        }
        if fed == 4096 {
            continue;
        }
        let next = epoch + Duration::from_micros(scheduled(seq));
        // Drain what the server sends the writer (the reference server echoes
        // every update to its sender) while waiting for the next send.
        tokio::select! {
            _ = sleep_until(next.into()) => {}
            msg = writer.next() => if !matches!(msg, Some(Ok(_))) {
                writer_error = Some("the writer's connection ended".into());
                break;
            }
        }
    }
    let expected = in_window * p.readers as u64;
    drain(&counter, expected).await;
    let usage = meter.finish();
    let watched_cpu: Vec<Value> = spread
        .watched
        .iter()
        .zip(&watched_before)
        .map(|(&w, before)| match (before, stats::sample(w)) {
            (Some(a), Some(b)) => json!(round3(b.cpu_s - a.cpu_s)),
            _ => Value::Null,
        })
        .collect();
    let span_s = epoch.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    let mut totals = Totals::gather(tasks).await?;
    let _ = writer.close(None).await;
    let missing = totals.missing(expected);
    let measure = p.measure.as_secs_f64();
    let mut out = json!({
        "readers": p.readers,
        "offered_updates_s": round3(p.rate),
        "offered_deliveries_s": round3(p.rate * p.readers as f64),
        "delivered_s": round3(totals.counted as f64 / measure),
        "sent_in_window": in_window,
        "missing": missing,
        "disconnects": totals.disconnects,
        "writer_error": writer_error,
        "latency": totals.hist.summary_ms(),
        "sent": seq,
        "span_s": round3(span_s),
    });
    if !spread.watched.is_empty() {
        out["cpu_s"] = json!(watched_cpu);
    }
    merge(&mut out, usage);
    Ok(out)
}

/// A tag that makes this run's document names new to a server that served
/// earlier runs: a generated update sent twice changes nothing, and servers
/// that skip such updates would relay nothing.
pub fn run_tag() -> String {
    use std::sync::OnceLock;
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!(
            "{:x}",
            (nanos as u64 ^ u64::from(std::process::id()) << 40) & 0xff_ffff_ffff
        )
    })
    .clone()
}

/// A latency scenario's figures, followed by what each of them reports: the
/// readers' disconnects, the latency summary and the CPU usage.
fn with_readers(mut out: Value, totals: &Totals, usage: Value) -> Value {
    out["disconnects"] = json!(totals.disconnects);
    out["latency"] = totals.hist.summary_ms();
    merge(&mut out, usage);
    out
}

fn merge(into: &mut Value, from: Value) {
    if let (Some(a), Value::Object(b)) = (into.as_object_mut(), from) {
        a.extend(b);
    }
}

fn p99_ms(trial: &Value) -> f64 {
    trial["latency"]["p99_ms"].as_f64().unwrap_or(f64::INFINITY)
}

/// Bounds of a fan-out search.
#[derive(Clone, Debug)]
pub struct FanoutSearch {
    pub readers: usize,
    /// First offered delivery rate (updates/s × readers).
    pub start_deliveries: f64,
    pub max_deliveries: f64,
    /// Bisection steps after the first failing rate.
    pub refine: usize,
    pub max_trials: usize,
    pub warmup: Duration,
    pub measure: Duration,
    pub p99_limit_ms: f64,
}

/// The highest delivered updates/s with p99 ≤ the limit: doubles the offered
/// rate until a trial fails, then bisects (geometrically) between the last
/// pass and the first failure. Every trial runs on a fresh document.
pub async fn fanout_search(target: &Target, pid: Option<u32>, s: &FanoutSearch, label: &str) -> Result<Value, Error> {
    let mut trials = Vec::new();
    let mut pass: Option<f64> = None;
    let mut fail: Option<f64> = None;
    let mut best: Option<Value> = None;
    let mut rate = s.start_deliveries;
    let mut refined = 0;
    let mut stopped_by = "max_trials";
    while trials.len() < s.max_trials {
        let p = FanoutTrial {
            readers: s.readers,
            rate: rate / s.readers as f64,
            warmup: s.warmup,
            measure: s.measure,
        };
        let passes = |t: &Value| p99_ms(t) <= s.p99_limit_ms && t["missing"].as_u64() == Some(0);
        let doc = format!("fanout-{}-{label}-{}-{}", run_tag(), s.readers, trials.len());
        let mut trial = fanout_trial(target, pid, &doc, &p).await?;
        if !passes(&trial) && trials.len() + 1 < s.max_trials {
            // The machine may be shared: a failure is confirmed once before it
            // counts, and the better of the two trials stands.
            let doc = format!("{doc}-again");
            let again = fanout_trial(target, pid, &doc, &p).await?;
            eprintln!(
                "  (repeated a failing trial: p99 {:.2} ms, then {:.2} ms)",
                p99_ms(&trial),
                p99_ms(&again)
            );
            let first = std::mem::replace(&mut trial, again);
            if p99_ms(&first) < p99_ms(&trial) {
                trials.push(std::mem::replace(&mut trial, first));
            } else {
                trials.push(first);
            }
        }
        let ok = passes(&trial);
        eprintln!(
            "  fanout N={} offered {:.0}/s: delivered {:.0}/s p99 {:.2} ms {}",
            s.readers,
            rate,
            trial["delivered_s"].as_f64().unwrap_or(0.0),
            p99_ms(&trial),
            if ok { "ok" } else { "over" }
        );
        if ok {
            let better = best
                .as_ref()
                .is_none_or(|b| b["delivered_s"].as_f64() < trial["delivered_s"].as_f64());
            if better {
                best = Some(trial.clone());
            }
            pass = Some(pass.map_or(rate, |p: f64| p.max(rate)));
        } else {
            fail = Some(fail.map_or(rate, |f: f64| f.min(rate)));
        }
        trials.push(trial);
        rate = match (pass, fail) {
            (Some(p), None) if p * 2.0 <= s.max_deliveries => p * 2.0,
            (Some(_), None) => {
                stopped_by = "max_rate";
                break;
            }
            (None, Some(f)) => {
                stopped_by = "no_pass";
                f / 4.0
            }
            (Some(p), Some(f)) => {
                if refined >= s.refine || f / p < 1.15 {
                    stopped_by = "converged";
                    break;
                }
                refined += 1;
                (p * f).sqrt()
            }
            (None, None) => unreachable!(),
        };
        if rate < 100.0 {
            break;
        }
    }
    // Without a failing trial the best rate is only a lower bound.
    let lower_bound = fail.is_none();
    Ok(
        json!({ "readers": s.readers, "best": best, "lower_bound": lower_bound, "stopped_by": stopped_by, "trials": trials }),
    )
}

/// Parameters of the many-documents scenario.
#[derive(Clone, Debug)]
pub struct ManyDocs {
    pub docs: usize,
    pub clients: usize,
    /// Edits per second of each client.
    pub rate: f64,
    pub warmup: Duration,
    pub measure: Duration,
}

/// `docs` documents × `clients` clients, each client editing at `rate`/s with
/// its own phase and reading everyone else's edits.
pub async fn many_docs(target: &Target, pid: Option<u32>, p: &ManyDocs) -> Result<Value, Error> {
    let n = p.docs * p.clients;
    let connect_start = Instant::now();
    let conns = open_many(n, 128, |i| {
        let target = target.clone();
        let doc = format!("many-{}-{}", run_tag(), i / p.clients);
        async move { target.join(&doc, i).await }
    })
    .await?;
    let connect_s = connect_start.elapsed().as_secs_f64();

    let epoch = Instant::now();
    let window = Window::new(p.warmup, p.measure);
    let period_us = (1e6 / p.rate) as u64;
    let (stop_tx, stop_rx) = watch::channel(false);
    let counter = Arc::new(AtomicU64::new(0));
    let sent_in_window = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(n);
    for (i, mut ws) in conns.into_iter().enumerate() {
        let mut stop = stop_rx.clone();
        let counter = counter.clone();
        let sent_in_window = sent_in_window.clone();
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut appender = Appender::new(1000 + (i % 1_000_000) as u64);
            // Spread the clients' phases evenly over one period.
            let mut next_us = (i as u64 * 7919) % period_us;
            let mut k = 0u64;
            let me = i as u64;
            // seq = writer index × 10,000 + its count: skip own echoes.
            let mut counts = |mark: &Mark, _: u64| mark.seq / 10_000 != me && window.contains(mark.micros);
            loop {
                let sending = next_us < window.to_us && k < 10_000;
                let wake = epoch + Duration::from_micros(next_us);
                tokio::select! {
                    biased;
                    _ = stopped(&mut stop) => break,
                    msg = ws.next() => if !tally.read(msg, epoch, &counter, &mut counts) {
                        break;
                    },
                    _ = sleep_until(wake.into()), if sending => {
                        // Stamped when sent, not when scheduled: the timer
                        // wakes up to 1 ms late, and a client sending once a
                        // second is never held back by its socket.
                        let mark = Mark { seq: me * 10_000 + k, micros: micros_since(epoch) };
                        if window.contains(mark.micros) {
                            sent_in_window.fetch_add(1, Relaxed);
                        }
                        if ws.send(Message::Binary(appender.frame(mark).into())).await.is_err() {
                            tally.disconnected = true;
                            break;
                        }
                        k += 1;
                        next_us += period_us;
                    }
                }
            }
            let _ = ws.close(None).await;
            tally
        }));
    }
    sleep_until((epoch + p.warmup).into()).await;
    let meter = CpuMeter::start(pid);
    sleep_until((epoch + p.warmup + p.measure).into()).await;
    let usage = meter.finish();
    let expected = sent_in_window.load(Relaxed) * (p.clients as u64 - 1);
    drain(&counter, expected).await;
    let _ = stop_tx.send(true);
    let mut totals = Totals::gather(tasks).await?;
    let missing = totals.missing(expected);
    let out = json!({
        "docs": p.docs,
        "clients_per_doc": p.clients,
        "connections": n,
        "connect_s": round3(connect_s),
        "edits_s": round3(n as f64 * p.rate),
        "deliveries_s": round3(totals.counted as f64 / p.measure.as_secs_f64()),
        "missing": missing,
    });
    Ok(with_readers(out, &totals, usage))
}

/// Parameters of the idle-connections scenario.
#[derive(Clone, Debug)]
pub struct Idle {
    pub connections: usize,
    pub docs: usize,
    pub settle: Duration,
}

/// Opens one connection per document, then the rest spread over the same
/// documents; reads the server's RSS before, between and after, and derives
/// the memory of one idle connection and of one (empty) document.
pub async fn idle(target: &Target, pid: u32, p: &Idle) -> Result<Value, Error> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let alive = Arc::new(AtomicBool::new(true));
    let hold = |ws: Ws| {
        let mut stop = stop_rx.clone();
        let alive = alive.clone();
        tokio::spawn(async move {
            let mut ws = ws;
            loop {
                tokio::select! {
                    _ = stopped(&mut stop) => break,
                    msg = ws.next() => if !matches!(msg, Some(Ok(_))) {
                        alive.store(false, Relaxed);
                        break;
                    }
                }
            }
            let _ = ws.close(None).await;
        })
    };
    sleep(p.settle).await;
    let base = stats::sample(pid).ok_or("server gone")?;

    let started = Instant::now();
    let first = open_many(p.docs, 256, |i| {
        let target = target.clone();
        async move { target.join(&format!("idle-{}-{i}", run_tag()), i).await }
    })
    .await?;
    let mut holders: Vec<_> = first.into_iter().map(&hold).collect();
    sleep(p.settle).await;
    let one_each = stats::sample(pid).ok_or("server gone")?;

    let extra = p.connections.saturating_sub(p.docs);
    let docs = p.docs;
    let rest = open_many(extra, 256, |i| {
        let target = target.clone();
        async move { target.join(&format!("idle-{}-{}", run_tag(), i % docs), docs + i).await }
    })
    .await?;
    let connect_s = started.elapsed().as_secs_f64();
    holders.extend(rest.into_iter().map(&hold));
    sleep(p.settle).await;
    let all = stats::sample(pid).ok_or("server gone")?;
    // CPU the server spends on idle connections (timers, pings).
    sleep(p.settle).await;
    let all_later = stats::sample(pid).ok_or("server gone")?;

    let _ = stop_tx.send(true);
    for h in holders {
        let _ = h.await;
    }
    let per_conn_kib = (all.rss_kib as f64 - one_each.rss_kib as f64) / extra.max(1) as f64;
    let first_kib = (one_each.rss_kib as f64 - base.rss_kib as f64) / p.docs.max(1) as f64;
    Ok(json!({
        "connections": p.connections,
        "docs": p.docs,
        "connect_s": round3(connect_s),
        "rss_base_mib": round3(base.rss_kib as f64 / 1024.0),
        "rss_one_per_doc_mib": round3(one_each.rss_kib as f64 / 1024.0),
        "rss_all_mib": round3(all.rss_kib as f64 / 1024.0),
        "kib_per_connection": round3(per_conn_kib),
        "kib_per_document": round3(first_kib - per_conn_kib),
        "kib_per_connection_all": round3((all.rss_kib as f64 - base.rss_kib as f64) / p.connections.max(1) as f64),
        "idle_server_cpu": round3(stats::cpu_share(&all, &all_later)),
        "all_alive": alive.load(Relaxed),
    }))
}

/// Parameters of the durable-writes scenario.
#[derive(Clone, Debug)]
pub struct Durable {
    pub docs: usize,
    /// Updates a writer may have sent that its document's reader has not yet
    /// received.
    pub window: u64,
    pub warmup: Duration,
    pub measure: Duration,
}

/// `docs` documents, each with one writer sending as fast as its window lets
/// it and one reader. An update reaches the reader only once the server
/// relayed it (for weft: once it is committed), so delivered updates/s is
/// the stored updates/s.
pub async fn durable(target: &Target, pid: Option<u32>, p: &Durable, label: &str) -> Result<Value, Error> {
    let epoch = Instant::now();
    let measured = Window::new(p.warmup, p.measure);
    let end = epoch + p.warmup + p.measure;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    let counter = Arc::new(AtomicU64::new(0));
    for d in 0..p.docs {
        let doc = format!("durable-{}-{label}-{d}", run_tag());
        let reader = target.join(&doc, 2 * d).await?;
        let mut writer = target.join(&doc, 2 * d + 1).await?;
        let received = Arc::new(AtomicU64::new(0));
        let notify = Arc::new(Notify::new());
        let (r, n) = (received.clone(), notify.clone());
        let counter = counter.clone();
        // Counted by arrival: the writers send as fast as the server takes
        // updates, so what matters is how many arrive inside the window.
        readers.push(tokio::spawn(read_marks(
            reader,
            epoch,
            stop_rx.clone(),
            counter,
            move |_, now| {
                r.fetch_add(1, Relaxed);
                n.notify_one();
                measured.contains(now)
            },
        )));
        let window = p.window;
        writers.push(tokio::spawn(async move {
            let mut appender = Appender::new(1);
            let mut sent = 0u64;
            while Instant::now() < end {
                let inflight = sent - received.load(Relaxed);
                if inflight < window {
                    let k = (window - inflight).min(256);
                    for _ in 0..k {
                        let mark = Mark {
                            seq: sent,
                            micros: micros_since(epoch),
                        };
                        if writer.feed(Message::Binary(appender.frame(mark).into())).await.is_err() {
                            return sent;
                        }
                        sent += 1;
                    }
                    if writer.flush().await.is_err() {
                        return sent;
                    }
                } else {
                    tokio::select! {
                        _ = notify.notified() => {}
                        _ = sleep(Duration::from_millis(1)) => {}
                        msg = writer.next() => if !matches!(msg, Some(Ok(_))) { return sent; }
                    }
                }
            }
            let _ = writer.close(None).await;
            sent
        }));
    }
    sleep_until((epoch + p.warmup).into()).await;
    let meter = CpuMeter::start(pid);
    sleep_until(end.into()).await;
    let usage = meter.finish();
    let mut sent = 0;
    for w in writers {
        sent += w.await?;
    }
    sleep(Duration::from_millis(200)).await;
    let _ = stop_tx.send(true);
    let totals = Totals::gather(readers).await?;
    let counted = counter.load(Relaxed);
    let out = json!({
        "docs": p.docs,
        "window": p.window,
        "updates_s": round3(counted as f64 / p.measure.as_secs_f64()),
        "sent": sent,
    });
    Ok(with_readers(out, &totals, usage))
}
