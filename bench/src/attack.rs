//! The hostile peer of issue 11: one client (one IP address, one token)
//! doing three of its attacks at once, each in loops bounded in count and
//! time, and counting what the server did about it.
//!
//! - **Answers** (item 1): frames full of sync step1s (empty state vector:
//!   "send me everything") and query-awareness messages, on connections
//!   that read what comes back and on connections that never read.
//! - **Awareness flood** (item 3): frames of 1,000+ awareness messages, on
//!   a connection that reconnects whenever it is closed.
//! - **Unfinished messages** (item 4): connections that each send most of a
//!   15 MiB message without its final fragment, then only pings; a closed
//!   one is replaced.
//!
//! Every connection is reopened after a close (or a refused upgrade) once
//! `backoff` has passed, until the deadline or `max_connects` per worker.
//! `weft-bench attack` runs it as a process of its own, so that its CPU time
//! is not the measuring clients' and a tokio worker busy with it never
//! delays them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::SplitStream;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::time::timeout_at;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

use crate::conn::{refused_status, Error, Target, Ws};
use crate::stats::{self, round3};
use crate::wire;

const MIB: usize = 1 << 20;
/// How often a connection holding an unfinished message pings.
const PING_EVERY: Duration = Duration::from_millis(200);
/// Distinct close reasons kept per attack (they differ in numbers).
const REASONS_KEPT: usize = 8;

/// How hard the attacker pushes.
#[derive(Clone, Debug)]
pub struct Attack {
    /// Connections sending frames of step1s and query-awareness, reading
    /// the answers.
    pub answer_conns: usize,
    /// The same, never reading: their answers wait in the server.
    pub answer_stalled: usize,
    /// step1s per frame; as many query-awareness messages are interleaved.
    pub step1s_per_frame: usize,
    /// Connections flooding awareness.
    pub flood_conns: usize,
    /// Awareness messages per flood frame.
    pub flood_msgs: usize,
    /// Connections holding an unfinished message.
    pub fragment_conns: usize,
    /// Bytes of a message sent without its final fragment (1 MiB fragments).
    pub fragment_bytes: usize,
    /// Between two frames on one connection.
    pub pause: Duration,
    /// After a close or a refused upgrade, before the next attempt.
    pub backoff: Duration,
    /// Upgrades one worker attempts at most.
    pub max_connects: u64,
    /// Frames one connection sends at most.
    pub max_frames: u64,
}

impl Attack {
    /// The issue's attack: item 1 on two reading connections and one that
    /// never reads, item 3 on one, item 4 on twenty (as in its reproduction).
    pub fn issue_11() -> Self {
        Self {
            answer_conns: 2,
            answer_stalled: 1,
            step1s_per_frame: 256,
            flood_conns: 1,
            flood_msgs: 1100,
            fragment_conns: 20,
            fragment_bytes: 15 * MIB,
            pause: Duration::from_millis(20),
            backoff: Duration::from_millis(100),
            max_connects: 2000,
            max_frames: 100_000,
        }
    }

    /// Keeps only the named parts (`answers`, `stalled`, `flood`,
    /// `fragments`), to tell which one costs what.
    pub fn only(&mut self, parts: &[String]) -> Result<(), Error> {
        for part in parts {
            if !["answers", "stalled", "flood", "fragments"].contains(&part.as_str()) {
                return Err(format!("unknown attack part {part:?}: answers, stalled, flood, fragments").into());
            }
        }
        let keep = |name: &str| parts.iter().any(|p| p == name);
        if !keep("answers") {
            self.answer_conns = 0;
        }
        if !keep("stalled") {
            self.answer_stalled = 0;
        }
        if !keep("flood") {
            self.flood_conns = 0;
        }
        if !keep("fragments") {
            self.fragment_conns = 0;
        }
        Ok(())
    }

    /// The flags of `weft-bench attack` that give this plan.
    pub fn args(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut arg = |name: &str, value: String| {
            out.push(format!("--{name}"));
            out.push(value);
        };
        arg("answer-conns", self.answer_conns.to_string());
        arg("answer-stalled", self.answer_stalled.to_string());
        arg("step1s-per-frame", self.step1s_per_frame.to_string());
        arg("flood-conns", self.flood_conns.to_string());
        arg("flood-msgs", self.flood_msgs.to_string());
        arg("fragment-conns", self.fragment_conns.to_string());
        arg("fragment-bytes", self.fragment_bytes.to_string());
        arg("pause-ms", self.pause.as_millis().to_string());
        arg("backoff-ms", self.backoff.as_millis().to_string());
        arg("max-connects", self.max_connects.to_string());
        arg("max-frames", self.max_frames.to_string());
        out
    }

