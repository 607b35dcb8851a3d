//! The webhook tables in SQLite (`storage::webhooks`): writes run on the
//! writer thread inside its transaction, reads on the reader pool.

use rusqlite::{params, Connection, OptionalExtension};

use crate::storage::webhooks::{events_from_text, events_to_text, MAX_FAILURES_KEPT};
use crate::storage::{StoreError, StoredWebhook, WebhookFailure, WebhookWrite};

/// One write, at the batch's time `now` (Unix milliseconds).
pub(super) fn write(conn: &Connection, now: i64, op: &WebhookWrite) -> Result<bool, StoreError> {
    match op {
        WebhookWrite::Add(hook) => {
            conn.prepare_cached(
                "INSERT INTO webhooks (id, url, secret, events, prefix, content, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                hook.id,
                hook.url,
                hook.secret,
                events_to_text(&hook.events),
                hook.prefix,
                hook.content,
                hook.created_ms
            ])?;
            Ok(true)
        }
        WebhookWrite::Delete { id } => {
            let mut n = conn.execute("DELETE FROM webhooks WHERE id = ?1", [id])?;
            n += conn.execute("DELETE FROM webhook_cursors WHERE webhook_id = ?1", [id])?;
            n += conn.execute("DELETE FROM webhook_failures WHERE webhook_id = ?1", [id])?;
            Ok(n > 0)
        }
        WebhookWrite::Cursor { webhook_id, seq } => {
            cursor(conn, now, webhook_id, *seq)?;
            Ok(true)
        }
        WebhookWrite::Failed(f) => {
            conn.prepare_cached(
                "INSERT INTO webhook_failures
                 (webhook_id, event_seq, event_id, event_type, attempts, last_status, last_error, failed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                f.webhook_id,
                f.event_seq,
                f.event_id,
                f.event_type,
                f.attempts,
                f.last_status,
                f.last_error,
                f.failed_ms
            ])?;
            conn.prepare_cached(
                "DELETE FROM webhook_failures WHERE webhook_id = ?1 AND id <=
                 (SELECT id FROM webhook_failures WHERE webhook_id = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
            )?
            .execute(params![f.webhook_id, MAX_FAILURES_KEPT])?;
            cursor(conn, now, &f.webhook_id, f.event_seq)?;
            Ok(true)
        }
    }
}

/// Cursors only move forward: a late write of an older position (two
/// nodes handing over a lease) must not send events again needlessly.
fn cursor(conn: &Connection, now: i64, webhook_id: &str, seq: i64) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO webhook_cursors (webhook_id, seq, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (webhook_id) DO UPDATE SET seq = max(seq, excluded.seq), updated_at = excluded.updated_at",
    )?
    .execute(params![webhook_id, seq, now])?;
    Ok(())
}

pub(super) fn webhooks(conn: &Connection) -> Result<Vec<StoredWebhook>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, url, secret, events, prefix, content, created_at FROM webhooks ORDER BY created_at, id",
    )?;
    let rows = stmt
        .query_map([], |r| {
            Ok(StoredWebhook {
                id: r.get(0)?,
                url: r.get(1)?,
                secret: r.get(2)?,
                events: events_from_text(r.get(3)?),
                prefix: r.get(4)?,
                content: r.get(5)?,
                created_ms: r.get(6)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub(super) fn cursors(conn: &Connection) -> Result<Vec<(String, i64)>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT webhook_id, seq FROM webhook_cursors")?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub(super) fn failures(conn: &Connection, webhook_id: &str, limit: usize) -> Result<Vec<WebhookFailure>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT webhook_id, event_seq, event_id, event_type, attempts, last_status, last_error, failed_at
         FROM webhook_failures WHERE webhook_id = ?1 ORDER BY id DESC LIMIT ?2",
    )?;
    let rows = stmt
        .query_map(params![webhook_id, limit as i64], |r| {
            Ok(WebhookFailure {
                webhook_id: r.get(0)?,
                event_seq: r.get(1)?,
                event_id: r.get(2)?,
                event_type: r.get(3)?,
                attempts: r.get(4)?,
                last_status: r.get(5)?,
                last_error: r.get(6)?,
                failed_ms: r.get(7)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Whether a subscription of this id exists (for tests of the store).
#[allow(dead_code)]
pub(super) fn exists(conn: &Connection, id: &str) -> Result<bool, StoreError> {
    Ok(conn
        .query_row("SELECT 1 FROM webhooks WHERE id = ?1", [id], |_| Ok(()))
        .optional()?
        .is_some())
}
