//! Configuration: one struct, every field a flag and a `WEFT_*` variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use serde::Serialize;

use crate::auth::{AuthError, AuthKey};

mod db;
mod redis_url;
mod webhook;
pub use db::{DbLocation, PostgresUrl};
pub use redis_url::RedisUrl;
pub use webhook::{WebhookFlags, DEFAULT_WEBHOOK_MAX_ATTEMPTS, DEFAULT_WEBHOOK_TIMEOUT_MS};

pub const DEFAULT_ADDR: &str = "127.0.0.1:1234";
pub const DEFAULT_DB: &str = "weft.db";
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 16 << 20;
/// Frames; memory is bounded by `DEFAULT_PEER_QUEUE_BYTES`. Room for the
/// default burst: see `Config::rate_limit`.
pub const DEFAULT_PEER_QUEUE: usize = 2048;
pub const DEFAULT_UNLOAD_AFTER_MS: u64 = 10_000;
pub const DEFAULT_DORMANT_AFTER_MS: u64 = 10_000;
/// Loads in flight before clients asking for one more document get 503:
/// far more than a healthy store has in flight (loads take milliseconds),
/// so only a herd of reconnects reaches it. See `doc/loading.rs`.
pub const DEFAULT_MAX_LOADING_DOCS: usize = 1_000;
/// A minute: far longer than a healthy node is behind its streams (one
/// blocking read of 1 s, reconnects backing off to 2 s, commands giving up
/// after 5 s), so only a node stalled for most of a minute finds entries
/// it needs trimmed, and it reloads from PostgreSQL (docs/CLUSTER.md).
pub const DEFAULT_TRIM_GRACE_MS: u64 = 60_000;
/// Events: at most one document.updated per document this often, at least
/// one this often while edits go on (milliseconds); the outbox's retention.
pub const DEFAULT_WEBHOOK_DEBOUNCE_MS: u64 = 2_000;
pub const DEFAULT_WEBHOOK_MAX_WAIT_MS: u64 = 10_000;
pub const DEFAULT_EVENTS_RETENTION: &str = "24h";
pub const DEFAULT_AWARENESS_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_COMPACT_UPDATES: u64 = 1000;
pub const DEFAULT_COMPACT_BYTES: u64 = 4 << 20;
pub const DEFAULT_BUSY_TIMEOUT_MS: u64 = 5000;
/// Longer than any query weft makes takes on a healthy server (the largest
/// is a document's full state, up to `DEFAULT_MAX_DOC_SIZE`), short enough
/// that an edit waiting on a stuck server is refused within seconds.
pub const DEFAULT_STATEMENT_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_MAX_CONNECTIONS: usize = 20_000;
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 1024;
pub const DEFAULT_RATE_LIMIT: u32 = 200;
/// At most what a peer queue holds (`DEFAULT_PEER_QUEUE`): see `Config::rate_limit`.
pub const DEFAULT_RATE_BURST: u32 = 2000;
/// Bytes per second one client (IP and token) may send on average: a
/// typist sends a few hundred, and a paste up to `--max-message-size` fits
/// in the burst (`Config::byte_rate_limit`), so only a sustained stream is
/// paced.
pub const DEFAULT_BYTE_RATE_LIMIT: u64 = 1 << 20;
pub const DEFAULT_MAX_DOC_SIZE: u64 = 64 << 20;
/// Far more shared types than real documents hold (a book in ProseMirror
/// has a few tens of thousands of nodes).
pub const DEFAULT_MAX_DOC_TYPES: u64 = 100_000;
pub const DEFAULT_VERSION_IDLE_SECS: u64 = 60;
pub const DEFAULT_VERSION_EVERY_SECS: u64 = 600;
pub const DEFAULT_VERSION_HOURLY_AFTER_HOURS: u64 = 24;
pub const DEFAULT_VERSION_DAILY_AFTER_DAYS: u64 = 7;
/// Versions one document keeps: one a minute for a day of idle-and-edit
/// bursts still fits, and the automatic ones thin out with age anyway.
pub const DEFAULT_MAX_VERSIONS: usize = 1000;
/// Bytes one document may take with its versions: eight documents of the
/// largest allowed size.
pub const DEFAULT_MAX_DOC_STORAGE: u64 = 512 << 20;
/// API requests per second per client (IP and token), on average: far above
/// what a page or a test polling every 20 ms sends.
pub const DEFAULT_HTTP_RATE_LIMIT: u32 = 100;
pub const DEFAULT_HTTP_RATE_BURST: u32 = 1000;
/// New documents per minute per client IP and per token: a benchmark opening
/// a thousand documents at once from one address still fits.
pub const DEFAULT_MAX_NEW_DOCS_PER_MINUTE: u32 = 1000;
/// Full-state encodings one client may cost per minute: one every 5 s.
/// Encoding a 5 MB document holds its actor for about 13.5 ms; browsers
/// ask once per connection, and mostly get the shared encoding for free.
pub const DEFAULT_STATE_ENCODES_PER_MINUTE: u32 = 12;
/// Encodings one client may cost at once, above the rate.
pub const STATE_ENCODES_BURST: u32 = 8;
/// Clients whose rate state each rate book remembers (a few hundred bytes each).
pub const DEFAULT_RATE_CLIENTS: usize = 16_384;
pub const DEFAULT_HEADER_READ_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_PARTIAL_MESSAGE_BUDGET: u64 = 32 << 20;
pub const DEFAULT_MESSAGE_DEADLINE_MS: u64 = 60_000;
/// A message held open with pings gives its bytes back within seconds.
pub const DEFAULT_MESSAGE_STALL_MS: u64 = 10_000;
/// Bytes queued for one peer: enough for bursts of large updates; a full
/// state larger than this still goes through (see `doc::outbox`).
pub const DEFAULT_PEER_QUEUE_BYTES: usize = 32 << 20;
/// Documents one Hocuspocus socket may hold (Hocuspocus's own
/// `maxPendingDocuments` is 100 too).
pub const DEFAULT_HOCUSPOCUS_MAX_DOCS: usize = 100;
/// Bytes a Hocuspocus socket may send for documents before their token; a
/// provider sends its token first, so this is only ever a few frames.
pub const DEFAULT_HOCUSPOCUS_PENDING_BYTES: usize = 1 << 20;
/// A browser tab is one awareness client; a few more leave room for pages
/// that open several providers over one connection.
pub const DEFAULT_MAX_AWARENESS_CLIENTS: usize = 4;
/// A cursor and a user's name and color weigh a few hundred bytes; this
/// leaves room for selections of many items.
pub const DEFAULT_MAX_AWARENESS_STATE: usize = 64 << 10;

