//! The webhook tables in PostgreSQL (`storage::webhooks`): writes inside
//! the writer's transaction, reads on a pooled connection.

use deadpool_postgres::ClientWrapper;

use super::pg_error;
use super::writer::{Failed, Tx};
use crate::storage::webhooks::{events_from_text, events_to_text, MAX_FAILURES_KEPT};
use crate::storage::{StoreError, StoredWebhook, WebhookFailure, WebhookWrite};

impl Tx<'_> {
    pub(super) async fn webhook(&mut self, op: &WebhookWrite) -> Result<bool, Failed> {
        let c = self.conn;
        match op {
            WebhookWrite::Add(h) => {
                c.execute(
                    "INSERT INTO webhooks (id, url, secret, events, prefix, content, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    &[
                        &h.id,
                        &h.url,
                        &h.secret,
                        &events_to_text(&h.events),
                        &h.prefix,
                        &h.content,
                        &h.created_ms,
                    ],
                )
                .await?;
                Ok(true)
            }
            WebhookWrite::Delete { id } => {
                let mut n = c.execute("DELETE FROM webhooks WHERE id = $1", &[id]).await?;
                n += c
                    .execute("DELETE FROM webhook_cursors WHERE webhook_id = $1", &[id])
                    .await?;
                n += c
                    .execute("DELETE FROM webhook_failures WHERE webhook_id = $1", &[id])
                    .await?;
                Ok(n > 0)
            }
            WebhookWrite::Cursor { webhook_id, seq } => {
                self.webhook_cursor(webhook_id, *seq).await?;
                Ok(true)
            }
            WebhookWrite::Failed(f) => {
                c.execute(
                    "INSERT INTO webhook_failures
                     (webhook_id, event_seq, event_id, event_type, attempts, last_status, last_error, failed_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    &[
                        &f.webhook_id,
                        &f.event_seq,
                        &f.event_id,
                        &f.event_type,
                        &(f.attempts as i32),
                        &f.last_status.map(i32::from),
                        &f.last_error,
                        &f.failed_ms,
                    ],
                )
                .await?;
                c.execute(
                    "DELETE FROM webhook_failures WHERE webhook_id = $1 AND id <=
                     (SELECT id FROM webhook_failures WHERE webhook_id = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)",
                    &[&f.webhook_id, &MAX_FAILURES_KEPT],
                )
                .await?;
                self.webhook_cursor(&f.webhook_id, f.event_seq).await?;
                Ok(true)
            }
        }
    }

    /// Cursors only move forward (see the SQLite store).
    async fn webhook_cursor(&mut self, webhook_id: &str, seq: i64) -> Result<(), Failed> {
        self.conn
            .execute(
                "INSERT INTO webhook_cursors (webhook_id, seq, updated_at) VALUES ($1, $2, $3)
                 ON CONFLICT (webhook_id) DO UPDATE
                 SET seq = GREATEST(webhook_cursors.seq, excluded.seq), updated_at = excluded.updated_at",
                &[&webhook_id, &seq, &self.now],
            )
            .await?;
        Ok(())
    }
}

pub(super) async fn webhooks(client: &ClientWrapper) -> Result<Vec<StoredWebhook>, StoreError> {
    let rows = client
        .query(
            "SELECT id, url, secret, events, prefix, content, created_at FROM webhooks ORDER BY created_at, id",
            &[],
        )
        .await
        .map_err(pg_error)?;
    Ok(rows
        .iter()
        .map(|r| StoredWebhook {
            id: r.get(0),
            url: r.get(1),
            secret: r.get(2),
            events: events_from_text(r.get(3)),
            prefix: r.get(4),
            content: r.get(5),
            created_ms: r.get(6),
        })
        .collect())
}

pub(super) async fn cursors(client: &ClientWrapper) -> Result<Vec<(String, i64)>, StoreError> {
    let rows = client
        .query("SELECT webhook_id, seq FROM webhook_cursors", &[])
        .await
        .map_err(pg_error)?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

pub(super) async fn failures(
    client: &ClientWrapper,
    webhook_id: &str,
    limit: usize,
) -> Result<Vec<WebhookFailure>, StoreError> {
    let rows = client
        .query(
            "SELECT webhook_id, event_seq, event_id, event_type, attempts, last_status, last_error, failed_at
             FROM webhook_failures WHERE webhook_id = $1 ORDER BY id DESC LIMIT $2",
            &[&webhook_id, &(limit as i64)],
        )
        .await
        .map_err(pg_error)?;
    Ok(rows
        .iter()
        .map(|r| WebhookFailure {
            webhook_id: r.get(0),
            event_seq: r.get(1),
            event_id: r.get(2),
            event_type: r.get(3),
            attempts: r.get::<_, i32>(4) as u32,
            last_status: r.get::<_, Option<i32>>(5).map(|s| s as u16),
            last_error: r.get(6),
            failed_ms: r.get(7),
        })
        .collect())
}
