//! The hostile-peer scenario (issue 11): honest clients editing a ~5 MB
//! document while one attacker ([`crate::attack`]) asks for answers in
//! bulk, floods awareness and holds unfinished messages.
//!
//! weft runs in token mode (the attacker has a read-only token, the honest
//! writers a write token) with its **default limits**, unlike the other
//! scenarios, which turn the rate limit and the per-IP cap off. Each of the
//! two runs, without and with the attacker, gets a fresh server: the
//! document is sent to it, the honest clients join (each syncs the whole
//! document, as a browser tab does), then the server's peak RSS (`VmHWM`) is
//! reset and the measured window starts; the attacker, a process of its own
//! on the load generator's core from another loopback address, starts with
//! the window's warm-up and stops at its end.
//!
//! Over 500 lines: one scenario, whose honest clients, probes (paste, timer
//! lag, RSS) and attacker process all report into one measured window.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::{sleep, sleep_until};
use tokio_tungstenite::tungstenite::Message;

use crate::attack::Attack;
use crate::bigdoc::{build_document, seed, Document};
use crate::compare::weft_metrics_all;
use crate::conn::{open_many, Error, Target, Ws};
use crate::load::{run_tag, stopped, Window, LOST_MS};
use crate::servers::{Kind, Limits, Server, Servers};
use crate::stats::{self, micros_since, round3, CpuMeter, Histogram};
use crate::wire::{self, Appender, Mark};

/// The attacker's address: another client IP than the honest clients'.
const ATTACKER_IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 0, 0, 2);
/// y-websocket renews a client's awareness state this often.
const AWARENESS_RENEWAL: Duration = Duration::from_secs(15);
/// How long readers wait for the last updates after the window.
const DRAIN: Duration = Duration::from_millis(1500);

/// Sizes of the scenario.
#[derive(Clone, Debug)]
pub struct Hostile {
    /// Encoded size the document is built up to.
    pub doc_bytes: usize,
    /// Edits of the trace typed into it (all when `None`).
    pub trace_limit: Option<usize>,
    pub clients: usize,
    /// How many of the clients write; every client reads.
    pub writers: usize,
    /// Updates per second of each writer.
    pub rate: f64,
    /// Clients syncing the document at once while joining.
    pub join_concurrency: usize,
    pub warmup: Duration,
    pub measure: Duration,
    /// Bytes of text one more honest client pastes every second (a single
    /// update each); 0 for none.
    pub paste_bytes: usize,
    pub attack: Attack,
}

/// A joined honest client.
struct Honest {
    ws: Ws,
    awareness_client: u64,
}

/// What one honest client saw in the window.
#[derive(Default)]
struct Seen {
    hist: Histogram,
    counted: u64,
    /// How its connection ended before the window was over, if it did.
    lost: Option<String>,
}

