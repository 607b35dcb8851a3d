//! From `--db postgres://…` to a connection configuration, the way libpq
//! users expect: what the URL leaves out comes from the standard `PG*`
//! variables, the password from the URL, `--db-password-file`,
//! `PGPASSWORD` or a password file (`PGPASSFILE`, `~/.pgpass`), in that
//! order; `sslmode` as libpq means it (`disable`, `prefer` and `require`
//! encrypt without checking the certificate; `verify-ca` and `verify-full`
//! check it against the web's roots and `sslrootcert`).
//!
//! The environment is an argument (`env`), so the rules are unit-tested.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::storage::StoreError;

/// How long connecting may take before it counts as a failure.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and how to connect, resolved.
pub(super) struct Target {
    pub config: tokio_postgres::Config,
    pub tls: MakeRustlsConnect,
}

/// How the TLS certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verify {
    /// Encrypt, trust any certificate (libpq's `prefer` and `require`).
    Nothing,
    /// The chain up to a trusted root and the host name.
    Full,
}

/// Resolves `url` with the environment `env` and the password file given
/// with `--db-password-file`. `statement_timeout` and `lock_timeout` are set
/// for every session, so that every query is bounded by the server too.
pub(super) fn resolve(
    url: &str,
    password_file: Option<&Path>,
    statement_timeout: Duration,
    lock_timeout: Duration,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Target, StoreError> {
    // As libpq: a variable set to nothing is not set.
    let env = &|name: &str| env(name).filter(|v| !v.is_empty());
    let (url, ssl_mode, root_cert) = take_tls_params(url, env)?;
    let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
        StoreError::Config(format!(
            "the PostgreSQL URL does not parse ({e}); expected postgres://user@host:5432/dbname"
        ))
    })?;
    if config.get_hosts().is_empty() {
        match env("PGHOST") {
            Some(hosts) => {
                for host in hosts.split(',') {
                    config.host(host);
                }
            }
            // libpq's default on Debian: the local socket directory.
            None if Path::new("/var/run/postgresql").is_dir() => {
                config.host("/var/run/postgresql");
            }
            None => {
                config.host("localhost");
            }
        }
    }
    if config.get_ports().is_empty() {
        if let Some(port) = env("PGPORT") {
            let port = port
                .parse()
                .map_err(|_| StoreError::Config(format!("PGPORT '{port}' is not a port number")))?;
            config.port(port);
        }
    }
    if config.get_user().is_none() {
        let user = env("PGUSER")
            .or_else(|| env("USER"))
            .ok_or_else(|| StoreError::Config("no PostgreSQL user: put one in the URL or set PGUSER".into()))?;
        config.user(user);
    }
    if config.get_dbname().is_none() {
        let db = env("PGDATABASE").unwrap_or_else(|| config.get_user().unwrap_or_default().to_string());
        config.dbname(db);
    }
    if config.get_application_name().is_none() {
        config.application_name(env("PGAPPNAME").unwrap_or_else(|| "weft".into()));
    }
    if config.get_password().is_none() {
        if let Some(password) = find_password(&config, password_file, env)? {
            config.password(password);
        }
    }
    let mut options = config.get_options().unwrap_or_default().to_string();
    options.push_str(&format!(
        " -c statement_timeout={} -c lock_timeout={}",
        statement_timeout.as_millis().max(1),
        lock_timeout.as_millis().max(1)
    ));
    config.options(options.trim());
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    // A server that vanished (a machine gone, a partition) is noticed by
    // keepalives instead of a query waiting on a dead socket.
    config.keepalives(true).keepalives_idle(Duration::from_secs(10));
    config.tcp_user_timeout(statement_timeout);
    let verify = match ssl_mode.as_str() {
        "disable" => {
            config.ssl_mode(SslMode::Disable);
            Verify::Nothing
        }
        "allow" | "prefer" => {
            config.ssl_mode(SslMode::Prefer);
            Verify::Nothing
        }
        "require" => {
            config.ssl_mode(SslMode::Require);
            Verify::Nothing
        }
        "verify-ca" | "verify-full" => {
            config.ssl_mode(SslMode::Require);
            Verify::Full
        }
        other => {
            return Err(StoreError::Config(format!(
                "sslmode '{other}' is not one of disable, allow, prefer, require, verify-ca, verify-full"
            )))
        }
    };
    let tls = tls_config(verify, root_cert.as_deref())?;
    Ok(Target {
        config,
        tls: MakeRustlsConnect::new(tls),
    })
}