/// `WEFT_AUTH_KEY`, unless unset or empty. Never a flag: it would show in `ps`.
fn auth_key_from_env() -> Option<String> {
    std::env::var("WEFT_AUTH_KEY").ok().filter(|k| !k.is_empty())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// Durable, at `--db`: a SQLite file, or PostgreSQL for a
    /// `postgres://` URL.
    Sqlite,
    /// Memory only: everything is lost when the process exits. For
    /// benchmarks and throwaway servers.
    None,
}

/// SQLite's `synchronous` setting in WAL mode (`storage::SyncMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// A commit is in the WAL file when it returns: safe against a crash of
    /// the process, not against power loss (the OS may not have written it).
    Normal,
    /// Every commit is fsynced: also safe against power loss, slower.
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Plain,
    Json,
}

/// Who may read `GET /metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricsAccess {
    Open,
    Admin,
    Off,
}

/// `--addr`: `IP:port`, or `host:port` resolved now (the first address,
/// IPv4 first, so `localhost` listens where browsers look first).
fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    if !s.contains(':') {
        return Err(format!("'{s}' has no port: write it as host:port, e.g. 127.0.0.1:1234"));
    }
    let addrs: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(s)
        .map_err(|e| format!("cannot resolve '{s}' ({e}): give an IP address and port, e.g. 127.0.0.1:1234"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("'{s}' resolves to no address: give an IP address and port, e.g. 127.0.0.1:1234"))
}

