//! weft: a Yjs-compatible real-time collaboration server.
//!
//! Editors built on Yjs connect with the standard y-websocket provider to
//! `ws://host:port/{document-name}`, or with `@hocuspocus/provider` to
//! `ws://host:port/hocuspocus` (many documents over one socket). Each document is held by one actor that
//! applies updates, stores them before anyone sees them, and relays them and
//! the awareness states (presence, cursors) to the document's other peers.
//!
//! # Layout
//!
//! Layers depend downwards only: `http → session → doc → {protocol, storage, broker}`,
//! and the leaves (`auth`, `clock`, `close`, `config`, `metrics`, `name`,
//! `rate`) import only each other. `scripts/check-layers.py` checks it (run
//! by `scripts/test.sh`).
//!
//! - [`config`]: the command line and `WEFT_*` variables, one struct, and
//!   the `DEFAULT_*` values the other layers' defaults read.
//! - [`server`]: wiring and orderly shutdown; `run(config, listener, shutdown)`.
//! - [`http`]: the only module that knows axum: WebSocket upgrades (refusals
//!   happen here, with a status), access control ([`http::access`]: tokens,
//!   origins; [`http::limits`]: connection caps), the JSON API, the web demo
//!   (`/` and `/assets/`, embedded from `web-demo/dist` by `build.rs`),
//!   `/healthz`, `/metrics`.
//! - [`session`]: one connection, one task: it decodes frames for the
//!   actor and drains the peer's bounded queue into the socket. Generic over
//!   any `Stream` + `Sink` transport, so it does not know the WebSocket
//!   library either.
//! - [`doc`]: the per-document actor ([`doc::DocHandle`]) that owns the yrs
//!   `Doc` and `Awareness`, the [`doc::Registry`] that spawns actors on first
//!   use and lets idle ones unload, each concern of the actor as a type with
//!   pure rules (peers, presence, log, versions, lifecycle, answers), and
//!   [`doc::restore`] (restore by CRDT diff) and [`doc::content`] (documents
//!   as JSON).
//! - [`protocol`]: the y-sync and awareness wire format; pure, no I/O. It
//!   lives in the `weft-core` crate (`core/`) with `apply_update`, so the
//!   fuzz target builds without the server.
//! - [`storage`]: the [`storage::DocStore`] trait, SQLite (group-committed
//!   update log plus snapshots) and an in-memory store.
//! - [`broker`]: cluster mode only (`--redis`): each document's Redis
//!   stream, which the actor appends to before relaying and follows for
//!   other nodes' updates (docs/CLUSTER.md).
//! - [`name`]: [`name::DocName`], a validated document name, which every
//!   layer uses (and [`doc`] re-exports).
//! - [`auth`]: the access-token format (JWT HS256): mint, verify, patterns.
//! - [`clock`]: the wall clock, in Unix milliseconds and seconds.
//! - [`close`]: the close codes weft sends, and why.
//! - [`rate`]: the token bucket behind every rate limit, and the book that
//!   keeps clients' buckets between connections and requests.
//! - [`metrics`]: counters, gauges and histograms on atomics, written in the
//!   Prometheus text format by the `prometheus-client` crate.
//!
//! `docs/ARCHITECTURE.md` tells how an update travels through these layers
//! and why they are built this way, and names every file (*Where each thing
//! is*).

pub mod auth;
pub mod broker;
pub mod clock;
pub mod close;
pub mod config;
pub mod doc;
pub mod event;
pub mod events;
#[doc(hidden)]
pub use weft_core::fuzz;
pub mod http;
pub mod metrics;
pub mod name;
pub use weft_core::protocol;
pub mod rate;
pub mod server;
pub mod session;
pub mod storage;
