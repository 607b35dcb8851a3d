//! Load-generator connections: a WebSocket per simulated client, opened from a
//! chosen loopback source address, synced the way y-websocket syncs.
//!
//! A [`Target`] in Hocuspocus mode speaks the Hocuspocus protocol instead
//! (`/hocuspocus`, one document per socket): [`Ws`] puts the document's
//! address in front of every frame it sends and takes it off every frame it
//! reads, so the scenarios see y-websocket frames either way; the frames
//! Hocuspocus adds (auth answers, SyncStatus `8`) reach them as frames of
//! their own type, which [`wire::kind`] calls `Other`.

use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use yrs::encoding::read::{Cursor, Read};
use yrs::encoding::write::Write;

use crate::wire::{self, Kind};

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The path of weft's Hocuspocus endpoint; `@hocuspocus/server` takes any.
pub const HOCUSPOCUS_PATH: &str = "hocuspocus";
/// Hocuspocus message types the load generator uses.
pub const HOCUS_SYNC: u64 = 0;
pub const HOCUS_AUTH: u64 = 2;
pub const HOCUS_SYNC_REPLY: u64 = 4;
pub const HOCUS_SYNC_STATUS: u64 = 8;

/// A load-generator socket. Without an address it is a y-websocket socket
/// as is; with one (Hocuspocus mode) see the module's comment.
pub struct Ws {
    inner: WebSocketStream<TcpStream>,
    /// `varString(document)`, the prefix of every frame; `None`: y-websocket.
    address: Option<Vec<u8>>,
}

impl Ws {
    pub async fn close(&mut self, frame: Option<CloseFrame>) -> Result<(), WsError> {
        self.inner.close(frame).await
    }

    pub fn is_hocuspocus(&self) -> bool {
        self.address.is_some()
    }

    /// Sends a Hocuspocus frame of `kind` with `body` (after the address).
    async fn send_hocus(&mut self, kind: u64, body: &[u8]) -> Result<(), WsError> {
        let mut frame = Vec::with_capacity(body.len() + 8);
        frame.write_var(kind);
        frame.extend_from_slice(body);
        self.send(Message::Binary(frame.into())).await
    }
}

/// `varString(s)` as lib0 writes it.
pub fn var_string(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() + 2);
    out.write_var(s.len());
    out.extend_from_slice(s.as_bytes());
    out
}

/// A Hocuspocus frame without its address; SyncReply (4) is a sync message
/// too and comes out as Sync (0). A frame that does not decode is left whole.
fn strip_address(frame: tokio_tungstenite::tungstenite::Bytes) -> tokio_tungstenite::tungstenite::Bytes {
    let mut cursor = Cursor::new(&frame);
    let Ok(len) = cursor.read_var::<usize>() else {
        return frame;
    };
    let at = cursor.next.saturating_add(len);
    if at >= frame.len() {
        return frame;
    }
    if frame[at] == HOCUS_SYNC_REPLY as u8 {
        let mut out = frame[at..].to_vec();
        out[0] = HOCUS_SYNC as u8;
        return out.into();
    }
    frame.slice(at..)
}

impl Stream for Ws {
    type Item = Result<Message, WsError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        match this.inner.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(Message::Binary(frame)))) if this.address.is_some() => {
                Poll::Ready(Some(Ok(Message::Binary(strip_address(frame)))))
            }
            other => other,
        }
    }
}

impl Sink<Message> for Ws {
    type Error = WsError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        self.get_mut().inner.poll_ready_unpin(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), WsError> {
        let this = self.get_mut();
        let item = match (item, &this.address) {
            (Message::Binary(frame), Some(address)) => {
                let mut out = Vec::with_capacity(address.len() + frame.len());
                out.extend_from_slice(address);
                out.extend_from_slice(&frame);
                Message::Binary(out.into())
            }
            (item, _) => item,
        };
        this.inner.start_send_unpin(item)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        self.get_mut().inner.poll_flush_unpin(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        self.get_mut().inner.poll_close_unpin(cx)
    }
}

/// How long a connect plus sync may take before it counts as failed.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(20);

/// Where to connect and how.
#[derive(Clone, Debug)]
pub struct Target {
    /// `ws://host:port`
    pub base: String,
    addr: SocketAddr,
    /// Loopback source addresses to spread connections over (127.0.0.1 ..),
    /// for when one address runs out of ephemeral ports.
    pub sources: u8,
    /// tungstenite's read buffer per connection (allocated up front).
    pub read_buffer: usize,
    /// One loopback source address for every connection (another client
    /// IP, as far as the server's per-IP limits can tell); overrides `sources`.
    pub source_ip: Option<Ipv4Addr>,
    /// Speak the Hocuspocus protocol at `/hocuspocus`, one document per socket.
    pub hocuspocus: bool,
}

impl Target {
    pub async fn new(base: &str) -> Result<Self, Error> {
        let base = base.trim_end_matches('/').to_string();
        let hostport = base
            .strip_prefix("ws://")
            .ok_or("the server URL must start with ws://")?
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let addr = tokio::net::lookup_host(hostport.as_str())
            .await?
            .find(SocketAddr::is_ipv4)
            .ok_or_else(|| format!("{hostport} has no IPv4 address"))?;
        Ok(Self {
            base,
            addr,
            sources: 1,
            read_buffer: 16 << 10,
            source_ip: None,
            hocuspocus: false,
        })
    }