/// weft: a Yjs collaboration server. y-websocket clients connect to
/// `ws://ADDR/<document-name>`. With no subcommand, weft serves.
#[derive(Debug, Parser)]
#[command(name = "weft", version, about, long_about = None, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: Config,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Print a signed access token (key from --auth-key-file or WEFT_AUTH_KEY).
    Token(TokenArgs),
    /// Copy every document (log, snapshots, versions) and revocation from
    /// one database to an empty one, SQLite or PostgreSQL either way, and
    /// verify each document's state vector after the copy. Stop weft first.
    Migrate(MigrateArgs),
}

#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// The database to copy: a SQLite file or a postgres:// URL.
    #[arg(long)]
    pub from: DbLocation,
    /// The database to copy into (created if a new SQLite file; it must
    /// hold no documents).
    #[arg(long)]
    pub to: DbLocation,
    /// PostgreSQL: a file holding the password (for either side).
    #[arg(long, env = "WEFT_DB_PASSWORD_FILE")]
    pub db_password_file: Option<PathBuf>,
    /// PostgreSQL: how long any one query may run, in milliseconds.
    #[arg(long, env = "WEFT_DB_STATEMENT_TIMEOUT_MS", default_value_t = 10 * DEFAULT_STATEMENT_TIMEOUT_MS)]
    pub db_statement_timeout_ms: u64,
}

#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// The document (`notes/today`), a prefix pattern (`team-a/*`), or `*`.
    #[arg(long)]
    pub doc: String,
    /// What the token allows.
    #[arg(long, value_enum)]
    pub perm: crate::auth::Perm,
    /// How long it is valid: 90s, 15m, 1h, 7d (at most 365d).
    #[arg(long, default_value = "1h", value_parser = crate::auth::parse_ttl)]
    pub ttl: u64,
    /// User id to put in the token (`sub`).
    #[arg(long)]
    pub user: Option<String>,
    /// User name to put in the token.
    #[arg(long)]
    pub name: Option<String>,
    /// File holding the signing key.
    #[arg(long, env = "WEFT_AUTH_KEY_FILE")]
    pub auth_key_file: Option<PathBuf>,
    /// The signing key itself, from the environment only, as for serving.
    #[arg(skip = auth_key_from_env())]
    pub auth_key: Option<String>,
    /// Print one JSON object (token, token_id, claims) instead of the bare token.
    #[arg(long)]
    pub json: bool,
}

