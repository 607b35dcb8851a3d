//! The socket of a WebSocket connection as tungstenite reads it, metered:
//! the message in progress is followed in the bytes read, before tungstenite
//! sees them ([`FrameScanner`]), and charged to the server's budget of
//! unfinished messages; a read fails when the message is refused (the
//! budget evicted it, or it is late, or it stopped arriving). The session
//! then closes the connection with 1009 and the reason.
//!
//! It also reads the socket in larger pieces than tungstenite asks for
//! (`ws::READ_BUFFER`, 128 bytes, so that an idle connection holds a small
//! read buffer): a small read goes through a buffer on the stack and what
//! tungstenite did not take is kept until it asks again; a large frame is
//! read ahead into a buffer kept for the rest of its message. And it paces
//! a connection that sends more bytes than its byte bucket allows
//! (`--byte-rate-limit`).

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::budget::{Budget, Charge, Unfinished};
use crate::rate::{ClientKey, SharedBucket};

/// A data frame with more than this left to arrive is read ahead.
const READ_AHEAD_FROM: u64 = 4 << 10;
/// Most bytes one small read takes from the socket: a burst of small
/// frames costs one system call per this many bytes, not one per frame.
const SCRATCH: usize = 4 << 10;
/// The most read from the socket at once while reading ahead: 512 of
/// tungstenite's reads in one system call.
const READ_AHEAD: u64 = 64 << 10;

/// How long a message may take once begun: in all (`deadline`), and
/// without a byte of its payload arriving (`stall`; pings between its
/// fragments are no progress). `None`: no limit.
#[derive(Debug, Clone, Copy)]
pub struct MessageTimes {
    pub deadline: Option<Duration>,
    pub stall: Option<Duration>,
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
    /// The message in progress came in more than one frame.
    fragmented: bool,
}

impl FrameScanner {
    /// Payload bytes of the data message in progress.
    pub fn partial(&self) -> u64 {
        self.message.unwrap_or(0)
    }

    /// What tungstenite holds for the message in progress, as far as its
    /// frames tell: a message in one frame is read into a buffer reserved
    /// for the whole frame at once; one in fragments is gathered in a
    /// `Vec` that grows by doubling, up to twice its payload.
    pub fn allocated(&self) -> u64 {
        if self.fragmented {
            self.partial().saturating_mul(2)
        } else {
            self.partial()
        }
    }

    /// Payload bytes of the current frame still to come, if it is a data
    /// frame.
    pub fn frame_left(&self) -> u64 {
        match self.payload_left {
            Some(left) if self.frame_is_data => left,
            _ => 0,
        }
    }

