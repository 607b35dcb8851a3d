//! The cluster scenario (issue 14): three weft nodes sharing one PostgreSQL
//! and one Redis, a writer on node 1 and readers on nodes 2 and 3, beside
//! one weft on the same PostgreSQL (no Redis) with the same clients: the
//! writer and every reader on it.
//!
//! Each offered rate is measured on the single node, then on the cluster,
//! one right after the other (all four weft processes stay up; a trial's
//! document is new), so the two are compared under the same load of the
//! machine. Every trial is a fan-out trial of load.rs (open-loop writer,
//! marks read by the readers) with its clients spread over the nodes; CPU
//! time is read from `/proc/<pid>/stat` of each weft process, of Redis and
//! of PostgreSQL (its postmaster and backends) over the trial, and divided
//! by the updates the writer sent. weft's own `/metrics` of the nodes (the
//! append's time, the replication lag) are kept for each trial, to tell
//! where the time went.

use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::compare::weft_metrics_all;
use crate::conn::Error;
use crate::load::{self, FanoutTrial, Spread};
use crate::servers::{self, Kind, Server, Servers};
use crate::stats::{self, round3};

/// Sizes of the cluster scenario.
#[derive(Clone, Debug)]
pub struct ClusterPlan {
    /// Readers on each of nodes 2 and 3 (the single node gets them all).
    pub readers_per_node: usize,
    /// Offered writer rates (updates/s), each measured on both setups.
    pub rates: Vec<f64>,
    pub warmup: Duration,
    pub measure: Duration,
}

impl ClusterPlan {
    /// `--quick` for CI, the default for the record.
    pub fn new(quick: bool) -> Self {
        let ms = Duration::from_millis;
        if quick {
            ClusterPlan {
                readers_per_node: 2,
                rates: vec![5_000.0],
                warmup: ms(500),
                measure: ms(2000),
            }
        } else {
            ClusterPlan {
                readers_per_node: 4,
                rates: vec![1_000.0, 5_000.0, 10_000.0],
                warmup: ms(1000),
                measure: ms(5000),
            }
        }
    }
}

/// The servers the cluster stands on, started by bench/compare.sh.
#[derive(Clone, Debug)]
pub struct Backends {
    /// A PostgreSQL server's URL and its postmaster's pid.
    pub postgres: String,
    pub postgres_pid: u32,
    /// A Redis server's URL and pid (`appendfsync always`, as
    /// docs/CLUSTER.md asks for).
    pub redis: String,
    pub redis_pid: u32,
}

/// The series of the nodes' `/metrics` a trial keeps (their change over it).
const KEPT_METRICS: [&str; 4] = [
    "stream_append_duration_seconds",
    "stream_lag_seconds",
    "update_relay_delay_seconds",
    "updates_applied_total",
];

/// Runs every rate on the single node and on the cluster.
pub async fn run(servers: &Servers, backends: &Backends, plan: &ClusterPlan) -> Result<Value, Error> {
    let single_db = servers::fresh_database(&backends.postgres, "cluster_single")?;
    let cluster_db = servers::fresh_database(&backends.postgres, "cluster_nodes")?;
    let mut started: Vec<Server> = Vec::new();
    let result = async {
        started.push(servers.start(Kind::Weft, "cluster-single", &["--db", &single_db], None)?);
        for i in 1..=3 {
            let flags = ["--db", cluster_db.as_str(), "--redis", backends.redis.as_str()];
            started.push(servers.start(Kind::Weft, &format!("cluster-node{i}"), &flags, None)?);
        }
        trials(&started, backends, plan).await
    }
    .await;
    for server in started {
        server.stop()?;
    }
    result
}

