//! Documents: one actor per loaded document, and the registry that finds them.
//!
//! A `DocActor` is the single owner of a yrs `Doc` and its awareness
//! states. Everything that touches them, from peers and from the HTTP API,
//! is a command sent through a cloneable [`DocHandle`]
//! over a bounded channel. The actor never sees a socket: it talks to peers
//! through their bounded outbound queues ([`PeerLink`]) and never waits on
//! one.
//!
//! - `registry`: name → actor; spawns and supervises actors, with
//!   `loading` counting the loads in flight and shedding past their bound.
//! - `handle`: the actor's API, [`DocHandle`] and its commands.
//! - `actor`: the actor's loop (load, run, process, flush, unload), with
//!   what it does for peers (`actor/sync.rs`) and for history
//!   (`actor/history.rs`).
//! - The actor's concerns, each a type with its rules as pure methods:
//!   `peers` (fan-out, slow peers), `presence` (awareness ownership and
//!   expiry), `log` (sequence numbers, pending entries, sizes, when to
//!   compact), `versions` (when a version is due, reuse, quota, thinning),
//!   `lifecycle` (idle time, poisoning, leaving the registry), `answers`
//!   (what a step1 gets; shared encodings), `outbox` (a peer's bounded
//!   queue).
//! - [`restore`] and [`content`]: restore by CRDT diff; documents as JSON.
//! - `params`: values from the HTTP API parsed for it ([`StateVectorParam`]).
//! - `report`: when a `document.updated` event is due and what it says
//!   (the actor writes the events, `actor/events.rs`).

mod actor;
mod answers;
pub mod content;
mod handle;
mod lifecycle;
mod loading;
mod log;
mod outbox;
mod params;
mod peers;
mod presence;
mod registry;
mod report;
pub mod restore;
mod trim;
mod versions;

use std::fmt;
use std::time::Duration;

use crate::close::Closer;
use crate::rate::SharedBucket;

pub use crate::name::{DocName, NameError};
pub use crate::storage::{DocMeta, VersionKind, VersionMeta};
pub use handle::{DocHandle, Restored, Taken, Waiting};
pub use outbox::{outbox, Outbox, OutboxReceiver, Refused};
pub use params::{BadStateVector, StateVectorParam};
pub use presence::{check_state, BadState};
pub use registry::Registry;
pub use report::{EventPolicy, User};
pub use versions::VersionQuota;

/// Errors of the document layer.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DocError {
    /// The actor was unloading when the command arrived; the registry retries
    /// with a fresh actor, so callers outside this module rarely see it.
    #[error("document is being unloaded")]
    Unloaded,
    #[error("document '{doc}' could not be loaded: {reason}")]
    LoadFailed { doc: String, reason: String },
    #[error("update refused: {0}")]
    BadUpdate(String),
    #[error("storage failed: {0}")]
    Storage(String),
    #[error("server is shutting down")]
    ShuttingDown,
    /// Too many documents are loading at once (`--max-loading-docs`); the
    /// client should try again after `retry_after`.
    #[error("{loading} documents are loading already; try again in a moment")]
    Busy { loading: usize, retry_after: Duration },
    #[error("no version {0}")]
    NoVersion(i64),
    #[error("restore failed: {0}")]
    Restore(String),
    #[error("the document would grow past its size limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the document would hold more than {limit} shared types (nested maps, arrays, texts, XML nodes)")]
    TooManyTypes { limit: u64 },
    /// A version that does not fit the document's version quota; the reason
    /// says which limit and what to delete.
    #[error("{0}")]
    VersionQuota(String),
}

/// Stack every runtime thread needs so that yrs can recurse through a
/// document nested as deep as `max_types` allows (it does when it deletes
/// nested types, or copies them): measured under 800 bytes a level, so 1 KiB.
/// weft's own renderers stop at a few hundred levels. The stack is reserved,
/// not used, until a document is that deep.
pub fn stack_size_for(max_types: u64) -> usize {
    let needed = max_types.saturating_mul(1024).min(4 << 30) as usize;
    needed.max(16 << 20)
}

/// Tunables of every document actor.
#[derive(Debug, Clone)]
pub struct DocConfig {
    /// Frames a peer's outbound queue holds before the peer counts as too
    /// slow and is disconnected.
    pub peer_queue: usize,
    /// Bytes of frames a peer's outbound queue holds (queued or being
    /// written), besides one frame larger than this; 0 = not counted.
    pub peer_queue_bytes: usize,
    /// Awareness clients one connection may introduce; 0 = no limit.
    pub max_awareness_clients: usize,
    /// Largest awareness state (its JSON), bytes; 0 = no limit.
    pub max_awareness_state: usize,
    /// How long a document without peers stays in memory.
    pub unload_after: Duration,
    /// How long a document goes without an edit before it is held as its
    /// encoding (`actor/dormant.rs`); zero = never.
    pub dormant_after: Duration,
    /// Awareness states not renewed for this long are removed.
    pub awareness_timeout: Duration,
    /// Compact the log into a snapshot past this many updates...
    pub compact_after_updates: u64,
    /// ...or past this many bytes of updates.
    pub compact_after_bytes: u64,
    /// Refuse updates that would grow the stored document past this many
    /// bytes; 0 = no limit.
    pub max_doc_size: u64,
    /// Refuse updates that would give a document more shared types (nested
    /// maps, arrays, texts, XML nodes) than this. Nesting depth cannot exceed
    /// it, and yrs recurses once per level when it deletes nested types.
    pub max_doc_types: u64,
    /// Automatic versions: when to take them and how to thin them.
    pub versions: VersionPolicy,
    /// Cluster mode: how long after a compaction its stream is trimmed.
    pub trim_grace: Duration,
    /// Events: how `document.updated` is paced, whether peers are events.
    pub events: EventPolicy,
    /// Documents loading at once before clients asking for one more are
    /// refused (503, `DocError::Busy`); 0 = no bound. See `loading`.
    pub max_loading: usize,
}