    /// Whether a data message has begun and not ended.
    pub fn in_message(&self) -> bool {
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
            self.fragmented = !self.frame_is_final;
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
/// budget evicts it, its deadline has passed or it stalled (the read fails
/// with [`Unfinished`] inside an `io::Error`).
///
/// While a large data frame arrives, it reads up to [`READ_AHEAD`] bytes at
/// once into a buffer of its own and hands tungstenite its small reads from
/// there: the attacker of the hostile-peer benchmark had weft make millions
/// of 1 KiB reads a run. The buffer is charged to the budget with the
/// message and freed when the message has ended and the buffer is drained.
/// Otherwise it reads up to [`SCRATCH`] bytes through the stack and keeps
/// what tungstenite did not take until it asks again, so an idle connection
/// holds nothing here.
///
/// Bytes read are taken from the client's byte bucket; a bucket in debt
/// pauses reading until the debt is paid. Pausing, not closing: a client
/// over the rate only sees TCP slow it down, so an honest one that sends a
/// lot (an import, a paste beyond the burst) is slowed, never cut off and
/// sent into a reconnect loop; and a pause is not the client's stall.
pub struct Metered<T> {
    io: T,
    scanner: FrameScanner,
    charge: Charge,
    times: MessageTimes,
    /// The message in progress: its number (`FrameScanner::begun`), when it
    /// began, and when its payload last grew.
    timed: u64,
    began: Instant,
    progress: (u64, Instant),
    /// Wakes a read that waits while a message is in progress, at the
    /// message's deadline or stall, whichever comes first.
    timer: Option<Pin<Box<Sleep>>>,
    refused: Option<Unfinished>,
    /// Bytes read ahead (empty: none held), and the part of it not yet
    /// handed to tungstenite; `reusable` when it is a large frame's
    /// read-ahead buffer, kept for the rest of its message (otherwise it is
    /// what a small read left over, freed once handed over).
    ahead: Vec<u8>,
    ahead_unread: std::ops::Range<usize>,
    reusable: bool,
    /// `--byte-rate-limit` (`None`: no limit), and the pause it imposed.
    bytes: Option<SharedBucket>,
    pause: Option<Pin<Box<Sleep>>>,
    paused_until: Instant,
}

impl<T> Metered<T> {
    pub fn new(
        io: T,
        budget: Arc<Budget>,
        client: ClientKey,
        times: MessageTimes,
        bytes: Option<SharedBucket>,
    ) -> Self {
        let now = Instant::now();
        Self {
            io,
            scanner: FrameScanner::default(),
            charge: Charge::new(budget, client),
            times,
            timed: 0,
            began: now,
            progress: (0, now),
            timer: None,
            refused: None,
            ahead: Vec::new(),
            ahead_unread: 0..0,
            reusable: false,
            bytes,
            pause: None,
            paused_until: now,
        }
    }

    /// What this connection holds for the message in progress: what
    /// tungstenite holds, and the read-ahead buffer.
    fn held(&self) -> u64 {
        self.scanner.allocated() + self.ahead.len() as u64
    }

    /// Whether the next socket read goes into the read-ahead buffer: a
    /// large data frame is arriving, or the buffer is still there and its
    /// message has not ended.
    fn reads_ahead(&self) -> bool {
        self.scanner.frame_left() > READ_AHEAD_FROM || (self.reusable && self.scanner.in_message())
    }

    /// Hands tungstenite what was read ahead, as much as `buf` takes; frees
    /// the buffer once drained, unless it is a read-ahead buffer whose
    /// message goes on.
    fn serve_ahead(&mut self, buf: &mut ReadBuf<'_>) {
        let n = self.ahead_unread.len().min(buf.remaining());
        let from = self.ahead_unread.start;
        buf.put_slice(&self.ahead[from..from + n]);
        self.ahead_unread.start += n;
        if self.ahead_unread.is_empty() && !(self.reusable && self.scanner.in_message()) {
            self.ahead = Vec::new();
            self.reusable = false;
            // Lowering a charge cannot be refused; an eviction shows at
            // the next read.
            let _ = self.charge.set(self.held());
        }
    }

    /// Charges what the scanner now holds, and times the message in progress.
    fn settle(&mut self) -> Result<(), Unfinished> {
        self.charge.set(self.held())?;
        if !self.scanner.in_message() {
            return Ok(());
        }
        let now = Instant::now();
        if self.timed != self.scanner.begun() {
            self.timed = self.scanner.begun();
            self.began = now;
            self.progress = (self.scanner.partial(), now);
        } else if self.scanner.partial() > self.progress.0 {
            self.progress = (self.scanner.partial(), now);
        }
        let Some((due, why)) = self.due() else {
            return Ok(());
        };
        if now >= due {
            return Err(why);
        }
        match &mut self.timer {
            Some(timer) if timer.deadline() == due => {}
            Some(timer) => timer.as_mut().reset(due),
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(due))),
        }
        Ok(())
    }

    /// When the message in progress is refused if nothing changes, and why.
    /// A stall counts from the end of weft's own pause, if later.
    fn due(&self) -> Option<(Instant, Unfinished)> {
        let late = self
            .times
            .deadline
            .map(|d| (self.began + d, Unfinished::Late(d.as_millis())));
        let quiet_since = self.progress.1.max(self.paused_until);
        let stalled = self
            .times
            .stall
            .map(|s| (quiet_since + s, Unfinished::Stalled(s.as_millis())));
        match (late, stalled) {
            (Some(l), Some(s)) => Some(if s.0 < l.0 { s } else { l }),
            (l, s) => l.or(s),
        }
    }

