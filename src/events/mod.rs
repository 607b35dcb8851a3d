// STUB (not committed): stands in for the events branch until it merges.
pub mod webhook;
use std::sync::Arc;
use tokio::sync::watch;
#[derive(Clone)]
pub struct Feed {
    latest: Arc<watch::Sender<i64>>,
}
impl Feed {
    pub fn stub() -> Self {
        Feed {
            latest: Arc::new(watch::channel(0).0),
        }
    }
    pub fn latest(&self) -> watch::Receiver<i64> {
        self.latest.subscribe()
    }
    pub fn set_delivery_floor(&self, _seq: i64) {}
}