impl Default for DocConfig {
    /// What `weft` runs with when no flag says otherwise (`config::DEFAULT_*`).
    fn default() -> Self {
        use crate::config::{
            DEFAULT_AWARENESS_TIMEOUT_MS, DEFAULT_COMPACT_BYTES, DEFAULT_COMPACT_UPDATES, DEFAULT_DORMANT_AFTER_MS,
            DEFAULT_MAX_AWARENESS_CLIENTS, DEFAULT_MAX_AWARENESS_STATE, DEFAULT_MAX_DOC_SIZE, DEFAULT_MAX_DOC_TYPES,
            DEFAULT_MAX_LOADING_DOCS, DEFAULT_PEER_QUEUE, DEFAULT_PEER_QUEUE_BYTES, DEFAULT_TRIM_GRACE_MS,
            DEFAULT_UNLOAD_AFTER_MS,
        };
        Self {
            peer_queue: DEFAULT_PEER_QUEUE,
            peer_queue_bytes: DEFAULT_PEER_QUEUE_BYTES,
            max_awareness_clients: DEFAULT_MAX_AWARENESS_CLIENTS,
            max_awareness_state: DEFAULT_MAX_AWARENESS_STATE,
            unload_after: Duration::from_millis(DEFAULT_UNLOAD_AFTER_MS),
            dormant_after: Duration::from_millis(DEFAULT_DORMANT_AFTER_MS),
            awareness_timeout: Duration::from_millis(DEFAULT_AWARENESS_TIMEOUT_MS),
            compact_after_updates: DEFAULT_COMPACT_UPDATES,
            compact_after_bytes: DEFAULT_COMPACT_BYTES,
            max_doc_size: DEFAULT_MAX_DOC_SIZE,
            max_doc_types: DEFAULT_MAX_DOC_TYPES,
            versions: VersionPolicy::default(),
            trim_grace: Duration::from_millis(DEFAULT_TRIM_GRACE_MS),
            events: EventPolicy::default(),
            max_loading: DEFAULT_MAX_LOADING_DOCS,
        }
    }
}

/// When weft takes automatic versions, and which it keeps.
#[derive(Debug, Clone)]
pub struct VersionPolicy {
    /// Take one when the document was edited and then left alone this long
    /// (or when it unloads after edits).
    pub after_idle: Duration,
    /// While edits keep coming, take one at least this often.
    pub every: Duration,
    /// Automatic versions older than this are thinned to one per hour...
    pub hourly_after: Duration,
    /// ...and older than this to one per day.
    pub daily_after: Duration,
    /// How many versions, and bytes with them, a document may keep.
    pub quota: VersionQuota,
}

impl Default for VersionPolicy {
    /// What `weft` runs with when no flag says otherwise (`config::DEFAULT_*`).
    fn default() -> Self {
        use crate::config::{
            DEFAULT_MAX_DOC_STORAGE, DEFAULT_MAX_VERSIONS, DEFAULT_VERSION_DAILY_AFTER_DAYS,
            DEFAULT_VERSION_EVERY_SECS, DEFAULT_VERSION_HOURLY_AFTER_HOURS, DEFAULT_VERSION_IDLE_SECS,
        };
        Self {
            after_idle: Duration::from_secs(DEFAULT_VERSION_IDLE_SECS),
            every: Duration::from_secs(DEFAULT_VERSION_EVERY_SECS),
            hourly_after: Duration::from_secs(DEFAULT_VERSION_HOURLY_AFTER_HOURS * 3600),
            daily_after: Duration::from_secs(DEFAULT_VERSION_DAILY_AFTER_DAYS * 86_400),
            quota: VersionQuota {
                max_versions: DEFAULT_MAX_VERSIONS,
                max_storage: DEFAULT_MAX_DOC_STORAGE,
            },
        }
    }
}

/// A version's content as JSON (see [`content`]), from its full state (a
/// Yjs v1 update), built with the defences of a stored document's load.
/// Off the runtime's workers: a version may be large. `Err`: why the state
/// does not load.
pub async fn render_state(state: Vec<u8>) -> Result<serde_json::Value, String> {
    tokio::task::spawn_blocking(move || {
        let rebuilt = weft_core::rebuild([("its state".to_string(), &state[..])])?;
        Ok(content::doc_to_json(&rebuilt.doc))
    })
    .await
    .map_err(|e| e.to_string())?
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
    /// Frames for the peer. Bounded in frames and bytes; the actor only
    /// ever `try_send`s.
    pub outbox: Outbox,
    /// Tells the connection to close with a reason. Capacity 1: the first
    /// reason wins.
    pub closer: Closer,
    /// Whether the peer may change the document.
    pub writable: bool,
    /// Its client's budget of encodings for step1 answers (`None`: no
    /// limit); answers beyond it wait.
    pub encodes: Option<SharedBucket>,
    /// It speaks the Hocuspocus protocol: each update it sends is answered
    /// with a sync status once stored (or refused), it gets the document's
    /// stateless messages, and a read-only refusal is a sync status rather
    /// than y-websocket's auth message.
    pub hocuspocus: bool,
    /// Whom its token names (events say who edited, who joined).
    pub user: Option<User>,
}