/// Takes `sslmode` and `sslrootcert` out of the URL's query (tokio-postgres
/// knows neither `verify-*` nor `sslrootcert`), with `PGSSLMODE` and
/// `PGSSLROOTCERT` as defaults.
fn take_tls_params(
    url: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, String, Option<PathBuf>), StoreError> {
    let mut ssl_mode = env("PGSSLMODE").unwrap_or_else(|| "prefer".into());
    let mut root_cert = env("PGSSLROOTCERT").map(PathBuf::from);
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), ssl_mode, root_cert));
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslmode", value)) => ssl_mode = value.to_string(),
            Some(("sslrootcert", value)) => {
                let value = percent_encoding::percent_decode_str(value).decode_utf8_lossy();
                root_cert = Some(PathBuf::from(value.as_ref()));
            }
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, ssl_mode, root_cert))
}

/// The password for `config`'s user, host, port and database, if one is
/// configured anywhere but the URL.
fn find_password(
    config: &tokio_postgres::Config,
    password_file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, StoreError> {
    if let Some(path) = password_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| StoreError::Config(format!("--db-password-file {}: {e}", path.display())))?;
        let password = text.trim_end_matches(['\n', '\r']);
        if password.is_empty() {
            return Err(StoreError::Config(format!(
                "--db-password-file {} is empty",
                path.display()
            )));
        }
        return Ok(Some(password.to_string()));
    }
    if let Some(password) = env("PGPASSWORD") {
        return Ok(Some(password));
    }
    let passfile = match env("PGPASSFILE") {
        Some(path) => PathBuf::from(path),
        None => match env("HOME") {
            Some(home) => Path::new(&home).join(".pgpass"),
            None => return Ok(None),
        },
    };
    let Ok(text) = std::fs::read_to_string(&passfile) else {
        return Ok(None);
    };
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(name)) => name.clone(),
        #[cfg(unix)]
        Some(Host::Unix(_)) => "localhost".into(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432).to_string();
    let db = config.get_dbname().unwrap_or_default();
    let user = config.get_user().unwrap_or_default();
    Ok(pgpass_lookup(&text, [&host, &port, db, user]))
}

/// The password of the first line of a `.pgpass` file
/// (`host:port:database:user:password`, `*` matching anything, `\` escaping
/// `:` and `\`) that matches `wanted`.
fn pgpass_lookup(text: &str, wanted: [&str; 4]) -> Option<String> {
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut fields = Vec::with_capacity(5);
        let mut field = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => field.extend(chars.next()),
                ':' if fields.len() < 4 => fields.push(std::mem::take(&mut field)),
                c => field.push(c),
            }
        }
        fields.push(field);
        if fields.len() != 5 {
            continue;
        }
        if fields[..4].iter().zip(wanted).all(|(f, w)| f == "*" || f == w) {
            return Some(fields.pop().unwrap_or_default());
        }
    }
    None
}

