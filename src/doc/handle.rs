//! The document actor's API: the commands it takes and the cloneable
//! [`DocHandle`] that sends them ("Actors with Tokio": each method sends one
//! command over a bounded channel and, where there is an answer, waits for
//! it on a `oneshot`).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use yrs::StateVector;

use super::peers::Count;
use super::{DocError, DocName, PeerId, PeerLink, StateVectorParam};
use crate::events::PeerCounts;
use crate::protocol::{Inbound, InboundUpdate};
use crate::storage::{VersionKind, VersionMeta};

/// Commands waiting for an actor before senders wait.
const MAILBOX: usize = 256;

pub(super) type Reply<T> = oneshot::Sender<Result<T, DocError>>;

pub(super) enum Command {
    /// Answers once the document is loaded (or failed to load).
    Ready {
        reply: Reply<()>,
    },
    Join {
        peer: PeerLink,
        reply: Reply<()>,
    },
    Leave {
        peer: PeerId,
    },
    Messages {
        peer: PeerId,
        messages: Vec<Inbound>,
        /// When the session handed them over (the relay delay's start).
        received: Instant,
    },
    /// A Hocuspocus stateless message for the document's other Hocuspocus
    /// peers (all of them when from the API); answers how many got it.
    Stateless {
        from: Option<PeerId>,
        payload: String,
        reply: Option<Reply<u64>>,
    },
    /// An update from the HTTP API: applied, stored and relayed like a peer's.
    Update {
        update: InboundUpdate,
        received: Instant,
        reply: Reply<()>,
    },
    /// The state as a v1 update; only what `sv` lacks when given.
    EncodeState {
        sv: Option<StateVector>,
        reply: Reply<Vec<u8>>,
    },
    /// The content as JSON, one entry per root type.
    Content {
        reply: Reply<serde_json::Value>,
    },
    TakeVersion {
        kind: VersionKind,
        label: Option<String>,
        reply: Reply<Taken>,
    },
    /// Makes the live content equal a version's, through a new update.
    Restore {
        id: i64,
        reply: Reply<Restored>,
    },
    /// Disconnects every peer, deletes the stored document, unloads.
    Delete {
        reply: Reply<bool>,
    },
    Shutdown {
        reply: Reply<()>,
    },
    /// Cluster mode: another node deleted the document. Disconnects every
    /// peer (4404) and unloads without saving anything.
    Evict,
}

impl Command {
    /// Answers the command with an error instead of running it.
    pub(super) fn refuse(self, err: DocError) {
        fn answer<T>(reply: Reply<T>, err: DocError) {
            let _ = reply.send(Err(err));
        }
        match self {
            Command::Ready { reply }
            | Command::Join { reply, .. }
            | Command::Update { reply, .. }
            | Command::Shutdown { reply } => answer(reply, err),
            Command::EncodeState { reply, .. } => answer(reply, err),
            Command::Content { reply } => answer(reply, err),
            Command::TakeVersion { reply, .. } => answer(reply, err),
            Command::Restore { reply, .. } => answer(reply, err),
            Command::Delete { reply } => answer(reply, err),
            Command::Stateless { reply, .. } => {
                if let Some(reply) = reply {
                    answer(reply, err)
                }
            }
            Command::Leave { .. } | Command::Messages { .. } | Command::Evict => {}
        }
    }
}

/// The actor's end of its handles: the mailbox, and the peer count it keeps
/// up to date for them.
pub(super) struct Mailbox {
    pub rx: mpsc::Receiver<Command>,
    pub peers: Count,
}

/// A new actor's handle and mailbox; `live`: where its peer count is
/// reported as it changes, with the document's name.
pub(super) fn mailbox(live: Option<(DocName, PeerCounts)>) -> (DocHandle, Mailbox) {
    let (tx, rx) = mpsc::channel(MAILBOX);
    let peers = Arc::new(AtomicUsize::new(0));
    let handle = DocHandle {
        tx,
        peers: peers.clone(),
    };
    (
        handle,
        Mailbox {
            rx,
            peers: Count::new(peers, live),
        },
    )
}

/// A cloneable address of a document actor.
#[derive(Clone, Debug)]
pub struct DocHandle {
    tx: mpsc::Sender<Command>,
    /// Kept up to date by the actor, so counting needs no round trip.
    peers: Arc<AtomicUsize>,
}