/// Joins the honest clients (writers through `write_path`, readers through
/// `read_path`), each announcing its presence as y-websocket does.
async fn join_honest(target: &Target, write_path: &str, read_path: &str, p: &Hostile) -> Result<Vec<Honest>, Error> {
    let writers = p.writers;
    open_many(p.clients, p.join_concurrency, |i| {
        let target = target.clone();
        let path = if i < writers { write_path } else { read_path }.to_string();
        async move {
            let mut ws = target.join(&path, i).await?;
            let awareness_client = 1_000_000 + i as u64;
            let state = format!(r#"{{"user":{{"name":"honest-{i}"}}}}"#);
            ws.send(Message::Binary(wire::awareness(awareness_client, 1, &state).into()))
                .await?;
            Ok(Honest { ws, awareness_client })
        }
    })
    .await
}

/// The measured window: writers send on a schedule, everyone records the
/// delivery latency of the others' updates; a connection that ends is lost.
async fn honest_window(clients: Vec<Honest>, p: &Hostile, epoch: Instant, pid: u32) -> Value {
    let window = Window::new(p.warmup, p.measure);
    let period_us = (1e6 / p.rate) as u64;
    let (stop_tx, stop_rx) = watch::channel(false);
    let counter = Arc::new(AtomicU64::new(0));
    let sent_in_window = Arc::new(AtomicU64::new(0));
    let n = clients.len();
    let mut tasks = Vec::with_capacity(n);
    for (i, client) in clients.into_iter().enumerate() {
        let mut stop = stop_rx.clone();
        let counter = counter.clone();
        let sent_in_window = sent_in_window.clone();
        let writer = i < p.writers;
        tasks.push(tokio::spawn(async move {
            let Honest {
                mut ws,
                awareness_client,
            } = client;
            let mut seen = Seen::default();
            let mut appender = Appender::new(10_000 + i as u64);
            let mut next_us = (i as u64 * 7919) % period_us;
            let mut renew = epoch + AWARENESS_RENEWAL;
            let mut clock = 1;
            let mut k = 0u64;
            let me = i as u64;
            loop {
                let sending = writer && next_us < window.to_us && k < 10_000;
                tokio::select! {
                    biased;
                    _ = stopped(&mut stop) => break,
                    msg = ws.next() => match msg {
                        Some(Ok(Message::Binary(frame))) => {
                            if let Some(mark) = wire::find_mark(&frame) {
                                if mark.seq / 10_000 != me && window.contains(mark.micros) {
                                    seen.hist.record(micros_since(epoch).saturating_sub(mark.micros));
                                    seen.counted += 1;
                                    counter.fetch_add(1, Relaxed);
                                }
                            }
                        }
                        Some(Ok(Message::Close(frame))) => {
                            seen.lost = Some(frame.map_or("close without a code".into(), |f| u16::from(f.code).to_string()));
                            break;
                        }
                        Some(Err(_)) | None => {
                            seen.lost = Some("no close frame".into());
                            break;
                        }
                        Some(Ok(_)) => {}
                    },
                    _ = sleep_until((epoch + Duration::from_micros(next_us)).into()), if sending => {
                        let mark = Mark { seq: me * 10_000 + k, micros: micros_since(epoch) };
                        if window.contains(mark.micros) {
                            sent_in_window.fetch_add(1, Relaxed);
                        }
                        if ws.send(Message::Binary(appender.frame(mark).into())).await.is_err() {
                            seen.lost = Some("send failed".into());
                            break;
                        }
                        k += 1;
                        next_us += period_us;
                    }
                    _ = sleep_until(renew.into()) => {
                        clock += 1;
                        let state = format!(r#"{{"user":{{"name":"honest-{i}"}}}}"#);
                        let frame = wire::awareness(awareness_client, clock, &state);
                        if ws.send(Message::Binary(frame.into())).await.is_err() {
                            seen.lost = Some("send failed".into());
                            break;
                        }
                        renew += AWARENESS_RENEWAL;
                    }
                }
            }
            let _ = ws.close(None).await;
            seen
        }));
    }
    let lag = tokio::spawn(timer_lag(stop_rx.clone()));
    sleep_until((epoch + p.warmup).into()).await;
    let meter = CpuMeter::start(Some(pid));
    sleep_until((epoch + p.warmup + p.measure).into()).await;
    let usage = meter.finish();
    let expected = sent_in_window.load(Relaxed) * (n as u64 - 1);
    let deadline = Instant::now() + DRAIN;
    while counter.load(Relaxed) < expected && Instant::now() < deadline {
        sleep(Duration::from_millis(5)).await;
    }
    let _ = stop_tx.send(true);
    let mut hist = Histogram::default();
    let mut counted = 0;
    let mut lost = 0;
    let mut ends = serde_json::Map::new();
    for task in tasks {
        let Ok(seen) = task.await else { continue };
        hist.merge(&seen.hist);
        counted += seen.counted;
        if let Some(how) = seen.lost {
            lost += 1;
            let n = ends.get(&how).and_then(Value::as_u64).unwrap_or(0);
            ends.insert(how, json!(n + 1));
        }
    }
    let missing = expected.saturating_sub(counted);
    hist.record_n(LOST_MS * 1000, missing);
    let lag = lag.await.unwrap_or_default();
    let mut out = json!({
        "sent_in_window": sent_in_window.load(Relaxed),
        "deliveries_s": round3(counted as f64 / p.measure.as_secs_f64()),
        "missing": missing,
        "lost_connections": lost,
        "honest_ends": ends,
        "latency": hist.summary_ms(),
        "gen_timer_lag": lag.summary_ms(),
    });
    if let (Some(a), Value::Object(b)) = (out.as_object_mut(), usage) {
        a.extend(b);
    }
    out
}

/// One more honest client that pastes `bytes` of text (one update) every
/// second until `end`, reading what it is sent, and that reconnects and
/// resyncs as y-websocket does when the server closes it. A paste is a
/// message larger than one read of the server: it is charged to the budget
/// of unfinished messages while it arrives. It keeps no document, so after
/// a reconnect it pastes as a new client (a real one would first resend
/// the paste that was lost, in its step2).
async fn paste_probe(target: Target, path: String, mut ws: Ws, bytes: usize, epoch: Instant, end: Instant) -> Value {
    let mut appender = Appender::new(90_000);
    let text = vec![b'p'; bytes];
    let mut next = epoch + Duration::from_millis(500);
    let mut sent = 0u64;
    let mut reconnects = 0u64;
    let mut ends = serde_json::Map::new();
    let mut end_with = |how: String| {
        let n = ends.get(&how).and_then(Value::as_u64).unwrap_or(0);
        ends.insert(how, json!(n + 1));
    };
    loop {
        let how = loop {
            tokio::select! {
                _ = sleep_until(end.into()) => break None,
                msg = ws.next() => match msg {
                    Some(Ok(Message::Close(frame))) => {
                        break Some(frame.map_or("close without a code".into(), |f| format!("{} {}", u16::from(f.code), f.reason)));
                    }
                    Some(Err(_)) | None => break Some("no close frame".to_string()),
                    Some(Ok(_)) => {}
                },
                _ = sleep_until(next.into()) => {
                    let frame = wire::sync_frame(wire::SYNC_UPDATE, &appender.update(&text));
                    if ws.send(Message::Binary(frame.into())).await.is_err() {
                        break Some("send failed".to_string());
                    }
                    sent += 1;
                    next += Duration::from_secs(1);
                }
            }
        };
        let Some(how) = how else { break };
        end_with(how);
        // y-websocket waits 100 ms before its first reconnect.
        sleep(Duration::from_millis(100)).await;
        if Instant::now() >= end {
            break;
        }
        match tokio::time::timeout_at(end.into(), target.join(&path, 0)).await {
            Ok(Ok(again)) => {
                ws = again;
                reconnects += 1;
                appender = Appender::new(90_000 + reconnects);
            }
            Ok(Err(e)) => {
                end_with(format!("rejoin failed: {e}"));
                break;
            }
            Err(_) => break,
        }
    }
    let _ = ws.close(None).await;
    json!({ "paste_bytes": bytes, "pastes_sent": sent, "reconnects": reconnects, "ends": ends })
}

/// How late a 1 ms timer fires on the load generator: its own scheduling
/// delay, which shows up in every latency it measures.
async fn timer_lag(mut stop: watch::Receiver<bool>) -> Histogram {
    let mut h = Histogram::default();
    loop {
        let t = Instant::now();
        tokio::select! {
            _ = stopped(&mut stop) => break,
            _ = sleep(Duration::from_millis(1)) => {}
        }
        h.record((t.elapsed().as_micros() as u64).saturating_sub(1000));
    }
    h
}

/// Samples the server's RSS every 50 ms until `stop`: the highest sample
/// and a series every 250 ms, in MiB against seconds since `epoch`.
async fn sample_rss(pid: u32, epoch: Instant, mut stop: watch::Receiver<bool>) -> (u64, Vec<[f64; 2]>) {
    let mut peak = 0;
    let mut series = Vec::new();
    let mut tick = 0u64;
    loop {
        let rss = stats::status_kib(pid, "VmRSS").unwrap_or(0);
        peak = peak.max(rss);
        if tick.is_multiple_of(5) {
            series.push([round3(epoch.elapsed().as_secs_f64()), round3(rss as f64 / 1024.0)]);
        }
        tick += 1;
        tokio::select! {
            _ = stopped(&mut stop) => break,
            _ = sleep(Duration::from_millis(50)) => {}
        }
    }
    (peak, series)
}

fn mib(kib: u64) -> f64 {
    round3(kib as f64 / 1024.0)
}

/// A token for `doc` signed with `key`, by `weft token`.
fn mint(weft: &Path, key: &Path, doc: &str, perm: &str) -> Result<String, Error> {
    let mut command = Command::new(weft);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("WEFT_") {
            command.env_remove(k);
        }
    }
    let out = command
        .args(["token", "--auth-key-file"])
        .arg(key)
        .args(["--doc", doc, "--perm", perm, "--ttl", "1h"])
        .output()?;
    if !out.status.success() {
        return Err(format!("weft token: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let token = String::from_utf8(out.stdout)?.trim().to_string();
    Ok(token)
}

/// A fresh signing key in the work folder.
fn write_key(work: &Path) -> Result<PathBuf, Error> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let path = work.join("hostile.key");
    std::fs::write(&path, hex)?;
    Ok(path)
}

/// The attacker process, started at the window's start.
struct Attacker {
    child: std::process::Child,
    stdout: std::thread::JoinHandle<String>,
    deadline: Instant,
}

impl Attacker {
    fn start(servers: &Servers, base: &str, path: &str, secs: f64, plan: &Attack) -> Result<Self, Error> {
        let log = std::fs::File::create(servers.work.join("hostile-attacker.log"))?;
        // At a lower priority than the measuring clients on the same core:
        // an attacker's CPU is its own machine's, not its victims'.
        let mut child = Command::new("nice")
            .args(["-n", "10"])
            .arg(&servers.relay)
            .args(["attack", "--url", base, "--doc", path, "--source-ip"])
            .arg(ATTACKER_IP.to_string())
            .args(["--secs", &secs.to_string()])
            .args(plan.args())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()?;
        let mut stdout = child.stdout.take().ok_or("no stdout")?;
        let stdout = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            s
        });
        Ok(Self {
            child,
            stdout,
            deadline: Instant::now() + Duration::from_secs_f64(secs) + Duration::from_secs(30),
        })
    }

    /// Its report; killed if it overran its deadline by 30 s.
    async fn finish(mut self) -> Value {
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < self.deadline => sleep(Duration::from_millis(50)).await,
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return json!({ "error": "the attacker overran its deadline and was killed" });
                }
            }
        }
        let out = tokio::task::spawn_blocking(move || self.stdout.join().unwrap_or_default())
            .await
            .unwrap_or_default();
        serde_json::from_str(&out).unwrap_or_else(|e| json!({ "error": format!("unreadable report ({e}): {out}") }))
    }
}

