//! A big document for the hostile-peer scenario: a real editing history
//! and enough text to weigh ~5 MB, built on the load generator and sent to
//! a server as update messages.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use yrs::{Doc, ReadTxn, StateVector, Text, Transact};

use crate::conn::{Error, Target};
use crate::stats::round3;
use crate::wire;

/// Client IDs of the document's two authors.
const TRACE_CLIENT: u64 = 4242;
const BODY_CLIENT: u64 = 4243;

/// The document the honest clients edit, as update messages' payloads.
pub struct Document {
    pub updates: Vec<Vec<u8>>,
    pub bytes: usize,
    pub info: Value,
}

/// Builds the document: the editing trace typed in by one author (its whole
/// history, deletions included), then paragraphs of the trace's final text
/// inserted at scattered places by a second author until the encoded state
/// reaches `bytes`. Paragraphs inserted inside others split them, so the
/// document holds tens of thousands of items, not one long string.
pub fn build_document(trace_path: &Path, limit: Option<usize>, bytes: usize) -> Result<Document, Error> {
    let started = Instant::now();
    let mut raw = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(trace_path)?).read_to_string(&mut raw)?;
    let trace: Value = serde_json::from_str(&raw)?;
    let doc = Doc::with_client_id(TRACE_CLIENT);
    let text = doc.get_or_insert_text("text");
    let limit = limit.unwrap_or(usize::MAX);
    let mut edits = 0;
    {
        // One transaction per patch costs an update encoding each; one for
        // the whole trace is quadratic in yrs. Batches of 256 are neither.
        let mut txn = doc.transact_mut();
        'all: for t in trace["txns"].as_array().ok_or("trace has no txns")? {
            for patch in t["patches"].as_array().ok_or("txn has no patches")? {
                if edits >= limit {
                    break 'all;
                }
                let pos = patch[0].as_u64().ok_or("bad patch position")? as u32;
                let del = patch[1].as_u64().ok_or("bad patch deletion")? as u32;
                let ins = patch[2].as_str().unwrap_or_default();
                if del > 0 {
                    text.remove_range(&mut txn, pos, del);
                }
                if !ins.is_empty() {
                    text.insert(&mut txn, pos, ins);
                }
                edits += 1;
                if edits.is_multiple_of(256) {
                    drop(txn);
                    txn = doc.transact_mut();
                }
            }
        }
    }
    let history = doc.transact().encode_state_as_update_v1(&StateVector::default());
    let trace_s = started.elapsed().as_secs_f64();

    let end = trace["endContent"].as_str().unwrap_or_default();
    let mut paragraphs: Vec<&str> = end.split("\n\n").filter(|p| p.len() > 40).collect();
    if paragraphs.is_empty() {
        paragraphs.push("a paragraph of text that stands in for an empty trace's content");
    }
    let body_doc = Doc::with_client_id(BODY_CLIENT);
    let body = body_doc.get_or_insert_text("body");
    let want = bytes.saturating_sub(history.len());
    let mut inserted = 0usize;
    let mut chars = 0usize;
    let body_update = loop {
        {
            let mut txn = body_doc.transact_mut();
            for _ in 0..16 {
                let p = paragraphs[inserted % paragraphs.len()];
                // The text is ASCII: any index is a character boundary.
                let at = ((inserted as u64 * 7919) % (chars as u64 + 1)) as u32;
                body.insert(&mut txn, at, p);
                body.insert(&mut txn, at + p.len() as u32, "\n\n");
                chars += p.len() + 2;
                inserted += 1;
            }
        }
        // Items cost bytes beyond their text: measure once close.
        if chars * 10 >= want * 9 {
            let update = body_doc.transact().encode_state_as_update_v1(&StateVector::default());
            if update.len() >= want {
                break update;
            }
        }
    };
    let total = history.len() + body_update.len();
    let info = json!({
        "bytes": total,
        "trace": trace_path.file_name().and_then(|n| n.to_str()).unwrap_or("trace"),
        "trace_edits": edits,
        "trace_bytes": history.len(),
        "paragraphs": inserted,
        "body_bytes": body_update.len(),
        "build_s": round3(started.elapsed().as_secs_f64()),
        "trace_s": round3(trace_s),
        "how": format!(
            "{} edits of {} typed by one client (its whole history, {} bytes encoded), then {} paragraphs of its final text \
             inserted at scattered places by a second client ({} bytes), sent to the server as two update messages",
            edits,
            trace_path.file_name().and_then(|n| n.to_str()).unwrap_or("the trace"),
            history.len(),
            inserted,
            body_update.len()
        ),
    });
    Ok(Document {
        updates: vec![history, body_update],
        bytes: total,
        info,
    })
}

/// Sends the document to the server through `path` (a writer's) and waits
/// until a step2 of its size comes back: stored and in memory.
pub async fn seed(target: &Target, path: &str, doc: &Document) -> Result<f64, Error> {
    let started = Instant::now();
    let mut ws = target.join(path, 0).await?;
    for update in &doc.updates {
        ws.send(Message::Binary(wire::sync_frame(wire::SYNC_UPDATE, update).into()))
            .await?;
    }
    ws.send(Message::Binary(wire::empty_step1().into())).await?;
    let wait = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(frame))) if wire::kind(&frame) == wire::Kind::Step2 => {
                    let got = wire::sync_payload(&frame).map_or(0, <[u8]>::len);
                    if got * 100 >= doc.bytes * 95 {
                        return Ok(());
                    }
                    return Err::<(), Error>(format!("the server holds {got} bytes, not {}", doc.bytes).into());
                }
                Some(Ok(Message::Close(frame))) => return Err(format!("closed while seeding: {frame:?}").into()),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Err("closed while seeding".into()),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .map_err(|_| "the document was not back within 60 s")??;
    let _ = ws.close(None).await;
    Ok(started.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::updates::decoder::Decode;
    use yrs::{GetString, Update};

    /// The two updates make one document of the size asked, holding the
    /// trace's text so far and the paragraphs, as yrs reads them.
    #[test]
    fn builds_a_document_of_the_size_asked() {
        let trace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/automerge-paper.json.gz");
        let built = build_document(&trace, Some(2000), 200_000).unwrap();
        assert!(built.bytes >= 200_000 && built.bytes < 220_000, "{}", built.bytes);
        assert_eq!(built.info["trace_edits"], 2000);
        let doc = Doc::new();
        for update in &built.updates {
            doc.transact_mut()
                .apply_update(Update::decode_v1(update).unwrap())
                .unwrap();
        }
        let txn = doc.transact();
        let text = txn.get_text("text").unwrap().get_string(&txn);
        let body = txn.get_text("body").unwrap().get_string(&txn);
        assert!(!text.is_empty());
        assert!(body.len() > 150_000, "{}", body.len());
        let state = txn.encode_state_as_update_v1(&StateVector::default());
        assert!(state.len() >= 200_000);
    }
}
