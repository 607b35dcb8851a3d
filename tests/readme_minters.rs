//! README's token minters (Node and Python) and what it says about the key,
//! run as printed: the snippets are extracted from README.md, given the key
//! file the way README's comment in each reads it (the expression after
//! "The key as weft reads it"), and the tokens they mint are used against a
//! weft started with `--auth-key-file` on that file. README also says that
//! a key hex-decoded, or read with its newline, signs tokens weft refuses
//! with "token signature does not match": held here too.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{run_with_deadline, Server};

/// As `openssl rand -hex 32 > weft.key` writes it: 64 hex characters and a newline.
const KEY_FILE: &str = "4f1c0a9e7b3d52c8e6a1f0b9d7c3e5a2b8f4d6c0e2a9b7d5c3f1e8a6b4d2c0e9\n";

/// The fenced block whose first line is `first_line`.
fn snippet(fence: &str, first_line: &str) -> String {
    let readme = include_str!("../README.md");
    let start = readme
        .find(&format!("```{fence}\n{first_line}\n"))
        .unwrap_or_else(|| panic!("README.md has no ```{fence} block starting with {first_line:?}"));
    let body = &readme[start + fence.len() + 4..];
    body[..body.find("\n```").expect("closed block") + 1].to_string()
}

/// The expression README's comment gives for reading the key file.
fn key_expression(snippet: &str, comment: &str) -> String {
    let line = snippet
        .lines()
        .find(|l| l.trim_start().starts_with(comment) && l.contains("The key as weft reads it"))
        .expect("the snippet says how to read the key");
    line.split_once(": ").expect("comment: expression").1.trim().to_string()
}

fn run(program: &str, args: &[&str], dir: &Path) -> String {
    let mut command = Command::new(program);
    command.args(args).current_dir(dir);
    let output = run_with_deadline(&mut command, Duration::from_secs(60));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// What weft answers a bearer token: its status, and its reason if refused.
async fn answer(server: &Server, token: &str) -> (u16, String) {
    let auth = format!("Bearer {token}");
    let response = common::http(&server.addr, "GET", "/api/docs", &[("Authorization", &auth)], None).await;
    let reason = if response.status == 200 {
        String::new()
    } else {
        response.json()["error"].as_str().unwrap_or_default().to_string()
    };
    (response.status, reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readmes_minters_make_tokens_weft_accepts_with_the_key_read_as_readme_says() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("weft.key"), KEY_FILE).unwrap();
    let server = Server::builder()
        .arg("--auth-key-file", dir.path().join("weft.key").display())
        .start();

    // Node.
    let node = snippet("js", "// Node, no dependencies");
    std::fs::write(dir.path().join("minter.mjs"), &node).unwrap();
    let read_key = key_expression(&node, "//");
    let driver = format!(
        "import {{ readFileSync }} from 'node:fs'\nimport {{ weftToken }} from './minter.mjs'\n\
         const key = {read_key}\n\
         console.log(weftToken(key, {{ doc: 'notes/*', perm: 'write', ttlSecs: 600, user: 'u42', name: 'Ada' }}))\n"
    );
    std::fs::write(dir.path().join("mint.mjs"), driver).unwrap();
    let token = tokio::task::spawn_blocking({
        let dir = dir.path().to_owned();
        move || run("node", &["mint.mjs"], &dir)
    })
    .await
    .unwrap();
    assert_eq!(
        answer(&server, &token).await,
        (200, String::new()),
        "Node's token: {token}"
    );

    // Python: as README says, and the two ways README warns about.
    let python = snippet("python", "# Python, standard library only");
    let read_key = key_expression(&python, "#");
    let script = format!(
        "{python}\nimport sys\n\
         good = {read_key}\n\
         for key in (good, bytes.fromhex(good.decode()), open('weft.key', 'rb').read()):\n    \
             print(weft_token(key, 'notes/*', 'write', 600, user='u42', name='Ada'))\n"
    );
    std::fs::write(dir.path().join("mint.py"), script).unwrap();
    let tokens = tokio::task::spawn_blocking({
        let dir = dir.path().to_owned();
        move || run("python3", &["mint.py"], &dir)
    })
    .await
    .unwrap();
    let tokens: Vec<&str> = tokens.lines().collect();
    assert_eq!(tokens.len(), 3, "{tokens:?}");
    assert_eq!(
        answer(&server, tokens[0]).await,
        (200, String::new()),
        "Python's token: {}",
        tokens[0]
    );
    for (how, token) in [("hex-decoded", tokens[1]), ("with its newline", tokens[2])] {
        let (status, reason) = answer(&server, token).await;
        assert_eq!(status, 401, "a token signed with the key {how}: {reason}");
        // README quotes the start of weft's reason.
        assert!(
            reason.starts_with("token signature does not match"),
            "a token signed with the key {how}: {reason}"
        );
    }

    // The key file's text without its newline is also the admin credential.
    assert_eq!(answer(&server, KEY_FILE.trim_end()).await, (200, String::new()));
}