/// The trials, single node then cluster at each rate.
async fn trials(started: &[Server], backends: &Backends, plan: &ClusterPlan) -> Result<Value, Error> {
    let single = &started[0];
    let nodes = &started[1..];
    let single_target = single.target().await?;
    let mut node_targets = Vec::new();
    for node in nodes {
        node_targets.push(node.target().await?);
    }
    let readers = 2 * plan.readers_per_node;
    let mut rows = Vec::new();
    for &rate in &plan.rates {
        let trial = FanoutTrial {
            readers,
            rate,
            warmup: plan.warmup,
            measure: plan.measure,
        };
        for setup in ["single", "cluster"] {
            let (weft_pids, spread_readers, writer) = if setup == "single" {
                (vec![single.pid], std::slice::from_ref(&single_target), &single_target)
            } else {
                (
                    nodes.iter().map(|n| n.pid).collect(),
                    &node_targets[1..],
                    &node_targets[0],
                )
            };
            let mut watched = weft_pids.clone();
            let redis_at = watched.len();
            if setup == "cluster" {
                watched.push(backends.redis_pid);
            }
            let postgres_at = watched.len();
            watched.push(backends.postgres_pid);
            watched.extend(stats::children(backends.postgres_pid));
            let spread = Spread {
                writer,
                readers: spread_readers,
                watched: &watched,
            };
            let bases: Vec<&str> = if setup == "single" {
                vec![single.base.as_str()]
            } else {
                nodes.iter().map(|n| n.base.as_str()).collect()
            };
            let before = metrics_of(&bases).await;
            let doc = format!("cluster-{}-{setup}-{}", load::run_tag(), rate as u64);
            eprintln!("cluster: {setup}, writer at {rate:.0} updates/s, {readers} readers");
            let mut row = load::fanout_spread(&spread, None, &doc, &trial).await?;
            let after = metrics_of(&bases).await;
            let cpu: Vec<Option<f64>> = row["cpu_s"]
                .as_array()
                .map(|a| a.iter().map(Value::as_f64).collect())
                .unwrap_or_default();
            let sent = row["sent"].as_u64().unwrap_or(0).max(1) as f64;
            let per_update_us = |s: Option<f64>| s.map(|s| round3(s * 1e6 / sent));
            let nodes_cpu: Vec<Option<f64>> = cpu[..weft_pids.len()].to_vec();
            let postgres_cpu: f64 = cpu[postgres_at..].iter().flatten().sum();
            row["setup"] = json!(setup);
            row["rate"] = json!(rate);
            row["nodes_cpu_s"] = json!(nodes_cpu);
            row["nodes_cpu_us_per_update"] = json!(nodes_cpu.iter().map(|&c| per_update_us(c)).collect::<Vec<_>>());
            row["weft_cpu_us_per_update"] = json!(per_update_us(Some(nodes_cpu.iter().flatten().sum())));
            row["redis_cpu_us_per_update"] = json!(if setup == "cluster" {
                per_update_us(cpu[redis_at])
            } else {
                None
            });
            row["postgres_cpu_us_per_update"] = json!(per_update_us(Some(postgres_cpu)));
            row["weft_metrics"] = metrics_change(&before, &after);
            eprintln!(
                "  delivered {}/s, p50 {} ms, p99 {} ms, missing {}; weft CPU {} µs/update {}",
                row["delivered_s"],
                row["latency"]["p50_ms"],
                row["latency"]["p99_ms"],
                row["missing"],
                row["weft_cpu_us_per_update"],
                row["nodes_cpu_us_per_update"]
            );
            rows.push(row);
        }
    }
    Ok(json!({
        "readers_per_node": plan.readers_per_node,
        "readers": readers,
        "warmup_s": plan.warmup.as_secs_f64(),
        "measure_s": plan.measure.as_secs_f64(),
        "trials": rows,
    }))
}

/// Each node's `/metrics`, the series kept.
async fn metrics_of(bases: &[&str]) -> Vec<Value> {
    let mut out = Vec::new();
    for base in bases {
        let all = weft_metrics_all(base).await;
        let kept: Map<String, Value> = match all {
            Value::Object(all) => all
                .into_iter()
                .filter(|(k, _)| KEPT_METRICS.iter().any(|m| k.starts_with(m)))
                .collect(),
            _ => Map::new(),
        };
        out.push(Value::Object(kept));
    }
    out
}

/// What each kept series of each node grew by over a trial.
fn metrics_change(before: &[Value], after: &[Value]) -> Value {
    let nodes = before
        .iter()
        .zip(after)
        .map(|(a, b)| {
            let mut change = Map::new();
            if let Value::Object(b) = b {
                for (k, v) in b {
                    let was = a[k.as_str()].as_f64().unwrap_or(0.0);
                    if let Some(now) = v.as_f64() {
                        if now != was {
                            change.insert(k.clone(), json!(now - was));
                        }
                    }
                }
            }
            Value::Object(change)
        })
        .collect::<Vec<_>>();
    json!(nodes)
}