    pub fn describe(&self) -> Value {
        json!({
            "answer_conns": self.answer_conns,
            "answer_stalled": self.answer_stalled,
            "step1s_per_frame": self.step1s_per_frame,
            "flood_conns": self.flood_conns,
            "flood_msgs": self.flood_msgs,
            "fragment_conns": self.fragment_conns,
            "fragment_bytes": self.fragment_bytes,
            "pause_ms": self.pause.as_millis() as u64,
            "backoff_ms": self.backoff.as_millis() as u64,
            "max_connects": self.max_connects,
            "max_frames": self.max_frames,
        })
    }
}

/// What one of the three attacks did and what the server answered.
#[derive(Default, Debug)]
struct Tally {
    attempts: u64,
    /// Upgrades accepted.
    connects: u64,
    /// Upgrades refused, by HTTP status.
    refused: BTreeMap<u16, u64>,
    connect_errors: u64,
    frames: u64,
    messages: u64,
    bytes_sent: u64,
    frames_received: u64,
    bytes_received: u64,
    /// How connections ended: a close code, "no close frame" (reset or EOF
    /// without one), "send failed" (a connection that does not read sees no
    /// close frame), "open at the end".
    ends: BTreeMap<String, u64>,
    reasons: BTreeMap<String, u64>,
}

impl Tally {
    fn end(&mut self, how: impl Into<String>) {
        *self.ends.entry(how.into()).or_default() += 1;
    }

    fn closed(&mut self, code: u16, reason: &str) {
        self.end(code.to_string());
        let known = self.reasons.len() < REASONS_KEPT || self.reasons.contains_key(reason);
        if known {
            *self.reasons.entry(format!("{code} {reason}")).or_default() += 1;
        }
    }

    fn json(&self) -> Value {
        json!({
            "attempts": self.attempts,
            "connects": self.connects,
            "refused": self.refused.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "connect_errors": self.connect_errors,
            "frames_sent": self.frames,
            "messages_sent": self.messages,
            "bytes_sent": self.bytes_sent,
            "frames_received": self.frames_received,
            "bytes_received": self.bytes_received,
            "ends": self.ends,
            "close_reasons": self.reasons,
        })
    }
}

type Shared = Arc<Mutex<Tally>>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Answers,
    AnswersStalled,
    Flood,
    Fragments,
}

/// Runs the attack on `path` (a document, with `?token=` if need be) until
/// `deadline`; returns what each part did.
pub async fn run(target: &Target, path: &str, plan: &Attack, deadline: Instant) -> Value {
    let started = Instant::now();
    let cpu = stats::self_sample();
    let parts = [
        ("answers", Kind::Answers, plan.answer_conns),
        ("answers_stalled", Kind::AnswersStalled, plan.answer_stalled),
        ("awareness_flood", Kind::Flood, plan.flood_conns),
        ("unfinished_messages", Kind::Fragments, plan.fragment_conns),
    ];
    let mut tallies = Vec::new();
    let mut workers = Vec::new();
    let mut nth = 0;
    for (name, kind, conns) in parts {
        let tally: Shared = Arc::default();
        for _ in 0..conns {
            nth += 1;
            workers.push(tokio::spawn(worker(
                target.clone(),
                path.to_string(),
                plan.clone(),
                kind,
                nth,
                deadline,
                tally.clone(),
            )));
        }
        tallies.push((name, tally));
    }
    for w in workers {
        let _ = w.await;
    }
    let mut out = serde_json::Map::new();
    let mut frames = 0;
    let mut ends: BTreeMap<String, u64> = BTreeMap::new();
    for (name, tally) in &tallies {
        let t = tally.lock().unwrap();
        frames += t.frames;
        for (k, v) in &t.ends {
            *ends.entry(k.clone()).or_default() += v;
        }
        out.insert(name.to_string(), t.json());
    }
    out.insert("frames_sent".into(), json!(frames));
    out.insert("ends".into(), json!(ends));
    out.insert("seconds".into(), json!(round3(started.elapsed().as_secs_f64())));
    if let (Some(a), Some(b)) = (cpu, stats::self_sample()) {
        out.insert("attacker_cpu".into(), json!(round3(stats::cpu_share(&a, &b))));
    }
    out.insert(
        "attacker_peak_rss_mib".into(),
        json!(round3(
            stats::peak_rss_kib(std::process::id()).unwrap_or(0) as f64 / 1024.0
        )),
    );
    Value::Object(out)
}

