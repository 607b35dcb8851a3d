//! `weft-bench`: a load generator for y-websocket servers, the null relay,
//! and the three-server comparison behind docs/BENCHMARKS.md.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::Value;

use weft_bench::attack::{self, Attack};
use weft_bench::cluster::Backends;
use weft_bench::compare::{self, Plan};
use weft_bench::conn::{Error, Target};
use weft_bench::load::{self, Durable, FanoutTrial, Idle, ManyDocs};
use weft_bench::servers::Servers;
use weft_bench::{relay, replay};

#[derive(Parser)]
#[command(
    name = "weft-bench",
    about = "Load generator for y-websocket servers (weft, @y/websocket-server, ...)"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The null relay: forwards frames to the room's other peers, nothing else.
    Relay {
        #[arg(long, default_value = "127.0.0.1:0")]
        addr: SocketAddr,
    },
    /// One writer, N readers, ~30-byte updates: one trial at --rate, or a
    /// search for the highest delivered rate with p99 <= --p99-ms.
    Fanout {
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 32)]
        readers: usize,
        /// Writer updates/s for a single trial; without it, search.
        #[arg(long)]
        rate: Option<f64>,
        #[arg(long, default_value_t = 2.0)]
        secs: f64,
        #[arg(long, default_value_t = 50.0)]
        p99_ms: f64,
        /// Server pid, to read its CPU time and RSS from /proc.
        #[arg(long)]
        pid: Option<u32>,
    },
    /// Many documents, a few clients each, each client editing at --rate/s.
    ManyDocs {
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 1000)]
        docs: usize,
        #[arg(long, default_value_t = 4)]
        clients: usize,
        #[arg(long, default_value_t = 1.0)]
        rate: f64,
        #[arg(long, default_value_t = 20.0)]
        secs: f64,
        #[arg(long)]
        pid: Option<u32>,
    },
    /// Idle connections over documents; server RSS per connection/document.
    Idle {
        #[arg(long)]
        url: String,
        #[arg(long)]
        pid: u32,
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        #[arg(long, default_value_t = 1000)]
        docs: usize,
        /// Loopback source addresses to spread over (127.0.0.1..).
        #[arg(long, default_value_t = 4)]
        sources: u8,
    },
    /// Replays an editing trace, one update per patch, to readers that apply them.
    Replay {
        #[arg(long)]
        url: String,
        #[arg(long, default_value = "tests/data/automerge-paper.json.gz")]
        trace: PathBuf,
        #[arg(long, default_value_t = 4)]
        readers: usize,
        #[arg(long)]
        limit: Option<usize>,
        /// Document name (default: a new one per run).
        #[arg(long)]
        doc: Option<String>,
        #[arg(long)]
        pid: Option<u32>,
    },
    /// Connects a fresh client to a document: time to synced.
    Sync {
        #[arg(long)]
        url: String,
        #[arg(long)]
        doc: String,
    },
    /// Writers as fast as a window allows, one reader per document.
    Durable {
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 8)]
        docs: usize,
        #[arg(long, default_value_t = 1000)]
        window: u64,
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
        #[arg(long)]
        pid: Option<u32>,
    },
    /// One hostile peer (issue 11, items 1, 3 and 4 at once) against a
    /// document: prints what it sent and how the server closed it.
    Attack {
        #[arg(long)]
        url: String,
        /// The document, with `?token=...` in token mode.
        #[arg(long)]
        doc: String,
        /// Loopback address to connect from (another client IP).
        #[arg(long)]
        source_ip: Option<std::net::Ipv4Addr>,
        #[arg(long, default_value_t = 20.0)]
        secs: f64,
        #[arg(long, default_value_t = 2)]
        answer_conns: usize,
        #[arg(long, default_value_t = 1)]
        answer_stalled: usize,
        #[arg(long, default_value_t = 256)]
        step1s_per_frame: usize,
        #[arg(long, default_value_t = 1)]
        flood_conns: usize,
        #[arg(long, default_value_t = 1100)]
        flood_msgs: usize,
        #[arg(long, default_value_t = 20)]
        fragment_conns: usize,
        #[arg(long, default_value_t = 15 << 20)]
        fragment_bytes: usize,
        #[arg(long, default_value_t = 20)]
        pause_ms: u64,
        #[arg(long, default_value_t = 100)]
        backoff_ms: u64,
        #[arg(long, default_value_t = 2000)]
        max_connects: u64,
        #[arg(long, default_value_t = 100_000)]
        max_frames: u64,
    },
    /// Every scenario against weft, the reference server and the null relay.
    Compare {
        /// weft's release binary.
        #[arg(long, default_value = "target/release/weft")]
        weft: PathBuf,
        /// @y/websocket-server's src/server.js (skipped when absent).
        #[arg(long)]
        reference: Option<PathBuf>,
        /// bench/hocuspocus/server.js (@hocuspocus/server; the Hocuspocus
        /// scenarios are skipped when absent).
        #[arg(long)]
        hocuspocus: Option<PathBuf>,
        #[arg(long, default_value = "tests/data/automerge-paper.json.gz")]
        trace: PathBuf,
        /// Where results.json, databases and server logs go.
        #[arg(long, default_value = "target/bench")]
        out: PathBuf,
        /// Cores the servers are pinned to (taskset -c); "" for none.
        #[arg(long, default_value = "0")]
        server_cores: String,
        /// Small sizes and short durations, for CI.
        #[arg(long)]
        quick: bool,
        /// Only these scenarios: fanout, manydocs, idle, replay, coldload, durable, hostile, joinstorm, c100k, manyloaded, hocuspocus, cluster.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// A PostgreSQL server (postgres://...): weft also runs on a fresh
        /// database of it in the durable and manydocs scenarios.
        #[arg(long)]
        postgres: Option<String>,
        /// The cluster scenario's PostgreSQL server (postgres://...) and
        /// its postmaster's pid (bench/compare.sh starts one).
        #[arg(long, requires_all = ["cluster_postgres_pid", "cluster_redis", "cluster_redis_pid"])]
        cluster_postgres: Option<String>,
        #[arg(long)]
        cluster_postgres_pid: Option<u32>,
        /// The cluster scenario's Redis server (redis://...) and its pid.
        #[arg(long)]
        cluster_redis: Option<String>,
        #[arg(long)]
        cluster_redis_pid: Option<u32>,
        /// The hostile scenario's attacker does only these: answers,
        /// stalled, flood, fragments (default: all).
        #[arg(long, value_delimiter = ',')]
        attack_parts: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("could not start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(Some(value)) => {
            println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn dur(secs: f64) -> Duration {
    Duration::from_secs_f64(secs)
}

async fn run(cmd: Cmd) -> Result<Option<Value>, Error> {
    Ok(Some(match cmd {
        Cmd::Relay { addr } => {
            let listener = relay::bind(addr).await?;
            eprintln!("listening on ws://{}", listener.local_addr()?);
            relay::serve(listener).await?;
            return Ok(None);
        }
        Cmd::Fanout {
            url,
            readers,
            rate,
            secs,
            p99_ms,
            pid,
        } => {
            let target = Target::new(&url).await?;
            match rate {
                Some(rate) => {
                    let trial = FanoutTrial {
                        readers,
                        rate,
                        warmup: dur(0.5),
                        measure: dur(secs),
                    };
                    load::fanout_trial(&target, pid, &format!("fanout-{}", std::process::id()), &trial).await?
                }
                None => {
                    let mut search = Plan::new(false).fanout;
                    search.readers = readers;
                    search.measure = dur(secs);
                    search.p99_limit_ms = p99_ms;
                    load::fanout_search(&target, pid, &search, &std::process::id().to_string()).await?
                }
            }
        }
        Cmd::ManyDocs {
            url,
            docs,
            clients,
            rate,
            secs,
            pid,
        } => {
            let target = Target::new(&url).await?.with_sources(2);
            let p = ManyDocs {
                docs,
                clients,
                rate,
                warmup: dur(2.0),
                measure: dur(secs),
            };
            load::many_docs(&target, pid, &p).await?
        }
        Cmd::Idle {
            url,
            pid,
            connections,
            docs,
            sources,
        } => {
            let target = Target::new(&url).await?.with_sources(sources).with_read_buffer(4 << 10);
            load::idle(
                &target,
                pid,
                &Idle {
                    connections,
                    docs,
                    settle: dur(2.0),
                },
            )
            .await?
        }
        Cmd::Replay {
            url,
            trace,
            readers,
            limit,
            doc,
            pid,
        } => {
            let trace = replay::load_trace(&trace, limit)?;
            let target = Target::new(&url).await?;
            let doc = doc.unwrap_or_else(|| format!("trace-{}", load::run_tag()));
            replay::replay(&target, pid, &trace, &doc, readers, Duration::from_secs(600)).await?
        }
        Cmd::Sync { url, doc } => {
            let target = Target::new(&url).await?;
            replay::sync_once(&target, &doc, "").await?
        }
        Cmd::Durable {
            url,
            docs,
            window,
            secs,
            pid,
        } => {
            let target = Target::new(&url).await?;
            let p = Durable {
                docs,
                window,
                warmup: dur(1.0),
                measure: dur(secs),
            };
            load::durable(&target, pid, &p, &std::process::id().to_string()).await?
        }
        Cmd::Attack {
            url,
            doc,
            source_ip,
            secs,
            answer_conns,
            answer_stalled,
            step1s_per_frame,
            flood_conns,
            flood_msgs,
            fragment_conns,
            fragment_bytes,
            pause_ms,
            backoff_ms,
            max_connects,
            max_frames,
        } => {
            let plan = Attack {
                answer_conns,
                answer_stalled,
                step1s_per_frame,
                flood_conns,
                flood_msgs,
                fragment_conns,
                fragment_bytes,
                pause: Duration::from_millis(pause_ms),
                backoff: Duration::from_millis(backoff_ms),
                max_connects,
                max_frames,
            };
            attack::main(&url, &doc, source_ip, secs, &plan).await?
        }
        Cmd::Compare {
            weft,
            reference,
            hocuspocus,
            trace,
            out,
            server_cores,
            quick,
            only,
            postgres,
            cluster_postgres,
            cluster_postgres_pid,
            cluster_redis,
            cluster_redis_pid,
            attack_parts,
        } => {
            let cluster = match (cluster_postgres, cluster_postgres_pid, cluster_redis, cluster_redis_pid) {
                (Some(postgres), Some(postgres_pid), Some(redis), Some(redis_pid)) => Some(Backends {
                    postgres,
                    postgres_pid,
                    redis,
                    redis_pid,
                }),
                _ => None,
            };
            std::fs::create_dir_all(&out)?;
            let servers = Servers {
                weft: std::fs::canonicalize(&weft).map_err(|e| format!("{}: {e}", weft.display()))?,
                reference,
                hocuspocus,
                relay: std::env::current_exe()?,
                cores: server_cores,
                work: std::fs::canonicalize(&out)?,
                postgres,
                cluster,
            };
            let mut plan = Plan::new(quick);
            // A smaller record on a shared machine: 10,000 documents of a
            // trace's size are ~10 GiB in weft and more in the reference.
            if let Some(n) = std::env::var("BENCH_MANYLOADED_DOCS").ok().and_then(|v| v.parse().ok()) {
                plan.manyloaded.docs = n;
            }
            if !attack_parts.is_empty() {
                plan.hostile.attack.only(&attack_parts)?;
            }
            let results_path = out.join("results.json");
            compare::run(&servers, &plan, &trace, &only, &results_path).await?;
            eprintln!("results in {}", results_path.display());
            return Ok(None);
        }
    }))
}
