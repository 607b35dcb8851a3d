//! In-memory store: `--storage none`.
//!
//! Keeps documents while the process lives and forgets them when it exits.
//! It exists to measure what durability costs (the benchmark compares it with
//! SQLite) and for throwaway servers; it is never the default.

use std::collections::BTreeMap;
use std::sync::Mutex;

use tokio::sync::watch;

use super::outbox;
use super::{
    BoxFuture, DocMeta, DocStore, LogEntry, Reported, Snapshot, StoreError, StoredDoc, StoredEvent, VersionKind,
    VersionMeta, VersionState,
};
use super::{StoredWebhook, WebhookFailure, WebhookWrite};
use crate::clock::{now_ms, now_secs};
use crate::event::NewEvent;
use crate::name::DocName;

#[derive(Default)]
struct Entry {
    created: i64,
    updated: i64,
    snapshot: Option<Snapshot>,
    log: Vec<LogEntry>,
    versions: Vec<(VersionMeta, Snapshot)>,
    reported_seq: u64,
}

impl Entry {
    fn size(&self) -> u64 {
        let snap = self.snapshot.as_ref().map_or(0, |s| s.state.len());
        (snap + self.log.iter().map(|e| e.data.len()).sum::<usize>()) as u64
    }

    fn meta(&self, name: &DocName) -> DocMeta {
        DocMeta {
            name: name.to_string(),
            created: self.created,
            updated: self.updated,
            size: self.size(),
        }
    }
}

/// The webhook tables (`storage::webhooks`).
#[derive(Default)]
struct Webhooks {
    hooks: Vec<StoredWebhook>,
    cursors: BTreeMap<String, i64>,
    failures: Vec<WebhookFailure>,
}

pub struct MemoryStore {
    docs: Mutex<BTreeMap<DocName, Entry>>,
    revoked: Mutex<Vec<(String, u64)>>,
    webhooks: Mutex<Webhooks>,
    next_version: std::sync::atomic::AtomicI64,
    /// The outbox: every event and the last seq given.
    events: Mutex<(i64, Vec<StoredEvent>)>,
    signal: watch::Sender<i64>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self {
            docs: Mutex::default(),
            revoked: Mutex::default(),
            webhooks: Mutex::default(),
            next_version: Default::default(),
            events: Mutex::default(),
            signal: watch::channel(0).0,
        }
    }
}

impl MemoryStore {
    fn entry<R>(&self, name: &DocName, f: impl FnOnce(&mut Entry) -> R) -> R {
        let mut docs = self.docs.lock().unwrap();
        let now = now_ms();
        if !docs.contains_key(name) {
            self.write_events(&[outbox::document_created(name)]);
        }
        let entry = docs.entry(name.clone()).or_insert_with(|| Entry {
            created: now,
            ..Default::default()
        });
        entry.updated = now;
        f(entry)
    }

    fn write_events(&self, events: &[NewEvent]) {
        if events.is_empty() {
            return;
        }
        let now = now_ms();
        let mut outbox = self.events.lock().unwrap();
        for event in events {
            let rendered = event.render(now);
            outbox.0 += 1;
            let seq = outbox.0;
            outbox.1.push(StoredEvent {
                seq,
                id: rendered.id,
                kind: event.kind.as_str().to_string(),
                document: event.document.clone(),
                created_ms: now,
                body: rendered.body,
            });
        }
        outbox::committed(&self.signal, outbox.0);
    }
}

impl DocStore for MemoryStore {
    fn load<'a>(&'a self, name: &'a DocName) -> BoxFuture<'a, Result<StoredDoc, StoreError>> {
        let docs = self.docs.lock().unwrap();
        let stored = match docs.get(name) {
            None => StoredDoc {
                next_seq: 1,
                ..Default::default()
            },
            Some(e) => {
                // The newest snapshot of either kind, as SQLite does.
                let newest = e
                    .versions
                    .iter()
                    .map(|(_, s)| s)
                    .chain(e.snapshot.as_ref())
                    .max_by_key(|s| s.upto_seq);
                let after = newest.map_or(0, |s| s.upto_seq);
                StoredDoc {
                    snapshot: newest.map(|s| s.state.clone()),
                    log: e.log.iter().filter(|l| l.seq > after).cloned().collect(),
                    next_seq: e.log.last().map_or(after, |l| l.seq.max(after)) + 1,
                    stream_id: None,
                    reported_seq: e.reported_seq,
                }
            }
        };
        Box::pin(std::future::ready(Ok(stored)))
    }

