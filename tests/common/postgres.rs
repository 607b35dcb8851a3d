//! PostgreSQL for the tests: which store a test runs against, a fresh
//! database per test on the shared server (`WEFT_TEST_POSTGRES`, started by
//! scripts/test.sh), a server of a test's own that it can stop and start
//! (faults), and SQL through `psql`.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{run_with_deadline, PROCESS_DEADLINE};

/// The store a test body runs against (see `for_both_stores!`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    Sqlite,
    Postgres,
}

impl Store {
    /// `Some(Store::Postgres)` when the tests have a PostgreSQL server.
    /// Without `WEFT_TEST_POSTGRES` the test fails, so that CI cannot skip
    /// the PostgreSQL half silently; `WEFT_TEST_POSTGRES=skip` skips it with
    /// a notice, for a run by hand on a machine without PostgreSQL.
    pub fn postgres() -> Option<Store> {
        shared_server().map(|_| Store::Postgres)
    }
}

/// Generates, for each named `async fn name(store: Store)`, the tests
/// `sqlite::name` and `postgres::name`.
#[macro_export]
macro_rules! for_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Store::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(store) = $crate::common::Store::postgres() {
                        super::$name(store).await
                    }
                }
            )*
        }
    };
}

/// The URL of the shared server; `None` to skip. Panics when unset.
pub fn shared_server() -> Option<String> {
    match std::env::var("WEFT_TEST_POSTGRES") {
        Ok(url) if url == "skip" => {
            eprintln!("WEFT_TEST_POSTGRES=skip: PostgreSQL variant skipped");
            None
        }
        Ok(url) if !url.is_empty() => Some(url),
        _ => panic!(
            "WEFT_TEST_POSTGRES is not set: the PostgreSQL half of the tests needs a server. \
             scripts/test.sh starts one; by hand, `eval \"$(scripts/pg-server.sh start)\"` and \
             `export WEFT_TEST_POSTGRES=$PG_URL`, or set WEFT_TEST_POSTGRES=skip to skip these tests"
        ),
    }
}

/// `url` with its database name replaced by `db`.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    format!("{base}/{db}{query}")
}

/// A database of one test on a server: created fresh, dropped with it.
pub struct Database {
    /// The server's URL, to reach the maintenance database.
    server: String,
    pub name: String,
    pub url: String,
}

impl Database {
    /// `CREATE DATABASE weft_test_<unique>` on the server at `server`.
    pub fn create(server: &str) -> Database {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!(
            "weft_test_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            nanos
        );
        psql(server, &format!("CREATE DATABASE {name}"));
        Database {
            server: server.to_string(),
            url: with_database(server, &name),
            name,
        }
    }

    /// Runs `sql` in this database; rows as lists of text fields.
    pub fn query(&self, sql: &str) -> Vec<Vec<String>> {
        psql(&self.url, sql)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = try_psql(
            &self.server,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// Runs `sql` with psql against `url`; rows as lists of fields. Fails the
/// test on an error.
pub fn psql(url: &str, sql: &str) -> Vec<Vec<String>> {
    try_psql(url, sql).unwrap_or_else(|e| panic!("psql {sql}: {e}"))
}

pub fn try_psql(url: &str, sql: &str) -> Result<Vec<Vec<String>>, String> {
    let out = run_with_deadline(
        Command::new("psql")
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-F",
                "\u{1f}",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                url,
                "-c",
                sql,
            ])
            .env("PGCONNECT_TIMEOUT", "10"),
        PROCESS_DEADLINE,
    );
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.split('\u{1f}').map(str::to_string).collect())
        .collect())
}

/// A PostgreSQL server of one test's own, which it can stop and start:
/// initdb in a temporary directory, 127.0.0.1 on a free port, password
/// authentication, run as the `postgres` user when the tests run as root
/// (PostgreSQL refuses root). Stopped when dropped.
pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    pub password: String,
    /// More `-c name=value` settings for the server.
    options: String,
}

impl PgServer {
    pub fn start() -> PgServer {
        Self::start_with(|_| String::new())
    }

