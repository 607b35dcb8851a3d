//! The rules of version history, pure: when an automatic version is due
//! ([`Versions`]), when the latest version already is the one asked for
//! ([`reuse`]), which automatic versions to keep as they age ([`thin`]),
//! which to delete to make room for a new one ([`make_room`]), and when two
//! states are the same version ([`digest`]).

use std::collections::HashSet;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::time::Instant;
use yrs::updates::encoder::Encode;
use yrs::ReadTxn;

use super::{DocError, VersionPolicy};
use crate::storage::{VersionKind, VersionMeta};

/// Identifies a document's content: SHA-256 over its state vector (sorted
/// by client) and its delete set. Two states with the same digest hold the
/// same content. The state vector alone does not tell: a deletion leaves it
/// unchanged.
pub(super) fn digest<T: ReadTxn>(txn: &T) -> [u8; 32] {
    let snapshot = txn.snapshot();
    let mut clients: Vec<(u64, u32)> = snapshot.state_map.iter().map(|(c, clock)| (c.get(), *clock)).collect();
    clients.sort_unstable();
    let mut hash = Sha256::new();
    for (client, clock) in clients {
        hash.update(client.to_le_bytes());
        hash.update(clock.to_le_bytes());
    }
    // The delete set is ordered by client and its ranges kept merged, so
    // its encoding is the same for the same deletions.
    hash.update(snapshot.delete_set.encode_v1());
    hash.finalize().into()
}

/// When a document was edited since its last version: the first and the
/// latest edit. Times are tokio's, so tests can pause them.
#[derive(Debug, Default)]
pub(super) struct Versions {
    edited: Option<(Instant, Instant)>,
    /// Edits ever counted: what a version taken off the actor holds is
    /// told by this count when its state was encoded.
    edits: u64,
}

impl Versions {
    /// A document as loaded: a log after the newest snapshot may hold edits
    /// no version has (the version taken for them is skipped if it is not
    /// new).
    pub fn loaded(log_is_empty: bool, now: Instant) -> Self {
        Self {
            edited: (!log_is_empty).then_some((now, now)),
            edits: 0,
        }
    }

    pub fn edited(&mut self, now: Instant) {
        self.edited = Some(self.edited.map_or((now, now), |(first, _)| (first, now)));
        self.edits += 1;
    }

    /// A version holds every edit so far (or none is wanted for them).
    pub fn taken(&mut self) {
        self.edited = None;
    }

    /// The edits counted so far, to give [`Versions::taken_up_to`].
    pub fn edits(&self) -> u64 {
        self.edits
    }

    /// A version holds the edits counted up to `edits` (it was written
    /// while the actor went on): those made since still want one, counted
    /// from `now` for `every`.
    pub fn taken_up_to(&mut self, edits: u64, now: Instant) {
        if edits >= self.edits {
            self.edited = None;
        } else if let Some((_, last)) = self.edited {
            self.edited = Some((now, last));
        }
    }

    pub fn is_edited(&self) -> bool {
        self.edited.is_some()
    }

    /// Whether to take an automatic version: the document was edited and
    /// then left alone for `after_idle`, or has been edited for `every`
    /// without one.
    pub fn auto_version_due(&self, now: Instant, policy: &VersionPolicy) -> bool {
        let Some((first, last)) = self.edited else { return false };
        now.saturating_duration_since(last) >= policy.after_idle || now.saturating_duration_since(first) >= policy.every
    }
}

/// What a request for a version gets when the latest version may already
/// hold the document's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reuse {
    /// The content changed since the latest version (or there is none, or
    /// it has no digest): a new version.
    New,
    /// The latest version, as it is.
    Latest,
    /// The latest version, made named (an automatic one asked for by name,
    /// or an unlabelled one given a label).
    NameLatest,
}

/// A version of `kind` with `label` is asked for, the document's content
/// has `digest`, and `latest` is its newest version. A version is stored
/// once: asking again with nothing changed answers the latest one.
pub(super) fn reuse(latest: Option<&VersionMeta>, digest: &[u8], kind: VersionKind, label: Option<&str>) -> Reuse {
    match latest {
        Some(latest) if latest.digest.as_deref() == Some(digest) => {
            let promote = kind == VersionKind::Named
                && (latest.kind == VersionKind::Auto || (latest.label.is_none() && label.is_some()));
            if promote {
                Reuse::NameLatest
            } else {
                Reuse::Latest
            }
        }
        _ => Reuse::New,
    }
}