/// How weft serves.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct Config {
    /// Address to listen on: an IP address and port, or a host name and
    /// port (`localhost:1234`), resolved once at start-up.
    #[arg(long, env = "WEFT_ADDR", default_value = DEFAULT_ADDR, value_parser = parse_addr)]
    pub addr: SocketAddr,

    /// Where documents are kept: a SQLite database file, or a PostgreSQL
    /// URL (`postgres://user@host:5432/dbname`; the standard `PG*` variables
    /// fill what it leaves out). A password in it is never printed.
    #[arg(long, env = "WEFT_DB", default_value = DEFAULT_DB)]
    pub db: DbLocation,

    /// PostgreSQL: a file holding the database password (instead of one in
    /// the URL, `PGPASSWORD` or a `PGPASSFILE`).
    #[arg(long, env = "WEFT_DB_PASSWORD_FILE")]
    pub db_password_file: Option<PathBuf>,

    /// Cluster mode: the Redis server every node shares
    /// (`redis://host:6379`); needs a PostgreSQL `--db`. Documents' updates
    /// go through Redis Streams (docs/CLUSTER.md). A password in it is
    /// never printed.
    #[arg(long, env = "WEFT_REDIS")]
    pub redis: Option<RedisUrl>,

    /// Cluster mode: how long after a compaction snapshot its document's
    /// stream is trimmed up to it, in milliseconds: the time a lagging
    /// node (or one loading the document) has to read the entries the
    /// snapshot covers (docs/CLUSTER.md).
    #[arg(long, env = "WEFT_TRIM_GRACE_MS", default_value_t = DEFAULT_TRIM_GRACE_MS)]
    pub trim_grace_ms: u64,

    /// PostgreSQL: how long any one query may run before the server cancels
    /// it (`statement_timeout`), in milliseconds; weft also gives up waiting
    /// for an answer after this long. Bounds how long an edit waits on a
    /// stuck database before its sender is closed with 4500.
    #[arg(long, env = "WEFT_DB_STATEMENT_TIMEOUT_MS", default_value_t = DEFAULT_STATEMENT_TIMEOUT_MS)]
    pub db_statement_timeout_ms: u64,

    /// Where documents are kept.
    #[arg(long, env = "WEFT_STORAGE", value_enum, default_value_t = StorageKind::Sqlite)]
    pub storage: StorageKind,

    /// SQLite durability: `normal` survives a crash of weft; `full` also
    /// survives power loss (fsync on every commit).
    #[arg(long, env = "WEFT_SYNC", value_enum, default_value_t = SyncMode::Normal)]
    pub sync: SyncMode,

    /// How long a write waits for a database locked by another process
    /// before it fails, in milliseconds (SQLite's busy timeout;
    /// PostgreSQL's `lock_timeout`).
    #[arg(long, env = "WEFT_DB_BUSY_TIMEOUT_MS", default_value_t = DEFAULT_BUSY_TIMEOUT_MS)]
    pub db_busy_timeout_ms: u64,

    /// Largest accepted WebSocket message and HTTP request body, in bytes;
    /// larger messages close the connection with code 1009, larger bodies
    /// get 413.
    #[arg(long, env = "WEFT_MAX_MESSAGE_SIZE", default_value_t = DEFAULT_MAX_MESSAGE_SIZE)]
    pub max_message_size: usize,

    /// Frames queued for one peer before it counts as too slow and is
    /// disconnected (code 4503; it reconnects and resyncs).
    #[arg(long, env = "WEFT_PEER_QUEUE", default_value_t = DEFAULT_PEER_QUEUE)]
    pub peer_queue: usize,

    /// How long a document without peers stays in memory, in milliseconds.
    #[arg(long, env = "WEFT_UNLOAD_AFTER_MS", default_value_t = DEFAULT_UNLOAD_AFTER_MS)]
    pub unload_after_ms: u64,

    /// A loaded document is held as its encoding, not built in yrs, until
    /// an edit needs it: from its load, when its last peer leaves, and
    /// after this many milliseconds without an edit. Its first edit after
    /// that builds it (~4.5 ms per 65 KiB). 0 = never: documents are built
    /// as they load and stay built.
    #[arg(long, env = "WEFT_DORMANT_AFTER_MS", default_value_t = DEFAULT_DORMANT_AFTER_MS)]
    pub dormant_after_ms: u64,

    /// Documents loading from the store at once before a client asking for
    /// one more is refused with 503 and `Retry-After` (a herd of reconnects
    /// after a restart); documents already loaded are always served. 0 = no
    /// bound.
    #[arg(long, env = "WEFT_MAX_LOADING_DOCS", default_value_t = DEFAULT_MAX_LOADING_DOCS)]
    pub max_loading_docs: usize,

    /// Awareness states (presence, cursors) not renewed for this long are
    /// removed, in milliseconds. Clients renew every 15 s.
    #[arg(long, env = "WEFT_AWARENESS_TIMEOUT_MS", default_value_t = DEFAULT_AWARENESS_TIMEOUT_MS)]
    pub awareness_timeout_ms: u64,

    /// Compact a document's update log into a snapshot past this many updates.
    #[arg(long, env = "WEFT_COMPACT_UPDATES", default_value_t = DEFAULT_COMPACT_UPDATES)]
    pub compact_updates: u64,

    /// ...or past this many bytes of updates.
    #[arg(long, env = "WEFT_COMPACT_BYTES", default_value_t = DEFAULT_COMPACT_BYTES)]
    pub compact_bytes: u64,

    /// Take an automatic version when a document was edited and then left
    /// alone this long, in seconds.
    #[arg(long, env = "WEFT_VERSION_IDLE_SECS", default_value_t = DEFAULT_VERSION_IDLE_SECS)]
    pub version_idle_secs: u64,

    /// While a document keeps being edited, take an automatic version at
    /// least this often, in seconds.
    #[arg(long, env = "WEFT_VERSION_EVERY_SECS", default_value_t = DEFAULT_VERSION_EVERY_SECS)]
    pub version_every_secs: u64,

    /// Automatic versions older than this many hours are thinned to one per hour.
    #[arg(long, env = "WEFT_VERSION_HOURLY_AFTER_HOURS", default_value_t = DEFAULT_VERSION_HOURLY_AFTER_HOURS)]
    pub version_hourly_after_hours: u64,

    /// Automatic versions older than this many days are thinned to one per day.
    #[arg(long, env = "WEFT_VERSION_DAILY_AFTER_DAYS", default_value_t = DEFAULT_VERSION_DAILY_AFTER_DAYS)]
    pub version_daily_after_days: u64,

    /// File holding the secret key that access tokens are signed with
    /// (token mode). Without a key (here or in WEFT_AUTH_KEY) weft runs in
    /// open mode: anyone who reaches it may read and write every document.
    #[arg(long, env = "WEFT_AUTH_KEY_FILE")]
    pub auth_key_file: Option<PathBuf>,

    /// The secret key itself, from the environment only (a flag would show
    /// in `ps`).
    #[arg(skip = auth_key_from_env())]
    #[serde(skip)]
    pub auth_key: Option<String>,

    /// Allow open mode on an address other than loopback.
    #[arg(long, env = "WEFT_ALLOW_OPEN")]
    pub allow_open: bool,

    /// A browser origin allowed to connect and to call the API, e.g.
    /// `https://app.example.com` (repeatable; comma-separated in the
    /// variable). Without any, every origin may connect.
    #[arg(long = "allowed-origin", env = "WEFT_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Most TCP connections open at once, HTTP or WebSocket, counted when
    /// accepted (503 beyond). Lowered at start-up to fit under the
    /// open-file limit, so that weft never runs out of descriptors; 0 = as
    /// many as fit.
    #[arg(long, env = "WEFT_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,

    /// Most TCP connections from one client IP, counted when accepted (429
    /// beyond); 0 = no limit. With --trust-forwarded-for, counted per
    /// X-Forwarded-For address at the WebSocket upgrade instead.
    #[arg(long, env = "WEFT_MAX_CONNECTIONS_PER_IP", default_value_t = DEFAULT_MAX_CONNECTIONS_PER_IP)]
    pub max_connections_per_ip: usize,

    /// Take the client IP from the last X-Forwarded-For entry (behind a
    /// reverse proxy that sets it).
    #[arg(long, env = "WEFT_TRUST_FORWARDED_FOR")]
    pub trust_forwarded_for: bool,

    /// Messages per second one connection may send, on average (close 4429
    /// beyond); 0 = no limit.
    #[arg(long, env = "WEFT_RATE_LIMIT", default_value_t = DEFAULT_RATE_LIMIT)]
    pub rate_limit: u32,

    /// Messages one connection may send in a burst above the rate; at most
    /// `--peer-queue` (larger values are clamped to it).
    #[arg(long, env = "WEFT_RATE_BURST", default_value_t = DEFAULT_RATE_BURST)]
    pub rate_burst: u32,

    /// Bytes per second one client (IP and token, all its WebSockets
    /// together) may send, on average, in frames of any kind; beyond, weft
    /// reads it more slowly (TCP slows the client; it is not closed). The
    /// burst above the rate is twice --max-message-size, so the largest
    /// paste is never slowed. 0 = no limit.
    #[arg(long, env = "WEFT_BYTE_RATE_LIMIT", default_value_t = DEFAULT_BYTE_RATE_LIMIT)]
    pub byte_rate_limit: u64,

    /// Largest stored size of a document, in bytes (its last snapshot plus the
    /// updates after it). An update that would grow it further is refused
    /// and not stored (close 4413, or HTTP 413). 0 = no limit.
    #[arg(long, env = "WEFT_MAX_DOC_SIZE", default_value_t = DEFAULT_MAX_DOC_SIZE)]
    pub max_doc_size: u64,

    /// Most shared types (nested maps, arrays, texts, XML nodes) one document
    /// may hold (close 4413, or HTTP 413, beyond). Bounds how deep a
    /// document can nest; weft sizes its thread stacks to match.
    #[arg(long, env = "WEFT_MAX_DOC_TYPES", default_value_t = DEFAULT_MAX_DOC_TYPES)]
    pub max_doc_types: u64,

    /// Who may read `GET /metrics`: `open` (anyone who reaches the port; the
    /// series carry no document names), `admin` (the admin key, in token
    /// mode) or `off` (404).
    #[arg(long, env = "WEFT_METRICS", value_enum, default_value_t = MetricsAccess::Open)]
    pub metrics: MetricsAccess,

    /// Log format.
    #[arg(long, env = "WEFT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,

    /// Log filter (tracing `EnvFilter` syntax, e.g. `info` or `weft=debug`).
    #[arg(long, env = "WEFT_LOG", default_value = "info")]
    pub log: String,

    /// Most versions one document keeps. At the limit the oldest automatic
    /// versions are deleted to make room; a named version that would need a
    /// named one deleted is refused (HTTP 409). 0 = no limit.
    #[arg(long, env = "WEFT_MAX_VERSIONS", default_value_t = DEFAULT_MAX_VERSIONS)]
    pub max_versions: usize,

    /// Most bytes one document may take in storage with its versions (its
    /// stored size plus every version's). Versions give way as at
    /// `--max-versions`; edits are bounded by `--max-doc-size` alone. 0 = no
    /// limit.
    #[arg(long, env = "WEFT_MAX_DOC_STORAGE", default_value_t = DEFAULT_MAX_DOC_STORAGE)]
    pub max_doc_storage: u64,

    /// API requests per second one client (IP and token) may make, on
    /// average (429 beyond); 0 = no limit.
    #[arg(long, env = "WEFT_HTTP_RATE_LIMIT", default_value_t = DEFAULT_HTTP_RATE_LIMIT)]
    pub http_rate_limit: u32,

    /// API requests one client may make in a burst above the rate.
    #[arg(long, env = "WEFT_HTTP_RATE_BURST", default_value_t = DEFAULT_HTTP_RATE_BURST)]
    pub http_rate_burst: u32,

    /// New documents one client IP, and one token, may create per minute,
    /// by any route (WebSocket or API; 429 beyond); 0 = no limit.
    #[arg(long, env = "WEFT_MAX_NEW_DOCS_PER_MINUTE", default_value_t = DEFAULT_MAX_NEW_DOCS_PER_MINUTE)]
    pub max_new_docs_per_minute: u32,

    /// Encodings of a document's full state one client (IP and token) may
    /// make weft do per minute to answer its step1s (8 at once); a diff
    /// counts as the share of the document it holds, at least 1/64, and the
    /// shared encoding as nothing. Answers beyond wait, they are not
    /// dropped. 0 = no limit.
    #[arg(long, env = "WEFT_STATE_ENCODES_PER_MINUTE", default_value_t = DEFAULT_STATE_ENCODES_PER_MINUTE)]
    pub state_encodes_per_minute: u32,

    /// Clients whose rate state is remembered between connections and
    /// requests, per limit; beyond, the ones closest to a full bucket are
    /// forgotten first.
    #[arg(long, env = "WEFT_RATE_CLIENTS", default_value_t = DEFAULT_RATE_CLIENTS)]
    pub rate_clients: usize,
    /// How long a client has to send a request's head, from the moment weft
    /// waits for it (the connection opened, or the previous response went
    /// out), in milliseconds. Closes connections that send nothing, or their
    /// head a byte at a time. 0 = no limit.
    #[arg(long, env = "WEFT_HEADER_READ_TIMEOUT_MS", default_value_t = DEFAULT_HEADER_READ_TIMEOUT_MS)]
    pub header_read_timeout_ms: u64,

    /// Before a connection is a WebSocket: how long a request body may stop
    /// arriving (408), and on any connection how long a client may stop
    /// reading what weft sends, in milliseconds. 0 = no limit.
    #[arg(long, env = "WEFT_IDLE_TIMEOUT_MS", default_value_t = DEFAULT_IDLE_TIMEOUT_MS)]
    pub idle_timeout_ms: u64,

    /// Bytes of WebSocket messages and HTTP request bodies that have begun
    /// to arrive but are not complete, across all connections. The
    /// connection that would exceed it is closed (1009) or refused (503).
    /// At least --max-message-size; 0 = no limit.
    #[arg(long, env = "WEFT_PARTIAL_MESSAGE_BUDGET", default_value_t = DEFAULT_PARTIAL_MESSAGE_BUDGET)]
    pub partial_message_budget: u64,

    /// How long one WebSocket message or HTTP request body may take to
    /// arrive once it has begun, in milliseconds (close 1009, or HTTP 408,
    /// beyond). 0 = no limit.
    #[arg(long, env = "WEFT_MESSAGE_DEADLINE_MS", default_value_t = DEFAULT_MESSAGE_DEADLINE_MS)]
    pub message_deadline_ms: u64,

    /// How long a WebSocket message that has begun may go without a byte of
    /// its payload arriving (pings between its fragments do not count), in
    /// milliseconds (close 1009 beyond). 0 = no limit.
    #[arg(long, env = "WEFT_MESSAGE_STALL_MS", default_value_t = DEFAULT_MESSAGE_STALL_MS)]
    pub message_stall_ms: u64,

    /// Events: a document's `document.updated` waits until its edits have
    /// paused this long (milliseconds), so it comes at most this often.
    #[arg(long, env = "WEFT_WEBHOOK_DEBOUNCE_MS", default_value_t = DEFAULT_WEBHOOK_DEBOUNCE_MS)]
    pub webhook_debounce_ms: u64,

    /// Events: while edits go on without a pause, a `document.updated`
    /// comes at least this often (milliseconds); at least the debounce.
    #[arg(long, env = "WEFT_WEBHOOK_MAX_WAIT_MS", default_value_t = DEFAULT_WEBHOOK_MAX_WAIT_MS)]
    pub webhook_max_wait_ms: u64,

    /// Events: also emit `peer.joined` and `peer.left` (one outbox row per
    /// connection to a document, each way).
    #[arg(long, env = "WEFT_EVENTS_PEERS")]
    pub events_peers: bool,

    /// Events: how long the outbox keeps an event (once every webhook has
    /// delivered it), e.g. 90m, 24h, 7d: how far back `Last-Event-ID` can
    /// resume the feed.
    #[arg(long, env = "WEFT_EVENTS_RETENTION", default_value = DEFAULT_EVENTS_RETENTION, value_parser = crate::auth::parse_ttl)]
    pub events_retention: u64,

    /// In open mode, a host name (or address) requests may name in their
    /// `Host` besides loopback ones, e.g. `weft.lan` or `192.168.1.5:1234`
    /// (repeatable; comma-separated in the variable). Others get 403, which
    /// stops DNS rebinding.
    #[arg(long = "allowed-host", env = "WEFT_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,
    /// Bytes queued for one peer (queued or being written) before it counts
    /// as too slow and is disconnected (code 4503); one frame larger than
    /// this (a big document's full state) is always let through. 0 = count
    /// frames only.
    #[arg(long, env = "WEFT_PEER_QUEUE_BYTES", default_value_t = DEFAULT_PEER_QUEUE_BYTES)]
    pub peer_queue_bytes: usize,

    /// Awareness clients (presence states) one connection may introduce;
    /// states for more are dropped. 0 = no limit.
    #[arg(long, env = "WEFT_MAX_AWARENESS_CLIENTS", default_value_t = DEFAULT_MAX_AWARENESS_CLIENTS)]
    pub max_awareness_clients: usize,

    /// Largest awareness state (its JSON), in bytes; larger ones are dropped.
    /// 0 = no limit.
    #[arg(long, env = "WEFT_MAX_AWARENESS_STATE", default_value_t = DEFAULT_MAX_AWARENESS_STATE)]
    pub max_awareness_state: usize,

    /// Documents one Hocuspocus connection (`/hocuspocus`) may have attached
    /// or waiting for their token; more are refused (PermissionDenied).
    #[arg(long, env = "WEFT_HOCUSPOCUS_MAX_DOCS", default_value_t = DEFAULT_HOCUSPOCUS_MAX_DOCS)]
    pub hocuspocus_max_docs: usize,

    /// Bytes one Hocuspocus connection may send for documents whose token
    /// has not been checked yet (close 1009 beyond).
    #[arg(long, env = "WEFT_HOCUSPOCUS_PENDING_BYTES", default_value_t = DEFAULT_HOCUSPOCUS_PENDING_BYTES)]
    pub hocuspocus_pending_bytes: usize,

    /// Webhooks: `--webhook` and the flags around it (`config::webhook`).
    #[command(flatten)]
    #[serde(flatten)]
    pub webhook: WebhookFlags,
}

