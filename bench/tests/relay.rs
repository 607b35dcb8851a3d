//! The null relay and the load generator against each other, in-process.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use weft_bench::conn::Target;
use weft_bench::load::{self, FanoutTrial};
use weft_bench::relay;
use weft_bench::wire::{self, Appender, Mark};

async fn start_relay() -> String {
    let listener = relay::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(relay::serve(listener));
    format!("ws://{addr}")
}

/// A client's step1 is answered with an empty step2 (so it counts as synced),
/// and an update reaches the other peer of the room byte for byte, but not
/// the peers of another room nor its sender.
#[tokio::test]
async fn relays_to_the_other_peers_of_the_room() {
    let target = Target::new(&start_relay().await).await.unwrap();
    let mut a = target.join("room", 0).await.unwrap();
    let mut b = target.join("room", 1).await.unwrap();
    let mut c = target.join("other", 2).await.unwrap();
    let frame = Appender::new(7).frame(Mark { seq: 1, micros: 2 });
    a.send(Message::Binary(frame.clone().into())).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), b.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got.into_data().as_ref(), &frame[..]);
    assert_eq!(wire::find_mark(&frame), Some(Mark { seq: 1, micros: 2 }));
    for ws in [&mut a, &mut c] {
        assert!(tokio::time::timeout(Duration::from_millis(200), ws.next())
            .await
            .is_err());
    }
}

/// A fan-out trial delivers every update to every reader.
#[tokio::test]
async fn a_fanout_trial_counts_every_delivery() {
    let target = Target::new(&start_relay().await).await.unwrap();
    let trial = FanoutTrial {
        readers: 3,
        rate: 500.0,
        warmup: Duration::from_millis(100),
        measure: Duration::from_millis(400),
    };
    let result = load::fanout_trial(&target, None, "fanout-test", &trial).await.unwrap();
    assert_eq!(result["missing"], 0, "{result}");
    assert_eq!(result["sent_in_window"], 200, "{result}");
    assert_eq!(result["latency"]["count"], 600, "{result}");
}
