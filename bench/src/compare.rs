//! `weft-bench compare`: every scenario against weft, the reference Node
//! server and the null relay, in one run, on one machine.
//!
//! Each server is started fresh for each scenario, pinned to its own core
//! (`taskset -c 0` by default) while this process, the load generator, runs on
//! the other (`bench/compare.sh` starts it under `taskset -c 1`). The servers
//! of one scenario run one after the other, never at the same time. Results
//! go to one JSON file that `bench/report.py` turns into docs/BENCHMARKS.md.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::attack::Attack;
use crate::c100k::{self, C100k};
use crate::cluster::{self, ClusterPlan};
use crate::conn::{Error, Target};
use crate::hocus::{self, HocusPlan};
use crate::hostile::{self, Hostile};
use crate::joinstorm::{self, JoinStorm};
use crate::load::{self, Durable, FanoutSearch, Idle, ManyDocs};
use crate::manyloaded::{self, ManyLoaded};
use crate::replay::{self, Trace};
use crate::servers::{Kind, Server, Servers};
use crate::stats::round3;

/// Sizes of every scenario: `--quick` for CI, the default for the record.
#[derive(Clone, Debug)]
pub struct Plan {
    pub quick: bool,
    pub fanout_readers: Vec<usize>,
    pub fanout: FanoutSearch,
    pub many: ManyDocs,
    pub idle: Idle,
    pub idle_sources: u8,
    pub trace_limit: Option<usize>,
    pub replay_readers: usize,
    pub replay_timeout: Duration,
    pub cold_runs: usize,
    pub durable: Durable,
    pub hostile: Hostile,
    pub joinstorm: JoinStorm,
    pub c100k: C100k,
    pub manyloaded: ManyLoaded,
    pub hocus: HocusPlan,
    pub cluster: ClusterPlan,
}

