//! Raw rows in and out of a SQLite database, for `weft migrate`.

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags};

use super::schema::{migrate, open_connection};
use crate::storage::transfer::rows::{
    DocDump, DocRow, RevokedRow, SnapshotRow, UpdateRow, DOC_COLUMNS, REVOKED_COLUMNS, SNAPSHOT_COLUMNS, UPDATE_COLUMNS,
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
            &format!("INSERT INTO documents ({DOC_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)"),
            params![d.id, d.name, d.created, d.updated, d.size],
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

    /// Makes the copy complete in the main file (see the writer's close).
    pub(crate) fn finish(&mut self) -> Result<(), StoreError> {
        self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
        Ok(())
    }
}