/// Both runs, without and with the attacker, each on a fresh weft.
pub async fn run(servers: &Servers, p: &Hostile, trace: &Path) -> Result<Value, Error> {
    let started = Instant::now();
    eprintln!("hostile peer: building a {} byte document", p.doc_bytes);
    let doc = build_document(trace, p.trace_limit, p.doc_bytes)?;
    eprintln!("  {}", doc.info["how"].as_str().unwrap_or_default());
    eprintln!("  built in {} s", doc.info["build_s"]);
    let key = write_key(&servers.work)?;
    let mut runs = Vec::new();
    for attacker in [false, true] {
        eprintln!(
            "hostile peer: weft, {} clients, {}",
            p.clients,
            if attacker {
                "with the attacker"
            } else {
                "without an attacker"
            }
        );
        let label = if attacker { "hostile-attacked" } else { "hostile-alone" };
        let flags = ["--auth-key-file", key.to_str().ok_or("key path")?];
        let server = servers.start_with(Kind::Weft, label, &flags, None, Limits::Defaults)?;
        let result = run_once(servers, &server, p, &doc, &key, attacker, label).await;
        let mut result = match result {
            Ok(r) => r,
            Err(e) => {
                server.kill();
                return Err(e);
            }
        };
        let alive = server.stop().is_ok();
        result["server_stopped_cleanly"] = json!(alive);
        eprintln!(
            "  p50 {} ms p99 {} ms max {} ms, lost {}, peak RSS {} MiB (at the window's start {} MiB)",
            result["latency"]["p50_ms"],
            result["latency"]["p99_ms"],
            result["latency"]["max_ms"],
            result["lost_connections"],
            result["peak_rss_mib"],
            result["rss_window_start_mib"]
        );
        runs.push(result);
    }
    Ok(json!({
        "server": "weft",
        "mode": "token (honest writers: write token; honest readers and the attacker: read tokens)",
        "flags": "defaults (no --rate-limit 0, no --max-connections-per-ip 0)",
        "document": doc.info,
        "clients": p.clients,
        "writers": p.writers,
        "rate": p.rate,
        "warmup_s": stats::secs(p.warmup),
        "measure_s": stats::secs(p.measure),
        "paste_bytes": p.paste_bytes,
        "attack_plan": p.attack.describe(),
        "attacker_ip": ATTACKER_IP.to_string(),
        "runs": runs,
        "scenario_s": round3(started.elapsed().as_secs_f64()),
    }))
}