impl Plan {
    pub fn new(quick: bool) -> Self {
        let ms = Duration::from_millis;
        if quick {
            Plan {
                quick,
                fanout_readers: vec![4, 32],
                fanout: FanoutSearch {
                    readers: 0,
                    start_deliveries: 40_000.0,
                    max_deliveries: 4_000_000.0,
                    refine: 0,
                    max_trials: 4,
                    warmup: ms(200),
                    measure: ms(600),
                    p99_limit_ms: 50.0,
                },
                many: ManyDocs {
                    docs: 100,
                    clients: 4,
                    rate: 1.0,
                    warmup: ms(1000),
                    measure: ms(2000),
                },
                idle: Idle {
                    connections: 2000,
                    docs: 200,
                    settle: ms(500),
                },
                idle_sources: 2,
                trace_limit: Some(20_000),
                replay_readers: 4,
                replay_timeout: Duration::from_secs(60),
                cold_runs: 1,
                durable: Durable {
                    docs: 4,
                    window: 1000,
                    warmup: ms(500),
                    measure: ms(1500),
                },
                hostile: Hostile {
                    doc_bytes: 5 << 20,
                    trace_limit: Some(20_000),
                    clients: 20,
                    writers: 4,
                    rate: 10.0,
                    join_concurrency: 8,
                    warmup: ms(1000),
                    measure: ms(3000),
                    paste_bytes: 16 << 10,
                    attack: Attack::issue_11(),
                },
                joinstorm: JoinStorm {
                    doc_bytes: 2 << 20,
                    trace_limit: Some(20_000),
                    clients: 50,
                    spread: ms(1000),
                    timeout: Duration::from_secs(30),
                },
                c100k: C100k {
                    connections: 2000,
                    per_doc: 10,
                    rate: 1000.0,
                    in_flight: 256,
                    headroom: 256,
                    warmup: ms(1000),
                    measure: ms(3000),
                    settle: ms(300),
                },
                manyloaded: ManyLoaded {
                    docs: 100,
                    in_flight: 64,
                    headroom: 256,
                    settle: ms(300),
                    restart: true,
                    restart_timeout: Duration::from_secs(30),
                },
                hocus: HocusPlan::new(quick),
                cluster: ClusterPlan::new(quick),
            }
        } else {
            Plan {
                quick,
                fanout_readers: vec![4, 32, 256],
                fanout: FanoutSearch {
                    readers: 0,
                    start_deliveries: 20_000.0,
                    max_deliveries: 8_000_000.0,
                    refine: 2,
                    max_trials: 12,
                    warmup: ms(500),
                    measure: ms(2000),
                    p99_limit_ms: 50.0,
                },
                many: ManyDocs {
                    docs: 1000,
                    clients: 4,
                    rate: 1.0,
                    warmup: ms(3000),
                    measure: ms(20_000),
                },
                idle: Idle {
                    connections: 10_000,
                    docs: 1000,
                    settle: ms(2000),
                },
                idle_sources: 4,
                trace_limit: None,
                replay_readers: 4,
                replay_timeout: Duration::from_secs(300),
                cold_runs: 5,
                durable: Durable {
                    docs: 8,
                    window: 1000,
                    warmup: ms(1000),
                    measure: ms(5000),
                },
                hostile: Hostile {
                    doc_bytes: 5 << 20,
                    trace_limit: None,
                    clients: 100,
                    writers: 10,
                    rate: 10.0,
                    join_concurrency: 8,
                    warmup: ms(3000),
                    measure: ms(20_000),
                    paste_bytes: 16 << 10,
                    attack: Attack::issue_11(),
                },
                joinstorm: JoinStorm {
                    doc_bytes: 20 << 20,
                    trace_limit: None,
                    clients: 200,
                    spread: ms(1000),
                    timeout: Duration::from_secs(120),
                },
                c100k: C100k {
                    connections: 100_000,
                    per_doc: 10,
                    rate: 2000.0,
                    in_flight: 512,
                    headroom: 256,
                    warmup: ms(3000),
                    measure: ms(20_000),
                    settle: ms(1000),
                },
                manyloaded: ManyLoaded {
                    docs: 10_000,
                    in_flight: 128,
                    headroom: 256,
                    settle: ms(1000),
                    restart: true,
                    restart_timeout: Duration::from_secs(60),
                },
                hocus: HocusPlan::new(quick),
                cluster: ClusterPlan::new(quick),
            }
        }
    }
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split(':').nth(1)))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // Not available_parallelism: this process is pinned to one core.
    let processors = cpuinfo.lines().filter(|l| l.starts_with("processor")).count();
    json!({
        "nproc": processors,
        "cpus_online": std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default().trim(),
        "cpu_model": model,
        "kernel": kernel,
        "mem_gib": round3(mem_kib as f64 / 1024.0 / 1024.0),
    })
}

/// Stops a scenario's server, then gives its result tagged with the server.
fn stopped(server: Server, kind: Kind, result: Result<Value, Error>) -> Result<Value, Error> {
    server.stop()?;
    let mut result = result?;
    result["server"] = json!(kind.name());
    Ok(result)
}

/// Runs a scenario on each server in turn, each started fresh (its log
/// named `label-server`) and stopped after; the rows come tagged with the
/// server.
async fn on_each_server<F, Fut>(
    servers: &Servers,
    kinds: &[Kind],
    title: &str,
    label: &str,
    mut scenario: F,
) -> Result<Vec<Value>, Error>
where
    F: FnMut(Target, u32) -> Fut,
    Fut: Future<Output = Result<Value, Error>>,
{
    let mut rows = Vec::new();
    for &kind in kinds {
        eprintln!("{title}: {}", kind.name());
        let server = servers.start(kind, &format!("{label}-{}", kind.name()), &[], None)?;
        let target = server.target().await?;
        let result = scenario(target, server.pid).await;
        rows.push(stopped(server, kind, result)?);
    }
    Ok(rows)
}

