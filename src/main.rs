use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tokio::net::TcpListener;
use tracing::{error, info};
use tracing_subscriber::EnvFilter;

use weft::auth::{self, AuthError, AuthKey, TokenSpec};
use weft::config::{Cli, Command, Config, LogFormat, MigrateArgs, TokenArgs};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match cli.command {
        Some(Command::Token(args)) => return token(args),
        Some(Command::Migrate(args)) => return migrate(args),
        None => cli.serve,
    };
    init_tracing(&config);
    fix_mmap_threshold();
    raise_fd_limit();
    // Refuse an exposed open server before binding anything.
    let token_mode = match config.auth_key() {
        Ok(key) => key.is_some(),
        Err(e) => {
            error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = weft::server::check_exposure(&config, config.addr, token_mode) {
        error!("{e}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // yrs recurses once per nesting level of shared types; the stacks
        // are reserved, not used, until a document is that deep.
        .thread_stack_size(weft::doc::stack_size_for(config.max_doc_types))
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "could not start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match TcpListener::bind(config.addr).await {
            Ok(l) => l,
            Err(e) => {
                error!(addr = %config.addr, error = %e, "could not listen");
                return ExitCode::FAILURE;
            }
        };
        info!("configuration: {}", config.summary());
        match weft::server::run(config, listener, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                error!(error = %e, "weft stopped");
                ExitCode::FAILURE
            }
        }
    })
}

/// `weft token`: prints a token signed with the configured key.
fn token(args: TokenArgs) -> ExitCode {
    let key = match AuthKey::load(args.auth_key_file.as_deref(), args.auth_key.as_deref()) {
        Ok(Some(key)) => key,
        Ok(None) => {
            eprintln!("weft token: no key: pass --auth-key-file or set WEFT_AUTH_KEY (the key weft serves with)");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("weft token: {e}");
            return ExitCode::FAILURE;
        }
    };
    let spec = TokenSpec {
        doc: args.doc,
        perm: args.perm,
        ttl_secs: args.ttl,
        sub: args.user,
        name: args.name,
    };
    let json = args.json;
    match auth::issue(&key, spec, weft::clock::now_secs()) {
        // --json: one JSON object on stdout, shaped like POST /api/tokens'
        // answer plus the claims, so `weft token --json > file` keeps it all.
        Ok((token, claims)) if json => println!(
            "{}",
            serde_json::json!({ "token": token, "token_id": claims.jti, "claims": claims })
        ),
        Ok((token, _)) => println!("{token}"),
        Err(AuthError::BadLifetime) => {
            eprintln!("weft token: --ttl is at most 365d");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("weft token: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// `weft migrate`: copies one database into another and verifies the copy.
fn migrate(args: MigrateArgs) -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new("warn"))
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weft migrate: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let conn = weft::storage::transfer::Connection {
        password_file: args.db_password_file.clone(),
        statement_timeout: std::time::Duration::from_millis(args.db_statement_timeout_ms.max(1)),
    };
    let copied = runtime.block_on(weft::storage::transfer::copy(&args.from, &args.to, &conn, |doc| {
        eprintln!("copying {doc}")
    }));
    match copied {
        Ok(report) => {
            println!(
                "copied {} documents ({} log rows, {} snapshots of which {} versions), {} revocations, \
                 {} events, {} webhook subscriptions ({} cursors, {} failures) from {} to {}; every \
                 document's state vector, versions and reported mark, the revocations, events and \
                 webhooks match",
                report.documents,
                report.log_rows,
                report.snapshots,
                report.versions,
                report.revocations,
                report.events,
                report.webhooks,
                report.cursors,
                report.failures,
                args.from,
                args.to
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("weft migrate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Each connection is a file descriptor; the default soft limit (often
/// 1024) would cap weft far below its connection limit. Raise it to the
/// hard limit, which only root can change.
fn raise_fd_limit() {
    #[cfg(unix)]
    // SAFETY: getrlimit and setrlimit only read and write the struct they are
    // given, which lives on this stack frame for the whole block.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                tracing::debug!(limit = limit.rlim_cur, "raised the open-file limit");
            } else {
                // server.rs logs the limit that stays, and what it allows.
                tracing::warn!(
                    hard = limit.rlim_max,
                    error = %std::io::Error::last_os_error(),
                    "could not raise the open-file limit to the hard limit"
                );
            }
        }
    }
}

/// Big allocations (4 MiB and more) get pages of their own, returned when
/// freed. glibc otherwise raises that threshold to the largest block freed
/// so far (up to 32 MiB), after which big messages, updates and encodings
/// come from the heap and stay resident once freed: a 20 MiB document
/// received from a client left weft 60 MiB larger than the same document
/// loaded from disk (bench/FINDINGS.md, join storm). Fixing the threshold
/// turns the adjustment off. Not glibc's initial 128 KiB: then every
/// mid-sized buffer (a batch, a joined relay) is an mmap and munmap, and a
/// quick run's durable writes came out 7-24% lower in all three modes; at
/// 4 MiB they did not. An operator's `MALLOC_MMAP_THRESHOLD_` wins.
fn fix_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        // SAFETY: mallopt only sets an allocator parameter (glibc takes
        // its own lock); called at start-up, before the runtime starts.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        }
    }
}

fn init_tracing(config: &Config) {
    let filter = EnvFilter::try_new(&config.log).unwrap_or_else(|e| {
        eprintln!("invalid --log filter '{}': {e}; using 'info'", config.log);
        EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match config.log_format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(true).init(),
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
