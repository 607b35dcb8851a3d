//! The actor in-process: the in-memory store, peers that are bare channels
//! (an outbox and a close slot, as a session holds them) and tokio's
//! paused clock, so that what takes seconds or minutes of idling runs at
//! once and always the same way. What only a real process shows (SIGKILL,
//! sockets, real clients) stays in `tests/`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::{sleep, Instant};
use yrs::sync::awareness::{AwarenessUpdate, AwarenessUpdateEntry};
use yrs::{ClientID, Doc, Text, Transact};

use crate::close;
use crate::doc::{outbox, DocConfig, DocHandle, DocName, OutboxReceiver, PeerId, PeerLink, Registry, VersionKind};
use crate::metrics::Metrics;
use crate::protocol::{self, Inbound};
use crate::storage::flaky::{text_of, FlakyStore};
use crate::storage::{DocStore, VersionMeta};

mod background;

/// A registry over a `FlakyStore`, and the one document the test is about.
struct World {
    store: Arc<FlakyStore>,
    registry: Registry,
    name: DocName,
}

impl World {
    fn new(config: DocConfig) -> Self {
        let store = Arc::new(FlakyStore::default());
        let registry = Registry::new(store.clone(), config, Arc::new(Metrics::default()));
        let name = DocName::parse("notes").unwrap();
        Self { store, registry, name }
    }

    fn handle(&self) -> DocHandle {
        self.registry.handle(&self.name).unwrap()
    }

    /// A peer with a queue of `frames` frames.
    async fn join(&self, id: u64, frames: usize) -> Peer {
        self.join_as(id, frames, false).await
    }

    async fn join_as(&self, id: u64, frames: usize, hocuspocus: bool) -> Peer {
        let (outbox, queue) = outbox(frames, 0);
        let closer = crate::close::Closer::new();
        let closed = closer.clone();
        let link = PeerLink {
            id: PeerId(id),
            outbox,
            closer,
            writable: true,
            encodes: None,
            hocuspocus,
            user: None,
        };
        self.handle().join(link).await.unwrap();
        Peer {
            id: PeerId(id),
            queue,
            closed,
        }
    }

    /// Sends messages as `peer` and waits until the actor has handled them
    /// to the end: an `encode_state` is answered after the batch's effects,
    /// and `ready` in a later batch, after its compaction.
    async fn send(&self, peer: PeerId, messages: Vec<Inbound>) {
        let handle = self.handle();
        handle.messages(peer, messages).await.unwrap();
        handle.encode_state(None).await.unwrap();
        handle.ready().await.unwrap();
    }

    /// The stored document's text, as a fresh load sees it.
    async fn stored_text(&self) -> String {
        self.store.stored_text(&self.name).await
    }

    async fn versions(&self) -> Vec<VersionMeta> {
        self.store.list_versions(&self.name).await.unwrap()
    }
}

/// A peer as the actor sees it: the far ends of its queue and close slot.
struct Peer {
    id: PeerId,
    queue: OutboxReceiver,
    closed: crate::close::Closer,
}

impl Peer {
    /// Every message queued to the peer so far, as written.
    async fn received(&mut self) -> Vec<Inbound> {
        let mut frames = Vec::new();
        while let Ok(n) = tokio::time::timeout(Duration::ZERO, self.queue.recv_many(&mut frames, 64)).await {
            if n == 0 {
                break;
            }
        }
        self.queue.written(&frames);
        frames
            .iter()
            .flat_map(|frame| protocol::decode_frame(frame).expect("the actor sends frames that decode"))
            .collect()
    }

    /// The frames queued so far, undecoded.
    async fn frames(&mut self) -> Vec<Bytes> {
        let mut frames = Vec::new();
        while let Ok(n) = tokio::time::timeout(Duration::ZERO, self.queue.recv_many(&mut frames, 64)).await {
            if n == 0 {
                break;
            }
        }
        self.queue.written(&frames);
        frames
    }

