//! Trace replay and cold load: real editing histories, applied for real.
//!
//! The writer sends every patch of a trace as its own update (generated with
//! yrs before the clock starts); each reader applies every update it receives
//! to its own yrs document, and is done when its text equals the trace's
//! `endContent`. A reader the server disconnects (weft does that to a peer
//! whose queue overflows) reconnects and resyncs as y-websocket does, and the
//! reconnects are counted.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, ReadTxn, Text, Transact, Update};

use crate::conn::{Error, Target, Ws, SYNC_TIMEOUT};
use crate::stats::{round3, secs, CpuMeter};
use crate::wire::{self, Kind};

/// The root text the trace is typed into.
const TRACE_TEXT: &str = "text";
/// The writer's client ID (any fixed value: every run sends the same bytes).
const TRACE_CLIENT: u64 = 4242;

/// A trace turned into y-sync update frames.
pub struct Trace {
    pub name: String,
    /// One frame per patch, in order.
    pub frames: Vec<Bytes>,
    pub end: String,
    pub update_bytes: usize,
    pub generate_s: f64,
}

/// Reads a `*.json.gz` trace (`{startContent, endContent, txns: [{patches:
/// [[pos, del, ins]]}]}`) and encodes each patch as one update, checking that
/// applying them all gives `endContent`. With `limit`, only the first
/// `limit` patches are used and the text they give is the end.
pub fn load_trace(path: &Path, limit: Option<usize>) -> Result<Trace, Error> {
    let started = Instant::now();
    let mut json = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path)?).read_to_string(&mut json)?;
    let trace: Value = serde_json::from_str(&json)?;
    let end = trace["endContent"]
        .as_str()
        .ok_or("trace has no endContent")?
        .to_string();
    let start = trace["startContent"].as_str().unwrap_or_default();
    let doc = Doc::with_client_id(TRACE_CLIENT);
    let text = doc.get_or_insert_text(TRACE_TEXT);
    let mut frames = Vec::new();
    let mut update_bytes = 0;
    let mut push = |update: Vec<u8>, frames: &mut Vec<Bytes>| {
        update_bytes += update.len();
        frames.push(Bytes::from(wire::sync_frame(wire::SYNC_UPDATE, &update)));
    };
    if !start.is_empty() {
        let mut txn = doc.transact_mut();
        text.insert(&mut txn, 0, start);
        push(txn.encode_update_v1(), &mut frames);
    }
    let limit = limit.unwrap_or(usize::MAX);
    'all: for txn_json in trace["txns"].as_array().ok_or("trace has no txns")? {
        for patch in txn_json["patches"].as_array().ok_or("txn has no patches")? {
            if frames.len() >= limit {
                break 'all;
            }
            let pos = patch[0].as_u64().ok_or("bad patch position")? as u32;
            let del = patch[1].as_u64().ok_or("bad patch deletion")? as u32;
            let ins = patch[2].as_str().unwrap_or_default();
            let mut txn = doc.transact_mut();
            if del > 0 {
                text.remove_range(&mut txn, pos, del);
            }
            if !ins.is_empty() {
                text.insert(&mut txn, pos, ins);
            }
            push(txn.encode_update_v1(), &mut frames);
        }
    }
    let got = text.get_string(&doc.transact());
    let end = if frames.len() < limit {
        if got != end {
            return Err(format!("replaying {} does not give its endContent", path.display()).into());
        }
        end
    } else {
        got
    };
    Ok(Trace {
        name: path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("trace")
            .trim_end_matches(".json.gz")
            .to_string(),
        frames,
        end,
        update_bytes,
        generate_s: started.elapsed().as_secs_f64(),
    })
}

/// A client holding a real document, synced like y-websocket.
struct DocClient {
    doc: Doc,
    ws: Ws,
}

fn apply(doc: &Doc, update: &[u8]) -> Result<(), Error> {
    let update = Update::decode_v1(update)?;
    doc.transact_mut().apply_update(update)?;
    Ok(())
}

