//! Row packing: how one log row holds the updates of one actor batch.
//!
//! One row per batch, not per update, because a per-row INSERT costs more
//! than the update it stores (bench/FINDINGS.md).

use bytes::Bytes;
use yrs::encoding::read::{Cursor, Read};
use yrs::encoding::write::Write;

use crate::name::DocName;
use crate::storage::{LogEntry, StoreError};

/// A log row's data: the update itself when alone, otherwise each update
/// prefixed by its length (lib0 varUint).
pub(crate) fn pack(entries: &[LogEntry]) -> Vec<u8> {
    if let [only] = entries {
        return only.data.to_vec();
    }
    let mut out = Vec::with_capacity(entries.iter().map(|e| e.data.len() + 4).sum());
    for entry in entries {
        out.write_var(entry.data.len());
        out.extend_from_slice(&entry.data);
    }
    out
}

/// The inverse of [`pack`]; `None` if the row is not `count` updates.
pub(crate) fn unpack(data: Vec<u8>, count: u64) -> Option<Vec<Bytes>> {
    if count == 1 {
        return Some(vec![Bytes::from(data)]);
    }
    let data = Bytes::from(data);
    let mut updates = Vec::with_capacity(count as usize);
    let mut cursor = Cursor::new(&data);
    while cursor.has_content() {
        let len: usize = cursor.read_var().ok()?;
        let start = cursor.next;
        let end = start.checked_add(len).filter(|&end| end <= data.len())?;
        updates.push(data.slice(start..end));
        cursor.next = end;
    }
    (updates.len() as u64 == count).then_some(updates)
}

/// Log rows `(seq, count, data)` in order, unpacked into the entries after
/// `after` (a snapshot may cover part of a row).
pub(crate) fn log_entries(
    doc: &DocName,
    rows: Vec<(u64, u64, Vec<u8>)>,
    after: u64,
) -> Result<Vec<LogEntry>, StoreError> {
    let mut log = Vec::new();
    for (seq, count, data) in rows {
        let updates = unpack(data, count).ok_or_else(|| StoreError::Corrupt {
            doc: doc.to_string(),
            what: format!(
                "log row of updates {seq}..{} does not split into {count} updates",
                seq + count - 1
            ),
        })?;
        log.extend(
            updates
                .into_iter()
                .enumerate()
                .map(|(i, data)| LogEntry {
                    seq: seq + i as u64,
                    data,
                })
                .filter(|e| e.seq > after),
        );
    }
    Ok(log)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(sizes: &[usize]) -> Vec<LogEntry> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| LogEntry {
                seq: i as u64 + 1,
                data: Bytes::from(vec![i as u8; n]),
            })
            .collect()
    }

    #[test]
    fn packed_rows_unpack() {
        for sizes in [&[5][..], &[0, 1, 127, 128, 300, 70_000], &[3, 3]] {
            let e = entries(sizes);
            let back = unpack(pack(&e), e.len() as u64).unwrap();
            assert_eq!(back, e.iter().map(|e| e.data.clone()).collect::<Vec<_>>());
        }
    }

    #[test]
    fn bad_rows_do_not_unpack() {
        let packed = pack(&entries(&[4, 4, 4]));
        assert!(unpack(packed.clone(), 2).is_none());
        assert!(unpack(packed[..packed.len() - 1].to_vec(), 3).is_none());
        assert!(unpack(vec![0xff, 0xff, 0xff], 2).is_none());
    }
}
