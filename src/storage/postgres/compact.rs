//! Compaction snapshots on a pooled connection of their own, beside the
//! writer. In the writer's group commit a snapshot (hundreds of KB for a
//! busy document) held every append queued behind its transaction: 8 to
//! 180 ms per compaction measured on a loaded machine, during which no
//! document's updates were committed, so none were relayed.
//!
//! Safe beside the writer: a snapshot covers only log rows committed
//! before it was taken (up to `upto_seq`); rows appended meanwhile have
//! higher sequence numbers, which its `DELETE` leaves alone. The
//! document's row (its size) is locked only by the last statement, just
//! before the `COMMIT`, so an append of the same document waits for the
//! commit at most. One compaction at a time per process, so that the
//! readers keep the rest of the pool.

use std::collections::HashSet;

use deadpool_postgres::Object;

use super::writer::{Failed, Tx};
use super::PostgresStore;
use crate::clock::now_ms;
use crate::name::DocName;
use crate::storage::outbox::Written;
use crate::storage::{Snapshot, StoreError};

impl PostgresStore {
    pub(super) async fn compact_beside(&self, doc: &DocName, snapshot: Snapshot) -> Result<(), StoreError> {
        let _turn = self.compacting.acquire().await.map_err(|_| StoreError::Closed)?;
        let conn = self.reader().await?;
        let run = async {
            conn.batch_execute("BEGIN").await?;
            let mut tx = Tx {
                conn: &conn,
                known: HashSet::new(),
                now: now_ms(),
                written: Written::default(),
                sizes: Default::default(),
                flush: false,
            };
            match tx.compact(doc, &snapshot).await {
                Ok(()) => {
                    conn.batch_execute("COMMIT").await?;
                    Ok(tx.written)
                }
                Err(e) => {
                    if let Failed::Job(_) = e {
                        conn.batch_execute("ROLLBACK").await?;
                    }
                    Err(e)
                }
            }
        };
        match tokio::time::timeout(self.timeout, run).await {
            Ok(Ok(written)) => {
                written.committed(&self.events, &self.metrics); // a new document's row
                Ok(())
            }
            Ok(Err(Failed::Job(e))) => Err(e),
            Ok(Err(Failed::Outage(e))) => {
                drop(Object::take(conn));
                self.health.failed(&e);
                Err(e)
            }
            // Not put back: it may still be inside the transaction.
            Err(_) => {
                drop(Object::take(conn));
                Err(StoreError::Unavailable(format!(
                    "no answer within {} ms",
                    self.timeout.as_millis()
                )))
            }
        }
    }
}
