//! Raw rows in and out of a SQLite database, for `weft migrate`.

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags};

use super::schema::{migrate, open_connection};
use crate::storage::transfer::rows::{
    CursorRow, DocDump, DocRow, EventRow, FailureRow, RevokedRow, SnapshotRow, UpdateRow, WebhookDump, WebhookRow,
    CURSOR_COLUMNS, DOC_COLUMNS, EVENT_COLUMNS, FAILURE_COLUMNS, REVOKED_COLUMNS, SNAPSHOT_COLUMNS, UPDATE_COLUMNS,
    WEBHOOK_COLUMNS,
};
use crate::storage::StoreError;

pub(crate) struct SqliteRows {
    conn: Connection,
}

impl SqliteRows {
    /// Opens (creating if needed) the database and brings its schema up to
    /// date, as weft does at start-up.
    pub(crate) fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = open_connection(path, Duration::from_secs(5), OpenFlags::default())?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        migrate(&conn)?;
        Ok(Self { conn })
    }

    pub(crate) fn documents(&self) -> Result<Vec<DocRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {DOC_COLUMNS} FROM documents ORDER BY id"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(DocRow {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    created: r.get(2)?,
                    updated: r.get(3)?,
                    size: r.get(4)?,
                    reported_seq: r.get(5)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    pub(crate) fn dump(&self, doc: DocRow) -> Result<DocDump, StoreError> {
        let updates = self
            .conn
            .prepare(&format!(
                "SELECT {UPDATE_COLUMNS} FROM updates WHERE doc_id = ?1 ORDER BY seq"
            ))?
            .query_map([doc.id], |r| {
                Ok(UpdateRow {
                    seq: r.get(0)?,
                    data: r.get(1)?,
                    created: r.get(2)?,
                    count: r.get(3)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        let snapshots = self
            .conn
            .prepare(&format!(
                "SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE doc_id = ?1 ORDER BY id"
            ))?
            .query_map([doc.id], |r| {
                Ok(SnapshotRow {
                    id: r.get(0)?,
                    kind: r.get(1)?,
                    trigger: r.get(2)?,
                    label: r.get(3)?,
                    upto_seq: r.get(4)?,
                    state: r.get(5)?,
                    state_vector: r.get(6)?,
                    created: r.get(7)?,
                    digest: r.get(8)?,
                    stream_id: None,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(DocDump {
            doc,
            updates,
            snapshots,
        })
    }

    pub(crate) fn revoked(&self) -> Result<Vec<RevokedRow>, StoreError> {
        let rows = self
            .conn
            .prepare(&format!("SELECT {REVOKED_COLUMNS} FROM revoked_tokens"))?
            .query_map([], |r| {
                Ok(RevokedRow {
                    token_id: r.get(0)?,
                    revoked_at: r.get(1)?,
                    expires_at: r.get(2)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Writes one document with its ids, in one transaction.
    pub(crate) fn write(&mut self, dump: &DocDump) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        let d = &dump.doc;
        tx.execute(
            &format!("INSERT INTO documents ({DOC_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
            params![d.id, d.name, d.created, d.updated, d.size, d.reported_seq],
        )?;
        for u in &dump.updates {
            tx.execute(
                &format!("INSERT INTO updates (doc_id, {UPDATE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)"),
                params![d.id, u.seq, u.data, u.created, u.count],
            )?;
        }
        for s in &dump.snapshots {
            tx.execute(
                &format!(
                    "INSERT INTO snapshots (doc_id, {SNAPSHOT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
                ),
                params![
                    d.id,
                    s.id,
                    s.kind,
                    s.trigger,
                    s.label,
                    s.upto_seq,
                    s.state,
                    s.state_vector,
                    s.created,
                    s.digest
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    pub(crate) fn write_revoked(&mut self, rows: &[RevokedRow]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        for r in rows {
            tx.execute(
                &format!("INSERT OR REPLACE INTO revoked_tokens ({REVOKED_COLUMNS}) VALUES (?1, ?2, ?3)"),
                params![r.token_id, r.revoked_at, r.expires_at],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Rows in `table` (one of weft's).
    pub(crate) fn count(&self, table: &str) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?)
    }

    /// Outbox events with `seq > after`, oldest first, at most `limit`.
    pub(crate) fn events(&self, after: i64, limit: i64) -> Result<Vec<EventRow>, StoreError> {
        let rows = self
            .conn
            .prepare(&format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2"
            ))?
            .query_map([after, limit], |r| {
                Ok(EventRow {
                    seq: r.get(0)?,
                    id: r.get(1)?,
                    kind: r.get(2)?,
                    document: r.get(3)?,
                    created: r.get(4)?,
                    body: r.get(5)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Writes events with their seqs, in one transaction (AUTOINCREMENT
    /// then goes on after the largest).
    pub(crate) fn write_events(&mut self, rows: &[EventRow]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        for e in rows {
            tx.execute(
                &format!("INSERT INTO events ({EVENT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
                params![e.seq, e.id, e.kind, e.document, e.created, e.body],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    pub(crate) fn webhooks(&self) -> Result<WebhookDump, StoreError> {
        let webhooks = self
            .conn
            .prepare(&format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks"))?
            .query_map([], |r| {
                Ok(WebhookRow {
                    id: r.get(0)?,
                    url: r.get(1)?,
                    secret: r.get(2)?,
                    events: r.get(3)?,
                    prefix: r.get(4)?,
                    content: r.get(5)?,
                    created: r.get(6)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        let cursors = self
            .conn
            .prepare(&format!("SELECT {CURSOR_COLUMNS} FROM webhook_cursors"))?
            .query_map([], |r| {
                Ok(CursorRow {
                    webhook_id: r.get(0)?,
                    seq: r.get(1)?,
                    updated: r.get(2)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        let failures = self
            .conn
            .prepare(&format!("SELECT {FAILURE_COLUMNS} FROM webhook_failures ORDER BY id"))?
            .query_map([], |r| {
                Ok(FailureRow {
                    id: r.get(0)?,
                    webhook_id: r.get(1)?,
                    event_seq: r.get(2)?,
                    event_id: r.get(3)?,
                    event_type: r.get(4)?,
                    attempts: r.get(5)?,
                    last_status: r.get(6)?,
                    last_error: r.get(7)?,
                    failed: r.get(8)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(WebhookDump {
            webhooks,
            cursors,
            failures,
        })
    }

    pub(crate) fn write_webhooks(&mut self, dump: &WebhookDump) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        for w in &dump.webhooks {
            tx.execute(
                &format!("INSERT INTO webhooks ({WEBHOOK_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
                params![w.id, w.url, w.secret, w.events, w.prefix, w.content, w.created],
            )?;
        }
        for c in &dump.cursors {
            tx.execute(
                &format!("INSERT INTO webhook_cursors ({CURSOR_COLUMNS}) VALUES (?1, ?2, ?3)"),
                params![c.webhook_id, c.seq, c.updated],
            )?;
        }
        for f in &dump.failures {
            tx.execute(
                &format!(
                    "INSERT INTO webhook_failures ({FAILURE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
                ),
                params![
                    f.id,
                    f.webhook_id,
                    f.event_seq,
                    f.event_id,
                    f.event_type,
                    f.attempts,
                    f.last_status,
                    f.last_error,
                    f.failed
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Makes the copy complete in the main file (see the writer's close).
    pub(crate) fn finish(&mut self) -> Result<(), StoreError> {
        self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
        Ok(())
    }
}
