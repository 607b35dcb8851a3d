//! The read side: a small pool of `query_only` connections, and every query
//! that only reads (loading a document, listings, versions, revocations).
//! The store runs these on `spawn_blocking`; WAL lets them read while the
//! writer thread commits.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::schema::open_connection;
use crate::name::DocName;
use crate::storage::pack::log_entries;
use crate::storage::{DocMeta, StoreError, StoredDoc, StoredEvent, VersionKind, VersionMeta, VersionState};

/// Idle reader connections kept for reuse; more are opened when needed and
/// closed after.
const IDLE_READERS: usize = 8;

pub(super) struct ReadPool {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    pub(super) fn new(path: PathBuf, busy_timeout: Duration) -> Self {
        Self {
            path,
            busy_timeout,
            idle: Mutex::new(Vec::new()),
        }
    }

    pub(super) fn take(&self) -> Result<Connection, StoreError> {
        if let Some(conn) = self.idle.lock().unwrap().pop() {
            return Ok(conn);
        }
        let conn = open_connection(&self.path, self.busy_timeout, OpenFlags::default())?;
        // Readers never write; query_only makes a slip an error, not a write
        // that bypasses the writer thread.
        conn.pragma_update(None, "query_only", true)?;
        Ok(conn)
    }

    pub(super) fn give_back(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap();
        if idle.len() < IDLE_READERS {
            idle.push(conn);
        }
    }
}

pub(super) fn doc_id(conn: &Connection, doc: &DocName) -> Result<Option<i64>, rusqlite::Error> {
    conn.prepare_cached("SELECT id FROM documents WHERE name = ?1")?
        .query_row([doc.as_str()], |r| r.get(0))
        .optional()
}

/// The newest snapshot of either kind and the log rows after it, unpacked.
pub(super) fn load(conn: &Connection, doc: &DocName) -> Result<StoredDoc, StoreError> {
    let Some(doc_id) = doc_id(conn, doc)? else {
        return Ok(StoredDoc {
            next_seq: 1,
            ..Default::default()
        });
    };
    let snapshot: Option<(i64, Vec<u8>)> = conn
        .prepare_cached(
            "SELECT upto_seq, state FROM snapshots WHERE doc_id = ?1 ORDER BY upto_seq DESC, id DESC LIMIT 1",
        )?
        .query_row([doc_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let after = snapshot.as_ref().map_or(0, |(seq, _)| *seq);
    let mut stmt = conn.prepare_cached(
        "SELECT seq, count, data FROM updates WHERE doc_id = ?1 AND seq + count - 1 > ?2 ORDER BY seq",
    )?;
    let rows = stmt
        .query_map(params![doc_id, after], |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, Vec<u8>>(2)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let log = log_entries(doc, rows, after as u64)?;
    let last = log.last().map_or(after as u64, |e| e.seq);
    let reported: i64 = conn
        .prepare_cached("SELECT reported_seq FROM documents WHERE id = ?1")?
        .query_row([doc_id], |r| r.get(0))?;
    Ok(StoredDoc {
        snapshot: snapshot.map(|(_, state)| state),
        log,
        next_seq: last + 1,
        stream_id: None,
        reported_seq: reported as u64,
    })
}

/// Outbox events after `after`, oldest first.
pub(super) fn events_after(conn: &Connection, after: i64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, id, type, document, created_at, body FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let rows = stmt
        .query_map(params![after, limit as i64], |r| {
            Ok(StoredEvent {
                seq: r.get(0)?,
                id: r.get(1)?,
                kind: r.get(2)?,
                document: r.get(3)?,
                created_ms: r.get(4)?,
                body: r.get(5)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// The highest event seq ever given: AUTOINCREMENT keeps it in
/// `sqlite_sequence` also when the newest events were pruned.
pub(super) fn last_event_seq(conn: &Connection) -> Result<i64, StoreError> {
    let seq: Option<i64> = conn
        .prepare_cached("SELECT seq FROM sqlite_sequence WHERE name = 'events'")?
        .query_row([], |r| r.get(0))
        .optional()?;
    Ok(seq.unwrap_or(0))
}

/// Documents whose log goes past what `document.updated` reported: the
/// last seq is the log's, or a compaction's when it dropped the log.
pub(super) fn unreported(conn: &Connection) -> Result<Vec<DocName>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT name FROM documents d WHERE MAX(
            COALESCE((SELECT MAX(seq + count - 1) FROM updates WHERE doc_id = d.id), 0),
            COALESCE((SELECT MAX(upto_seq) FROM snapshots WHERE doc_id = d.id), 0)
         ) > d.reported_seq ORDER BY name",
    )?;
    let names = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    names
        .into_iter()
        .map(|n| {
            DocName::parse(&n).map_err(|e| StoreError::Corrupt {
                doc: n.clone(),
                what: e.to_string(),
            })
        })
        .collect()
}

pub(super) fn list(conn: &Connection) -> Result<Vec<DocMeta>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT name, created_at, updated_at, size_bytes FROM documents ORDER BY name")?;
    let rows = stmt.query_map([], meta_row)?.collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub(super) fn meta(conn: &Connection, doc: &DocName) -> Result<Option<DocMeta>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT name, created_at, updated_at, size_bytes FROM documents WHERE name = ?1")?
        .query_row([doc.as_str()], meta_row)
        .optional()?)
}

fn meta_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DocMeta> {
    Ok(DocMeta {
        name: r.get(0)?,
        created: r.get(1)?,
        updated: r.get(2)?,
        size: r.get::<_, i64>(3)? as u64,
    })
}

/// A document's versions, newest first.
pub(super) fn list_versions(conn: &Connection, doc: &DocName) -> Result<Vec<VersionMeta>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {VERSION_COLUMNS} FROM snapshots s JOIN documents d ON d.id = s.doc_id
         WHERE d.name = ?1 AND s.kind = 'version' ORDER BY s.created_at DESC, s.id DESC"
    ))?;
    let rows = stmt
        .query_map([doc.as_str()], version_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub(super) fn load_version(conn: &Connection, doc: &DocName, id: i64) -> Result<Option<VersionState>, StoreError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {VERSION_COLUMNS}, s.state FROM snapshots s JOIN documents d ON d.id = s.doc_id
             WHERE d.name = ?1 AND s.kind = 'version' AND s.id = ?2"
        ))?
        .query_row(params![doc.as_str(), id], |r| Ok((version_row(r)?, r.get(7)?)))
        .optional()?)
}

/// The columns [`version_row`] reads, from `snapshots s`.
pub(super) const VERSION_COLUMNS: &str =
    "s.id, s.created_at, s.label, s.trigger, length(s.state), s.state_vector, s.digest";

pub(super) fn version_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<VersionMeta> {
    let trigger: Option<String> = r.get(3)?;
    Ok(VersionMeta {
        id: r.get(0)?,
        created: r.get(1)?,
        label: r.get(2)?,
        kind: match trigger.as_deref() {
            Some("named") => VersionKind::Named,
            _ => VersionKind::Auto,
        },
        size: r.get::<_, i64>(4)? as u64,
        state_vector: r.get(5)?,
        digest: r.get(6)?,
    })
}

/// Revoked token ids that have not expired at `now` (Unix seconds).
pub(super) fn revoked_tokens(conn: &Connection, now: u64) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT token_id FROM revoked_tokens WHERE expires_at >= ?1")?;
    let rows = stmt
        .query_map([now as i64], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(rows)
}