/// Runs the chosen scenarios; writes `results.json` in `out` after each
/// scenario, so a failure late in the run keeps what was measured.
pub async fn run(
    servers: &Servers,
    plan: &Plan,
    trace_path: &Path,
    only: &[String],
    out: &Path,
) -> Result<Value, Error> {
    let started = Instant::now();
    let wanted = |s: &str| only.is_empty() || only.iter().any(|o| o == s);
    let mut kinds = vec![Kind::Weft];
    if servers.reference.is_some() {
        kinds.push(Kind::Reference);
    }
    kinds.push(Kind::Relay);
    let mut results = json!({
        "quick": plan.quick,
        "machine": machine(),
        "server_cores": servers.cores,
        "scenarios": {},
    });
    let save = |results: &mut Value| -> Result<(), Error> {
        results["elapsed_s"] = json!(round3(started.elapsed().as_secs_f64()));
        std::fs::write(out, serde_json::to_vec_pretty(results)?)?;
        Ok(())
    };

    if wanted("fanout") {
        let mut rows = Vec::new();
        for &readers in &plan.fanout_readers {
            for &kind in &kinds {
                eprintln!("fanout: {} with {readers} readers", kind.name());
                let label = format!("fanout-{}-{readers}", kind.name());
                let server = servers.start(kind, &label, &[], None)?;
                let target = server.target().await?;
                let search = FanoutSearch {
                    readers,
                    ..plan.fanout.clone()
                };
                let result = load::fanout_search(&target, Some(server.pid), &search, kind.name()).await;
                rows.push(stopped(server, kind, result)?);
            }
        }
        results["scenarios"]["fanout"] = json!(rows);
        save(&mut results)?;
    }

    if wanted("manydocs") {
        let rows = on_each_server(servers, &kinds, "many documents", "many", |target, pid| async move {
            let result = load::many_docs(&target.with_sources(2), Some(pid), &plan.many).await?;
            eprintln!(
                "  p50 {} ms p99 {} ms max {} ms, server CPU {}",
                result["latency"]["p50_ms"],
                result["latency"]["p99_ms"],
                result["latency"]["max_ms"],
                result["server_cpu"]
            );
            Ok(result)
        })
        .await?;
        let mut rows = rows;
        if let Some(url) = servers.fresh_postgres("manydocs")? {
            eprintln!("many documents: weft on PostgreSQL");
            let server = servers.start(Kind::Weft, "many-weft-postgres", &["--db", &url], None)?;
            let target = server.target().await?;
            let result = load::many_docs(&target.with_sources(2), Some(server.pid), &plan.many).await;
            // Its commit-time and relay-time histograms say whether the
            // latency is PostgreSQL's commits or weft's own queueing.
            let metrics = weft_metrics_all(&server.base).await;
            let mut row = stopped(server, Kind::Weft, result)?;
            row["weft_metrics"] = metrics;
            eprintln!(
                "  p50 {} ms p99 {} ms max {} ms, server CPU {}",
                row["latency"]["p50_ms"], row["latency"]["p99_ms"], row["latency"]["max_ms"], row["server_cpu"]
            );
            row["server"] = json!("weft-postgres");
            rows.push(row);
        }
        results["scenarios"]["manydocs"] = json!(rows);
        save(&mut results)?;
    }

    if wanted("idle") {
        let rows = on_each_server(servers, &kinds, "idle connections", "idle", |target, pid| async move {
            let target = target.with_sources(plan.idle_sources).with_read_buffer(4 << 10);
            let result = load::idle(&target, pid, &plan.idle).await?;
            eprintln!(
                "  {} KiB per connection, {} KiB per document",
                result["kib_per_connection"], result["kib_per_document"]
            );
            Ok(result)
        })
        .await?;
        results["scenarios"]["idle"] = json!(rows);
        save(&mut results)?;
    }

    if wanted("replay") || wanted("coldload") {
        eprintln!("loading trace {}", trace_path.display());
        let trace = replay::load_trace(trace_path, plan.trace_limit)?;
        eprintln!(
            "  {} updates ({} bytes) generated in {:.1} s",
            trace.frames.len(),
            trace.update_bytes,
            trace.generate_s
        );
        let mut rows = Vec::new();
        let mut cold = Vec::new();
        for &kind in &kinds {
            eprintln!("trace replay: {}", kind.name());
            let doc = format!("trace-{}", trace.name);
            let server = servers.start(kind, &format!("replay-{}", kind.name()), &[], None)?;
            let target = server.target().await?;
            let result = replay::replay(
                &target,
                Some(server.pid),
                &trace,
                &doc,
                plan.replay_readers,
                plan.replay_timeout,
            )
            .await;
            let mut result = match result {
                Ok(r) => r,
                Err(e) => {
                    server.kill();
                    return Err(e);
                }
            };
            eprintln!(
                "  {} s until every reader holds endContent ({} reconnects)",
                result["seconds"], result["reconnects"]
            );
            result["server"] = json!(kind.name());
            result["server_rss_after_mib"] = json!(round3(server.rss_kib() as f64 / 1024.0));
            rows.push(result);
            if kind == Kind::Relay || !wanted("coldload") {
                server.stop()?;
                continue;
            }
            // The document is in memory now: a warm sync, for both servers.
            let warm = replay::sync_once(&target, &doc, &trace.end).await?;
            let mut row = json!({ "server": kind.name(), "warm": warm });
            if kind == Kind::Weft {
                row["cold"] = cold_loads(server, &doc, &trace, plan.cold_runs).await?;
            } else {
                server.stop()?;
            }
            cold.push(row);
        }
        results["scenarios"]["replay"] = json!(rows);
        if wanted("coldload") {
            results["scenarios"]["coldload"] = json!(cold);
        }
        save(&mut results)?;
    }

    if wanted("durable") {
        let mut rows = Vec::new();
        let postgres = servers.fresh_postgres("durable")?;
        let mut modes: Vec<(&str, Vec<&str>)> = vec![
            ("sqlite-normal", vec!["--storage", "sqlite", "--sync", "normal"]),
            ("sqlite-full", vec!["--storage", "sqlite", "--sync", "full"]),
            ("none", vec!["--storage", "none"]),
        ];
        if let Some(url) = &postgres {
            modes.push(("postgres", vec!["--db", url]));
        }
        for (mode, flags) in modes {
            let flags = &flags[..];
            eprintln!("durable writes: weft {mode}");
            let server = servers.start(Kind::Weft, &format!("durable-{mode}"), flags, None)?;
            let target = server.target().await?;
            let result = load::durable(&target, Some(server.pid), &plan.durable, mode).await;
            let metrics = weft_metrics(&server.base).await;
            server.stop()?;
            let mut result = result?;
            result["weft_metrics"] = metrics;
            eprintln!("  {} updates/s", result["updates_s"]);
            result["mode"] = json!(mode);
            result["server"] = json!("weft");
            rows.push(result);
        }
        results["scenarios"]["durable"] = json!(rows);
        save(&mut results)?;
    }
    if wanted("hostile") {
        // weft only: the reference server has none of the limits under test
        // (see hostile.rs); the attack would only measure how it falls over.
        results["scenarios"]["hostile"] = hostile::run(servers, &plan.hostile, trace_path).await?;
        save(&mut results)?;
    }
    if wanted("joinstorm") {
        // The null relay answers no step1: nothing to sync from it.
        let syncing: Vec<Kind> = kinds.iter().copied().filter(|k| *k != Kind::Relay).collect();
        results["scenarios"]["joinstorm"] = joinstorm::run(servers, &plan.joinstorm, trace_path, &syncing).await?;
        save(&mut results)?;
    }
    if wanted("c100k") {
        // The null relay answers no step1: nothing to sync from it.
        let syncing: Vec<Kind> = kinds.iter().copied().filter(|k| *k != Kind::Relay).collect();
        results["scenarios"]["c100k"] = c100k::run(servers, &plan.c100k, &syncing).await?;
        save(&mut results)?;
    }
    if wanted("manyloaded") {
        let syncing: Vec<Kind> = kinds.iter().copied().filter(|k| *k != Kind::Relay).collect();
        results["scenarios"]["manyloaded"] = manyloaded::run(servers, &plan.manyloaded, trace_path, &syncing).await?;
        save(&mut results)?;
    }
    if wanted("hocuspocus") && servers.hocuspocus.is_some() {
        results["scenarios"]["hocuspocus"] = hocus::run(servers, &plan.hocus).await?;
        save(&mut results)?;
    }
    // Only on request: six more weft runs of two scenarios.
    if only.iter().any(|o| o == "webhooks") {
        results["scenarios"]["webhooks"] = crate::webhooks::run(servers, plan).await?;
        save(&mut results)?;
    }
    if wanted("cluster") {
        match &servers.cluster {
            Some(backends) => {
                results["scenarios"]["cluster"] = cluster::run(servers, backends, &plan.cluster).await?;
                save(&mut results)?;
            }
            None if only.is_empty() => eprintln!("cluster: skipped (no --cluster-postgres and --cluster-redis)"),
            None => return Err("--only cluster needs --cluster-postgres and --cluster-redis".into()),
        }
    }
    save(&mut results)?;
    Ok(results)
}

