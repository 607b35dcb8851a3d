// Over 500 lines: ~415 of code (scanner, budget, metered socket, body reader: one mechanism) and its unit tests.
//! Messages that have begun to arrive but are not complete: one byte budget
//! for the whole server, and a deadline for each message.
//!
//! tungstenite assembles a fragmented WebSocket message (or one large frame)
//! in memory, with no bound across connections: 20 connections each sending
//! 15 MiB of a message without its final fragment, then only pings, held
//! 330 MB for as long as they liked. So weft follows the frames in the bytes
//! it reads, before tungstenite sees them ([`FrameScanner`]), charges the
//! payload of the message in progress to the [`Budget`], and fails the read
//! when the budget is spent or the message is late ([`Metered`]); the session
//! then closes the connection with 1009 and the reason. HTTP request bodies
//! are charged the same way while they arrive ([`collect_body`]).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::{ApiError, AppState};

/// Bytes of unfinished messages across the server. 0 = no limit.
#[derive(Debug)]
pub struct Budget {
    limit: u64,
    used: AtomicU64,
}

impl Budget {
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicU64::new(0),
        })
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes charged now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    fn try_charge(&self, bytes: u64) -> bool {
        if self.limit == 0 {
            self.used.fetch_add(bytes, Ordering::Relaxed);
            return true;
        }
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    fn release(&self, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// Bytes one message holds of a [`Budget`]; given back when dropped.
#[derive(Debug)]
struct Charge {
    budget: Arc<Budget>,
    bytes: u64,
}

impl Charge {
    pub fn new(budget: Arc<Budget>) -> Self {
        Self { budget, bytes: 0 }
    }

    /// Grows or shrinks the charge to `bytes`; `false`, and unchanged, when
    /// growing would pass the budget.
    pub fn set(&mut self, bytes: u64) -> bool {
        if bytes > self.bytes {
            if !self.budget.try_charge(bytes - self.bytes) {
                return false;
            }
        } else {
            self.budget.release(self.bytes - bytes);
        }
        self.bytes = bytes;
        true
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

/// Why an unfinished message was refused. Short: it becomes a close reason
/// (at most 123 bytes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unfinished {
    #[error("unfinished messages are at the server's limit of {0} bytes; send it again later")]
    OverBudget(u64),
    #[error("message not completed within {0} ms")]
    Late(u128),
}

/// Follows the frames of a WebSocket byte stream from a client (RFC 6455
/// section 5.2) to tell which payload bytes belong to a data message that is
/// not complete yet. It only reads frame headers: decoding, unmasking and
/// every protocol check stay tungstenite's, which closes the connection on
/// anything malformed (this scanner then merely stops making sense).
#[derive(Debug, Default)]
struct FrameScanner {
    header: [u8; 14],
    header_len: usize,
    /// Payload bytes of the current frame not read yet; `None` while a
    /// header is being read.
    payload_left: Option<u64>,
    frame_is_data: bool,
    frame_is_final: bool,
    /// Payload bytes of the data message in progress, if one is.
    message: Option<u64>,
    /// Data messages begun so far, to tell one unfinished message from the next.
    begun: u64,
}

impl FrameScanner {
    /// Payload bytes of the data message in progress.
    pub fn partial(&self) -> u64 {
        self.message.unwrap_or(0)
    }

    /// Whether a data message has begun and not ended.
    fn in_message(&self) -> bool {
        self.message.is_some()
    }

    /// How many data messages have begun.
    pub fn begun(&self) -> u64 {
        self.begun
    }

    /// Takes the next bytes read from the socket.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match self.payload_left {
                None => {
                    let need = self.header_needed();
                    let take = (need - self.header_len).min(bytes.len());
                    self.header[self.header_len..self.header_len + take].copy_from_slice(&bytes[..take]);
                    self.header_len += take;
                    bytes = &bytes[take..];
                    if self.header_len == self.header_needed() {
                        self.start_frame();
                    }
                }
                Some(left) => {
                    let take = left.min(bytes.len() as u64);
                    bytes = &bytes[take as usize..];
                    if self.frame_is_data {
                        self.message = Some(self.partial().saturating_add(take));
                    }
                    self.payload_left = Some(left - take);
                    if left == take {
                        self.end_frame();
                    }
                }
            }
        }
    }

    /// The length of the header being read, as far as its bytes so far tell.
    fn header_needed(&self) -> usize {
        if self.header_len < 2 {
            return 2;
        }
        let extended = match self.header[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if self.header[1] & 0x80 != 0 { 4 } else { 0 };
        2 + extended + mask
    }

    fn start_frame(&mut self) {
        let opcode = self.header[0] & 0x0f;
        let length = match self.header[1] & 0x7f {
            126 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
            127 => u64::from_be_bytes(self.header[2..10].try_into().unwrap_or_default()),
            n => u64::from(n),
        };
        self.header_len = 0;
        self.frame_is_final = self.header[0] & 0x80 != 0;
        // 0 continues a message, 1 and 2 begin one; 8 to 10 are control
        // frames, which may come between the fragments of a message.
        self.frame_is_data = opcode <= 2;
        if opcode == 1 || opcode == 2 || (opcode == 0 && self.message.is_none()) {
            self.message = Some(0);
            self.begun += 1;
        }
        self.payload_left = Some(length);
        if length == 0 {
            self.end_frame();
        }
    }

    fn end_frame(&mut self) {
        self.payload_left = None;
        if self.frame_is_data && self.frame_is_final {
            self.message = None;
        }
    }
}

/// The upgraded socket of a WebSocket connection, as tungstenite reads it:
/// charges the message in progress to the budget and refuses it when the
/// budget is spent or its deadline has passed (the read fails with
/// [`Unfinished`] inside an `io::Error`).
pub struct Metered<T> {
    io: T,
    scanner: FrameScanner,
    charge: Charge,
    deadline: Option<Duration>,
    /// Armed for the message numbered `timed`, while it is in progress.
    timer: Option<Pin<Box<Sleep>>>,
    timed: u64,
    refused: Option<Unfinished>,
}

impl<T> Metered<T> {
    pub fn new(io: T, budget: Arc<Budget>, deadline: Option<Duration>) -> Self {
        Self {
            io,
            scanner: FrameScanner::default(),
            charge: Charge::new(budget),
            deadline,
            timer: None,
            timed: 0,
            refused: None,
        }
    }

    /// Charges what the scanner now holds, and times the message in progress.
    fn settle(&mut self) -> Result<(), Unfinished> {
        if !self.charge.set(self.scanner.partial()) {
            return Err(Unfinished::OverBudget(self.charge.budget.limit()));
        }
        let (Some(deadline), true) = (self.deadline, self.scanner.in_message()) else {
            return Ok(());
        };
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(deadline)));
        if self.timed != self.scanner.begun() {
            self.timed = self.scanner.begun();
            timer.as_mut().reset(Instant::now() + deadline);
        } else if Instant::now() >= timer.deadline() {
            return Err(Unfinished::Late(deadline.as_millis()));
        }
        Ok(())
    }

    fn refuse(&mut self, why: Unfinished) -> io::Error {
        self.charge.set(0);
        self.refused = Some(why.clone());
        io::Error::other(why)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Metered<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(why) = &this.refused {
            return Poll::Ready(Err(io::Error::other(why.clone())));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.scanner.feed(&buf.filled()[before..]);
                match this.settle() {
                    Ok(()) => Poll::Ready(Ok(())),
                    Err(why) => Poll::Ready(Err(this.refuse(why))),
                }
            }
            Poll::Pending if this.scanner.in_message() => {
                // Nothing arrives: the timer wakes this read at the deadline.
                let late = this.timer.as_mut().is_some_and(|t| t.as_mut().poll(cx).is_ready());
                match (late, this.deadline) {
                    (true, Some(deadline)) => Poll::Ready(Err(this.refuse(Unfinished::Late(deadline.as_millis())))),
                    _ => Poll::Pending,
                }
            }
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Metered<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Whether a request carries a body (a length above zero, or chunked).
pub fn has_body(request: &Request) -> bool {
    !request.body().is_end_stream()
}

/// Media types a request body may have. Neither is one a form or a
/// `fetch` without a preflight can send, so a foreign page cannot post
/// anything without the server's CORS consent.
pub const BODY_TYPES: [&str; 2] = ["application/json", "application/octet-stream"];

/// Middleware for the API: a request body is read here, whole, before the
/// handler runs: at most `--max-message-size` bytes (413), with no pause
/// longer than `--idle-timeout-ms` and done within `--message-deadline-ms`
/// (408), and charged to the budget of unfinished messages while it arrives
/// and while the handler works on it (503 when the budget is spent).
pub async fn collect_body(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if !has_body(&request) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let mut charge = Charge::new(state.budget.clone());
    let bytes = match read_body(body, &state, &mut charge).await {
        Ok(bytes) => bytes,
        Err(e) => return e.into_response(),
    };
    let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    drop(charge);
    response
}

async fn read_body(mut body: Body, state: &AppState, charge: &mut Charge) -> Result<Bytes, ApiError> {
    let max = state.max_message_size as u64;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than --max-message-size ({max} bytes)"),
        )
    };
    if body.size_hint().lower() > max {
        return Err(too_large());
    }
    let started = Instant::now();
    let deadline = state.timeouts.message_deadline.map(|d| started + d);
    let mut buffer = Vec::new();
    loop {
        let mut wait = state.timeouts.idle.map(|idle| Instant::now() + idle);
        if let Some(deadline) = deadline {
            wait = Some(wait.map_or(deadline, |w| w.min(deadline)));
        }
        let next = body.frame();
        let frame = match wait {
            Some(until) => tokio::time::timeout_at(until, next).await.map_err(|_| late(deadline))?,
            None => next.await,
        };
        let Some(frame) = frame else {
            return Ok(Bytes::from(buffer));
        };
        let frame = frame.map_err(|e| ApiError::bad_request(format!("could not read the request body: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        if buffer.len() as u64 + data.len() as u64 > max {
            return Err(too_large());
        }
        buffer.extend_from_slice(&data);
        if !charge.set(buffer.len() as u64) {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                Unfinished::OverBudget(state.budget.limit()).to_string(),
            ));
        }
    }
}

