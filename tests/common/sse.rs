//! A subscriber of `GET /api/events` (Server-Sent Events), read as a
//! browser's EventSource reads it.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::{Server, SECOND};

/// One SSE message.
#[derive(Debug, Clone)]
pub struct Message {
    pub id: Option<i64>,
    pub event: Option<String>,
    pub data: String,
}

impl Message {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("{e}: {}", self.data))
    }
    pub fn kind(&self) -> String {
        self.json()["type"].as_str().unwrap_or_default().to_string()
    }
}

/// A subscriber of `GET /api/events`, read as a browser's EventSource does.
pub struct Feed {
    lines: tokio::io::Lines<BufReader<tokio::net::TcpStream>>,
}

impl Feed {
    /// Opens the feed at `query` with `headers`. HTTP/1.0, so that the body
    /// is the stream itself, without chunks.
    pub async fn open(server: &Server, query: &str, headers: &[(&str, &str)]) -> Feed {
        let mut stream = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
        let mut request = format!("GET /api/events{query} HTTP/1.0\r\nHost: {}\r\n", server.addr);
        for (k, v) in headers {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut lines = BufReader::new(stream).lines();
        let status = tokio::time::timeout(5 * SECOND, lines.next_line())
            .await
            .expect("a status line within 5 s")
            .unwrap()
            .unwrap();
        assert!(status.contains(" 200 "), "GET /api/events{query}: {status}");
        loop {
            let line = lines.next_line().await.unwrap().unwrap();
            if line.is_empty() {
                break;
            }
        }
        Feed { lines }
    }

    /// The next message within `timeout` (comments skipped); `None` when
    /// none came.
    pub async fn next(&mut self, timeout: Duration) -> Option<Message> {
        let read = async {
            let mut msg = Message {
                id: None,
                event: None,
                data: String::new(),
            };
            let mut any = false;
            while let Some(line) = self.lines.next_line().await.unwrap() {
                if line.is_empty() {
                    if any {
                        return Some(msg);
                    }
                    continue;
                }
                if line.starts_with(':') {
                    continue;
                }
                any = true;
                let (field, value) = line.split_once(':').unwrap_or((&line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "id" => msg.id = value.parse().ok(),
                    "event" => msg.event = Some(value.to_string()),
                    "data" => msg.data.push_str(value),
                    _ => {}
                }
            }
            None
        };
        tokio::time::timeout(timeout, read).await.ok().flatten()
    }

    /// Messages until `done` holds of all of them so far, within `timeout`.
    pub async fn until(&mut self, what: &str, timeout: Duration, done: impl Fn(&[Message]) -> bool) -> Vec<Message> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut seen = Vec::new();
        while !done(&seen) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(m) => seen.push(m),
                None => panic!("{what}: not within {timeout:?}; seen {:#?}", kinds(&seen)),
            }
        }
        seen
    }
}

/// Each message's type (or its SSE event name).
pub fn kinds(seen: &[Message]) -> Vec<String> {
    seen.iter()
        .map(|m| m.event.clone().unwrap_or_else(|| m.kind()))
        .collect()
}

/// How many of the outbox's events of `kind` are among `seen`.
pub fn count(seen: &[Message], kind: &str) -> usize {
    seen.iter().filter(|m| m.event.is_none() && m.kind() == kind).count()
}
