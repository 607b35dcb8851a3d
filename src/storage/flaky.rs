//! A store for tests that fails or holds back writes while told to, as a
//! full disk, a locked database or a slow one would.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::watch;
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, Transact, Update};

use super::VersionKind;
use super::{
    BoxFuture, DocMeta, DocStore, LogEntry, MemoryStore, Snapshot, StoreError, StoredDoc, VersionMeta, VersionState,
};
use crate::name::DocName;

/// A store that fails appends while told to, as a full disk or a locked
/// database would, and holds appends or compaction snapshots back while
/// told to, as a slow database would.
pub(crate) struct FlakyStore {
    pub(crate) inner: MemoryStore,
    pub(crate) fail_appends: AtomicBool,
    /// While `true`, appends wait (they have started: `appends`).
    pub(crate) hold_appends: watch::Sender<bool>,
    pub(crate) appends: AtomicUsize,
    /// While `true`, compactions wait (they have started: `compactions`).
    pub(crate) hold_compactions: watch::Sender<bool>,
    pub(crate) compactions: AtomicUsize,
}

impl FlakyStore {
    /// The text `t` of a document as a fresh load of it sees it.
    pub(crate) async fn stored_text(&self, name: &DocName) -> String {
        let stored = self.load(name).await.unwrap();
        let rows = stored
            .snapshot
            .iter()
            .map(|s| &s[..])
            .chain(stored.log.iter().map(|e| &e.data[..]));
        text_of(rows)
    }
}

/// The text `t` of the document these v1 updates make.
pub(crate) fn text_of<'a>(updates: impl IntoIterator<Item = &'a [u8]>) -> String {
    let doc = Doc::new();
    for update in updates {
        doc.transact_mut()
            .apply_update(Update::decode_v1(update).unwrap())
            .unwrap();
    }
    let text = doc.get_or_insert_text("t");
    let s = text.get_string(&doc.transact());
    s
}

impl Default for FlakyStore {
    fn default() -> Self {
        Self {
            inner: MemoryStore::default(),
            fail_appends: AtomicBool::new(false),
            hold_appends: watch::channel(false).0,
            appends: AtomicUsize::new(0),
            hold_compactions: watch::channel(false).0,
            compactions: AtomicUsize::new(0),
        }
    }
}

impl DocStore for FlakyStore {
    fn load<'a>(&'a self, name: &'a DocName) -> BoxFuture<'a, Result<StoredDoc, StoreError>> {
        self.inner.load(name)
    }
    fn append_with_events<'a>(
        &'a self,
        name: &'a DocName,
        entries: Vec<LogEntry>,
        events: Vec<crate::event::NewEvent>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        if self.fail_appends.load(Ordering::Relaxed) {
            return Box::pin(async { Err(StoreError::Commit("disk full (test)".into())) });
        }
        self.appends.fetch_add(1, Ordering::SeqCst);
        let mut held = self.hold_appends.subscribe();
        Box::pin(async move {
            let _ = held.wait_for(|held| !held).await;
            self.inner.append_with_events(name, entries, events).await
        })
    }
    fn emit(
        &self,
        events: Vec<crate::event::NewEvent>,
        reported: Option<crate::storage::Reported>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.emit(events, reported)
    }
    fn events_after(
        &self,
        after_seq: i64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<crate::storage::StoredEvent>, StoreError>> {
        self.inner.events_after(after_seq, limit)
    }
    fn prune_events(&self, upto_seq: i64, before_ms: i64) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.inner.prune_events(upto_seq, before_ms)
    }
    fn last_event_seq(&self) -> BoxFuture<'_, Result<i64, StoreError>> {
        self.inner.last_event_seq()
    }
    fn committed_events(&self) -> tokio::sync::watch::Receiver<i64> {
        self.inner.committed_events()
    }
    fn unreported(&self) -> BoxFuture<'_, Result<Vec<DocName>, StoreError>> {
        self.inner.unreported()
    }
    fn compact<'a>(&'a self, name: &'a DocName, snapshot: Snapshot) -> BoxFuture<'a, Result<(), StoreError>> {
        self.compactions.fetch_add(1, Ordering::SeqCst);
        let mut held = self.hold_compactions.subscribe();
        Box::pin(async move {
            let _ = held.wait_for(|held| !held).await;
            self.inner.compact(name, snapshot).await
        })
    }
    fn list(&self) -> BoxFuture<'_, Result<Vec<DocMeta>, StoreError>> {
        self.inner.list()
    }
    fn meta<'a>(&'a self, name: &'a DocName) -> BoxFuture<'a, Result<Option<DocMeta>, StoreError>> {
        self.inner.meta(name)
    }
    fn delete<'a>(&'a self, name: &'a DocName) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.inner.delete(name)
    }
    fn save_version<'a>(
        &'a self,
        name: &'a DocName,
        snapshot: Snapshot,
        kind: VersionKind,
        label: Option<String>,
        digest: Vec<u8>,
    ) -> BoxFuture<'a, Result<VersionMeta, StoreError>> {
        self.inner.save_version(name, snapshot, kind, label, digest)
    }
    fn name_version<'a>(
        &'a self,
        name: &'a DocName,
        id: i64,
        label: Option<String>,
    ) -> BoxFuture<'a, Result<Option<VersionMeta>, StoreError>> {
        self.inner.name_version(name, id, label)
    }
    fn list_versions<'a>(&'a self, name: &'a DocName) -> BoxFuture<'a, Result<Vec<VersionMeta>, StoreError>> {
        self.inner.list_versions(name)
    }
    fn load_version<'a>(
        &'a self,
        name: &'a DocName,
        id: i64,
    ) -> BoxFuture<'a, Result<Option<VersionState>, StoreError>> {
        self.inner.load_version(name, id)
    }
    fn delete_versions<'a>(&'a self, name: &'a DocName, ids: Vec<i64>) -> BoxFuture<'a, Result<usize, StoreError>> {
        self.inner.delete_versions(name, ids)
    }
    fn revoke_token(&self, token_id: String, expires_at: u64) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.revoke_token(token_id, expires_at)
    }
    fn revoked_tokens(&self) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        self.inner.revoked_tokens()
    }
    fn close(&self) -> BoxFuture<'_, ()> {
        self.inner.close()
    }
    fn webhook_write(&self, op: crate::storage::WebhookWrite) -> BoxFuture<'_, Result<bool, StoreError>> {
        self.inner.webhook_write(op)
    }
    fn webhooks(&self) -> BoxFuture<'_, Result<Vec<crate::storage::StoredWebhook>, StoreError>> {
        self.inner.webhooks()
    }
    fn webhook_cursors(&self) -> BoxFuture<'_, Result<Vec<(String, i64)>, StoreError>> {
        self.inner.webhook_cursors()
    }
    fn webhook_failures<'a>(
        &'a self,
        webhook_id: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<crate::storage::WebhookFailure>, StoreError>> {
        self.inner.webhook_failures(webhook_id, limit)
    }
}
