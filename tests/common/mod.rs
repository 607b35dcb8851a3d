//! Test support: the real weft binary on a port chosen by the OS, with its
//! own SQLite file, plus a minimal HTTP client.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use weft_bench::client::Client;

pub const SECOND: Duration = Duration::from_secs(1);

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
    _dir: Option<Arc<tempfile::TempDir>>,
}

pub struct Builder {
    args: Vec<String>,
    db: Option<PathBuf>,
}

impl Builder {
    pub fn arg(mut self, flag: &str, value: impl ToString) -> Self {
        self.args.push(flag.to_string());
        self.args.push(value.to_string());
        self
    }

    /// Uses this database file instead of a fresh one.
    pub fn db(mut self, path: &Path) -> Self {
        self.db = Some(path.to_owned());
        self
    }

    pub fn start(self) -> Server {
        let (db, dir) = match self.db {
            Some(db) => (db, None),
            None => {
                let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
                (dir.path().join("weft.db"), Some(dir))
            }
        };
        Server::spawn(db, self.args, dir)
    }
}

impl Server {
    pub fn builder() -> Builder {
        Builder {
            args: Vec::new(),
            db: None,
        }
    }

    /// A server with default settings and a fresh database.
    pub fn start() -> Server {
        Self::builder().start()
    }

    fn spawn(db: PathBuf, args: Vec<String>, dir: Option<Arc<tempfile::TempDir>>) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_weft"))
            .args([
                "--addr",
                "127.0.0.1:0",
                "--log",
                "weft=debug,info",
                "--log-format",
                "plain",
            ])
            .arg("--db")
            .arg(&db)
            .args(&args)
            .env_remove("WEFT_ADDR")
            .env_remove("WEFT_DB")
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
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
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
            _dir: dir,
        }
    }

    /// The process id, to read its `/proc` entries.
    pub fn pid(&self) -> u32 {
        self.child.id()
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
        // SAFETY: plain libc call on a child we own.
        unsafe {
            libc_kill(self.child.id() as i32, 15);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("weft did not exit within 15 s of SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts a new process on the same database with the same flags.
    pub fn restart(mut self) -> Server {
        self.kill();
        let dir = self._dir.take();
        Server::spawn(self.db.clone(), self.args.clone(), dir)
    }

    pub async fn connect(&self, room: &str) -> Client {
        let client = Client::connect(&self.ws, room).await.expect("connect");
        client.wait_synced().await.expect("synced");
        client
    }

    pub async fn get(&self, path: &str) -> Response {
        http(&self.addr, "GET", path, &[], None).await
    }

    pub async fn post(&self, path: &str, content_type: &str, body: &[u8]) -> Response {
        http(&self.addr, "POST", path, &[("Content-Type", content_type)], Some(body)).await
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
    fn libc_kill(pid: i32, sig: i32) -> i32;
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

/// A one-shot HTTP/1.1 request (`Connection: close`).
pub async fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Response {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
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
