//! The servers a benchmark runs against (weft, the reference Node server,
//! the null relay): started fresh with a clean environment, pinned to their
//! cores, waited for, stopped with SIGTERM or killed, restarted on the same
//! port and database.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::conn::{Error, Target};
use crate::stats;

/// Which server a process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Weft,
    Reference,
    Relay,
    /// `@hocuspocus/server` with its SQLite extension (bench/hocuspocus).
    Hocuspocus,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Weft => "weft",
            Kind::Reference => "reference",
            Kind::Relay => "relay",
            Kind::Hocuspocus => "hocuspocus",
        }
    }
}

/// Whether weft runs with its abuse limits (per-connection message rate,
/// connections per IP) off, as for throughput, or at their defaults, as
/// facing the internet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limits {
    Off,
    Defaults,
}

/// Everything `compare` needs to start the three servers.
#[derive(Clone, Debug)]
pub struct Servers {
    pub weft: PathBuf,
    /// `@y/websocket-server`'s `src/server.js`; `None` skips the reference.
    pub reference: Option<PathBuf>,
    /// bench/hocuspocus/server.js; `None` skips the Hocuspocus scenarios.
    pub hocuspocus: Option<PathBuf>,
    /// This very binary, for `weft-bench relay`.
    pub relay: PathBuf,
    /// The core list the servers are pinned to (`taskset -c`); empty: none.
    pub cores: String,
    pub work: PathBuf,
    /// A PostgreSQL server's URL (`--store postgres`): weft also runs on a
    /// fresh database of it in the durable-writes and many-documents
    /// scenarios.
    pub postgres: Option<String>,
    /// PostgreSQL and Redis for the cluster scenario; `None` skips it.
    pub cluster: Option<crate::cluster::Backends>,
}

/// A running server process.
pub struct Server {
    pub kind: Kind,
    child: Child,
    pub pid: u32,
    pub base: String,
    pub db: Option<PathBuf>,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
}

fn free_port() -> Result<u16, Error> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

impl Servers {
    /// A fresh database named after `label` on the PostgreSQL server, by
    /// URL; `None` without `--store postgres`.
    pub fn fresh_postgres(&self, label: &str) -> Result<Option<String>, Error> {
        match &self.postgres {
            Some(server) => fresh_database(server, label).map(Some),
            None => Ok(None),
        }
    }

    /// Starts a server of `kind`; weft gets `extra` flags and a fresh database
    /// named after `label` (or `db` to reuse one), and its abuse limits off.
    pub fn start(&self, kind: Kind, label: &str, extra: &[&str], db: Option<PathBuf>) -> Result<Server, Error> {
        self.start_with(kind, label, extra, db, Limits::Off)
    }

    /// [`Servers::start`], choosing whether weft's abuse limits apply.
    pub fn start_with(
        &self,
        kind: Kind,
        label: &str,
        extra: &[&str],
        db: Option<PathBuf>,
        limits: Limits,
    ) -> Result<Server, Error> {
        let port = free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let mut env = Vec::new();
        let mut db_path = None;
        let fresh_db = |db: Option<PathBuf>| match db {
            Some(db) => db,
            None => {
                let db = self.work.join(format!("{label}.db"));
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
                }
                db
            }
        };
        let mut argv: Vec<String> = match kind {
            Kind::Hocuspocus => {
                let script = self.hocuspocus.as_ref().ok_or("no Hocuspocus server")?;
                let db = fresh_db(db);
                env.push(("HOST".to_string(), "127.0.0.1".to_string()));
                env.push(("PORT".to_string(), port.to_string()));
                env.push(("DB".to_string(), db.display().to_string()));
                db_path = Some(db);
                vec!["node".into(), script.display().to_string()]
            }
            Kind::Weft => {
                let db = fresh_db(db);
                let mut v = vec![
                    self.weft.display().to_string(),
                    "--addr".into(),
                    addr.clone(),
                    "--log".into(),
                    "warn".into(),
                ];
                // A PostgreSQL URL among the flags replaces the file.
                if !extra.contains(&"--db") {
                    db_path = Some(db.clone());
                    v.extend(["--db".into(), db.display().to_string()]);
                }
                if limits == Limits::Off {
                    // The abuse limits are for the open internet: a load
                    // generator is one client IP sending as fast as it can.
                    v.extend(
                        [
                            "--rate-limit",
                            "0",
                            "--max-connections-per-ip",
                            "0",
                            "--max-new-docs-per-minute",
                            "0",
                        ]
                        .map(String::from),
                    );
                    // As a variable, which a weft from before the flag
                    // ignores (a flag would stop it from starting).
                    env.push(("WEFT_BYTE_RATE_LIMIT".to_string(), "0".to_string()));
                }
                v.extend(extra.iter().map(|s| s.to_string()));
                v
            }
            Kind::Reference => {
                let script = self.reference.as_ref().ok_or("no reference server")?;
                env.push(("HOST".to_string(), "127.0.0.1".to_string()));
                env.push(("PORT".to_string(), port.to_string()));
                vec!["node".into(), script.display().to_string()]
            }
            Kind::Relay => vec![
                self.relay.display().to_string(),
                "relay".into(),
                "--addr".into(),
                addr.clone(),
            ],
        };
        if !self.cores.is_empty() {
            argv.splice(0..0, ["taskset".to_string(), "-c".to_string(), self.cores.clone()]);
        }
        let log = self.work.join(format!("{label}.log"));
        Server::launch(kind, argv, env, log, format!("ws://{addr}"), db_path)
    }
}