async fn run_once(
    servers: &Servers,
    server: &Server,
    p: &Hostile,
    doc: &Document,
    key: &Path,
    attacker: bool,
    label: &str,
) -> Result<Value, Error> {
    let pid = server.pid;
    let name = format!("hostile-{}-{label}", run_tag());
    let write = format!("{name}?token={}", mint(&servers.weft, key, &name, "write")?);
    let read = format!("{name}?token={}", mint(&servers.weft, key, &name, "read")?);
    let evil = format!("{name}?token={}", mint(&servers.weft, key, &name, "read")?);
    let target = server.target().await?;
    let rss_start = stats::status_kib(pid, "VmRSS").unwrap_or(0);
    let seed_s = seed(&target, &write, doc).await?;
    let rss_seeded = stats::status_kib(pid, "VmRSS").unwrap_or(0);
    let joined_at = Instant::now();
    let clients = join_honest(&target, &write, &read, p).await?;
    let paster = match p.paste_bytes {
        0 => None,
        _ => Some(target.join(&write, p.clients).await?),
    };
    let join_s = joined_at.elapsed().as_secs_f64();
    // Let the joins' writes finish before the baseline is taken.
    sleep(Duration::from_millis(500)).await;
    let rss_joined = stats::status_kib(pid, "VmRSS").unwrap_or(0);
    let peak_setup = stats::peak_rss_kib(pid).unwrap_or(0);
    // Without the right to (a kernel that refuses it), the window's peak
    // also covers the setup; said so in the results.
    let peak_reset = stats::reset_peak_rss(pid).is_ok();
    let rss_window_start = stats::status_kib(pid, "VmRSS").unwrap_or(0);

    let epoch = Instant::now();
    let (stop_tx, stop_rx) = watch::channel(false);
    let sampler = tokio::spawn(sample_rss(pid, epoch, stop_rx));
    let probe = paster.map(|ws| {
        let end = epoch + p.warmup + p.measure;
        tokio::spawn(paste_probe(
            target.clone(),
            write.clone(),
            ws,
            p.paste_bytes,
            epoch,
            end,
        ))
    });
    let secs = (p.warmup + p.measure).as_secs_f64();
    let evil_proc = if attacker {
        Some(Attacker::start(servers, &server.base, &evil, secs, &p.attack)?)
    } else {
        None
    };
    let mut out = honest_window(clients, p, epoch, pid).await;
    let attack = match evil_proc {
        Some(a) => a.finish().await,
        None => Value::Null,
    };
    let paste = match probe {
        Some(task) => task.await?,
        None => Value::Null,
    };
    let _ = stop_tx.send(true);
    let (peak_sampled, series) = sampler.await?;
    let peak = stats::peak_rss_kib(pid).unwrap_or(0);
    out["attacker"] = json!(attacker);
    out["attack"] = attack;
    out["paste_probe"] = paste;
    out["seed_s"] = json!(round3(seed_s));
    out["join_s"] = json!(round3(join_s));
    out["rss_start_mib"] = json!(mib(rss_start));
    out["rss_seeded_mib"] = json!(mib(rss_seeded));
    out["rss_joined_mib"] = json!(mib(rss_joined));
    let joined = p.clients + usize::from(p.paste_bytes > 0);
    out["kib_per_joined_client"] = json!(round3((rss_joined as f64 - rss_seeded as f64) / joined.max(1) as f64));
    out["peak_rss_setup_mib"] = json!(mib(peak_setup));
    out["rss_window_start_mib"] = json!(mib(rss_window_start));
    out["peak_rss_mib"] = json!(mib(peak));
    out["peak_rss_reset"] = json!(peak_reset);
    out["peak_rss_sampled_mib"] = json!(mib(peak_sampled));
    out["rss_end_mib"] = json!(mib(stats::status_kib(pid, "VmRSS").unwrap_or(0)));
    out["rss_series"] = json!(series);
    out["weft_metrics"] = weft_metrics_all(&server.base).await;
    Ok(out)
}
