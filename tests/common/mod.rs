//! Test support: the real weft binary on a port chosen by the OS, with its
//! own SQLite file, plus a minimal HTTP client. Everything here has a
//! deadline: a server that does not start, exit or answer fails the test
//! instead of hanging it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use weft_bench::client::Client;

pub mod postgres;
pub mod redis;
pub mod sse;
pub mod tokens;
pub mod ydoc;

pub use postgres::Store;

pub const SECOND: Duration = Duration::from_secs(1);

/// The longest any single HTTP request of a test may take.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(30);
/// How long a process gets to start listening, or to exit after a signal.
pub const PROCESS_DEADLINE: Duration = Duration::from_secs(30);

pub const SIGINT: i32 = 2;
pub const SIGTERM: i32 = 15;

/// Flags the harness passes unless the test gives them itself (as a flag or
/// as their variable): every server listens on a port the OS picks.
const DEFAULTS: [(&str, &str, &str); 3] = [
    ("--addr", "WEFT_ADDR", "127.0.0.1:0"),
    ("--log", "WEFT_LOG", "weft=debug,info"),
    ("--log-format", "WEFT_LOG_FORMAT", "plain"),
];

/// A weft process.
pub struct Server {
    child: Child,
    /// `ws://127.0.0.1:PORT`
    pub ws: String,
    /// `127.0.0.1:PORT`
    pub addr: String,
    pub db: PathBuf,
    log: Arc<Mutex<String>>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    _dir: Option<Arc<tempfile::TempDir>>,
    /// The test's own PostgreSQL database, when it runs against PostgreSQL.
    pub pg: Option<Arc<postgres::Database>>,
}

pub struct Builder {
    args: Vec<String>,
    env: Vec<(String, String)>,
    db: Option<PathBuf>,
    bare: bool,
    store: Store,
    /// A PostgreSQL database another server used (`on_database_of`).
    pg: Option<Arc<postgres::Database>>,
}

impl Builder {
    pub fn arg(mut self, flag: &str, value: impl ToString) -> Self {
        self.args.push(flag.to_string());
        self.args.push(value.to_string());
        self
    }

    /// A flag without a value (`--allow-open`).
    pub fn flag(mut self, flag: &str) -> Self {
        self.args.push(flag.to_string());
        self
    }

    /// Only `--addr` and `--db` from the harness: every other setting is
    /// weft's default (to check the defaults themselves).
    pub fn bare(mut self) -> Self {
        self.bare = true;
        self
    }