    /// The server's directory (its `data/` inside), for files it reads.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// TLS on, with a certificate for `localhost` and 127.0.0.1 signed by a
    /// throwaway CA (returned: its PEM file), and only encrypted TCP
    /// connections accepted.
    pub fn start_with_tls() -> (PgServer, PathBuf) {
        let server = Self::start_with(|dir| {
            let openssl = |args: &[&str]| {
                let out = run_with_deadline(Command::new("openssl").args(args).current_dir(dir), PROCESS_DEADLINE);
                assert!(
                    out.status.success(),
                    "openssl {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            };
            std::fs::write(
                dir.join("server.ext"),
                "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
                 keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
            )
            .unwrap();
            openssl(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=weft test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign",
            ]);
            openssl(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ]);
            openssl(&[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.crt",
                "-days",
                "2",
                "-extfile",
                "server.ext",
            ]);
            std::fs::write(
                dir.join("data/pg_hba.conf"),
                "local all all trust\nhostnossl all all 127.0.0.1/32 reject\nhostssl all all 127.0.0.1/32 scram-sha-256\n",
            )
            .unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(dir.join("server.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
            }
            if is_root() {
                chown_postgres(dir);
            }
            format!(
                "-c ssl=on -c ssl_cert_file={0}/server.crt -c ssl_key_file={0}/server.key",
                dir.display()
            )
        });
        let ca = server.dir().join("ca.pem");
        (server, ca)
    }

    /// Starts a server after `prepare` (given the directory, after initdb)
    /// has set up what it needs; it returns more server options.
    fn start_with(prepare: impl FnOnce(&std::path::Path) -> String) -> PgServer {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL under /usr/lib/postgresql (apt-get install postgresql)")
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .filter(|p| p.join("initdb").exists())
            .max()
            .expect("initdb under /usr/lib/postgresql/*/bin");
        let dir = tempfile::Builder::new().prefix("weft-pg-").tempdir().unwrap();
        let password = format!("pw{}", std::process::id());
        std::fs::write(dir.path().join("pwfile"), format!("{password}\n")).unwrap();
        if is_root() {
            chown_postgres(dir.path());
        }
        let data = dir.path().join("data");
        let out = run_with_deadline(
            as_postgres(&bin.join("initdb"))
                .arg("-D")
                .arg(&data)
                .args([
                    "-U",
                    "postgres",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "--no-sync",
                ])
                .arg(format!("--pwfile={}", dir.path().join("pwfile").display())),
            Duration::from_secs(120),
        );
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let options = prepare(dir.path());
        let port = free_port();
        let server = PgServer {
            dir,
            bin,
            port,
            password,
            options,
        };
        server.start_again();
        server
    }

    /// The URL of database `db` on this server.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres:{}@127.0.0.1:{}/{db}", self.password, self.port)
    }

    /// Starts the (stopped) server again on the same port and data.
    pub fn start_again(&self) {
        let dir = self.dir.path();
        let out = run_with_deadline(
            as_postgres(&self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(dir.join("data"))
                .arg("-l")
                .arg(dir.join("server.log"))
                .args(["-w", "-t", "60", "-o"])
                .arg(format!(
                    "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories={} {}",
                    self.port,
                    dir.display(),
                    self.options
                ))
                .arg("start"),
            Duration::from_secs(90),
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
        );
    }

    /// Stops the server (`fast`: sessions are ended, as in a restart).
    pub fn stop(&self) {
        let out = run_with_deadline(
            as_postgres(&self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(self.dir.path().join("data"))
                .args(["-m", "fast", "-w", "-t", "60", "stop"]),
            Duration::from_secs(90),
        );
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let pid_file = self.dir.path().join("data/postmaster.pid");
        if let Ok(text) = std::fs::read_to_string(pid_file) {
            if let Some(pid) = text.lines().next().and_then(|l| l.trim().parse::<i32>().ok()) {
                // SAFETY: plain libc call on the postmaster this test started.
                unsafe {
                    super::libc_kill(pid, 3); // SIGQUIT: immediate shutdown
                }
            }
        }
    }
}

fn is_root() -> bool {
    // SAFETY: getuid cannot fail.
    unsafe { getuid() == 0 }
}

extern "C" {
    fn getuid() -> u32;
}

fn chown_postgres(path: &std::path::Path) {
    let out = run_with_deadline(
        Command::new("chown").arg("-R").arg("postgres").arg(path),
        PROCESS_DEADLINE,
    );
    assert!(out.status.success(), "chown: {}", String::from_utf8_lossy(&out.stderr));
}

/// `program`, run as the `postgres` user when the tests run as root.
fn as_postgres(program: &std::path::Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A psql session kept open, to hold a lock or a transaction while the test
/// goes on.
pub struct Session {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Session {
    pub fn open(url: &str) -> Session {
        use std::io::BufRead;
        let mut child = Command::new("psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("psql");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Session { child, stdin, lines }
    }

    /// Runs `sql` and waits until psql has done it.
    pub fn run(&mut self, sql: &str) {
        use std::io::Write;
        writeln!(self.stdin, "{sql}\n\\echo done-marker").unwrap();
        self.stdin.flush().unwrap();
        loop {
            match self.lines.recv_timeout(PROCESS_DEADLINE) {
                Ok(line) if line == "done-marker" => return,
                Ok(_) => {}
                Err(_) => panic!("psql did not run {sql}"),
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