/// How many versions a document may keep, and how many bytes with them
/// (its stored size plus its versions'). 0 = no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VersionQuota {
    pub max_versions: usize,
    pub max_storage: u64,
}

/// The versions to delete, oldest automatic ones first, so that one more of
/// `size` bytes fits the quota beside the document's own `stored` bytes.
/// Named versions are never deleted to make room: when deleting every
/// automatic version would not be enough, the reason says which named
/// versions to delete, and nothing is.
pub(super) fn make_room(
    versions: &[VersionMeta],
    stored: u64,
    size: u64,
    quota: &VersionQuota,
) -> Result<Vec<i64>, DocError> {
    let mut count = versions.len() + 1;
    let mut bytes = stored + size + versions.iter().map(|v| v.size).sum::<u64>();
    let fits = |count: usize, bytes: u64| {
        (quota.max_versions == 0 || count <= quota.max_versions)
            && (quota.max_storage == 0 || bytes <= quota.max_storage)
    };
    let mut autos: Vec<&VersionMeta> = versions.iter().filter(|v| v.kind == VersionKind::Auto).collect();
    autos.sort_by_key(|v| (v.created, v.id));
    let mut doomed = Vec::new();
    for v in autos {
        if fits(count, bytes) {
            break;
        }
        doomed.push(v.id);
        count -= 1;
        bytes -= v.size;
    }
    if fits(count, bytes) {
        return Ok(doomed);
    }
    let mut named: Vec<&VersionMeta> = versions.iter().filter(|v| v.kind == VersionKind::Named).collect();
    named.sort_by_key(|v| (v.created, v.id));
    let oldest: Vec<String> = named
        .iter()
        .take(3)
        .map(|v| match &v.label {
            Some(label) => format!("version {} \"{label}\"", v.id),
            None => format!("version {}", v.id),
        })
        .collect();
    let delete = if oldest.is_empty() {
        String::new()
    } else {
        format!("; delete named versions to make room (oldest: {})", oldest.join(", "))
    };
    Err(DocError::VersionQuota(
        if quota.max_versions > 0 && count > quota.max_versions {
            format!(
                "the document has {} versions, the most it may keep (--max-versions){delete}",
                versions.len()
            )
        } else if stored + size > quota.max_storage {
            format!(
                "a version of this document ({size} bytes) does not fit its storage quota of {} bytes \
             (--max-doc-storage) beside the document itself ({stored} bytes)",
                quota.max_storage
            )
        } else {
            format!(
                "a version ({size} bytes) would take the document past its storage quota of {} bytes \
             (--max-doc-storage: {stored} bytes of document, {} in versions){delete}",
                quota.max_storage,
                bytes - stored - size
            )
        },
    ))
}

