//! A y-sync client over tokio-tungstenite that behaves like the y-websocket
//! provider: it sends step1 on connect, answers the server's step1 with
//! step2, applies updates, tracks awareness states, and records how the
//! connection ended. Tests drive it against the real server; it speaks to any
//! y-websocket-compatible server.
//!
//! It is strict where y-websocket 3.x is: the provider reads exactly one
//! message per frame, so a frame holding more (or bytes after its message),
//! a message that does not decode, and an update that does not apply are
//! *violations*, recorded in [`Seen::violations`]. Every wait fails as soon
//! as one is recorded, and dropping a client that recorded one panics, so a
//! framing regression fails the Rust suites, not only the Node ones.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use yrs::encoding::read::Cursor;
use yrs::sync::awareness::{AwarenessUpdate, AwarenessUpdateEntry};
use yrs::sync::{Message, MessageReader, SyncMessage};
use yrs::updates::decoder::{Decode, DecoderV1};
use yrs::updates::encoder::Encode;
use yrs::{ClientID, Doc, ReadTxn, StateVector, Transact, TransactionMut, Update};

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// What the client saw of the connection, updated by its reader task.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// A step2 arrived (what y-websocket calls `synced`).
    pub synced: bool,
    /// Awareness states by client ID: (clock, JSON); JSON "null" = removed.
    pub awareness: HashMap<u64, (u32, String)>,
    /// Frames received.
    pub frames: u64,
    /// The first frames received, verbatim, to check their order and shape.
    pub first_frames: Vec<Bytes>,
    /// Updates (sync update or step2 messages) received.
    pub updates: u64,
    /// The close frame the server sent, if any.
    pub close: Option<(u16, String)>,
    /// The connection is over.
    pub ended: bool,
    /// Auth messages (permission denied reasons).
    pub denied: Vec<String>,
    /// Awareness frames received, and the client IDs of the last one.
    pub awareness_frames: u64,
    pub last_awareness: Vec<u64>,
    /// Sync update frames this client wrote to its socket (written, not
    /// merely queued): what the server has been sent.
    pub updates_sent: u64,
    /// What the server sent that y-websocket 3.x would misread or drop:
    /// frames with more than one message, messages that do not decode,
    /// updates that do not apply. Empty for a server that behaves.
    pub violations: Vec<String>,
}

impl Seen {
    /// Awareness states that are present (not removed).
    pub fn present(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .awareness
            .iter()
            .filter(|(_, (_, json))| json != "null")
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        ids
    }
}

const FIRST_FRAMES: usize = 32;

/// How long an upgrade may take before `connect` gives up: a server that
/// accepts the TCP connection and never answers must fail a test, not hang it.
const CONNECT_DEADLINE: Duration = Duration::from_secs(30);

pub struct Client {
    pub doc: Doc,
    seen: Arc<Mutex<Seen>>,
    changed: watch::Receiver<u64>,
    out: mpsc::UnboundedSender<WsMessage>,
    paused: watch::Sender<bool>,
    awareness_clock: u32,
}

/// An upgrade the server refused: its HTTP status and body.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: String,
}

impl Client {
    /// Connects to `base` (e.g. `ws://127.0.0.1:1234`) + `/` + `room`, like
    /// `new WebsocketProvider(base, room, doc)`, with a fresh document.
    pub async fn connect(base: &str, room: &str) -> Result<Self, Error> {
        Self::connect_with(base, room, Doc::new()).await
    }

    /// Connects with an existing document (to resume after a disconnect).
    pub async fn connect_with(base: &str, room: &str, doc: Doc) -> Result<Self, Error> {
        Self::connect_full(base, room, doc, &[]).await
    }

    /// Connects with extra request headers (`Origin`, `X-Forwarded-For`, ...).
    pub async fn connect_headers(base: &str, room: &str, headers: &[(&str, &str)]) -> Result<Self, Error> {
        Self::connect_full(base, room, Doc::new(), headers).await
    }