/// Restarts weft on the stored document and syncs a fresh client: after a
/// clean shutdown (snapshot) `runs` times, then once after SIGKILL with a
/// log of updates written since the snapshot.
async fn cold_loads(server: Server, doc: &str, trace: &Trace, runs: usize) -> Result<Value, Error> {
    let mut server = server;
    let mut clean = Vec::new();
    for _ in 0..runs {
        server = server.restart_after("stop")?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = server.rss_kib();
        let target = server.target().await?;
        let mut r = replay::sync_once(&target, doc, &trace.end).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        r["doc_rss_kib"] = json!(server.rss_kib() as i64 - before as i64);
        r["rss_before_kib"] = json!(before);
        clean.push(r);
    }
    // A crash with a log tail: 500 more one-character updates, then SIGKILL.
    let target = server.target().await?;
    let tail = replay::append_tail(&target, doc, 500).await?;
    server = server.restart_after("kill")?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = server.rss_kib();
    let target = server.target().await?;
    let mut crash = replay::sync_once(&target, doc, &tail).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    crash["doc_rss_kib"] = json!(server.rss_kib() as i64 - before as i64);
    crash["log_tail_updates"] = json!(500);
    server.stop()?;
    let mut synced: Vec<f64> = clean.iter().filter_map(|r| r["synced_ms"].as_f64()).collect();
    synced.sort_by(f64::total_cmp);
    Ok(json!({
        "runs": clean,
        "median_synced_ms": synced.get(synced.len() / 2),
        "max_synced_ms": synced.last(),
        "after_crash": crash,
    }))
}