/// The automatic versions to delete so that, older than
/// `policy.hourly_after`, one per hour remains, and older than
/// `policy.daily_after`, one per day (the newest of each hour or day).
/// Named versions are never thinned. `now` is in Unix milliseconds.
pub(super) fn thin(versions: &[VersionMeta], now: i64, policy: &VersionPolicy) -> Vec<i64> {
    let ms = |d: Duration| d.as_millis() as i64;
    let mut autos: Vec<&VersionMeta> = versions.iter().filter(|v| v.kind == VersionKind::Auto).collect();
    // newest first, so the first one seen in a bucket is the one kept
    autos.sort_by_key(|v| std::cmp::Reverse((v.created, v.id)));
    let mut kept_buckets = HashSet::new();
    let mut doomed = Vec::new();
    for v in autos {
        let age = now - v.created;
        let bucket = if age >= ms(policy.daily_after) {
            ("day", v.created.div_euclid(86_400_000))
        } else if age >= ms(policy.hourly_after) {
            ("hour", v.created.div_euclid(3_600_000))
        } else {
            continue;
        };
        if !kept_buckets.insert(bucket) {
            doomed.push(v.id);
        }
    }
    doomed
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{Doc, Text, Transact, Update};

    const HOUR: i64 = 3_600_000;

    fn version(id: i64, created: i64, kind: VersionKind) -> VersionMeta {
        VersionMeta {
            id,
            created,
            label: None,
            kind,
            size: 1,
            state_vector: Vec::new(),
            digest: None,
        }
    }

    fn sized(id: i64, kind: VersionKind, size: u64) -> VersionMeta {
        VersionMeta {
            size,
            ..version(id, id * 1000, kind)
        }
    }

    #[test]
    fn the_oldest_automatic_versions_make_room_first() {
        use VersionKind::{Auto, Named};
        let versions = [
            sized(1, Auto, 10),
            sized(2, Named, 10),
            sized(3, Auto, 10),
            sized(4, Auto, 10),
        ];
        let cap = |max_versions| VersionQuota {
            max_versions,
            max_storage: 0,
        };
        assert_eq!(make_room(&versions, 0, 10, &cap(0)), Ok(vec![]), "no limit");
        assert_eq!(make_room(&versions, 0, 10, &cap(5)), Ok(vec![]));
        assert_eq!(make_room(&versions, 0, 10, &cap(4)), Ok(vec![1]));
        assert_eq!(make_room(&versions, 0, 10, &cap(2)), Ok(vec![1, 3, 4]));
        let Err(DocError::VersionQuota(reason)) = make_room(&versions, 0, 10, &cap(1)) else {
            panic!("a named version would have to go");
        };
        assert!(
            reason.contains("--max-versions") && reason.contains("version 2"),
            "{reason}"
        );

        let quota = |max_storage| VersionQuota {
            max_versions: 0,
            max_storage,
        };
        // 100 bytes of document + 40 in versions + 10 new.
        assert_eq!(make_room(&versions, 100, 10, &quota(150)), Ok(vec![]));
        assert_eq!(make_room(&versions, 100, 10, &quota(135)), Ok(vec![1, 3]));
        let Err(DocError::VersionQuota(reason)) = make_room(&versions, 100, 10, &quota(115)) else {
            panic!("over the quota");
        };
        assert!(
            reason.contains("--max-doc-storage") && reason.contains("version 2"),
            "{reason}"
        );
        let Err(DocError::VersionQuota(reason)) = make_room(&[], 100, 100, &quota(150)) else {
            panic!("a version alone does not fit");
        };
        assert!(reason.contains("beside the document itself"), "{reason}");
    }

    #[test]
    fn digests_tell_content_apart_and_ignore_history() {
        let a = Doc::with_client_id(1);
        let text = a.get_or_insert_text("t");
        let first = {
            let mut txn = a.transact_mut();
            text.push(&mut txn, "hello");
            txn.encode_update_v1()
        };
        let second = {
            let mut txn = a.transact_mut();
            text.push(&mut txn, " world");
            txn.encode_update_v1()
        };
        // The same updates in the other order (the second waits for the
        // first), and a second client's document: the same content.
        let b = Doc::with_client_id(2);
        {
            use yrs::updates::decoder::Decode;
            let mut txn = b.transact_mut();
            txn.apply_update(Update::decode_v1(&second).unwrap()).unwrap();
            txn.apply_update(Update::decode_v1(&first).unwrap()).unwrap();
        }
        assert_eq!(digest(&a.transact()), digest(&b.transact()));
        let before = digest(&a.transact());
        let sv = a.transact().state_vector();
        text.remove_range(&mut a.transact_mut(), 0, 1);
        assert_eq!(a.transact().state_vector(), sv, "a deletion keeps the state vector");
        assert_ne!(digest(&a.transact()), before, "but not the digest");
    }

    #[test]
    fn automatic_versions_are_due_after_idle_or_at_intervals() {
        let policy = VersionPolicy {
            after_idle: Duration::from_secs(60),
            every: Duration::from_secs(600),
            ..VersionPolicy::default()
        };
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        let mut v = Versions::loaded(true, t0);
        assert!(
            !v.is_edited() && !v.auto_version_due(at(10_000), &policy),
            "nothing to version"
        );
        v.edited(at(0));
        assert!(!v.auto_version_due(at(59), &policy));
        assert!(v.auto_version_due(at(60), &policy), "left alone for a minute");
        // edits every 30 s: never idle, but one version each 10 minutes
        for s in (30..600).step_by(30) {
            v.edited(at(s));
            assert!(!v.auto_version_due(at(s + 29), &policy), "at {s} s");
        }
        v.edited(at(599));
        assert!(v.auto_version_due(at(600), &policy));
        v.taken();
        assert!(!v.auto_version_due(at(10_000), &policy));
        let loaded = Versions::loaded(false, t0);
        assert!(
            loaded.is_edited(),
            "a log after the snapshot may hold unversioned edits"
        );
        assert!(loaded.auto_version_due(at(60), &policy));
    }

    /// An automatic version is written while the actor goes on: edits made
    /// meanwhile are not in it and still want one.
    #[test]
    fn a_version_written_off_the_actor_leaves_later_edits_wanting_one() {
        let policy = VersionPolicy {
            after_idle: Duration::from_secs(60),
            every: Duration::from_secs(600),
            ..VersionPolicy::default()
        };
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        let mut v = Versions::loaded(true, t0);
        v.edited(at(0));
        let mark = v.edits();
        v.taken_up_to(mark, at(61));
        assert!(!v.is_edited(), "it holds every edit");
        v.edited(at(100));
        let mark = v.edits();
        v.edited(at(101)); // while it was written
        v.taken_up_to(mark, at(102));
        assert!(v.is_edited());
        assert!(!v.auto_version_due(at(160), &policy));
        assert!(v.auto_version_due(at(161), &policy), "idle after the later edit");
    }

    #[test]
    fn the_latest_version_is_reused_when_nothing_changed() {
        use VersionKind::{Auto, Named};
        let with = |kind, label: Option<&str>, digest: Option<&[u8]>| VersionMeta {
            label: label.map(str::to_string),
            digest: digest.map(<[u8]>::to_vec),
            ..version(1, 0, kind)
        };
        let same = Some(&b"d1"[..]);
        assert_eq!(reuse(None, b"d1", Auto, None), Reuse::New);
        assert_eq!(
            reuse(Some(&with(Auto, None, Some(b"d0"))), b"d1", Auto, None),
            Reuse::New
        );
        assert_eq!(
            reuse(Some(&with(Named, None, None)), b"d1", Named, None),
            Reuse::New,
            "no digest: never the same"
        );
        assert_eq!(reuse(Some(&with(Auto, None, same)), b"d1", Auto, None), Reuse::Latest);
        assert_eq!(reuse(Some(&with(Named, None, same)), b"d1", Auto, None), Reuse::Latest);
        assert_eq!(
            reuse(Some(&with(Auto, None, same)), b"d1", Named, None),
            Reuse::NameLatest
        );
        assert_eq!(
            reuse(Some(&with(Named, None, same)), b"d1", Named, Some("x")),
            Reuse::NameLatest
        );
        assert_eq!(
            reuse(Some(&with(Named, Some("a"), same)), b"d1", Named, Some("b")),
            Reuse::Latest,
            "a label is kept"
        );
        assert_eq!(reuse(Some(&with(Named, None, same)), b"d1", Named, None), Reuse::Latest);
    }

    #[test]
    fn recent_versions_are_all_kept() {
        let now = 1000 * HOUR;
        let versions: Vec<_> = (0..50)
            .map(|i| version(i, now - i * 60_000, VersionKind::Auto))
            .collect();
        assert!(thin(&versions, now, &VersionPolicy::default()).is_empty());
    }

    #[test]
    fn old_versions_thin_to_one_per_hour_then_per_day() {
        let now = 10_000 * HOUR;
        let mut versions = Vec::new();
        // every 10 minutes from 10 days ago to 2 days ago
        let mut id = 0;
        let mut t = now - 240 * HOUR;
        while t < now - 48 * HOUR {
            versions.push(version(id, t, VersionKind::Auto));
            id += 1;
            t += HOUR / 6;
        }
        versions.push(version(id, now - 200 * HOUR, VersionKind::Named));
        let doomed: HashSet<i64> = thin(&versions, now, &VersionPolicy::default()).into_iter().collect();
        let kept: Vec<&VersionMeta> = versions.iter().filter(|v| !doomed.contains(&v.id)).collect();
        assert!(kept.iter().any(|v| v.kind == VersionKind::Named), "named versions stay");
        let older_than_week = kept
            .iter()
            .filter(|v| v.kind == VersionKind::Auto && now - v.created >= 168 * HOUR);
        let days: HashSet<i64> = older_than_week
            .clone()
            .map(|v| v.created.div_euclid(24 * HOUR))
            .collect();
        assert_eq!(older_than_week.count(), days.len(), "one per day after a week");
        let hourly = kept
            .iter()
            .filter(|v| v.kind == VersionKind::Auto && (48 * HOUR..168 * HOUR).contains(&(now - v.created)));
        let hours: HashSet<i64> = hourly.clone().map(|v| v.created.div_euclid(HOUR)).collect();
        assert_eq!(hourly.count(), hours.len(), "one per hour after a day");
        assert!(hours.len() >= 100, "but each hour keeps one: {}", hours.len());
    }
}
