//! Which automatic versions to keep as they age.

use std::collections::HashSet;
use std::time::Duration;

use super::VersionPolicy;
use crate::storage::{VersionKind, VersionMeta};

/// The automatic versions to delete so that, older than
/// `policy.hourly_after`, one per hour remains, and older than
/// `policy.daily_after`, one per day (the newest of each hour or day).
/// Named versions are never thinned. `now` is in Unix milliseconds.
pub fn thin(versions: &[VersionMeta], now: i64, policy: &VersionPolicy) -> Vec<i64> {
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

    const HOUR: i64 = 3_600_000;

    fn version(id: i64, created: i64, kind: VersionKind) -> VersionMeta {
        VersionMeta {
            id,
            created,
            label: None,
            kind,
            size: 1,
            state_vector: Vec::new(),
        }
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