    /// Takes `n` bytes read from the byte bucket; pauses reading while it
    /// is in debt.
    fn pace(&mut self, n: usize) {
        let now = Instant::now();
        if let Some(wait) = self.bytes.as_ref().and_then(|b| b.spend(n as f64, now.into_std())) {
            let until = now + wait;
            self.paused_until = until;
            self.pause = Some(Box::pin(tokio::time::sleep_until(until)));
        }
    }

    /// Nothing to read yet (the socket, or a pause): while a message is in
    /// progress the budget may evict it, and the timer wakes this read when
    /// it is due.
    fn wait(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.scanner.in_message() {
            return Poll::Pending;
        }
        if let Some(why) = self.charge.poll_evicted(cx) {
            return Poll::Ready(Err(self.refuse(why)));
        }
        let fired = self.timer.as_mut().is_some_and(|t| t.as_mut().poll(cx).is_ready());
        match self.due() {
            Some((due, why)) if fired && Instant::now() >= due => Poll::Ready(Err(self.refuse(why))),
            _ => Poll::Pending,
        }
    }

    fn refuse(&mut self, why: Unfinished) -> io::Error {
        self.charge.clear();
        self.ahead = Vec::new();
        self.ahead_unread = 0..0;
        self.reusable = false;
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
        if let Some(why) = this.charge.evicted() {
            return Poll::Ready(Err(this.refuse(why)));
        }
        if !this.ahead_unread.is_empty() {
            this.serve_ahead(buf);
            return Poll::Ready(Ok(()));
        }
        if let Some(pause) = &mut this.pause {
            if pause.as_mut().poll(cx).is_pending() {
                return this.wait(cx);
            }
            this.pause = None;
        }
        let ahead = this.reads_ahead();
        if ahead && !this.reusable {
            let size = this.scanner.frame_left().clamp(READ_AHEAD_FROM, READ_AHEAD);
            this.ahead = vec![0; size as usize];
            this.reusable = true;
            if let Err(why) = this.charge.set(this.held()) {
                return Poll::Ready(Err(this.refuse(why)));
            }
        }
        // A small read goes through the stack (not initialised: no cost
        // for its size), and what tungstenite does not take now is kept.
        let mut scratch = [MaybeUninit::<u8>::uninit(); SCRATCH];
        let mut small = ReadBuf::uninit(&mut scratch);
        let read = if ahead {
            let mut into = ReadBuf::new(&mut this.ahead);
            let read = Pin::new(&mut this.io).poll_read(cx, &mut into);
            let n = into.filled().len();
            this.ahead_unread = 0..n;
            read
        } else {
            Pin::new(&mut this.io).poll_read(cx, &mut small)
        };
        match read {
            Poll::Ready(Ok(())) => {
                let n = if ahead {
                    this.scanner.feed(&this.ahead[this.ahead_unread.clone()]);
                    this.ahead_unread.len()
                } else {
                    let got = small.filled();
                    this.scanner.feed(got);
                    let taken = got.len().min(buf.remaining());
                    buf.put_slice(&got[..taken]);
                    if taken < got.len() {
                        this.ahead = got[taken..].to_vec();
                        this.ahead_unread = 0..this.ahead.len();
                    }
                    got.len()
                };
                this.pace(n);
                if let Err(why) = this.settle() {
                    return Poll::Ready(Err(this.refuse(why)));
                }
                if ahead {
                    this.serve_ahead(buf);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => this.wait(cx),
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

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
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
    fn a_fragmented_message_is_charged_twice_its_payload() {
        let mut s = FrameScanner::default();
        s.feed(&data(Data::Binary, true, 100)[..50]);
        assert_eq!(s.allocated(), s.partial(), "one frame: reserved once");
        let mut s = FrameScanner::default();
        s.feed(&data(Data::Binary, false, 100));
        s.feed(&data(Data::Continue, false, 100));
        assert_eq!((s.partial(), s.allocated()), (200, 400));
        s.feed(&data(Data::Continue, true, 1));
        assert_eq!(s.allocated(), 0);
    }

    /// A socket that hands out what it holds, as much as each read asks
    /// for, and counts the reads.
    struct Counting {
        data: Vec<u8>,
        at: usize,
        reads: usize,
    }

    impl AsyncRead for Counting {
        fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            this.reads += 1;
            let n = buf.remaining().min(this.data.len() - this.at);
            buf.put_slice(&this.data[this.at..this.at + n]);
            this.at += n;
            Poll::Ready(Ok(()))
        }
    }

    /// tungstenite reads little at a time: a 1 MiB frame was 1,024 reads of
    /// the socket. It is read ahead in 64 KiB, charged to the budget while
    /// it arrives, and the buffer goes with the message: a connection
    /// between messages holds nothing more.
    #[tokio::test]
    async fn a_large_frame_is_read_ahead_and_the_buffer_freed() {
        use tokio::io::AsyncReadExt;
        let mut bytes = data(Data::Binary, true, 1 << 20);
        bytes.extend(data(Data::Binary, true, 10));
        let budget = Budget::new(64 << 20);
        let client = ClientKey {
            ip: std::net::Ipv4Addr::LOCALHOST.into(),
            token: None,
        };
        let times = MessageTimes {
            deadline: None,
            stall: None,
        };
        let io = Counting {
            data: bytes.clone(),
            at: 0,
            reads: 0,
        };
        let mut m = Metered::new(io, budget.clone(), client, times, None);
        let mut out = Vec::new();
        let mut chunk = [0u8; 1024];
        let mut charged_midway = 0;
        loop {
            let n = m.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&chunk[..n]);
            if out.len() == 512 << 10 {
                charged_midway = budget.used();
            }
        }
        assert_eq!(out, bytes);
        assert!(m.io.reads <= 20, "{} reads of the socket", m.io.reads);
        assert!(
            charged_midway >= (512 << 10) + READ_AHEAD,
            "the read-ahead buffer is charged with the message: {charged_midway}"
        );
        assert!(m.ahead.is_empty(), "freed with its message");
        assert_eq!(budget.used(), 0);
    }

    /// Small frames are read from the socket in pieces of up to `SCRATCH`
    /// bytes, not in tungstenite's small reads: what it does not take is
    /// handed over in order at its next reads, and freed once it is.
    #[tokio::test]
    async fn small_frames_are_read_in_pieces_and_the_rest_kept() {
        use tokio::io::AsyncReadExt;
        let mut bytes = Vec::new();
        for _ in 0..8 {
            bytes.extend(data(Data::Binary, true, 2000));
        }
        let io = Counting {
            data: bytes.clone(),
            at: 0,
            reads: 0,
        };
        let client = ClientKey {
            ip: std::net::Ipv4Addr::LOCALHOST.into(),
            token: None,
        };
        let times = MessageTimes {
            deadline: None,
            stall: None,
        };
        let budget = Budget::new(1 << 20);
        let mut m = Metered::new(io, budget.clone(), client, times, None);
        let mut out = Vec::new();
        let mut chunk = [0u8; 128];
        loop {
            let n = m.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&chunk[..n]);
            assert!(m.ahead.len() < SCRATCH, "only what a piece left over is kept");
        }
        assert_eq!(out, bytes);
        assert!(
            m.io.reads <= bytes.len().div_ceil(SCRATCH) + 1,
            "{} reads of the socket for {} bytes",
            m.io.reads,
            bytes.len()
        );
        assert!(m.ahead.is_empty(), "freed once handed over");
        assert_eq!(budget.used(), 0);
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
