//! In-memory store: `--storage none`.
//!
//! Keeps documents while the process lives and forgets them when it exits.
//! It exists to measure what durability costs (the benchmark compares it with
//! SQLite) and for throwaway servers; it is never the default.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{now_ms, BoxFuture, DocMeta, DocStore, LogEntry, Snapshot, StoreError, StoredDoc};
use crate::doc::DocName;

#[derive(Default)]
struct Entry {
    created: i64,
    updated: i64,
    snapshot: Option<Snapshot>,
    log: Vec<LogEntry>,
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

#[derive(Default)]
pub struct MemoryStore {
    docs: Mutex<BTreeMap<DocName, Entry>>,
}

impl MemoryStore {
    fn entry<R>(&self, name: &DocName, f: impl FnOnce(&mut Entry) -> R) -> R {
        let mut docs = self.docs.lock().unwrap();
        let now = now_ms();
        let entry = docs.entry(name.clone()).or_insert_with(|| Entry {
            created: now,
            ..Default::default()
        });
        entry.updated = now;
        f(entry)
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
                let after = e.snapshot.as_ref().map_or(0, |s| s.upto_seq);
                StoredDoc {
                    snapshot: e.snapshot.as_ref().map(|s| s.state.clone()),
                    log: e.log.clone(),
                    next_seq: e.log.last().map_or(after, |l| l.seq) + 1,
                }
            }
        };
        Box::pin(std::future::ready(Ok(stored)))
    }

    fn append<'a>(&'a self, name: &'a DocName, entries: Vec<LogEntry>) -> BoxFuture<'a, Result<(), StoreError>> {
        self.entry(name, |e| e.log.extend(entries));
        Box::pin(std::future::ready(Ok(())))
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
        Box::pin(std::future::ready(Ok(removed)))
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }
}