impl Config {
    /// Messages per second and burst per connection; `None`: no limit.
    ///
    /// The burst is at most what a peer queue holds: a message makes at
    /// most one frame for each other peer (awareness is merged per batch,
    /// answers are coalesced), so one connection's burst can never by
    /// itself overflow another peer's queue.
    pub fn rate_limit(&self) -> Option<(u32, u32)> {
        (self.rate_limit > 0).then(|| (self.rate_limit, self.effective_rate_burst()))
    }

    /// Bytes per second and burst per client; `None`: no limit. The
    /// burst holds two messages of the largest size (a client's step2 on
    /// connecting, then a paste): an honest editor is never paced.
    pub fn byte_rate_limit(&self) -> Option<(u64, u64)> {
        let burst = (self.max_message_size as u64).saturating_mul(2);
        (self.byte_rate_limit > 0).then_some((self.byte_rate_limit, burst))
    }

    fn effective_rate_burst(&self) -> u32 {
        let queue = u32::try_from(self.peer_queue.max(1)).unwrap_or(u32::MAX);
        self.rate_burst.min(queue)
    }

    /// The signing key, if there is one: token mode.
    pub fn auth_key(&self) -> Result<Option<AuthKey>, AuthError> {
        AuthKey::load(self.auth_key_file.as_deref(), self.auth_key.as_deref())
    }
}

impl Config {
    /// `key=value` pairs of the effective configuration, for the start-up log.
    /// The key itself is never printed, only which mode it puts weft in.
    pub fn summary(&self) -> String {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        let mode = if self.auth_key_file.is_some() || self.auth_key.is_some() {
            "token"
        } else {
            "open"
        };
        value["auth"] = mode.into();
        // Never the secret itself: only that there is one.
        let webhook_secret = self.webhook.webhook_secret_file.is_some() || self.webhook.webhook_secret.is_some();
        value["webhook_secret"] = if webhook_secret {
            "set".into()
        } else {
            serde_json::Value::Null
        };
        let webhooks: Vec<String> = self.webhook.webhooks.iter().map(|u| webhook::shown(u)).collect();
        value["webhooks"] = webhooks.into();
        if self.storage == StorageKind::Sqlite && self.db.is_postgres() {
            value["storage"] = "postgres".into();
        }
        if self.effective_rate_burst() < self.rate_burst {
            value["rate_burst"] = format!("{} (clamped to --peer-queue)", self.effective_rate_burst()).into();
        }
        let Some(fields) = value.as_object() else {
            return String::new();
        };
        fields
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}
