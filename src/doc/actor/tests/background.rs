//! Compaction snapshots written off the actor (`history::Background`),
//! with a store that holds them back as a slow database would.

use super::*;

/// `World::send` within 5 s: an actor that waits for the compaction's
/// write does not answer, and with no timer left the paused clock would
/// never move on; the test would hang instead of failing.
async fn send_in_time(world: &World, peer: PeerId, messages: Vec<Inbound>) {
    let sent = tokio::time::timeout(Duration::from_secs(5), world.send(peer, messages)).await;
    assert!(sent.is_ok(), "the actor waits for the compaction's write");
}

/// Waits (on the paused clock) until `done` holds, for at most a minute.
async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        sleep(Duration::from_millis(10)).await;
    }
}

/// The actor awaited every compaction write: every update behind it
/// waited for the database (the cluster's p99 at 5,000 updates/s). While
/// a snapshot's write is held up, updates are still applied, stored and
/// relayed, no second compaction starts, and once it lands the log keeps
/// what was committed meanwhile.
#[tokio::test(start_paused = true)]
async fn updates_are_relayed_while_a_compaction_is_written() {
    let config = DocConfig {
        compact_after_updates: 3,
        ..DocConfig::default()
    };
    let world = World::new(config);
    world.store.hold_compactions.send_replace(true);
    let a = world.join(1, 64).await;
    let mut b = world.join(2, 64).await;
    let editor = Editor::new(7);
    for c in ["a", "b", "c"] {
        send_in_time(&world, a.id, editor.type_text(c)).await;
    }
    assert_eq!(world.store.compactions.load(Ordering::SeqCst), 1, "due and started");
    assert_eq!(updates(&b.received().await), 3);

    for c in ["d", "e", "f"] {
        send_in_time(&world, a.id, editor.type_text(c)).await;
    }
    assert_eq!(updates(&b.received().await), 3, "relayed while the snapshot is written");
    assert_eq!(
        world.store.compactions.load(Ordering::SeqCst),
        1,
        "one compaction in flight at a time"
    );
    let stored = world.store.load(&world.name).await.unwrap();
    assert_eq!((stored.snapshot.is_some(), stored.log.len()), (false, 6), "committed");

    world.store.hold_compactions.send_replace(false);
    // The three updates committed while the first snapshot was written
    // are due by themselves: the actor compacts them as the first write
    // lands, without waiting for another edit (which may never come).
    until("the second snapshot is stored", async || {
        world.store.load(&world.name).await.unwrap().log.is_empty()
    })
    .await;
    assert_eq!(world.store.compactions.load(Ordering::SeqCst), 2);
    assert_eq!(world.stored_text().await, "abcdef");

    send_in_time(&world, a.id, editor.type_text("g")).await;
    let stored = world.store.load(&world.name).await.unwrap();
    assert_eq!(stored.log.len(), 1, "below the limit: kept in the log");
    assert_eq!(world.stored_text().await, "abcdefg");
}

/// A document unloading while its compaction is written waits for it,
/// then compacts what came after: nothing is left in the log and nothing
/// is lost.
#[tokio::test(start_paused = true)]
async fn unloading_waits_for_the_compaction_in_flight() {
    let config = DocConfig {
        compact_after_updates: 2,
        ..DocConfig::default()
    };
    let world = World::new(config);
    world.store.hold_compactions.send_replace(true);
    let a = world.join(1, 64).await;
    let editor = Editor::new(7);
    for c in ["a", "b", "c"] {
        send_in_time(&world, a.id, editor.type_text(c)).await;
    }
    assert_eq!(world.store.compactions.load(Ordering::SeqCst), 1);
    world.handle().leave(a.id).await;
    sleep(Duration::from_secs(30)).await;
    assert!(
        world.registry.loaded(&world.name).is_some(),
        "still writing its snapshot: not unloaded yet"
    );

    world.store.hold_compactions.send_replace(false);
    until("it unloads", async || world.registry.loaded(&world.name).is_none()).await;
    let stored = world.store.load(&world.name).await.unwrap();
    assert!(stored.snapshot.is_some() && stored.log.is_empty(), "{:?}", stored.log);
    assert_eq!(world.stored_text().await, "abc");
}
