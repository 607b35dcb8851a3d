use super::*;
use crate::event::{EventType, NewEvent};
use crate::storage::MemoryStore;

fn event(n: usize) -> NewEvent {
    NewEvent::new(EventType::PeerJoined, Some("doc"), serde_json::json!({ "n": n }))
}

async fn feed() -> (Arc<dyn DocStore>, Feed) {
    let store: Arc<dyn DocStore> = Arc::new(MemoryStore::default());
    let feed = Feed::start(
        store.clone(),
        FeedConfig {
            retention: Duration::from_secs(3600),
            poll: None,
        },
    )
    .await
    .unwrap();
    (store, feed)
}

async fn collect(sub: &mut Subscription, want: usize) -> Vec<i64> {
    let mut seen = Vec::new();
    while seen.len() < want {
        let batch = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .expect("events within 5 s")
            .unwrap()
            .unwrap();
        seen.extend(batch.iter().map(|e| e.seq));
    }
    seen
}

/// A subscriber gets what was there before it subscribed (after its
/// cursor), then what comes, each once and in order.
#[tokio::test]
async fn a_subscriber_gets_the_past_then_the_present() {
    let (store, feed) = feed().await;
    store.emit((0..3).map(event).collect(), None).await.unwrap();
    let mut sub = feed.subscribe(1);
    store.emit((3..5).map(event).collect(), None).await.unwrap();
    assert_eq!(collect(&mut sub, 4).await, vec![2, 3, 4, 5]);
    let mut latest = feed.latest();
    tokio::time::timeout(Duration::from_secs(5), latest.wait_for(|seq| *seq == 5))
        .await
        .expect("latest follows the commits")
        .unwrap();
}

/// A subscriber that falls behind the broadcast by more than it holds is
/// not cut off and misses nothing: it reads the outbox from its cursor.
#[tokio::test]
async fn a_lagging_subscriber_reads_the_outbox() {
    let (store, feed) = feed().await;
    let mut sub = feed.subscribe(0);
    let total = BROADCAST * 3;
    for chunk in (0..total).collect::<Vec<_>>().chunks(100) {
        store
            .emit(chunk.iter().map(|&n| event(n)).collect(), None)
            .await
            .unwrap();
        tokio::task::yield_now().await;
    }
    let seen = collect(&mut sub, total).await;
    assert_eq!(seen, (1..=total as i64).collect::<Vec<_>>());
}

/// Resuming is possible while the event last seen is in the outbox.
#[tokio::test]
async fn resuming_after_a_pruned_event_is_told() {
    let (store, feed) = feed().await;
    store.emit((0..4).map(event).collect(), None).await.unwrap();
    assert_eq!(feed.resumable(2).await.unwrap(), Ok(()));
    store.prune_events(2, i64::MAX).await.unwrap();
    assert_eq!(feed.resumable(2).await.unwrap(), Err(Some(3)));
    assert_eq!(feed.resumable(3).await.unwrap(), Ok(()));
    assert_eq!(feed.resumable(9).await.unwrap(), Err(None));
}

/// The content source the wiring sets is what `content` answers with.
#[tokio::test]
async fn content_comes_from_the_wired_source() {
    let (_, feed) = feed().await;
    let doc = crate::name::DocName::parse("notes/a").unwrap();
    assert!(feed.content(doc.clone()).await.is_err(), "nothing wired yet");
    feed.set_content_source(Arc::new(|name| {
        Box::pin(async move { Ok(serde_json::json!({ "name": name.as_str() })) })
    }));
    assert_eq!(feed.content(doc).await.unwrap(), serde_json::json!({"name": "notes/a"}));
}