impl DocClient {
    /// Connects with `doc` and syncs: step1 with its state vector, step2 with
    /// what the server lacks, until the server's step2 is applied. Returns
    /// the time to the step2's arrival.
    async fn join(target: &Target, name: &str, nth: usize, doc: Doc) -> Result<(Self, Duration), Error> {
        let started = Instant::now();
        let attempt = async {
            let mut ws = target.connect(name, nth).await?;
            let sv = doc.transact().state_vector();
            let step1 = wire::sync_frame(wire::SYNC_STEP1, &sv.encode_v1());
            ws.send(Message::Binary(step1.into())).await?;
            loop {
                match ws.next().await {
                    Some(Ok(Message::Binary(frame))) => match wire::kind(&frame) {
                        Kind::Step1 => {
                            let payload = wire::sync_payload(&frame).ok_or("bad step1")?;
                            let sv = yrs::StateVector::decode_v1(payload)?;
                            let update = doc.transact().encode_state_as_update_v1(&sv);
                            let step2 = wire::sync_frame(wire::SYNC_STEP2, &update);
                            ws.send(Message::Binary(step2.into())).await?;
                        }
                        Kind::Step2 => {
                            let synced = started.elapsed();
                            apply(&doc, wire::sync_payload(&frame).ok_or("bad step2")?)?;
                            return Ok::<_, Error>((ws, synced));
                        }
                        _ => {}
                    },
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e.into()),
                    None => return Err("closed before sync".into()),
                }
            }
        };
        let (ws, synced) = tokio::time::timeout(SYNC_TIMEOUT, attempt)
            .await
            .map_err(|_| "sync took too long")??;
        Ok((Self { doc, ws }, synced))
    }

    fn text_len(&self) -> u32 {
        let text = self.doc.get_or_insert_text(TRACE_TEXT);
        text.len(&self.doc.transact())
    }

    fn text(&self) -> String {
        let text = self.doc.get_or_insert_text(TRACE_TEXT);
        text.get_string(&self.doc.transact())
    }
}

/// What one reader went through.
struct ReaderEnd {
    done: Option<Duration>,
    reconnects: u32,
    updates: u64,
}

async fn reader(
    target: Target,
    name: String,
    nth: usize,
    mut client: DocClient,
    end: std::sync::Arc<String>,
    start: tokio::sync::watch::Receiver<Option<Instant>>,
    deadline: Instant,
) -> ReaderEnd {
    let end_len = end.len() as u32;
    let mut out = ReaderEnd {
        done: None,
        reconnects: 0,
        updates: 0,
    };
    loop {
        let next = tokio::time::timeout_at(deadline.into(), client.ws.next()).await;
        let frame = match next {
            Err(_) => return out,
            Ok(Some(Ok(Message::Binary(frame)))) => frame,
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_))) | Ok(None) => {
                // Disconnected (e.g. as a slow consumer): resync like y-websocket.
                out.reconnects += 1;
                if out.reconnects > 100 {
                    return out;
                }
                match DocClient::join(&target, &name, nth, client.doc.clone()).await {
                    Ok((c, _)) => client = c,
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
                if client.text_len() == end_len && client.text() == *end {
                    out.done = start.borrow().map(|s| s.elapsed());
                    return out;
                }
                continue;
            }
        };
        if matches!(wire::kind(&frame), Kind::Update | Kind::Step2) {
            let Some(update) = wire::sync_payload(&frame) else {
                continue;
            };
            if apply(&client.doc, update).is_err() {
                return out;
            }
            out.updates += 1;
            if client.text_len() == end_len && client.text() == *end {
                out.done = start.borrow().map(|s| s.elapsed());
                let _ = client.ws.close(None).await;
                return out;
            }
        }
    }
}