/// 408: the deadline passed, or the body paused for the idle timeout.
fn late(deadline: Option<Instant>) -> ApiError {
    let message = if deadline.is_some_and(|d| Instant::now() >= d) {
        "request body not complete within --message-deadline-ms"
    } else {
        "request body stopped arriving (--idle-timeout-ms)"
    };
    ApiError::new(StatusCode::REQUEST_TIMEOUT, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
    use tungstenite::protocol::frame::{Frame, FrameHeader};

    fn frame(opcode: OpCode, fin: bool, payload: &[u8], masked: bool) -> Vec<u8> {
        let header = FrameHeader {
            is_final: fin,
            opcode,
            mask: masked.then_some([1, 2, 3, 4]),
            ..FrameHeader::default()
        };
        let mut out = Vec::new();
        Frame::from_payload(header, Bytes::copy_from_slice(payload))
            .format(&mut out)
            .unwrap();
        out
    }

    fn data(op: Data, fin: bool, n: usize) -> Vec<u8> {
        frame(OpCode::Data(op), fin, &vec![7; n], true)
    }

    fn ping() -> Vec<u8> {
        frame(OpCode::Control(Control::Ping), true, b"hi", true)
    }

    #[test]
    fn complete_messages_hold_nothing() {
        let mut s = FrameScanner::default();
        s.feed(&data(Data::Binary, true, 10));
        s.feed(&data(Data::Binary, true, 70_000));
        s.feed(&data(Data::Text, true, 0));
        assert!(!s.in_message());
        assert_eq!(s.partial(), 0);
        assert_eq!(s.begun(), 3);
    }

    /// The attack: fragments without the final one, then only pings.
    #[test]
    fn unfinished_fragments_are_counted_across_pings() {
        let mut s = FrameScanner::default();
        s.feed(&data(Data::Binary, false, 1000));
        s.feed(&ping());
        s.feed(&data(Data::Continue, false, 500));
        s.feed(&ping());
        assert!(s.in_message());
        assert_eq!(s.partial(), 1500);
        s.feed(&data(Data::Continue, true, 1));
        assert!(!s.in_message());
        assert_eq!(s.partial(), 0);
    }

    /// One large frame is counted as it arrives, not when it is complete.
    #[test]
    fn a_large_frame_counts_as_it_arrives() {
        let bytes = data(Data::Binary, true, 1 << 20);
        let mut s = FrameScanner::default();
        s.feed(&bytes[..100_000]);
        assert!(s.in_message());
        assert_eq!(s.partial(), 100_000 - 14, "payload only, after a 14-byte header");
        s.feed(&bytes[100_000..]);
        assert!(!s.in_message());
    }

    #[test]
    fn unmasked_and_empty_frames() {
        let mut s = FrameScanner::default();
        s.feed(&frame(OpCode::Data(Data::Binary), false, b"", false));
        assert!(s.in_message());
        s.feed(&frame(OpCode::Data(Data::Continue), true, b"abc", false));
        assert!(!s.in_message());
    }

    #[test]
    fn the_budget_is_shared_and_given_back() {
        let budget = Budget::new(100);
        let mut a = Charge::new(budget.clone());
        let mut b = Charge::new(budget.clone());
        assert!(a.set(60));
        assert!(!b.set(41));
        assert!(b.set(40));
        assert_eq!(budget.used(), 100);
        assert!(a.set(10));
        assert!(b.set(90));
        drop(a);
        drop(b);
        assert_eq!(budget.used(), 0);
        let unlimited = Budget::new(0);
        assert!(Charge::new(unlimited).set(u64::MAX / 2));
    }

    proptest! {
        /// Whatever frames arrive, cut into whatever reads, the scanner
        /// agrees with a count made frame by frame, and never panics on
        /// garbage.
        #[test]
        fn scanner_follows_any_split(
            frames in prop::collection::vec((0u8..4, any::<bool>(), 0usize..300, any::<bool>()), 0..20),
            cuts in prop::collection::vec(1usize..64, 1..20),
            garbage in prop::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut bytes = Vec::new();
            let mut expected_partial = 0u64;
            let mut in_message = false;
            for (kind, fin, len, masked) in frames {
                let (op, is_data) = match kind {
                    0 => (OpCode::Data(if in_message { Data::Continue } else { Data::Binary }), true),
                    1 => (OpCode::Data(if in_message { Data::Continue } else { Data::Text }), true),
                    2 => (OpCode::Control(Control::Ping), false),
                    _ => (OpCode::Control(Control::Pong), false),
                };
                let len = if is_data { len } else { len.min(125) };
                let fin = fin || !is_data;
                bytes.extend(frame(op, fin, &vec![1; len], masked));
                if is_data {
                    expected_partial += len as u64;
                    in_message = !fin;
                    if fin {
                        expected_partial = 0;
                    }
                }
            }
            let mut s = FrameScanner::default();
            let mut rest = &bytes[..];
            for cut in cuts.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let n = (*cut).min(rest.len());
                s.feed(&rest[..n]);
                rest = &rest[n..];
            }
            prop_assert_eq!(s.in_message(), in_message);
            prop_assert_eq!(s.partial(), expected_partial);
            FrameScanner::default().feed(&garbage);
        }
    }
}