    fn close_code(&mut self) -> Option<u16> {
        self.closed.take().map(|reason| reason.code)
    }
}

/// The text `t` of the document these updates make.
/// A client editing the text `t`.
struct Editor(Doc);

impl Editor {
    fn new(client: u64) -> Self {
        Self(Doc::with_client_id(client))
    }

    /// Appends `s`; the raw v1 update.
    fn type_raw(&self, s: &str) -> Vec<u8> {
        let text = self.0.get_or_insert_text("t");
        let mut txn = self.0.transact_mut();
        text.push(&mut txn, s);
        txn.encode_update_v1()
    }

    /// Appends `s`; the update as a peer sends it.
    fn type_text(&self, s: &str) -> Vec<Inbound> {
        let frame = protocol::encode_update(&self.type_raw(s));
        protocol::decode_frame(&frame).unwrap()
    }
}

fn awareness(client: u64, clock: u32, json: &str) -> Vec<Inbound> {
    let update = AwarenessUpdate {
        clients: [(
            ClientID::new(client),
            AwarenessUpdateEntry {
                clock,
                json: json.into(),
            },
        )]
        .into(),
    };
    protocol::decode_frame(&protocol::encode_awareness(&update)).unwrap()
}

/// The states of `client` in the awareness messages, in order.
fn states_of(messages: &[Inbound], client: u64) -> Vec<String> {
    messages
        .iter()
        .filter_map(|m| match m {
            Inbound::Awareness(update) => update.clients.get(&ClientID::new(client)).map(|e| e.json.to_string()),
            _ => None,
        })
        .collect()
}

fn updates(messages: &[Inbound]) -> usize {
    messages.iter().filter(|m| matches!(m, Inbound::Update(_))).count()
}

