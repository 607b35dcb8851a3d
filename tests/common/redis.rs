//! Redis for the cluster tests: the shared server (`WEFT_TEST_REDIS`, started
//! by scripts/test.sh with scripts/redis-server.sh), and a server of a
//! test's own that it can kill and start again (faults).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The URL of the shared server; `None` to skip. Panics when unset, so CI
/// cannot skip the cluster tests silently; `WEFT_TEST_REDIS=skip` skips
/// them with a notice, for a run by hand on a machine without Redis.
pub fn shared_redis() -> Option<String> {
    match std::env::var("WEFT_TEST_REDIS") {
        Ok(url) if url == "skip" => {
            eprintln!("WEFT_TEST_REDIS=skip: cluster test skipped");
            None
        }
        Ok(url) if !url.is_empty() => Some(url),
        _ => panic!(
            "WEFT_TEST_REDIS is not set: the cluster tests need a Redis server. scripts/test.sh \
             starts one; by hand, `eval \"$(scripts/redis-server.sh start)\"`, or set \
             WEFT_TEST_REDIS=skip to skip these tests"
        ),
    }
}

/// A redis-server child of the test: 127.0.0.1, a port chosen by the OS,
/// `appendonly yes` + `appendfsync always` in a temp dir; killed on drop.
pub struct OwnRedis {
    dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    pub fn start() -> OwnRedis {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut redis = OwnRedis { dir, port, child: None };
        redis.start_again();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the (killed) server again on the same port and data, and
    /// waits until it answers.
    pub fn start_again(&mut self) {
        let dir: PathBuf = self.dir.path().to_owned();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .arg("--dir")
            .arg(&dir)
            .args(["--appendonly", "yes", "--appendfsync", "always", "--save", ""])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if redis_ping(self.port) {
                return;
            }
            assert!(Instant::now() < deadline, "redis-server did not answer within 30 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: what a crash does; the append-only file keeps what was
    /// fsynced (everything, with `appendfsync always`).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether a Redis server on the port answers PING.
fn redis_ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}