    pub fn with_sources(mut self, sources: u8) -> Self {
        self.sources = sources.max(1);
        self
    }

    pub fn with_read_buffer(mut self, bytes: usize) -> Self {
        self.read_buffer = bytes;
        self
    }

    pub fn with_hocuspocus(mut self) -> Self {
        self.hocuspocus = true;
        self
    }

    pub fn with_source_ip(mut self, ip: Ipv4Addr) -> Self {
        self.source_ip = Some(ip);
        self
    }

    /// Opens `ws://host:port/<doc>`; `nth` picks the source address. In
    /// Hocuspocus mode: `ws://host:port/hocuspocus`, and sends the auth
    /// message for `doc` (an empty token: open mode, or no auth hook), whose
    /// answer the sync that follows skips.
    pub async fn connect(&self, doc: &str, nth: usize) -> Result<Ws, Error> {
        let socket = TcpSocket::new_v4()?;
        if let Some(ip) = self.source_ip {
            bind_source(&socket, ip)?;
        } else if self.sources > 1 && self.addr.ip().is_loopback() {
            let ip = Ipv4Addr::new(127, 0, 0, 1 + (nth % self.sources as usize) as u8);
            bind_source(&socket, ip)?;
        }
        let stream = socket.connect(self.addr).await?;
        stream.set_nodelay(true)?;
        let config = WebSocketConfig::default()
            .read_buffer_size(self.read_buffer)
            .write_buffer_size(16 << 10)
            .max_message_size(Some(256 << 20))
            .max_frame_size(Some(256 << 20));
        let path = if self.hocuspocus { HOCUSPOCUS_PATH } else { doc };
        let url = format!("{}/{}", self.base, path);
        let (inner, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await?;
        let mut ws = Ws {
            inner,
            address: self.hocuspocus.then(|| var_string(doc)),
        };
        if self.hocuspocus {
            // Auth · Token · token · the provider version it claims.
            let mut body = vec![0u8];
            body.extend(var_string(""));
            body.extend(var_string("4.7.0"));
            ws.send_hocus(HOCUS_AUTH, &body).await?;
        }
        Ok(ws)
    }

    /// Connects and syncs as an empty client; see [`sync_empty`].
    pub async fn join(&self, doc: &str, nth: usize) -> Result<Ws, Error> {
        let attempt = async {
            let mut ws = self.connect(doc, nth).await?;
            sync_empty(&mut ws).await?;
            Ok::<_, Error>(ws)
        };
        tokio::time::timeout(SYNC_TIMEOUT, attempt)
            .await
            .map_err(|_| format!("connecting to {doc} took over {SYNC_TIMEOUT:?}"))?
    }
}

/// The HTTP status of a refused upgrade (429, 503...), if that is why
/// `connect` failed.
pub fn refused_status(error: &Error) -> Option<u16> {
    match error.downcast_ref::<tokio_tungstenite::tungstenite::Error>()? {
        tokio_tungstenite::tungstenite::Error::Http(response) => Some(response.status().as_u16()),
        _ => None,
    }
}

/// Syncs a client that holds nothing and keeps nothing: sends step1 with an
/// empty state vector, answers the server's step1 with an empty step2, and
/// returns once the server's step2 arrived (y-websocket's `synced`).
async fn sync_empty(ws: &mut Ws) -> Result<(), Error> {
    ws.send(Message::Binary(wire::empty_step1().into())).await?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(frame))) => match wire::kind(&frame) {
                Kind::Step1 => ws.send(Message::Binary(wire::empty_step2().into())).await?,
                Kind::Step2 => return Ok(()),
                _ => {}
            },
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => return Err("closed before sync".into()),
        }
    }
}

/// Opens many connections with bounded concurrency, so neither side's accept
/// backlog overflows. `make(i)` opens the i-th.
pub async fn open_many<T, F, Fut>(count: usize, concurrency: usize, make: F) -> Result<Vec<T>, Error>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let permit = limit.clone().acquire_owned().await?;
        let fut = make(i);
        tasks.push(tokio::spawn(async move {
            let out = fut.await;
            drop(permit);
            out
        }));
    }
    let mut out = Vec::with_capacity(count);
    for task in tasks {
        out.push(task.await??);
    }
    Ok(out)
}

/// Binds a socket to a source address, its port left for `connect` to
/// pick (`IP_BIND_ADDRESS_NO_PORT`). A `bind` to port 0 picks a port free
/// for every destination, searching the sockets bound so far: with
/// 20,000 connections that search was a sixth of all the CPU of a
/// restart-at-scale run (`inet_bhash2_conflict`, perf), on the load
/// generator's core. `connect` needs the port free for one destination
/// only. Where the option is missing, the plain bind is kept.
fn bind_source(socket: &TcpSocket, ip: Ipv4Addr) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let one: libc::c_int = 1;
        // SAFETY: sets an integer option on a socket this function borrows.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                std::ptr::addr_of!(one).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    socket.bind(SocketAddr::new(ip.into(), 0))
}