/// Sends every update of `trace` from one client to `doc` while `readers`
/// readers apply them; the time until every reader holds `endContent`.
pub async fn replay(
    target: &Target,
    pid: Option<u32>,
    trace: &Trace,
    doc: &str,
    readers: usize,
    timeout: Duration,
) -> Result<Value, Error> {
    let end = std::sync::Arc::new(trace.end.clone());
    let (start_tx, start_rx) = tokio::sync::watch::channel(None);
    let deadline = Instant::now() + timeout;
    let mut tasks = Vec::new();
    for i in 0..readers {
        let (client, _) = DocClient::join(target, doc, i, Doc::new()).await?;
        tasks.push(tokio::spawn(reader(
            target.clone(),
            doc.to_string(),
            i,
            client,
            end.clone(),
            start_rx.clone(),
            deadline,
        )));
    }
    let mut writer = target.join(doc, readers).await?;
    let meter = CpuMeter::start(pid);
    let started = Instant::now();
    let _ = start_tx.send(Some(started));
    let (mut sink, mut stream) = writer_split(&mut writer);
    // The reference server echoes every update to its sender: keep reading.
    let drain = async { while let Some(Ok(_)) = stream.next().await {} };
    let send = async {
        for chunk in trace.frames.chunks(256) {
            for frame in chunk {
                sink.feed(Message::Binary(frame.clone())).await?;
            }
            sink.flush().await?;
        }
        Ok::<_, Error>(started.elapsed())
    };
    let sent = tokio::select! {
        sent = send => sent?,
        _ = drain => return Err("the writer's connection ended".into()),
    };
    let mut done = Vec::new();
    let mut reconnects = 0;
    let mut all_done = true;
    let waiting = async {
        let mut ends = Vec::new();
        for t in tasks {
            ends.push(t.await);
        }
        ends
    };
    let ends = tokio::select! {
        ends = waiting => ends,
        _ = async { while let Some(Ok(_)) = stream.next().await {} ; std::future::pending::<()>().await } => unreachable!(),
    };
    let usage = meter.finish();
    for end in ends {
        let end = end?;
        reconnects += end.reconnects;
        match end.done {
            Some(d) => done.push(d),
            None => all_done = false,
        }
    }
    drop(sink);
    let slowest = done.iter().max().copied();
    let mut out = json!({
        "trace": trace.name,
        "updates": trace.frames.len(),
        "readers": readers,
        "all_readers_done": all_done,
        "seconds": if all_done { slowest.map(secs) } else { None },
        "reader_seconds": done.iter().map(|d| secs(*d)).collect::<Vec<_>>(),
        "writer_send_s": secs(sent),
        "reconnects": reconnects,
        "updates_s": match (all_done, slowest) {
            (true, Some(d)) => json!(round3(trace.frames.len() as f64 / d.as_secs_f64())),
            _ => Value::Null,
        },
    });
    if let (Some(a), Value::Object(b)) = (out.as_object_mut(), usage) {
        a.extend(b);
    }
    Ok(out)
}

type Sink<'a> = futures_util::stream::SplitSink<&'a mut Ws, Message>;
type Stream<'a> = futures_util::stream::SplitStream<&'a mut Ws>;

fn writer_split(ws: &mut Ws) -> (Sink<'_>, Stream<'_>) {
    StreamExt::split(ws)
}

/// Connects a fresh client to `doc` and syncs it: the time from connect to
/// the server's step2 (y-websocket's `synced`), the time to apply it, and
/// whether the text is `end`.
pub async fn sync_once(target: &Target, doc: &str, end: &str) -> Result<Value, Error> {
    let started = Instant::now();
    let (mut client, synced) = DocClient::join(target, doc, 0, Doc::new()).await?;
    let applied = started.elapsed();
    let ok = client.text() == end;
    let _ = client.ws.close(None).await;
    Ok(json!({
        "synced_ms": round3(synced.as_secs_f64() * 1e3),
        "synced_and_applied_ms": round3(applied.as_secs_f64() * 1e3),
        "content_ok": ok,
    }))
}

/// Appends `count` one-character updates at the end of `doc`'s text as a new
/// client, and returns once a fresh client syncs the new text (for weft: once
/// it is stored). Returns the new text.
pub async fn append_tail(target: &Target, doc: &str, count: usize) -> Result<String, Error> {
    let (mut client, _) = DocClient::join(target, doc, 0, Doc::new()).await?;
    let text = client.doc.get_or_insert_text(TRACE_TEXT);
    for i in 0..count {
        let update = {
            let mut txn = client.doc.transact_mut();
            let len = text.len(&txn);
            text.insert(&mut txn, len, &((b'a' + (i % 26) as u8) as char).to_string());
            txn.encode_update_v1()
        };
        client
            .ws
            .feed(Message::Binary(wire::sync_frame(wire::SYNC_UPDATE, &update).into()))
            .await?;
    }
    client.ws.flush().await?;
    let end = client.text();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let check = sync_once(target, doc, &end).await?;
        if check["content_ok"].as_bool() == Some(true) {
            break;
        }
        if Instant::now() > deadline {
            return Err("the appended updates never showed up".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = client.ws.close(None).await;
    Ok(end)
}
