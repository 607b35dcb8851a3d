//! Token mode for the tests: one key, a server started with it, and tokens
//! signed with it as a backend would.

use std::path::PathBuf;

use weft::auth::{self, AuthKey, Claims, Perm};

use super::Server;

/// The key every token-mode test server signs with.
pub const KEY: &str = "test-key-0123456789abcdef0123456789";

/// A file holding [`KEY`] and a newline, as `openssl rand -hex 32 > key`
/// writes one; the directory holds it.
pub fn key_file() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key");
    std::fs::write(&path, format!("{KEY}\n")).unwrap();
    (dir, path)
}

/// A server in token mode, with `extra` flags; the directory holds its key
/// file.
pub fn token_server(extra: &[(&str, &str)]) -> (Server, tempfile::TempDir) {
    token_server_on(super::Store::Sqlite, extra)
}

/// `token_server` on a fresh database of `store`.
pub fn token_server_on(store: super::Store, extra: &[(&str, &str)]) -> (Server, tempfile::TempDir) {
    let (dir, path) = key_file();
    let mut builder = Server::builder().store(store).arg("--auth-key-file", path.display());
    for (flag, value) in extra {
        builder = builder.arg(flag, value);
    }
    (builder.start(), dir)
}

/// Claims for `doc` that expire `ttl_secs` from now, with a fresh id.
pub fn claims(doc: &str, perm: Perm, ttl_secs: u64) -> Claims {
    Claims {
        doc: doc.into(),
        perm,
        exp: weft::clock::now_secs() + ttl_secs,
        jti: auth::new_token_id(),
        sub: None,
        name: None,
        iat: None,
    }
}

/// `claims` signed with [`KEY`].
pub fn mint(claims: &Claims) -> String {
    auth::mint(&AuthKey::new(KEY.as_bytes().to_vec()).unwrap(), claims)
}

/// A token for `doc` (a name or a pattern) valid for `ttl_secs`.
pub fn token(doc: &str, perm: Perm, ttl_secs: u64) -> String {
    mint(&claims(doc, perm, ttl_secs))
}
