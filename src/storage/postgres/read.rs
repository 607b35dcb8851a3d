//! The read side: every query that only reads, each one statement (so one
//! snapshot of the database, and one round trip) on a pooled connection.

use deadpool_postgres::ClientWrapper;
use tokio_postgres::Row;

use super::pg_error;
use crate::name::DocName;
use crate::storage::pack::log_entries;
use crate::storage::{DocMeta, StoreError, StoredDoc, StoredEvent, VersionKind, VersionMeta, VersionState};

/// The newest snapshot of either kind (kind 0) and the log rows after it
/// (kind 1), in one statement: a compaction committing between two reads
/// cannot make the log miss what the snapshot read before it lacked.
const LOAD: &str = "
    WITH d AS (SELECT id FROM documents WHERE name = $1),
    s AS (SELECT upto_seq, state, stream_id FROM snapshots WHERE doc_id = (SELECT id FROM d)
          ORDER BY upto_seq DESC, id DESC LIMIT 1)
    SELECT 0 AS kind, upto_seq AS seq, 1::bigint AS count, state AS data, stream_id FROM s
    UNION ALL
    SELECT 1, seq, count, data, NULL FROM updates
     WHERE doc_id = (SELECT id FROM d) AND seq + count - 1 > COALESCE((SELECT upto_seq FROM s), 0)
    UNION ALL
    SELECT 2, reported_seq, 0, ''::bytea, NULL FROM documents WHERE id = (SELECT id FROM d)
    ORDER BY kind, seq";

pub(super) async fn load(client: &ClientWrapper, doc: &DocName) -> Result<StoredDoc, StoreError> {
    let stmt = client.prepare_cached(LOAD).await.map_err(pg_error)?;
    let rows = client.query(&stmt, &[&doc.as_str()]).await.map_err(pg_error)?;
    let mut snapshot = None;
    let mut after = 0u64;
    let mut stream_id = None;
    let mut log_rows = Vec::with_capacity(rows.len());
    let mut reported_seq = 0;
    for row in rows {
        let kind: i32 = row.get(0);
        let seq = row.get::<_, i64>(1) as u64;
        let data: Vec<u8> = row.get(3);
        match kind {
            0 => {
                after = seq;
                snapshot = Some(data);
                stream_id = row.get(4);
            }
            1 => log_rows.push((seq, row.get::<_, i64>(2) as u64, data)),
            _ => reported_seq = seq,
        }
    }
    let log = log_entries(doc, log_rows, after)?;
    let last = log.last().map_or(after, |e| e.seq);
    Ok(StoredDoc {
        snapshot,
        log,
        next_seq: last + 1,
        stream_id,
        reported_seq,
    })
}

/// Outbox events after `after`, oldest first.
pub(super) async fn events_after(
    client: &ClientWrapper,
    after: i64,
    limit: usize,
) -> Result<Vec<StoredEvent>, StoreError> {
    let stmt = client
        .prepare_cached(
            "SELECT seq, id, type, document, created_at, body FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .await
        .map_err(pg_error)?;
    let rows = client
        .query(&stmt, &[&after, &(limit as i64)])
        .await
        .map_err(pg_error)?;
    Ok(rows
        .iter()
        .map(|r| StoredEvent {
            seq: r.get(0),
            id: r.get(1),
            kind: r.get(2),
            document: r.get(3),
            created_ms: r.get(4),
            body: r.get(5),
        })
        .collect())
}

/// The highest committed event seq. Not the identity's last value: that
/// counts transactions still open (or rolled back), and a poller waiting
/// for it to change would miss the commit of the one it already saw.
pub(super) async fn last_event_seq(client: &ClientWrapper) -> Result<i64, StoreError> {
    let stmt = client
        .prepare_cached("SELECT COALESCE(MAX(seq), 0)::bigint FROM events")
        .await
        .map_err(pg_error)?;
    Ok(client.query_one(&stmt, &[]).await.map_err(pg_error)?.get(0))
}

/// Documents whose log goes past what `document.updated` reported (see
/// the SQLite store's).
pub(super) async fn unreported(client: &ClientWrapper) -> Result<Vec<DocName>, StoreError> {
    let stmt = client
        .prepare_cached(
            "SELECT name FROM documents d WHERE GREATEST(
                COALESCE((SELECT MAX(seq + count - 1) FROM updates WHERE doc_id = d.id), 0),
                COALESCE((SELECT MAX(upto_seq) FROM snapshots WHERE doc_id = d.id), 0)
             ) > d.reported_seq ORDER BY name",
        )
        .await
        .map_err(pg_error)?;
    let rows = client.query(&stmt, &[]).await.map_err(pg_error)?;
    rows.iter()
        .map(|r| {
            let name: String = r.get(0);
            DocName::parse(&name).map_err(|e| StoreError::Corrupt {
                doc: name.clone(),
                what: e.to_string(),
            })
        })
        .collect()
}