/// weft's own counters (`/metrics`) that explain a durable-writes result:
/// group commits, their time, compactions.
async fn weft_metrics(base: &str) -> Value {
    let wanted = [
        "updates_applied_total",
        "compactions_total",
        "storage_commits_total",
        "storage_jobs_total",
        "storage_commit_seconds_total",
        "frames_sent_total",
    ];
    match weft_metrics_all(base).await {
        Value::Object(all) => Value::Object(all.into_iter().filter(|(k, _)| wanted.contains(&k.as_str())).collect()),
        other => other,
    }
}

/// Every series of weft's `/metrics`, named without the `weft_` prefix
/// (labels kept: `disconnects_total{reason="rate_limited"}`); null if it
/// did not answer within 5 s.
pub async fn weft_metrics_all(base: &str) -> Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("ws://");
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut body = String::new();
        stream.read_to_string(&mut body).await?;
        Ok::<_, std::io::Error>(body)
    };
    let Ok(Ok(body)) = tokio::time::timeout(Duration::from_secs(5), fetch).await else {
        return Value::Null;
    };
    let mut out = serde_json::Map::new();
    for line in body.lines().filter(|l| l.starts_with("weft_")) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        if let Ok(v) = value.trim().parse::<f64>() {
            out.insert(name.trim_start_matches("weft_").to_string(), json!(v));
        }
    }
    Value::Object(out)
}