    /// An environment variable for the process. The test's own `WEFT_*`
    /// variables are never passed on: only those given here.
    pub fn env(mut self, name: &str, value: impl ToString) -> Self {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// Uses this database file instead of a fresh one.
    pub fn db(mut self, path: &Path) -> Self {
        self.db = Some(path.to_owned());
        self
    }

    /// Uses the database `server` used (stopped by now), whichever store.
    pub fn on_database_of(mut self, server: &Server) -> Self {
        match &server.pg {
            Some(pg) => {
                self.pg = Some(pg.clone());
                self.arg("--db", &pg.url)
            }
            None => self.db(&server.db),
        }
    }

    /// Runs against `store`: SQLite (a fresh file, the default) or a fresh
    /// database on the shared PostgreSQL server.
    pub fn store(mut self, store: Store) -> Self {
        self.store = store;
        self
    }

    pub fn start(mut self) -> Server {
        let pg = match self.store {
            Store::Postgres if self.db.is_none() => {
                let server = postgres::shared_server().expect("a PostgreSQL test without WEFT_TEST_POSTGRES");
                let db = Arc::new(postgres::Database::create(&server));
                self = self.arg("--db", &db.url);
                Some(db)
            }
            _ => self.pg.take(),
        };
        let args = self.with_defaults();
        let (db, dir) = match self.db {
            Some(db) => (db, None),
            None => {
                let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
                (dir.path().join("weft.db"), Some(dir))
            }
        };
        let mut server = Server::spawn(db, args, self.env, dir);
        server.pg = pg;
        server
    }

    /// The test's flags, and the harness's where the test gives none.
    fn with_defaults(&self) -> Vec<String> {
        let mut args = Vec::new();
        for (flag, var, value) in DEFAULTS {
            if self.bare && flag != "--addr" {
                continue;
            }
            let given = self
                .args
                .iter()
                .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
                || self.env.iter().any(|(k, _)| k == var);
            if !given {
                args.extend([flag.to_string(), value.to_string()]);
            }
        }
        args.extend(self.args.iter().cloned());
        args
    }

    /// Starts a process that is expected to exit on its own (a refused
    /// configuration): its output, once it has exited.
    pub fn run_to_exit(self) -> Output {
        let mut command = weft_command(&self.with_defaults(), &self.env);
        if let Some(db) = &self.db {
            command.arg("--db").arg(db);
        }
        run_with_deadline(&mut command, PROCESS_DEADLINE)
    }
}

/// The weft binary with `args` and exactly `env`.
fn weft_command(args: &[String], env: &[(String, String)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_weft"));
    command.args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("WEFT_") {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().map(|(k, v)| (k, v)));
    command
}

/// Runs `command` to its end, killing it (and failing) past `deadline`.
pub fn run_with_deadline(command: &mut Command, deadline: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the process");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = pipe.read_to_end(&mut out);
            out
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = String::from_utf8_lossy(&stderr.join().unwrap()).into_owned();
            panic!("{command:?} did not exit within {deadline:?}; stderr:\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

impl Server {
    pub fn builder() -> Builder {
        Builder {
            args: Vec::new(),
            env: Vec::new(),
            db: None,
            bare: false,
            store: Store::Sqlite,
            pg: None,
        }
    }

    /// A server with default settings on a fresh database of `store`.
    pub fn start_on(store: Store) -> Server {
        Self::builder().store(store).start()
    }

    /// Runs `sql` on the server's database (SQLite file or PostgreSQL);
    /// rows as lists of text fields (NULL as "", blobs as hex).
    pub fn sql(&self, sql: &str) -> Vec<Vec<String>> {
        if let Some(pg) = &self.pg {
            return pg.query(sql);
        }
        let db = rusqlite::Connection::open(&self.db).unwrap();
        let mut stmt = db.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        let columns = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                (0..columns)
                    .map(|i| {
                        Ok(match r.get_ref(i)? {
                            rusqlite::types::ValueRef::Null => String::new(),
                            rusqlite::types::ValueRef::Integer(n) => n.to_string(),
                            rusqlite::types::ValueRef::Real(f) => f.to_string(),
                            rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                            rusqlite::types::ValueRef::Blob(b) => b.iter().map(|x| format!("{x:02x}")).collect(),
                        })
                    })
                    .collect::<rusqlite::Result<Vec<String>>>()
            })
            .unwrap()
            .collect::<rusqlite::Result<Vec<_>>>()
            .unwrap();
        rows
    }

    /// Bytes of the database as the disk holds it while weft runs: the
    /// SQLite file and its WAL, or the PostgreSQL database's size.
    pub fn db_bytes(&self) -> u64 {
        if self.pg.is_some() {
            return self.sql_count("SELECT pg_database_size(current_database())") as u64;
        }
        let wal = PathBuf::from(format!("{}-wal", self.db.display()));
        [self.db.clone(), wal]
            .iter()
            .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
            .sum()
    }

    /// The one number `sql` selects.
    pub fn sql_count(&self, sql: &str) -> i64 {
        let rows = self.sql(sql);
        rows[0][0].parse().unwrap_or_else(|_| panic!("{sql}: {rows:?}"))
    }

    /// A server with default settings and a fresh database.
    pub fn start() -> Server {
        Self::builder().start()
    }

    fn spawn(
        db: PathBuf,
        args: Vec<String>,
        env: Vec<(String, String)>,
        dir: Option<Arc<tempfile::TempDir>>,
    ) -> Server {
        let mut command = weft_command(&args, &env);
        if !env.iter().any(|(k, _)| k == "WEFT_DB") && !args.iter().any(|a| a == "--db") {
            command.arg("--db").arg(&db);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start weft");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(pos) = line.find("listening on ws://") {
                    let rest = &line[pos + "listening on ws://".len()..];
                    let addr: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let addr = match rx.recv_timeout(PROCESS_DEADLINE) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("weft did not start:\n{}", log.lock().unwrap());
            }
        };
        Server {
            child,
            ws: format!("ws://{addr}"),
            addr,
            db,
            log,
            args,
            env,
            _dir: dir,
            pg: None,
        }
    }

    /// The process id, to read its `/proc` entries.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The effective configuration weft printed at start-up, `key` → `value`
    /// as printed (strings bare, everything else as JSON).
    pub fn summary(&self) -> BTreeMap<String, String> {
        let log = self.log();
        let line = log
            .lines()
            .find(|l| l.contains("configuration: "))
            .unwrap_or_else(|| panic!("no configuration line in:\n{log}"));
        let mut rest = &line[line.find("configuration: ").unwrap() + "configuration: ".len()..];
        // In JSON logs the line is a string: unescape it and cut its end.
        let unescaped;
        if line.trim_start().starts_with('{') {
            let message: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
            unescaped = message["fields"]["message"].as_str().unwrap_or_default().to_string();
            rest = &unescaped[unescaped.find("configuration: ").unwrap() + "configuration: ".len()..];
        }
        let mut out = BTreeMap::new();
        let mut key = String::new();
        let mut value = String::new();
        let mut depth = 0;
        let mut in_key = true;
        let mut in_string = false;
        for c in rest.chars() {
            match c {
                '=' if in_key => in_key = false,
                ' ' if !in_key && depth == 0 && !in_string => {
                    out.insert(std::mem::take(&mut key), std::mem::take(&mut value));
                    in_key = true;
                }
                _ if in_key => key.push(c),
                _ => {
                    match c {
                        '"' => in_string = !in_string,
                        '[' | '{' if !in_string => depth += 1,
                        ']' | '}' if !in_string => depth -= 1,
                        _ => {}
                    }
                    value.push(c);
                }
            }
        }
        if !key.is_empty() {
            out.insert(key, value);
        }
        out
    }

    /// The process's peak resident memory so far, in KiB (Linux).
    pub fn peak_rss_kib(&self) -> u64 {
        peak_rss(self.pid()) / 1024
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log contains `needle`.
    pub async fn wait_log(&self, needle: &str, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(format!(
            "'{needle}' not logged within {timeout:?}; log:\n{}",
            self.log()
        ))
    }

    /// SIGKILL: no chance to save anything.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(SIGTERM);
        self.wait_exit()
    }

    /// Sends a signal (SIGTERM, SIGINT, ...) without waiting.
    pub fn signal(&self, signal: i32) {
        // SAFETY: plain libc call on a child we own.
        unsafe {
            libc_kill(self.child.id() as i32, signal);
        }
    }

    /// Waits for the process to exit, at most `PROCESS_DEADLINE`; kills it
    /// and fails past that.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PROCESS_DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("weft did not exit within {PROCESS_DEADLINE:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts a new process on the same database with the same flags.
    pub fn restart(mut self) -> Server {
        self.kill();
        let dir = self._dir.take();
        let pg = self.pg.take();
        let mut server = Server::spawn(self.db.clone(), self.args.clone(), self.env.clone(), dir);
        server.pg = pg;
        server
    }

    pub async fn connect(&self, room: &str) -> Client {
        let client = Client::connect(&self.ws, room).await.expect("connect");
        client.wait_synced().await.expect("synced");
        client
    }

    pub async fn get(&self, path: &str) -> Response {
        http(&self.addr, "GET", path, &[], None).await
    }

    /// A POST; `content_type` "" sends no `Content-Type` (for empty bodies).
    pub async fn post(&self, path: &str, content_type: &str, body: &[u8]) -> Response {
        let headers: &[(&str, &str)] = if content_type.is_empty() {
            &[]
        } else {
            &[("Content-Type", content_type)]
        };
        http(&self.addr, "POST", path, headers, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Response {
        http(&self.addr, "DELETE", path, &[], None).await
    }

    /// The value of one un-labelled series of `/metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        let body = self.get("/metrics").await.text();
        body.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("metric {name} not found in:\n{body}"))
    }

    /// Waits until a metric satisfies `cond`.
    pub async fn wait_metric(&self, name: &str, timeout: Duration, cond: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.metric(name).await;
            if cond(value) {
                return value;
            }
            if Instant::now() > deadline {
                panic!("metric {name} stayed at {value} for {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

extern "C" {
    #[link_name = "kill"]
    pub(crate) fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// The value under `key` in the map "m" of a client's document, as a string.
pub fn map_get(client: &Client, key: &str) -> Option<String> {
    use yrs::{Map, Transact};
    let map = client.doc.get_or_insert_map("m");
    let txn = client.doc.transact();
    map.get(&txn, key).map(|v| v.to_string(&txn))
}

/// Floods a document with `blob_bytes`-sized values (each overwriting the
/// last, so the document stays small) until the server disconnects a slow
/// consumer, checking after each burst of 4 that `fast` keeps up: a peer
/// that reads is never behind by more than a burst. Returns how many
/// values were sent.
pub async fn flood_until_a_slow_peer_goes(server: &Server, writer: &Client, fast: &Client, blob_bytes: usize) -> i64 {
    use yrs::Map;
    let map = writer.doc.get_or_insert_map("m");
    let blob = "x".repeat(blob_bytes);
    let mut sent = 0i64;
    let deadline = Instant::now() + 60 * SECOND;
    while server.metric("weft_disconnects_total{reason=\"slow_consumer\"}").await == 0.0 {
        assert!(Instant::now() < deadline, "slow peer never disconnected");
        for _ in 0..4 {
            sent += 1;
            writer.edit(|txn| {
                map.insert(txn, "blob", blob.clone());
                map.insert(txn, "n", sent);
            });
        }
        let want = sent.to_string();
        fast.wait_for("fast peer to keep up", 20 * SECOND, |f| {
            map_get(f, "n").as_deref() == Some(&want)
        })
        .await
        .unwrap();
    }
    sent
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The headers of a WebSocket upgrade, for [`http`] to ask for one and see
/// the status a refused one gets.
pub fn upgrade_headers() -> [(&'static str, &'static str); 4] {
    [
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ]
}

/// A one-shot HTTP/1.1 request (`Connection: close`). Fails the test when
/// the whole exchange takes longer than `REQUEST_DEADLINE`.
pub async fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Response {
    match tokio::time::timeout(REQUEST_DEADLINE, exchange(addr, method, path, headers, body)).await {
        Ok(response) => response,
        Err(_) => panic!("{method} {path}: no complete answer within {REQUEST_DEADLINE:?}"),
    }
}

async fn exchange(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Response {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut request = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        request.push_str(&format!("Host: {addr}\r\n"));
    }
    request.push_str("Connection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or_default();
    request.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("HTTP head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Response { status, headers, body }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[eol + 2..eol + 2 + size]);
        data = &data[eol + 2 + size + 2..];
    }
    out
}

/// Percent-encodes a document name for a URL path.
pub fn enc(name: &str) -> String {
    let mut out = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A recorded editing trace: apply `patches` in order to get `end`.
pub struct Trace {
    pub end: String,
    /// (position in chars, chars deleted, text inserted)
    pub patches: Vec<(u32, u32, String)>,
}

/// The automerge-paper trace (tests/data): 259,778 single-character edits.
pub fn automerge_paper() -> Trace {
    use std::io::Read;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/automerge-paper.json.gz");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut json = String::new();
    flate2::read::GzDecoder::new(file).read_to_string(&mut json).unwrap();
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let patches = value["txns"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|txn| txn["patches"].as_array().unwrap().iter())
        .map(|p| {
            (
                p[0].as_u64().unwrap() as u32,
                p[1].as_u64().unwrap() as u32,
                p[2].as_str().unwrap().to_string(),
            )
        })
        .collect();
    Trace {
        end: value["endContent"].as_str().unwrap().to_string(),
        patches,
    }
}

/// The peak resident memory of a process (VmHWM), in bytes.
pub fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/<pid>/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM")
        * 1024
}

/// Resets the peak resident memory to the current one (Linux 4.0+), so that
/// `peak_rss` measures what happens from now on.
pub fn reset_peak_rss(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset VmHWM");
}
