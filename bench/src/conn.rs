//! Load-generator connections: a WebSocket per simulated client, opened from a
//! chosen loopback source address, synced the way y-websocket syncs.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::wire::{self, Kind};

pub type Ws = WebSocketStream<TcpStream>;
pub type Error = Box<dyn std::error::Error + Send + Sync>;

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

    pub fn with_source_ip(mut self, ip: Ipv4Addr) -> Self {
        self.source_ip = Some(ip);
        self
    }

    /// Opens `ws://host:port/<doc>`; `nth` picks the source address.
    pub async fn connect(&self, doc: &str, nth: usize) -> Result<Ws, Error> {
        let socket = TcpSocket::new_v4()?;
        if let Some(ip) = self.source_ip {
            socket.bind(SocketAddr::new(ip.into(), 0))?;
        } else if self.sources > 1 && self.addr.ip().is_loopback() {
            let ip = Ipv4Addr::new(127, 0, 0, 1 + (nth % self.sources as usize) as u8);
            socket.bind(SocketAddr::new(ip.into(), 0))?;
        }
        let stream = socket.connect(self.addr).await?;
        stream.set_nodelay(true)?;
        let config = WebSocketConfig::default()
            .read_buffer_size(self.read_buffer)
            .write_buffer_size(16 << 10)
            .max_message_size(Some(256 << 20))
            .max_frame_size(Some(256 << 20));
        let url = format!("{}/{}", self.base, doc);
        let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await?;
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