    async fn connect_full(base: &str, room: &str, doc: Doc, headers: &[(&str, &str)]) -> Result<Self, Error> {
        let url = format!("{}/{}", base.trim_end_matches('/'), room);
        let request = request(&url, headers)?;
        let socket = match tokio::time::timeout(CONNECT_DEADLINE, tokio_tungstenite::connect_async(request)).await {
            Ok(result) => result?.0,
            Err(_) => return Err(format!("no answer to the upgrade of {url} within {CONNECT_DEADLINE:?}").into()),
        };
        let (mut sink, mut stream) = socket.split();
        let (out, mut out_rx) = mpsc::unbounded_channel::<WsMessage>();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (changed_tx, changed) = watch::channel(0u64);
        let (paused, mut paused_rx) = watch::channel(false);

        let writer_seen = seen.clone();
        tokio::spawn(async move {
            while let Some(msg) = out_rx.recv().await {
                let update = matches!(&msg, WsMessage::Binary(frame) if frame.starts_with(&[0, 2]));
                if sink.send(msg).await.is_err() {
                    break;
                }
                if update {
                    writer_seen.lock().unwrap().updates_sent += 1;
                }
            }
        });

        // y-websocket's first frame: step1 with the local state vector.
        let sv = doc.transact().state_vector();
        let _ = out.send(binary(Message::Sync(SyncMessage::SyncStep1(sv)).encode_v1()));

        let reader_doc = doc.clone();
        let reader_seen = seen.clone();
        let reader_out = out.clone();
        tokio::spawn(async move {
            let mut count = 0u64;
            loop {
                // A paused client stops reading its socket, like a stalled
                // browser tab: the server's queue for it fills up.
                if *paused_rx.borrow() && paused_rx.wait_for(|p| !*p).await.is_err() {
                    break;
                }
                let next = tokio::select! {
                    next = stream.next() => next,
                    _ = paused_rx.changed() => continue,
                };
                match next {
                    Some(Ok(WsMessage::Binary(frame))) => {
                        handle_frame(&reader_doc, &reader_seen, &reader_out, frame);
                    }
                    Some(Ok(WsMessage::Close(frame))) => {
                        let mut seen = reader_seen.lock().unwrap();
                        seen.close = frame.map(|f: CloseFrame| (u16::from(f.code), f.reason.to_string()));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break,
                }
                count += 1;
                let _ = changed_tx.send(count);
            }
            reader_seen.lock().unwrap().ended = true;
            let _ = changed_tx.send(u64::MAX);
        });

        Ok(Self {
            doc,
            seen,
            changed,
            out,
            paused,
            awareness_clock: 0,
        })
    }

    /// Tries an upgrade and returns the refusal, or an error if it was accepted.
    pub async fn refused(base: &str, path: &str) -> Result<Refused, Error> {
        Self::refused_headers(base, path, &[]).await
    }

    /// [`Client::refused`] with extra request headers.
    pub async fn refused_headers(base: &str, path: &str, headers: &[(&str, &str)]) -> Result<Refused, Error> {
        let url = format!("{}{}", base.trim_end_matches('/'), path);
        let attempt = tokio_tungstenite::connect_async(request(&url, headers)?);
        let Ok(outcome) = tokio::time::timeout(CONNECT_DEADLINE, attempt).await else {
            return Err(format!("no answer to the upgrade of {url} within {CONNECT_DEADLINE:?}").into());
        };
        match outcome {
            Ok(_) => Err("the upgrade was accepted".into()),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Ok(Refused {
                status: response.status().as_u16(),
                body: response
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// A copy of what the client has seen so far.
    pub fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until `cond` holds, at most `timeout`. Fails at once when the
    /// server has sent something y-websocket would misread (a violation).
    pub async fn wait_for(&self, what: &str, timeout: Duration, cond: impl Fn(&Client) -> bool) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        let mut changed = self.changed.clone();
        loop {
            let violations = self.seen().violations;
            if !violations.is_empty() {
                return Err(format!("waiting for {what}, the server broke the protocol: {violations:?}").into());
            }
            if cond(self) {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("timed out after {timeout:?} waiting for {what}").into());
            }
            // Local edits do not tick `changed`; re-check at least every 50 ms.
            let _ = tokio::time::timeout(left.min(Duration::from_millis(50)), changed.changed()).await;
        }
    }

    pub async fn wait_synced(&self) -> Result<(), Error> {
        self.wait_for("sync", Duration::from_secs(10), |c| c.seen().synced)
            .await
    }

    /// Waits for the server to end the connection; returns its close frame.
    pub async fn wait_closed(&self, timeout: Duration) -> Result<Option<(u16, String)>, Error> {
        self.wait_for("the connection to end", timeout, |c| c.seen().ended)
            .await?;
        Ok(self.seen().close)
    }

    /// Makes a local change and sends it as one update message.
    pub fn edit(&self, f: impl FnOnce(&mut TransactionMut)) {
        let mut txn = self.doc.transact_mut();
        f(&mut txn);
        let update = txn.encode_update_v1();
        drop(txn);
        self.send_update(update);
    }

    pub fn send_update(&self, update: Vec<u8>) {
        self.send_raw(Message::Sync(SyncMessage::Update(update)).encode_v1());
    }

    /// Sends a local awareness state (JSON; "null" to remove it).
    pub fn set_awareness(&mut self, json: &str) {
        self.awareness_clock += 1;
        let mut clients = HashMap::new();
        clients.insert(
            self.doc.client_id(),
            AwarenessUpdateEntry {
                clock: self.awareness_clock,
                json: json.into(),
            },
        );
        self.send_raw(Message::Awareness(AwarenessUpdate { clients }).encode_v1());
    }

    pub fn query_awareness(&self) {
        self.send_raw(Message::AwarenessQuery.encode_v1());
    }

    pub fn send_raw(&self, frame: Vec<u8>) {
        let _ = self.out.send(binary(frame));
    }

    pub fn send_text(&self, text: &str) {
        let _ = self.out.send(WsMessage::Text(text.into()));
    }

    /// Sends a WebSocket ping (a control frame, not a y-sync message).
    pub fn send_ping(&self) {
        let _ = self.out.send(WsMessage::Ping(Default::default()));
    }

    /// Stops (or resumes) reading from the socket.
    pub fn pause_reading(&self, paused: bool) {
        let _ = self.paused.send(paused);
    }

    /// Closes the connection from the client side.
    pub fn close(&self) {
        let _ = self.out.send(WsMessage::Close(None));
    }

    pub fn client_id(&self) -> u64 {
        self.doc.client_id().get()
    }

    /// The string content of a root Text.
    pub fn text(&self, name: &str) -> String {
        use yrs::GetString;
        let text = self.doc.get_or_insert_text(name);
        let txn = self.doc.transact();
        text.get_string(&txn)
    }

    /// The whole document state as a v1 update.
    pub fn state(&self) -> Vec<u8> {
        self.doc.transact().encode_state_as_update_v1(&StateVector::default())
    }
}

impl Drop for Client {
    /// Closes the connection, as a page that goes away does (the reader
    /// would otherwise keep it open). A test that never waited after a
    /// violation still fails: the check runs when the client goes out of
    /// scope.
    fn drop(&mut self) {
        self.close();
        let violations = self.seen().violations;
        if !violations.is_empty() && !std::thread::panicking() {
            panic!("the server broke the y-websocket protocol: {violations:?}");
        }
    }
}

fn binary(frame: Vec<u8>) -> WsMessage {
    WsMessage::Binary(frame.into())
}

/// An upgrade request for `url` with extra headers.
fn request(
    url: &str,
    headers: &[(&str, &str)],
) -> Result<tokio_tungstenite::tungstenite::handshake::client::Request, Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
    let mut request = url.into_client_request()?;
    for (name, value) in headers {
        request
            .headers_mut()
            .append(HeaderName::from_bytes(name.as_bytes())?, HeaderValue::from_str(value)?);
    }
    Ok(request)
}

/// Reads one frame as y-websocket 3.x does: exactly one message.
fn handle_frame(doc: &Doc, seen: &Mutex<Seen>, out: &mpsc::UnboundedSender<WsMessage>, frame: Bytes) {
    let mut seen = seen.lock().unwrap();
    seen.frames += 1;
    let nth = seen.frames;
    if seen.first_frames.len() < FIRST_FRAMES {
        seen.first_frames.push(frame.clone());
    }
    let mut decoder = DecoderV1::new(Cursor::new(&frame));
    let message = match MessageReader::new(&mut decoder).next() {
        Some(Ok(message)) => message,
        Some(Err(e)) => {
            seen.violations
                .push(format!("frame {nth} does not decode: {e} ({frame:?})"));
            return;
        }
        None => {
            seen.violations
                .push(format!("frame {nth} is empty or truncated ({frame:?})"));
            return;
        }
    };
    // The provider reads the first message and ignores the rest of a frame:
    // anything after it would be lost.
    let length = message.encode_v1().len();
    if length != frame.len() {
        seen.violations.push(format!(
            "frame {nth} holds {} bytes after its first message ({length} bytes): y-websocket reads one message per frame",
            frame.len() - length
        ));
    }
    match message {
        Message::Sync(SyncMessage::SyncStep1(sv)) => {
            let update = doc.transact().encode_state_as_update_v1(&sv);
            let _ = out.send(binary(Message::Sync(SyncMessage::SyncStep2(update)).encode_v1()));
        }
        Message::Sync(SyncMessage::SyncStep2(update)) => {
            if let Err(e) = apply(doc, &update) {
                seen.violations.push(format!("frame {nth}: step2 {e}"));
            }
            seen.synced = true;
            seen.updates += 1;
        }
        Message::Sync(SyncMessage::Update(update)) => {
            if let Err(e) = apply(doc, &update) {
                seen.violations.push(format!("frame {nth}: update {e}"));
            }
            seen.updates += 1;
        }
        Message::Awareness(update) => {
            seen.awareness_frames += 1;
            seen.last_awareness = update.clients.keys().map(|id| id.get()).collect();
            for (id, entry) in update.clients {
                let id: ClientID = id;
                let known = seen.awareness.get(&id.get()).map(|(clock, _)| *clock);
                let newer = known.is_none_or(|k| entry.clock > k || (entry.clock == k && &*entry.json == "null"));
                if newer {
                    seen.awareness.insert(id.get(), (entry.clock, entry.json.to_string()));
                }
            }
        }
        Message::Auth(Some(reason)) => seen.denied.push(reason),
        Message::Auth(None) => {}
        Message::AwarenessQuery => seen
            .violations
            .push(format!("frame {nth}: a server does not query its clients' awareness")),
        Message::Custom(tag, _) => seen
            .violations
            .push(format!("frame {nth}: message type {tag} is not part of the protocol")),
    }
}

/// Applies an update; one that does not decode or apply is an error, never
/// silently dropped. (One waiting for another client's edit applies: yrs
/// keeps it pending, as Yjs does.)
fn apply(doc: &Doc, update: &[u8]) -> Result<(), String> {
    let update = Update::decode_v1(update).map_err(|e| format!("does not decode: {e}"))?;
    doc.transact_mut()
        .apply_update(update)
        .map_err(|e| format!("does not apply: {e}"))
}