const META_COLUMNS: &str = "name, created_at, updated_at, size_bytes";

pub(super) async fn list(client: &ClientWrapper) -> Result<Vec<DocMeta>, StoreError> {
    let stmt = client
        .prepare_cached(&format!("SELECT {META_COLUMNS} FROM documents ORDER BY name"))
        .await
        .map_err(pg_error)?;
    let rows = client.query(&stmt, &[]).await.map_err(pg_error)?;
    Ok(rows.iter().map(meta_row).collect())
}

pub(super) async fn meta(client: &ClientWrapper, doc: &DocName) -> Result<Option<DocMeta>, StoreError> {
    let stmt = client
        .prepare_cached(&format!("SELECT {META_COLUMNS} FROM documents WHERE name = $1"))
        .await
        .map_err(pg_error)?;
    let row = client.query_opt(&stmt, &[&doc.as_str()]).await.map_err(pg_error)?;
    Ok(row.as_ref().map(meta_row))
}

fn meta_row(r: &Row) -> DocMeta {
    DocMeta {
        name: r.get(0),
        created: r.get(1),
        updated: r.get(2),
        size: r.get::<_, i64>(3) as u64,
    }
}

/// A document's versions, newest first.
pub(super) async fn list_versions(client: &ClientWrapper, doc: &DocName) -> Result<Vec<VersionMeta>, StoreError> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {VERSION_COLUMNS} FROM snapshots s JOIN documents d ON d.id = s.doc_id
             WHERE d.name = $1 AND s.kind = 'version' ORDER BY s.created_at DESC, s.id DESC"
        ))
        .await
        .map_err(pg_error)?;
    let rows = client.query(&stmt, &[&doc.as_str()]).await.map_err(pg_error)?;
    Ok(rows.iter().map(version_row).collect())
}

pub(super) async fn load_version(
    client: &ClientWrapper,
    doc: &DocName,
    id: i64,
) -> Result<Option<VersionState>, StoreError> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {VERSION_COLUMNS}, s.state FROM snapshots s JOIN documents d ON d.id = s.doc_id
             WHERE d.name = $1 AND s.kind = 'version' AND s.id = $2"
        ))
        .await
        .map_err(pg_error)?;
    let row = client.query_opt(&stmt, &[&doc.as_str(), &id]).await.map_err(pg_error)?;
    Ok(row.map(|r| (version_row(&r), r.get(7))))
}

/// The columns [`version_row`] reads, from `snapshots s`.
pub(super) const VERSION_COLUMNS: &str =
    "s.id, s.created_at, s.label, s.trigger, octet_length(s.state)::bigint, s.state_vector, s.digest";

pub(super) fn version_row(r: &Row) -> VersionMeta {
    let trigger: Option<String> = r.get(3);
    VersionMeta {
        id: r.get(0),
        created: r.get(1),
        label: r.get(2),
        kind: match trigger.as_deref() {
            Some("named") => VersionKind::Named,
            _ => VersionKind::Auto,
        },
        size: r.get::<_, i64>(4) as u64,
        state_vector: r.get(5),
        digest: r.get(6),
    }
}

/// Revoked token ids that have not expired at `now` (Unix seconds).
pub(super) async fn revoked_tokens(client: &ClientWrapper, now: u64) -> Result<Vec<String>, StoreError> {
    let stmt = client
        .prepare_cached("SELECT token_id FROM revoked_tokens WHERE expires_at >= $1")
        .await
        .map_err(pg_error)?;
    let rows = client.query(&stmt, &[&(now as i64)]).await.map_err(pg_error)?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