/// `stale_awareness_expires` (tests/sync.rs) took 30 s of wall clock per
/// run; a state must go when not renewed, and not a moment before.
#[tokio::test(start_paused = true)]
async fn awareness_states_expire_when_not_renewed() {
    let world = World::new(DocConfig::default()); // 30 s
    let a = world.join(1, 64).await;
    let mut b = world.join(2, 64).await;
    world.send(a.id, awareness(10, 1, r#"{"user":"ada"}"#)).await;
    assert_eq!(states_of(&b.received().await, 10), [r#"{"user":"ada"}"#]);

    sleep(Duration::from_secs(29)).await;
    assert!(
        states_of(&b.received().await, 10).is_empty(),
        "renewed states stay 30 s"
    );
    // a renewal (same state, higher clock) restarts the 30 s and is relayed
    world.send(a.id, awareness(10, 2, r#"{"user":"ada"}"#)).await;
    assert_eq!(states_of(&b.received().await, 10).len(), 1);
    sleep(Duration::from_secs(29)).await;
    assert!(states_of(&b.received().await, 10).is_empty());
    sleep(Duration::from_secs(2)).await;
    assert_eq!(states_of(&b.received().await, 10), ["null"], "removed once stale");
}

/// A document without peers is saved and leaves memory after
/// `unload_after`, taking an automatic version of its edits; one with a
/// peer stays.
#[tokio::test(start_paused = true)]
async fn a_document_without_peers_unloads_after_its_grace_period() {
    let world = World::new(DocConfig::default()); // 10 s
    let a = world.join(1, 64).await;
    let editor = Editor::new(7);
    world.send(a.id, editor.type_text("kept")).await;
    sleep(Duration::from_secs(61)).await;
    assert!(world.registry.loaded(&world.name).is_some(), "a peer keeps it loaded");
    assert_eq!(world.versions().await.len(), 1, "idle for a minute");

    world.send(a.id, editor.type_text(" too")).await;
    world.handle().leave(a.id).await;
    sleep(Duration::from_secs(9)).await;
    assert!(world.registry.loaded(&world.name).is_some());
    sleep(Duration::from_secs(2)).await;
    assert!(
        world.registry.loaded(&world.name).is_none(),
        "unloaded 10 s after the last peer left"
    );
    assert_eq!(world.stored_text().await, "kept too");
    let stored = world.store.load(&world.name).await.unwrap();
    assert!(
        stored.snapshot.is_some() && stored.log.is_empty(),
        "compacted as it left"
    );
    assert_eq!(world.versions().await.len(), 2, "and versioned its last edits");

    // The next request loads it again.
    let mut b = world.join(2, 64).await;
    assert!(matches!(b.received().await[..], [Inbound::SyncStep1(_)]));
}

/// An edited document gets an automatic version once left alone for
/// `after_idle`, and at least every `every` while edits continue.
#[tokio::test(start_paused = true)]
async fn automatic_versions_follow_idleness_and_intervals() {
    let mut config = DocConfig::default();
    config.versions.after_idle = Duration::from_secs(60);
    config.versions.every = Duration::from_secs(600);
    let world = World::new(config);
    let a = world.join(1, 1 << 12).await;
    let editor = Editor::new(7);
    world.send(a.id, editor.type_text("a")).await;
    sleep(Duration::from_secs(59)).await;
    assert!(world.versions().await.is_empty());
    sleep(Duration::from_secs(2)).await;
    let versions = world.versions().await;
    assert_eq!(versions.len(), 1, "taken after a minute without edits");
    assert_eq!(versions[0].kind, VersionKind::Auto);

    // An edit every 30 s: never idle for a minute, versioned every 10.
    let first = Instant::now();
    let mut taken_after = None;
    for _ in 0..25 {
        world.send(a.id, editor.type_text("b")).await;
        sleep(Duration::from_secs(30)).await;
        if taken_after.is_none() && world.versions().await.len() == 2 {
            taken_after = Some(first.elapsed());
        }
    }
    let taken_after = taken_after.expect("a version while edits continue");
    assert!(
        taken_after >= Duration::from_secs(600) && taken_after <= Duration::from_secs(630),
        "{taken_after:?}"
    );
}

/// The log is compacted into a snapshot once it holds enough updates, and
/// what loads afterwards is the same document.
#[tokio::test(start_paused = true)]
async fn the_log_is_compacted_past_its_limit() {
    let config = DocConfig {
        compact_after_updates: 5,
        ..DocConfig::default()
    };
    let world = World::new(config);
    let a = world.join(1, 64).await;
    let editor = Editor::new(7);
    for c in ["a", "b", "c", "d"] {
        world.send(a.id, editor.type_text(c)).await;
    }
    let stored = world.store.load(&world.name).await.unwrap();
    assert_eq!((stored.snapshot.is_some(), stored.log.len()), (false, 4));
    world.send(a.id, editor.type_text("e")).await;
    let stored = world.store.load(&world.name).await.unwrap();
    assert_eq!((stored.snapshot.is_some(), stored.log.len()), (true, 0));
    assert_eq!(stored.next_seq, 6);
    world.send(a.id, editor.type_text("f")).await;
    assert_eq!(world.store.load(&world.name).await.unwrap().log.len(), 1);
    assert_eq!(world.stored_text().await, "abcdef");
}

/// A peer whose queue overflows is closed with 4503; the others get every
/// update, and the actor never waited for it.
#[tokio::test(start_paused = true)]
async fn a_slow_peer_is_disconnected_and_the_others_keep_receiving() {
    let world = World::new(DocConfig::default());
    let writer = world.join(1, 64).await;
    let mut fast = world.join(2, 64).await;
    let mut slow = world.join(3, 4).await; // never drained: step1 and 3 more fit
    fast.received().await;
    let editor = Editor::new(7);
    let mut relayed = 0;
    for _ in 0..10 {
        world.send(writer.id, editor.type_text("x")).await;
        relayed += updates(&fast.received().await);
    }
    assert_eq!(relayed, 10);
    assert_eq!(slow.close_code(), Some(close::SLOW_CONSUMER));
    assert_eq!(world.handle().peers(), 2, "the slow peer was let go");
    assert_eq!(world.stored_text().await, "x".repeat(10));
}

/// An update the store refused is not relayed; its sender is closed with
/// 4500 (it keeps the update and resends it), and the document in memory
/// is the stored one again. Others carry on once the store recovers.
#[tokio::test(start_paused = true)]
async fn a_failed_write_closes_its_sender_and_relays_nothing() {
    let world = World::new(DocConfig::default());
    let mut writer = world.join(1, 64).await;
    let mut observer = world.join(2, 64).await;
    let editor = Editor::new(7);
    world.send(writer.id, editor.type_text("stored ")).await;
    assert_eq!(updates(&observer.received().await), 1);

    world.store.fail_appends.store(true, Ordering::Relaxed);
    world.send(writer.id, Editor::new(8).type_text("lost")).await;
    assert_eq!(writer.close_code(), Some(close::STORAGE_FAILED));
    assert_eq!(updates(&observer.received().await), 0, "nothing unstored is relayed");
    let update = protocol::InboundUpdate::from_raw(Bytes::from(Editor::new(9).type_raw("api"))).unwrap();
    let refused = world.handle().apply_update(update).await;
    assert!(matches!(refused, Err(crate::doc::DocError::Storage(_))), "{refused:?}");
    let state = world.handle().encode_state(None).await.unwrap();
    assert_eq!(text_of([&state[..]]), "stored ", "memory holds what the store does");

    world.store.fail_appends.store(false, Ordering::Relaxed);
    world.send(observer.id, editor.type_text("again")).await;
    assert_eq!(observer.close_code(), None);
    assert_eq!(world.stored_text().await, "stored again");
}

/// A Hocuspocus peer is told "stored" (sync status 1) for each update it
/// sends, once the append has committed, and never for one the store
/// refused: with the status sent on apply, as Hocuspocus does, the second
/// half fails.
#[tokio::test(start_paused = true)]
async fn sync_status_follows_the_commit_and_never_an_unstored_update() {
    let stored = weft_core::hocuspocus::sync_status(true);
    let world = World::new(DocConfig::default());
    let mut writer = world.join_as(1, 64, true).await;
    let mut y_websocket = world.join(2, 64).await;
    let editor = Editor::new(7);
    assert!(
        writer.frames().await.is_empty(),
        "no step1 on joining: it answers the provider's"
    );
    // The provider's step1 is answered with step1, then step2 (Hocuspocus's order).
    world
        .send(writer.id, vec![Inbound::SyncStep1(yrs::StateVector::default())])
        .await;
    let answer: Vec<u8> = writer.frames().await.iter().map(|f| f[1]).collect();
    assert_eq!(answer, vec![protocol::SYNC_STEP1, protocol::SYNC_STEP2]);
    world.send(writer.id, editor.type_text("stored ")).await;
    assert_eq!(world.stored_text().await, "stored ");
    assert_eq!(writer.frames().await, vec![stored.clone()]);
    let y_frames = y_websocket.frames().await;
    assert!(!y_frames.contains(&stored), "a y-websocket peer gets no sync status");
    // An empty step2 (what a provider answers our step1 with) is acknowledged too.
    let empty = protocol::InboundUpdate::from_raw(Bytes::from_static(&[0, 0])).unwrap();
    world.send(writer.id, vec![Inbound::Update(empty)]).await;
    assert_eq!(writer.frames().await, vec![stored.clone()]);

    world.store.fail_appends.store(true, Ordering::Relaxed);
    world.send(writer.id, Editor::new(8).type_text("lost")).await;
    assert!(
        !writer.frames().await.contains(&stored),
        "no \"stored\" for an update the store refused"
    );
    assert_eq!(writer.close_code(), Some(close::STORAGE_FAILED));
}
