//! weft-bench: measures weft and any y-websocket server.
//!
//! # Layout
//!
//! - [`client`]: a y-sync client that behaves like the y-websocket provider;
//!   weft's integration tests use it.
//! - [`wire`]: y-sync frames built and read without a CRDT: hand-encoded
//!   append updates carrying a sequence number and a send time.
//! - [`conn`]: load-generator connections (source address, sync, bounded
//!   concurrent connecting).
//! - [`stats`]: latency histograms; CPU and RSS of a process from `/proc`.
//! - [`load`]: fan-out, many documents, idle connections, durable writes.
//! - [`replay`]: editing-trace replay with readers that apply every update,
//!   and the connect-to-synced measurement of cold and warm loads.
//! - [`relay`]: the null relay, the physical limit to compare against.
//! - [`hostile`]: honest clients on a ~5 MB document ([`bigdoc`]) with and
//!   without [`attack`], one hostile peer doing three of issue 11's attacks
//!   at once.
//! - [`servers`]: the three servers' processes: start, stop, kill, restart.
//! - [`cluster`]: three weft nodes over Redis and PostgreSQL beside one,
//!   the same clients spread over the nodes.
//! - [`c100k`]: connections over documents at the machine's file limit,
//!   1% writing; [`manyloaded`]: documents of a trace's size loaded at
//!   once, and weft restarted under all their clients.
//! - [`compare`]: every scenario on each server, one run, one JSON file.

pub mod attack;
pub mod bigdoc;
pub mod c100k;
pub mod client;
pub mod cluster;
pub mod compare;
pub mod conn;
pub mod hocus;
pub mod hostile;
pub mod joinstorm;
pub mod load;
pub mod manyloaded;
pub mod relay;
pub mod replay;
pub mod servers;
pub mod stats;
pub mod webhooks;
pub mod wire;
