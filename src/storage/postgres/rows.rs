//! Raw rows in and out of a PostgreSQL database, for `weft migrate`.

use tokio_postgres::{Client, Row};

use super::connect::Target;
use super::pg_error;
use super::schema::migrate;
use crate::storage::transfer::rows::{
    CursorRow, DocDump, DocRow, EventRow, FailureRow, RevokedRow, SnapshotRow, UpdateRow, WebhookDump, WebhookRow,
    CURSOR_COLUMNS, DOC_COLUMNS, EVENT_COLUMNS, FAILURE_COLUMNS, REVOKED_COLUMNS, SNAPSHOT_COLUMNS, UPDATE_COLUMNS,
    WEBHOOK_COLUMNS,
};
use crate::storage::StoreError;

pub(crate) struct PostgresRows {
    client: Client,
}

impl PostgresRows {
    /// Connects and brings the schema up to date, as weft does at start-up.
    pub(crate) async fn open(options: &super::PostgresOptions) -> Result<Self, StoreError> {
        let Target { config, tls } = super::target(options)?;
        let (mut client, connection) = config.connect(tls).await.map_err(pg_error)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "PostgreSQL connection ended");
            }
        });
        migrate(&mut client).await?;
        Ok(Self { client })
    }

    pub(crate) async fn documents(&self) -> Result<Vec<DocRow>, StoreError> {
        let rows = self
            .client
            .query(&format!("SELECT {DOC_COLUMNS} FROM documents ORDER BY id"), &[])
            .await
            .map_err(pg_error)?;
        Ok(rows
            .iter()
            .map(|r| DocRow {
                id: r.get(0),
                name: r.get(1),
                created: r.get(2),
                updated: r.get(3),
                size: r.get(4),
                reported_seq: r.get(5),
            })
            .collect())
    }

    pub(crate) async fn dump(&self, doc: DocRow) -> Result<DocDump, StoreError> {
        let updates = self
            .client
            .query(
                &format!("SELECT {UPDATE_COLUMNS} FROM updates WHERE doc_id = $1 ORDER BY seq"),
                &[&doc.id],
            )
            .await
            .map_err(pg_error)?
            .iter()
            .map(|r| UpdateRow {
                seq: r.get(0),
                data: r.get(1),
                created: r.get(2),
                count: r.get(3),
            })
            .collect();
        let snapshots = self
            .client
            .query(
                &format!("SELECT {SNAPSHOT_COLUMNS}, stream_id FROM snapshots WHERE doc_id = $1 ORDER BY id"),
                &[&doc.id],
            )
            .await
            .map_err(pg_error)?
            .iter()
            .map(snapshot_row)
            .collect();
        Ok(DocDump {
            doc,
            updates,
            snapshots,
        })
    }

    pub(crate) async fn revoked(&self) -> Result<Vec<RevokedRow>, StoreError> {
        let rows = self
            .client
            .query(&format!("SELECT {REVOKED_COLUMNS} FROM revoked_tokens"), &[])
            .await
            .map_err(pg_error)?;
        Ok(rows
            .iter()
            .map(|r| RevokedRow {
                token_id: r.get(0),
                revoked_at: r.get(1),
                expires_at: r.get(2),
            })
            .collect())
    }

    /// Writes one document with its ids, in one transaction.
    pub(crate) async fn write(&mut self, dump: &DocDump) -> Result<(), StoreError> {
        let tx = self.client.transaction().await.map_err(pg_error)?;
        let d = &dump.doc;
        tx.execute(
            &format!("INSERT INTO documents ({DOC_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"),
            &[&d.id, &d.name, &d.created, &d.updated, &d.size, &d.reported_seq],
        )
        .await
        .map_err(pg_error)?;
        let insert = tx
            .prepare(&format!(
                "INSERT INTO updates (doc_id, {UPDATE_COLUMNS}) VALUES ($1, $2, $3, $4, $5)"
            ))
            .await
            .map_err(pg_error)?;
        for u in &dump.updates {
            tx.execute(&insert, &[&d.id, &u.seq, &u.data, &u.created, &u.count])
                .await
                .map_err(pg_error)?;
        }
        for s in &dump.snapshots {
            tx.execute(
                &format!(
                    "INSERT INTO snapshots (doc_id, {SNAPSHOT_COLUMNS}, stream_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
                ),
                &[
                    &d.id,
                    &s.id,
                    &s.kind,
                    &s.trigger,
                    &s.label,
                    &s.upto_seq,
                    &s.state,
                    &s.state_vector,
                    &s.created,
                    &s.digest,
                    &s.stream_id,
                ],
            )
            .await
            .map_err(pg_error)?;
        }
        tx.commit().await.map_err(pg_error)
    }

    pub(crate) async fn write_revoked(&mut self, rows: &[RevokedRow]) -> Result<(), StoreError> {
        let tx = self.client.transaction().await.map_err(pg_error)?;
        for r in rows {
            tx.execute(
                &format!(
                    "INSERT INTO revoked_tokens ({REVOKED_COLUMNS}) VALUES ($1, $2, $3)
                     ON CONFLICT (token_id) DO UPDATE SET revoked_at = $2, expires_at = $3"
                ),
                &[&r.token_id, &r.revoked_at, &r.expires_at],
            )
            .await
            .map_err(pg_error)?;
        }
        tx.commit().await.map_err(pg_error)
    }

    /// Rows in `table` (one of weft's).
    pub(crate) async fn count(&self, table: &str) -> Result<i64, StoreError> {
        let row = self
            .client
            .query_one(&format!("SELECT COUNT(*) FROM {table}"), &[])
            .await
            .map_err(pg_error)?;
        Ok(row.get(0))
    }

    /// Outbox events with `seq > after`, oldest first, at most `limit`.
    pub(crate) async fn events(&self, after: i64, limit: i64) -> Result<Vec<EventRow>, StoreError> {
        let rows = self
            .client
            .query(
                &format!("SELECT {EVENT_COLUMNS} FROM events WHERE seq > $1 ORDER BY seq LIMIT $2"),
                &[&after, &limit],
            )
            .await
            .map_err(pg_error)?;
        Ok(rows
            .iter()
            .map(|r| EventRow {
                seq: r.get(0),
                id: r.get(1),
                kind: r.get(2),
                document: r.get(3),
                created: r.get(4),
                body: r.get(5),
            })
            .collect())
    }

    /// Writes events with their seqs (over the identity), in one
    /// transaction; `finish` moves the identity past them.
    pub(crate) async fn write_events(&mut self, rows: &[EventRow]) -> Result<(), StoreError> {
        let tx = self.client.transaction().await.map_err(pg_error)?;
        let insert = tx
            .prepare(&format!(
                "INSERT INTO events ({EVENT_COLUMNS}) OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4, $5, $6)"
            ))
            .await
            .map_err(pg_error)?;
        for e in rows {
            tx.execute(&insert, &[&e.seq, &e.id, &e.kind, &e.document, &e.created, &e.body])
                .await
                .map_err(pg_error)?;
        }
        tx.commit().await.map_err(pg_error)
    }

    pub(crate) async fn webhooks(&self) -> Result<WebhookDump, StoreError> {
        let query = |sql: String| async move { self.client.query(&sql, &[]).await.map_err(pg_error) };
        let webhooks = query(format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks"))
            .await?
            .iter()
            .map(|r| WebhookRow {
                id: r.get(0),
                url: r.get(1),
                secret: r.get(2),
                events: r.get(3),
                prefix: r.get(4),
                content: r.get(5),
                created: r.get(6),
            })
            .collect();
        let cursors = query(format!("SELECT {CURSOR_COLUMNS} FROM webhook_cursors"))
            .await?
            .iter()
            .map(|r| CursorRow {
                webhook_id: r.get(0),
                seq: r.get(1),
                updated: r.get(2),
            })
            .collect();
        let failures = query(format!("SELECT {FAILURE_COLUMNS} FROM webhook_failures ORDER BY id"))
            .await?
            .iter()
            .map(|r| FailureRow {
                id: r.get(0),
                webhook_id: r.get(1),
                event_seq: r.get(2),
                event_id: r.get(3),
                event_type: r.get(4),
                attempts: r.get(5),
                last_status: r.get(6),
                last_error: r.get(7),
                failed: r.get(8),
            })
            .collect();
        Ok(WebhookDump {
            webhooks,
            cursors,
            failures,
        })
    }

    pub(crate) async fn write_webhooks(&mut self, dump: &WebhookDump) -> Result<(), StoreError> {
        let tx = self.client.transaction().await.map_err(pg_error)?;
        for w in &dump.webhooks {
            tx.execute(
                &format!("INSERT INTO webhooks ({WEBHOOK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"),
                &[&w.id, &w.url, &w.secret, &w.events, &w.prefix, &w.content, &w.created],
            )
            .await
            .map_err(pg_error)?;
        }
        for c in &dump.cursors {
            tx.execute(
                &format!("INSERT INTO webhook_cursors ({CURSOR_COLUMNS}) VALUES ($1, $2, $3)"),
                &[&c.webhook_id, &c.seq, &c.updated],
            )
            .await
            .map_err(pg_error)?;
        }
        for f in &dump.failures {
            tx.execute(
                &format!(
                    "INSERT INTO webhook_failures ({FAILURE_COLUMNS}) OVERRIDING SYSTEM VALUE
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                ),
                &[
                    &f.id,
                    &f.webhook_id,
                    &f.event_seq,
                    &f.event_id,
                    &f.event_type,
                    &f.attempts,
                    &f.last_status,
                    &f.last_error,
                    &f.failed,
                ],
            )
            .await
            .map_err(pg_error)?;
        }
        tx.commit().await.map_err(pg_error)
    }

    /// Moves the id sequences past the ids copied in, so that new rows do
    /// not collide with them.
    pub(crate) async fn finish(&mut self) -> Result<(), StoreError> {
        for (table, column) in [
            ("documents", "id"),
            ("snapshots", "id"),
            ("events", "seq"),
            ("webhook_failures", "id"),
        ] {
            self.client
                .execute(
                    &format!(
                        "SELECT setval(pg_get_serial_sequence('{table}', '{column}'), COALESCE(MAX({column}), 0) + 1, false) FROM {table}"
                    ),
                    &[],
                )
                .await
                .map_err(pg_error)?;
        }
        Ok(())
    }
}

fn snapshot_row(r: &Row) -> SnapshotRow {
    SnapshotRow {
        id: r.get(0),
        kind: r.get(1),
        trigger: r.get(2),
        label: r.get(3),
        upto_seq: r.get(4),
        state: r.get(5),
        state_vector: r.get(6),
        created: r.get(7),
        digest: r.get(8),
        stream_id: r.get(9),
    }
}
