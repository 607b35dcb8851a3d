//! The null relay: the physical limit a y-websocket server can approach on a
//! machine. It forwards every frame to the other peers of its room with no
//! CRDT, no storage and no decoding beyond the first two bytes; a client's
//! step1 is answered with an empty step2 so that clients count as synced.
//!
//! It is built like weft's transport (tungstenite, a reader loop and a writer
//! task per connection, bounded per-peer queues) so that the difference to
//! weft is the document work, not the plumbing. Unlike weft it never
//! disconnects a slow peer, since it could not resync it: a full queue makes
//! the sender wait instead.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use crate::wire::{self, Kind};

/// Frames queued per peer before its senders wait (weft's default queue).
const PEER_QUEUE: usize = 1024;
/// Most frames written between two flushes (as weft).
const WRITE_BATCH: usize = 256;

type Room = Mutex<Vec<(u64, mpsc::Sender<Message>)>>;

#[derive(Default)]
struct Rooms {
    rooms: Mutex<HashMap<String, Arc<Room>>>,
    next_id: AtomicU64,
}

/// Serves until the process ends.
pub async fn serve(listener: TcpListener) -> std::io::Result<()> {
    let rooms = Arc::new(Rooms::default());
    loop {
        let (stream, _) = listener.accept().await?;
        let rooms = rooms.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let _ = connection(stream, rooms).await;
        });
    }
}

pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

async fn connection(stream: TcpStream, rooms: Arc<Rooms>) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut path = String::new();
    let config = WebSocketConfig::default()
        .read_buffer_size(4 << 10)
        .write_buffer_size(16 << 10);
    // tungstenite's callback signature: its error type is what it is.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| {
        path = req.uri().path().to_string();
        Ok(resp)
    };
    let ws = tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await?;
    let (mut sink, mut stream) = ws.split();
    let id = rooms.next_id.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::channel::<Message>(PEER_QUEUE);
    let room = {
        let mut all = rooms.rooms.lock().unwrap();
        let room = all.entry(path.clone()).or_default().clone();
        // The room holds the only long-lived sender: leaving the room ends
        // the peer's writer.
        room.lock().unwrap().push((id, tx));
        room
    };
    let writer = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(64);
        while rx.recv_many(&mut batch, WRITE_BATCH).await > 0 {
            for msg in batch.drain(..) {
                if sink.feed(msg).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    });
    while let Some(Ok(msg)) = stream.next().await {
        let Message::Binary(frame) = msg else {
            if matches!(msg, Message::Close(_)) {
                break;
            }
            continue;
        };
        if wire::kind(&frame) == Kind::Step1 {
            let peers = room.lock().unwrap();
            let Some((_, out)) = peers.iter().find(|(peer, _)| *peer == id) else {
                break;
            };
            if out.try_send(Message::Binary(wire::empty_step2().into())).is_err() {
                break;
            }
            continue;
        }
        // Senders are cloned out of the lock: awaiting a full queue must not
        // hold it.
        let peers: Vec<mpsc::Sender<Message>> = room
            .lock()
            .unwrap()
            .iter()
            .filter(|(peer, _)| *peer != id)
            .map(|(_, out)| out.clone())
            .collect();
        for out in peers {
            // try_send first: an awaited send per peer spends tokio's
            // cooperative budget, so with hundreds of peers the reader would
            // yield mid-frame and every writer would flush one frame at a
            // time. Only a full queue waits, holding this reader back (and,
            // through TCP, its sender) until the slow peer catches up.
            match out.try_send(Message::Binary(frame.clone())) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(msg)) => {
                    let _ = out.send(msg).await;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
    }
    let empty = {
        let mut peers = room.lock().unwrap();
        peers.retain(|(peer, _)| *peer != id);
        peers.is_empty()
    };
    if empty {
        let mut all = rooms.rooms.lock().unwrap();
        if all
            .get(&path)
            .is_some_and(|r| Arc::ptr_eq(r, &room) && r.lock().unwrap().is_empty())
        {
            all.remove(&path);
        }
    }
    let _ = writer.await;
    Ok(())
}
