//! Documents: one actor per loaded document, and the registry that finds them.
//!
//! A [`DocActor`](actor) is the single owner of a yrs `Doc` and its awareness
//! states. Everything that touches them, from peers and from the HTTP API,
//! is a [`Command`](actor::Command) sent through a cloneable [`DocHandle`]
//! over a bounded channel. The actor never sees a socket: it talks to peers
//! through their bounded outbound queues ([`PeerLink`]) and never waits on
//! one.

mod actor;
pub mod content;
mod name;
mod registry;
pub mod restore;

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::close::CloseReason;

pub use actor::DocHandle;
pub use name::{DocName, NameError, MAX_NAME_BYTES};
pub use registry::Registry;

/// Errors of the document layer.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DocError {
    /// The actor was unloading when the command arrived; the registry retries
    /// with a fresh actor, so callers outside this module rarely see it.
    #[error("document is being unloaded")]
    Unloaded,
    #[error("document could not be loaded: {0}")]
    LoadFailed(String),
    #[error("update refused: {0}")]
    BadUpdate(String),
    #[error("storage failed: {0}")]
    Storage(String),
    #[error("server is shutting down")]
    ShuttingDown,
}

/// Tunables of every document actor.
#[derive(Debug, Clone)]
pub struct DocConfig {
    /// Frames a peer's outbound queue holds before the peer counts as too
    /// slow and is disconnected.
    pub peer_queue: usize,
    /// How long a document without peers stays in memory.
    pub unload_after: Duration,
    /// Awareness states not renewed for this long are removed.
    pub awareness_timeout: Duration,
    /// Compact the log into a snapshot past this many updates...
    pub compact_after_updates: u64,
    /// ...or past this many bytes of updates.
    pub compact_after_bytes: u64,
}

impl Default for DocConfig {
    fn default() -> Self {
        Self {
            peer_queue: 1024,
            unload_after: Duration::from_secs(10),
            awareness_timeout: Duration::from_secs(30),
            compact_after_updates: 1000,
            compact_after_bytes: 4 << 20,
        }
    }
}

/// Identifies one connection for the lifetime of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u64);

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

/// What a document actor holds of a connected peer.
#[derive(Debug, Clone)]
pub struct PeerLink {
    pub id: PeerId,
    /// Frames for the peer. Bounded; the actor only ever `try_send`s.
    pub outbox: mpsc::Sender<Bytes>,
    /// Tells the connection to close with a reason. Capacity 1: the first
    /// reason wins.
    pub closer: mpsc::Sender<CloseReason>,
    /// Whether the peer may change the document.
    pub writable: bool,
}
