//! README's HTTP API walkthrough, run exactly as printed: the `sh` block
//! after the marker comment in README.md is extracted, its
//! `127.0.0.1:1234` pointed at a fresh weft (open mode, its own database),
//! and run by bash with `set -euo pipefail` in an empty directory. Any
//! command that fails fails the test, and so does a block that changes shape
//! (a curl without `--fail-with-body` or without the content type its body
//! needs, a version id written as a number, a route no longer shown).
//! Every `# → ...` comment is output the block must print, in that order.
//! The block uses curl and jq (`scripts/test.sh` installs them if missing).

mod common;

use std::process::Command;
use std::time::Duration;

use common::{run_with_deadline, Server};

const MARKER: &str = "<!-- Run as printed, against a fresh weft, by tests/readme_walkthrough.rs";
const PRINTED_ADDR: &str = "127.0.0.1:1234";

/// The `sh` block right after README's marker, as printed.
fn walkthrough() -> String {
    let readme = include_str!("../README.md");
    let at = readme
        .find(MARKER)
        .expect("README.md has lost the walkthrough's marker comment (see this file's header)");
    let rest = &readme[at..];
    let mut lines = rest.lines().skip(1);
    assert_eq!(
        lines.next(),
        Some("```sh"),
        "the marker must sit right above the walkthrough's ```sh block"
    );
    let mut block = String::new();
    for line in lines {
        if line == "```" {
            return block;
        }
        block.push_str(line);
        block.push('\n');
    }
    panic!("the walkthrough's ```sh block is not closed");
}

/// The commands of a shell script, continuation lines joined.
fn commands(script: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in script.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                out.push(std::mem::take(&mut current));
            }
        }
    }
    assert!(current.is_empty(), "the block ends in a continuation line");
    out
}

fn require_tool(tool: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "README's walkthrough needs {tool}: install it (scripts/test.sh does)"
    );
}

/// The block's shape: what makes it work as pasted on a fresh server.
#[test]
fn the_walkthrough_has_the_shape_that_makes_it_work() {
    let block = walkthrough();
    let commands = commands(&block);
    let curls: Vec<&String> = commands.iter().filter(|c| c.contains("curl ")).collect();
    assert!(
        curls.len() >= 10,
        "the walkthrough shows fewer requests than it did:\n{block}"
    );
    for curl in &curls {
        assert!(
            curl.contains("--fail-with-body"),
            "without --fail-with-body an error answer passes for a result (saved by -o, piped to jq): {curl}"
        );
        assert!(
            curl.contains(&format!("http://{PRINTED_ADDR}/")),
            "every request goes to the default address: {curl}"
        );
        if curl.contains("--data-binary") {
            assert!(
                curl.contains("content-type: application/octet-stream"),
                "an update needs its content type (else 415): {curl}"
            );
        }
        if curl.contains(" -d ") {
            assert!(
                curl.contains("content-type: application/json"),
                "a JSON body needs its content type (else 415): {curl}"
            );
        }
        assert!(
            !curl
                .split_whitespace()
                .any(|w| w.contains("/versions/") && w.split('/').any(|part| part.parse::<u64>().is_ok())),
            "version ids are numbered across documents: use the one returned, not a number: {curl}"
        );
    }
    // Every update it posts is made in the block itself (or fetched by it).
    for command in &commands {
        if let Some(at) = command.find("--data-binary @") {
            let file = command[at + "--data-binary @".len()..]
                .split_whitespace()
                .next()
                .unwrap();
            assert!(
                block.contains(&format!("> {file}")) || block.contains(&format!("-o {file}")),
                "{file} is posted but never made by the walkthrough"
            );
        }
    }
    // The routes it shows, each used at least once.
    let shows = |what: &str, pred: &dyn Fn(&str) -> bool| {
        assert!(curls.iter().any(|c| pred(c)), "the walkthrough no longer shows {what}");
    };
    shows("posting an update", &|c| {
        c.contains("--data-binary") && c.contains("/update")
    });
    shows("the document list", &|c| {
        c.trim_end().ends_with("/api/docs") || c.contains("/api/docs |")
    });
    shows("a document's content", &|c| {
        c.contains("notes%2Ftoday |") || c.contains("notes%2Ftoday ")
    });
    shows("fetching the full state", &|c| {
        c.contains("-o ") && c.contains("/update")
    });
    shows("taking a named version", &|c| {
        c.contains("/versions") && c.contains("\"label\"")
    });
    shows("listing versions", &|c| {
        c.contains("/versions |") || c.trim_end().ends_with("/versions")
    });
    shows("a restore", &|c| c.contains("-X POST") && c.contains("/restore"));
    shows("deleting a document", &|c| c.contains("-X DELETE"));
    assert!(block.contains("# → "), "the walkthrough shows no expected output");
}

/// The block, run as printed against a fresh weft, does what it says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_walkthrough_runs_as_printed_on_a_fresh_server() {
    require_tool("curl");
    require_tool("jq");
    let block = walkthrough();
    let server = Server::start();
    let script = format!("set -euo pipefail\n{}", block.replace(PRINTED_ADDR, &server.addr));
    let dir = tempfile::tempdir().unwrap();
    let output = {
        let mut command = Command::new("bash");
        command.arg("-c").arg(&script).current_dir(dir.path());
        tokio::task::spawn_blocking(move || run_with_deadline(&mut command, Duration::from_secs(120)))
            .await
            .unwrap()
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "README's walkthrough failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}\nweft's log:\n{}",
        output.status,
        server.log()
    );
    assert!(stderr.is_empty(), "the walkthrough printed errors:\n{stderr}");

    // Each `# → ...` is printed, in order.
    let mut from = 0;
    for expected in block
        .lines()
        .filter_map(|l| l.split_once("# → ").map(|(_, e)| e.trim()))
    {
        match stdout[from..].find(expected) {
            Some(at) => from += at + expected.len(),
            None => panic!(
                "README says the walkthrough prints {expected:?} (after what came before); it printed:\n{stdout}"
            ),
        }
    }

    // And the server is where the walkthrough says it left it.
    let doc = server.get("/api/docs/notes%2Ftoday").await;
    assert_eq!(doc.status, 200, "{}", doc.text());
    assert_eq!(doc.json()["content"], serde_json::json!({ "text": "Hello from curl" }));
    assert_eq!(
        server.get("/api/docs/notes%2Fcopy").await.status,
        404,
        "the copy was deleted"
    );
    let versions = server.get("/api/docs/notes%2Ftoday/versions").await.json();
    let labels: Vec<&str> = versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["label"].as_str())
        .collect();
    assert!(labels.contains(&"before the review"), "{labels:?}");
    assert!(
        labels
            .iter()
            .any(|l| l.starts_with("Before restoring version ") && l.ends_with("(before the review)")),
        "{labels:?}"
    );
    // The files it made are what it says: hello.bin an update, state.bin
    // the document's state (not an error saved as one).
    let state = std::fs::read(dir.path().join("state.bin")).unwrap();
    assert_eq!(state, std::fs::read(dir.path().join("hello.bin")).unwrap());
}