/// One connection slot: connects, attacks until the connection ends, waits
/// `backoff`, and again, until the deadline or its bounds.
async fn worker(target: Target, path: String, plan: Attack, kind: Kind, nth: usize, deadline: Instant, tally: Shared) {
    let mut attempts = 0;
    while Instant::now() < deadline && attempts < plan.max_connects {
        attempts += 1;
        tally.lock().unwrap().attempts += 1;
        let ws = match timeout_at(deadline.into(), target.connect(&path, nth)).await {
            Err(_) => break,
            Ok(Ok(ws)) => ws,
            Ok(Err(e)) => {
                {
                    let mut t = tally.lock().unwrap();
                    match refused_status(&e) {
                        Some(status) => *t.refused.entry(status).or_default() += 1,
                        None => t.connect_errors += 1,
                    }
                }
                pause_until(plan.backoff, deadline).await;
                continue;
            }
        };
        tally.lock().unwrap().connects += 1;
        // A client ID of its own per connection, as a fresh tab would have.
        let client = (nth as u64) << 32 | attempts;
        match kind {
            Kind::Answers | Kind::Flood => chatter(ws, &plan, kind, client, deadline, &tally).await,
            Kind::AnswersStalled => stalled(ws, &plan, deadline, &tally).await,
            Kind::Fragments => unfinished(ws, &plan, deadline, &tally).await,
        }
        pause_until(plan.backoff, deadline).await;
    }
}

async fn pause_until(wait: Duration, deadline: Instant) {
    let until = (Instant::now() + wait).min(deadline);
    tokio::time::sleep_until(until.into()).await;
}

/// A frame of `n` step1s with an empty state vector, each followed by a
/// query-awareness.
fn answers_frame(n: usize) -> Vec<u8> {
    let step1 = wire::empty_step1();
    let mut frame = Vec::with_capacity(n * (step1.len() + 1));
    for _ in 0..n {
        frame.extend_from_slice(&step1);
        frame.push(wire::MSG_QUERY_AWARENESS);
    }
    frame
}