/// A version asked for: a new one, or the latest when nothing changed since.
#[derive(Debug, Clone)]
pub struct Taken {
    pub version: VersionMeta,
    /// It was the latest version already; nothing new was stored.
    pub existing: bool,
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct Restored {
    /// The version taken of the state just before, to undo the restore.
    pub backup: VersionMeta,
    /// Bytes of the update that turned the live content into the version's.
    pub update_size: usize,
}

/// A wait for room in a document's mailbox ([`DocHandle::messages_or_wait`]).
pub type Waiting = Pin<Box<dyn Future<Output = Result<(), DocError>> + Send>>;

impl DocHandle {
    async fn request<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, DocError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| DocError::Unloaded)?;
        rx.await.map_err(|_| DocError::Unloaded)?
    }

    /// Waits until the document is loaded.
    pub async fn ready(&self) -> Result<(), DocError> {
        self.request(|reply| Command::Ready { reply }).await
    }

    /// Adds a peer; the actor queues step1 and the awareness states to it.
    pub async fn join(&self, peer: PeerLink) -> Result<(), DocError> {
        self.request(|reply| Command::Join { peer, reply }).await
    }

    /// Removes a peer (and its awareness states). Best effort: a gone actor
    /// has nothing to remove.
    pub async fn leave(&self, peer: PeerId) {
        let _ = self.tx.send(Command::Leave { peer }).await;
    }

    /// Hands the messages of one frame to the actor. Waits while the mailbox
    /// is full, which slows down the reading of this peer's socket: a fast
    /// writer is held back by TCP, not by dropping what it sent.
    pub async fn messages(&self, peer: PeerId, messages: Vec<Inbound>) -> Result<(), DocError> {
        self.tx
            .send(Command::Messages {
                peer,
                messages,
                received: Instant::now(),
            })
            .await
            .map_err(|_| DocError::Unloaded)
    }

    /// [`Self::messages`] for a caller that keeps its own future small (a
    /// connection's lives as long as the connection): queued at once when
    /// the mailbox has room, as it nearly always has (`None`), or else the
    /// wait for room, boxed.
    pub fn messages_or_wait(&self, peer: PeerId, messages: Vec<Inbound>) -> Option<Waiting> {
        let command = Command::Messages {
            peer,
            messages,
            received: Instant::now(),
        };
        match self.tx.try_send(command) {
            Ok(()) => None,
            Err(mpsc::error::TrySendError::Closed(_)) => Some(Box::pin(std::future::ready(Err(DocError::Unloaded)))),
            Err(mpsc::error::TrySendError::Full(command)) => {
                let tx = self.tx.clone();
                Some(Box::pin(async move {
                    tx.send(command).await.map_err(|_| DocError::Unloaded)
                }))
            }
        }
    }

    /// A peer's stateless message, for the document's other Hocuspocus
    /// peers. Waits while the mailbox is full, like [`Self::messages`].
    pub async fn peer_stateless(&self, peer: PeerId, payload: String) -> Result<(), DocError> {
        self.tx
            .send(Command::Stateless {
                from: Some(peer),
                payload,
                reply: None,
            })
            .await
            .map_err(|_| DocError::Unloaded)
    }

    /// A stateless message from the HTTP API for every Hocuspocus peer of
    /// the document; how many got it.
    pub async fn stateless(&self, payload: String) -> Result<u64, DocError> {
        self.request(|reply| Command::Stateless {
            from: None,
            payload,
            reply: Some(reply),
        })
        .await
    }

    pub async fn apply_update(&self, update: InboundUpdate) -> Result<(), DocError> {
        let received = Instant::now();
        self.request(|reply| Command::Update {
            update,
            received,
            reply,
        })
        .await
    }

    /// The state as a v1 update; only what `sv` lacks when given.
    pub async fn encode_state(&self, sv: Option<StateVectorParam>) -> Result<Vec<u8>, DocError> {
        let sv = sv.map(StateVectorParam::into_inner);
        self.request(|reply| Command::EncodeState { sv, reply }).await
    }

    /// Connected peers right now.
    pub fn peers(&self) -> usize {
        self.peers.load(Relaxed)
    }

    pub async fn content(&self) -> Result<serde_json::Value, DocError> {
        self.request(|reply| Command::Content { reply }).await
    }

    pub async fn take_version(&self, kind: VersionKind, label: Option<String>) -> Result<Taken, DocError> {
        self.request(|reply| Command::TakeVersion { kind, label, reply }).await
    }

    pub async fn restore(&self, id: i64) -> Result<Restored, DocError> {
        self.request(|reply| Command::Restore { id, reply }).await
    }

    pub async fn delete(&self) -> Result<bool, DocError> {
        self.request(|reply| Command::Delete { reply }).await
    }

    /// See [`Command::Evict`]; not waited on.
    pub(super) async fn evict(&self) {
        let _ = self.tx.send(Command::Evict).await;
    }

    pub(super) async fn shutdown(&self) -> Result<(), DocError> {
        self.request(|reply| Command::Shutdown { reply }).await
    }
}