/// A fresh database named after `label` on the PostgreSQL server at
/// `server` (dropped first if a run left it), by URL.
pub fn fresh_database(server: &str, label: &str) -> Result<String, Error> {
    let name = format!("bench_{}", label.replace(|c: char| !c.is_ascii_alphanumeric(), "_"));
    for sql in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        let out = std::process::Command::new("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", server, "-c", &sql])
            .output()?;
        if !out.status.success() {
            return Err(format!("psql {sql}: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
    }
    let (base, query) = server.split_once('?').unwrap_or((server, ""));
    let authority_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_end..].find('/') {
        Some(i) => &base[..authority_end + i],
        None => base,
    };
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    Ok(format!("{base}/{name}{query}"))
}

fn spawn(argv: &[String], env: &[(String, String)], log: &Path) -> Result<Child, Error> {
    let file = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    let mut command = Command::new(&argv[0]);
    // weft reads every setting from a WEFT_* variable too: one set in the
    // caller's shell (WEFT_AUTH_KEY turns on token mode, WEFT_RATE_LIMIT...)
    // must not change what is measured. Only the flags count.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("WEFT_") {
            command.env_remove(key);
        }
    }
    let child = command
        .args(&argv[1..])
        .envs(env.iter().cloned())
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .map_err(|e| format!("could not start {}: {e}", argv[0]))?;
    Ok(child)
}

impl Server {
    fn wait_ready(&mut self, addr: &str) -> Result<(), Error> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if TcpStream::connect(addr).is_ok() {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                return Err(format!("{} exited ({status}); see {}", self.kind.name(), self.log.display()).into());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return Err(format!("{} did not listen within 30 s", self.kind.name()).into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM (weft saves and compacts), then waits; SIGKILL after 20 s.
    pub fn stop(mut self) -> Result<(), Error> {
        // SAFETY: a plain syscall on our own child.
        unsafe {
            kill(self.pid as i32, 15);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(format!("{} ignored SIGTERM for 20 s", self.kind.name()).into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// SIGKILL: nothing gets saved at exit.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the same command again (same port, same database).
    pub(crate) fn restart_after(self, how: &str) -> Result<Server, Error> {
        let (argv, env, log, kind, base, db) = (
            self.argv.clone(),
            self.env.clone(),
            self.log.clone(),
            self.kind,
            self.base.clone(),
            self.db.clone(),
        );
        match how {
            "kill" => self.kill(),
            _ => self.stop()?,
        }
        Server::launch(kind, argv, env, log, base, db)
    }

    /// Spawns the process and waits until it accepts connections at `base`.
    fn launch(
        kind: Kind,
        argv: Vec<String>,
        env: Vec<(String, String)>,
        log: PathBuf,
        base: String,
        db: Option<PathBuf>,
    ) -> Result<Server, Error> {
        let addr = base.trim_start_matches("ws://").to_string();
        let mut server = Server {
            kind,
            child: spawn(&argv, &env, &log)?,
            pid: 0,
            base,
            db,
            argv,
            env,
            log,
        };
        server.pid = server.child.id();
        server.wait_ready(&addr)?;
        Ok(server)
    }

    pub async fn target(&self) -> Result<Target, Error> {
        Target::new(&self.base).await
    }

    pub fn rss_kib(&self) -> u64 {
        stats::sample(self.pid).map_or(0, |s| s.rss_kib)
    }
}