/// A frame of `n` awareness messages for `client`, clocks from `clock`.
fn flood_frame(client: u64, clock: &mut u32, n: usize) -> Vec<u8> {
    let mut frame = Vec::with_capacity(n * 32);
    for _ in 0..n {
        *clock += 1;
        frame.extend(wire::awareness(client, *clock, &format!(r#"{{"cursor":{clock}}}"#)));
    }
    frame
}

/// Reads until the connection ends or the deadline; counts what arrived
/// and how it ended.
async fn read_until_end(mut stream: SplitStream<Ws>, deadline: Instant, tally: Shared) {
    loop {
        match timeout_at(deadline.into(), stream.next()).await {
            Err(_) => {
                tally.lock().unwrap().end("open at the end");
                return;
            }
            Ok(Some(Ok(Message::Binary(b)))) => {
                let mut t = tally.lock().unwrap();
                t.frames_received += 1;
                t.bytes_received += b.len() as u64;
            }
            Ok(Some(Ok(Message::Close(frame)))) => {
                let mut t = tally.lock().unwrap();
                match frame {
                    Some(f) => t.closed(u16::from(f.code), &f.reason),
                    None => t.end("close without a code"),
                }
                return;
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_))) | Ok(None) => {
                tally.lock().unwrap().end("no close frame");
                return;
            }
        }
    }
}

/// Items 1 and 3 on a connection that reads: frames every `pause` until
/// the server ends the connection.
async fn chatter(ws: Ws, plan: &Attack, kind: Kind, client: u64, deadline: Instant, tally: &Shared) {
    let (mut sink, stream) = ws.split();
    let reader = tokio::spawn(read_until_end(stream, deadline, tally.clone()));
    let answers = Bytes::from(answers_frame(plan.step1s_per_frame));
    let mut clock = 0u32;
    let mut sent = 0;
    while sent < plan.max_frames && Instant::now() < deadline && !reader.is_finished() {
        let (frame, messages) = match kind {
            Kind::Flood => (
                Bytes::from(flood_frame(client, &mut clock, plan.flood_msgs)),
                plan.flood_msgs,
            ),
            _ => (answers.clone(), 2 * plan.step1s_per_frame),
        };
        let len = frame.len();
        if sink.send(Message::Binary(frame)).await.is_err() {
            break;
        }
        sent += 1;
        {
            let mut t = tally.lock().unwrap();
            t.frames += 1;
            t.messages += messages as u64;
            t.bytes_sent += len as u64;
        }
        pause_until(plan.pause, deadline).await;
    }
    let _ = reader.await;
}

/// Item 1 on a connection that never reads: whatever the server answers
/// stays in its queue and socket buffers. Such a connection never sees a
/// close frame; it ends when a send fails.
async fn stalled(ws: Ws, plan: &Attack, deadline: Instant, tally: &Shared) {
    let (mut sink, _unread) = ws.split();
    let frame = Bytes::from(answers_frame(plan.step1s_per_frame));
    let mut sent = 0;
    loop {
        if sent >= plan.max_frames || Instant::now() >= deadline {
            tally.lock().unwrap().end("open at the end");
            return;
        }
        let send = timeout_at(deadline.into(), sink.send(Message::Binary(frame.clone()))).await;
        match send {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                tally.lock().unwrap().end("send failed (not reading)");
                return;
            }
            Err(_) => {
                tally.lock().unwrap().end("open at the end");
                return;
            }
        }
        sent += 1;
        {
            let mut t = tally.lock().unwrap();
            t.frames += 1;
            t.messages += 2 * plan.step1s_per_frame as u64;
            t.bytes_sent += frame.len() as u64;
        }
        pause_until(plan.pause, deadline).await;
    }
}

/// Item 4: most of a message without its final fragment, then pings until
/// the server ends the connection.
async fn unfinished(ws: Ws, plan: &Attack, deadline: Instant, tally: &Shared) {
    let (mut sink, stream) = ws.split();
    let reader = tokio::spawn(read_until_end(stream, deadline, tally.clone()));
    let chunk = Bytes::from(vec![7u8; MIB]);
    let mut left = plan.fragment_bytes.max(1);
    let mut first = true;
    while left > 0 {
        if Instant::now() >= deadline || reader.is_finished() {
            break;
        }
        let opcode = if first { Data::Binary } else { Data::Continue };
        let len = left.min(MIB);
        let frame = Frame::message(chunk.slice(..len), OpCode::Data(opcode), false);
        if sink.send(Message::Frame(frame)).await.is_err() {
            break;
        }
        first = false;
        left -= len;
        let mut t = tally.lock().unwrap();
        t.frames += 1;
        t.bytes_sent += len as u64;
    }
    while Instant::now() < deadline && !reader.is_finished() {
        if sink.send(Message::Ping(Bytes::new())).await.is_err() {
            break;
        }
        tally.lock().unwrap().frames += 1;
        pause_until(PING_EVERY, deadline).await;
    }
    let _ = reader.await;
}

/// `weft-bench attack`: the attack against `url`/`path` for `secs`.
pub async fn main(
    url: &str,
    path: &str,
    source_ip: Option<std::net::Ipv4Addr>,
    secs: f64,
    plan: &Attack,
) -> Result<Value, Error> {
    let mut target = Target::new(url).await?;
    if let Some(ip) = source_ip {
        target = target.with_source_ip(ip);
    }
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut out = run(&target, path, plan, deadline).await;
    out["plan"] = plan.describe();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_hold_what_they_say() {
        let frame = answers_frame(3);
        assert_eq!(frame, [0, 0, 1, 0, 3, 0, 0, 1, 0, 3, 0, 0, 1, 0, 3]);
        let mut clock = 0;
        let flood = flood_frame(9, &mut clock, 1100);
        assert_eq!(clock, 1100);
        assert_eq!(wire::kind(&flood), wire::Kind::Awareness);
    }

    #[test]
    fn plan_round_trips_through_its_flags() {
        let args = Attack::issue_11().args();
        assert_eq!(args.len(), 22);
        assert_eq!(args[0], "--answer-conns");
    }
}