    fn append_with_events<'a>(
        &'a self,
        name: &'a DocName,
        entries: Vec<LogEntry>,
        events: Vec<NewEvent>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.entry(name, |e| e.log.extend(entries));
        self.write_events(&events);
        Box::pin(std::future::ready(Ok(())))
    }

    fn emit(&self, events: Vec<NewEvent>, reported: Option<Reported>) -> BoxFuture<'_, Result<(), StoreError>> {
        if let Some(Reported { doc, upto_seq }) = reported {
            let mut docs = self.docs.lock().unwrap();
            let Some(entry) = docs.get_mut(&doc) else {
                return Box::pin(std::future::ready(Ok(()))); // deleted meanwhile
            };
            entry.reported_seq = entry.reported_seq.max(upto_seq);
        }
        self.write_events(&events);
        Box::pin(std::future::ready(Ok(())))
    }

    fn events_after(&self, after_seq: i64, limit: usize) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>> {
        let outbox = self.events.lock().unwrap();
        let after: Vec<StoredEvent> = outbox
            .1
            .iter()
            .filter(|e| e.seq > after_seq)
            .take(limit)
            .cloned()
            .collect();
        Box::pin(std::future::ready(Ok(after)))
    }

    fn prune_events(&self, upto_seq: i64, before_ms: i64) -> BoxFuture<'_, Result<u64, StoreError>> {
        let mut outbox = self.events.lock().unwrap();
        let before = outbox.1.len();
        outbox.1.retain(|e| e.seq > upto_seq || e.created_ms >= before_ms);
        let pruned = (before - outbox.1.len()) as u64;
        Box::pin(std::future::ready(Ok(pruned)))
    }

    fn last_event_seq(&self) -> BoxFuture<'_, Result<i64, StoreError>> {
        let last = self.events.lock().unwrap().0;
        Box::pin(std::future::ready(Ok(last)))
    }

    fn committed_events(&self) -> watch::Receiver<i64> {
        self.signal.subscribe()
    }

    fn unreported(&self) -> BoxFuture<'_, Result<Vec<DocName>, StoreError>> {
        let docs = self.docs.lock().unwrap();
        let names = docs
            .iter()
            .filter(|(_, e)| e.log.last().is_some_and(|l| l.seq > e.reported_seq))
            .map(|(name, _)| name.clone())
            .collect();
        Box::pin(std::future::ready(Ok(names)))
    }

    fn compact<'a>(&'a self, name: &'a DocName, snapshot: Snapshot) -> BoxFuture<'a, Result<(), StoreError>> {
        self.entry(name, |e| {
            e.log.retain(|l| l.seq > snapshot.upto_seq);
            e.snapshot = Some(snapshot);
        });
        Box::pin(std::future::ready(Ok(())))
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<DocMeta>, StoreError>> {
        let docs = self.docs.lock().unwrap();
        let list = docs.iter().map(|(name, e)| e.meta(name)).collect();
        Box::pin(std::future::ready(Ok(list)))
    }

    fn meta<'a>(&'a self, name: &'a DocName) -> BoxFuture<'a, Result<Option<DocMeta>, StoreError>> {
        let meta = self.docs.lock().unwrap().get(name).map(|e| e.meta(name));
        Box::pin(std::future::ready(Ok(meta)))
    }

    fn delete<'a>(&'a self, name: &'a DocName) -> BoxFuture<'a, Result<bool, StoreError>> {
        let removed = self.docs.lock().unwrap().remove(name).is_some();
        if removed {
            self.write_events(&[outbox::document_deleted(name)]);
        }
        Box::pin(std::future::ready(Ok(removed)))
    }

    fn save_version<'a>(
        &'a self,
        name: &'a DocName,
        snapshot: Snapshot,
        kind: VersionKind,
        label: Option<String>,
        digest: Vec<u8>,
    ) -> BoxFuture<'a, Result<VersionMeta, StoreError>> {
        let id = self.next_version.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let meta = VersionMeta {
            id,
            created: now_ms(),
            label,
            kind,
            size: snapshot.state.len() as u64,
            state_vector: snapshot.state_vector.clone(),
            digest: Some(digest),
        };
        self.entry(name, |e| e.versions.push((meta.clone(), snapshot)));
        self.write_events(&[outbox::version_created(name, &meta)]);
        Box::pin(std::future::ready(Ok(meta)))
    }

    fn name_version<'a>(
        &'a self,
        name: &'a DocName,
        id: i64,
        label: Option<String>,
    ) -> BoxFuture<'a, Result<Option<VersionMeta>, StoreError>> {
        let mut docs = self.docs.lock().unwrap();
        let found = docs
            .get_mut(name)
            .and_then(|e| e.versions.iter_mut().find(|(m, _)| m.id == id))
            .map(|(meta, _)| {
                meta.kind = VersionKind::Named;
                if meta.label.is_none() {
                    meta.label = label;
                }
                meta.clone()
            });
        Box::pin(std::future::ready(Ok(found)))
    }

    fn list_versions<'a>(&'a self, name: &'a DocName) -> BoxFuture<'a, Result<Vec<VersionMeta>, StoreError>> {
        let docs = self.docs.lock().unwrap();
        let mut list: Vec<VersionMeta> = docs
            .get(name)
            .map(|e| e.versions.iter().map(|(m, _)| m.clone()).collect())
            .unwrap_or_default();
        list.sort_by_key(|v| std::cmp::Reverse((v.created, v.id)));
        Box::pin(std::future::ready(Ok(list)))
    }

    fn load_version<'a>(
        &'a self,
        name: &'a DocName,
        id: i64,
    ) -> BoxFuture<'a, Result<Option<VersionState>, StoreError>> {
        let docs = self.docs.lock().unwrap();
        let found = docs
            .get(name)
            .and_then(|e| e.versions.iter().find(|(m, _)| m.id == id))
            .map(|(m, s)| (m.clone(), s.state.clone()));
        Box::pin(std::future::ready(Ok(found)))
    }

    fn delete_versions<'a>(&'a self, name: &'a DocName, ids: Vec<i64>) -> BoxFuture<'a, Result<usize, StoreError>> {
        let mut docs = self.docs.lock().unwrap();
        let count = docs.get_mut(name).map_or(0, |e| {
            let before = e.versions.len();
            e.versions.retain(|(m, _)| !ids.contains(&m.id));
            before - e.versions.len()
        });
        Box::pin(std::future::ready(Ok(count)))
    }

    fn revoke_token(&self, token_id: String, expires_at: u64) -> BoxFuture<'_, Result<(), StoreError>> {
        self.write_events(&[outbox::token_revoked(&token_id, expires_at)]);
        self.revoked.lock().unwrap().push((token_id, expires_at));
        Box::pin(std::future::ready(Ok(())))
    }

    fn revoked_tokens(&self) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        let now = now_secs();
        let ids = self
            .revoked
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, exp)| *exp >= now)
            .map(|(id, _)| id.clone())
            .collect();
        Box::pin(std::future::ready(Ok(ids)))
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }

    fn webhook_write(&self, op: WebhookWrite) -> BoxFuture<'_, Result<bool, StoreError>> {
        let mut w = self.webhooks.lock().unwrap();
        let done = match op {
            WebhookWrite::Add(hook) => {
                w.hooks.push(hook);
                true
            }
            WebhookWrite::Delete { id } => {
                let before = w.hooks.len() + w.failures.len();
                w.hooks.retain(|h| h.id != id);
                w.failures.retain(|f| f.webhook_id != id);
                let cursor = w.cursors.remove(&id).is_some();
                cursor || before != w.hooks.len() + w.failures.len()
            }
            WebhookWrite::Cursor { webhook_id, seq } => {
                let at = w.cursors.entry(webhook_id).or_insert(seq);
                *at = (*at).max(seq);
                true
            }
            WebhookWrite::Failed(failure) => {
                let at = w.cursors.entry(failure.webhook_id.clone()).or_insert(failure.event_seq);
                *at = (*at).max(failure.event_seq);
                w.failures.push(failure);
                true
            }
        };
        Box::pin(std::future::ready(Ok(done)))
    }

    fn webhooks(&self) -> BoxFuture<'_, Result<Vec<StoredWebhook>, StoreError>> {
        let hooks = self.webhooks.lock().unwrap().hooks.clone();
        Box::pin(std::future::ready(Ok(hooks)))
    }

    fn webhook_cursors(&self) -> BoxFuture<'_, Result<Vec<(String, i64)>, StoreError>> {
        let cursors = self.webhooks.lock().unwrap().cursors.clone().into_iter().collect();
        Box::pin(std::future::ready(Ok(cursors)))
    }

    fn webhook_failures<'a>(
        &'a self,
        webhook_id: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<WebhookFailure>, StoreError>> {
        let w = self.webhooks.lock().unwrap();
        let found = w
            .failures
            .iter()
            .rev()
            .filter(|f| f.webhook_id == webhook_id)
            .take(limit)
            .cloned()
            .collect();
        Box::pin(std::future::ready(Ok(found)))
    }
}
