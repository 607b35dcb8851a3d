//! weft raises its open-file limit to the hard limit at start-up and says
//! how many connections it can hold (issue 17: on a machine whose hard
//! limit is 20,000, 100,000 connections cannot be held, and the operator
//! must learn it from the start-up log).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Guards against: a soft limit of 1024 (a shell's default) left as it
/// was, capping weft at ~800 connections without a word.
#[test]
fn raises_the_soft_limit_and_says_how_many_connections_it_holds() {
    let hard = String::from_utf8(Command::new("sh").args(["-c", "ulimit -Hn"]).output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string();
    let Ok(hard) = hard.parse::<u64>() else {
        eprintln!("hard limit {hard}: nothing to check");
        return;
    };
    if hard <= 1024 {
        eprintln!("hard limit {hard}: a soft limit of 1024 cannot be raised here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("weft.db");
    let mut child = Command::new("sh")
        .args(["-c", "ulimit -S -n 1024 && exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_weft"))
        .args([
            "--addr",
            "127.0.0.1:0",
            "--log",
            "info",
            "--max-connections",
            "0",
            "--db",
        ])
        .arg(&db)
        .env_remove("WEFT_MAX_CONNECTIONS")
        .env_remove("WEFT_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut log = String::new();
    let mut found = None;
    while found.is_none() && Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        if line.contains("open files:") {
            found = Some(line.clone());
        }
        log.push_str(&line);
        log.push('\n');
    }
    let _ = child.kill();
    let _ = child.wait();
    let line = found.unwrap_or_else(|| panic!("no 'open files:' line within 30 s:\n{log}"));
    assert!(
        line.contains(&format!("open files: limit {hard} (hard {hard})")),
        "soft limit not raised to {hard}: {line}"
    );
    // 0 = as many as fit: the hard limit less what weft keeps for itself.
    assert!(line.contains(&format!("up to {} connections", hard - 192)), "{line}");
    assert!(line.contains("bounded by the open-file limit"), "{line}");
}