fn tls_config(verify: Verify, root_cert: Option<&Path>) -> Result<rustls::ClientConfig, StoreError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Config(format!("TLS: {e}")))?;
    let config = match verify {
        Verify::Nothing => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
        Verify::Full => {
            let mut roots = RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            if let Some(path) = root_cert {
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| StoreError::Config(format!("sslrootcert {}: {e}", path.display())))?;
                for cert in certs {
                    roots
                        .add(cert)
                        .map_err(|e| StoreError::Config(format!("sslrootcert {}: {e}", path.display())))?;
                }
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(config)
}

/// libpq's `require`: the connection is encrypted, the certificate is not
/// checked (the signatures of the handshake still are).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn resolve_with(url: &str, vars: &[(&str, &str)]) -> Result<tokio_postgres::Config, StoreError> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let env = move |name: &str| vars.get(name).cloned();
        let second = Duration::from_secs(1);
        resolve(url, None, second, second, &env).map(|t| t.config)
    }

    #[test]
    fn the_url_wins_and_pg_variables_fill_the_rest() {
        let c = resolve_with("postgres://alice:pw@db.example:6543/notes", &[("PGUSER", "bob")]).unwrap();
        assert_eq!(c.get_user(), Some("alice"));
        assert_eq!(c.get_password(), Some(&b"pw"[..]));
        assert_eq!(c.get_ports(), &[6543]);
        assert_eq!(c.get_dbname(), Some("notes"));

        let c = resolve_with(
            "postgres://",
            &[
                ("PGHOST", "h1"),
                ("PGPORT", "7000"),
                ("PGUSER", "bob"),
                ("PGPASSWORD", "pw2"),
                ("PGDATABASE", "d"),
            ],
        )
        .unwrap();
        assert_eq!(c.get_hosts(), &[Host::Tcp("h1".into())]);
        assert_eq!(c.get_ports(), &[7000]);
        assert_eq!(c.get_user(), Some("bob"));
        assert_eq!(c.get_password(), Some(&b"pw2"[..]));
        assert_eq!(c.get_dbname(), Some("d"));
        assert!(c.get_options().unwrap().contains("statement_timeout=1000"));
        assert!(resolve_with("postgres://", &[("PGPORT", "x"), ("PGUSER", "u")]).is_err());
    }

    #[test]
    fn sslmode_follows_libpq() {
        let mode = |url: &str, vars: &[(&str, &str)]| resolve_with(url, vars).unwrap().get_ssl_mode();
        assert_eq!(mode("postgres://u@h/d", &[]), SslMode::Prefer);
        assert_eq!(mode("postgres://u@h/d?sslmode=disable", &[]), SslMode::Disable);
        assert_eq!(mode("postgres://u@h/d", &[("PGSSLMODE", "require")]), SslMode::Require);
        assert_eq!(mode("postgres://u@h/d?sslmode=verify-full", &[]), SslMode::Require);
        assert!(resolve_with("postgres://u@h/d?sslmode=sometimes", &[]).is_err());
    }

    #[test]
    fn pgpass_lines_match_with_wildcards_and_escapes() {
        let file = "# comment\nother:5432:*:u:no\nh:5432:d:u:a\\:b\\\\c\n*:*:*:*:fallback\n";
        assert_eq!(pgpass_lookup(file, ["h", "5432", "d", "u"]).as_deref(), Some("a:b\\c"));
        assert_eq!(pgpass_lookup(file, ["x", "1", "y", "z"]).as_deref(), Some("fallback"));
        assert_eq!(pgpass_lookup("h:1:d:u\n", ["h", "1", "d", "u"]), None);
    }

    #[test]
    fn a_password_file_is_read_and_pgpassfile_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let pgpass = dir.path().join("pgpass");
        std::fs::write(&pgpass, "h:5432:d:u:from-pgpass\n").unwrap();
        let c = resolve_with("postgres://u@h/d", &[("PGPASSFILE", pgpass.to_str().unwrap())]).unwrap();
        assert_eq!(c.get_password(), Some(&b"from-pgpass"[..]));

        let file = dir.path().join("password");
        std::fs::write(&file, "from-file\n").unwrap();
        let env = |name: &str| (name == "PGPASSWORD").then(|| "from-env".to_string());
        let second = Duration::from_secs(1);
        let t = resolve("postgres://u@h/d", Some(&file), second, second, &env).unwrap();
        assert_eq!(t.config.get_password(), Some(&b"from-file"[..]));
    }
}
