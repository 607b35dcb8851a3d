//! When a document's `document.updated` event is due, and what it says
//! of the edits since the last one (pure; the actor only asks).
//!
//! The rule: an event waits until the edits have paused for the debounce,
//! but never longer than the maximum wait after the first edit it reports.
//! Two events are then always at least the debounce apart (the first edit
//! a new event reports came after the previous event), and edits that
//! never pause are reported every maximum wait.

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

/// Editors one event names at most; beyond, the list says it is cut.
const MAX_EDITORS: usize = 32;

/// How `document.updated` is paced (`--webhook-debounce-ms`,
/// `--webhook-max-wait-ms`), and whether peers' comings and goings are
/// events too (`--events-peers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPolicy {
    pub debounce: Duration,
    pub max_wait: Duration,
    pub peers: bool,
}

impl Default for EventPolicy {
    fn default() -> Self {
        Self {
            debounce: Duration::from_millis(crate::config::DEFAULT_WEBHOOK_DEBOUNCE_MS),
            max_wait: Duration::from_millis(crate::config::DEFAULT_WEBHOOK_MAX_WAIT_MS),
            peers: false,
        }
    }
}

/// Who a connection belongs to, as its token says (`sub`, `name`); open
/// mode and admin connections have none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: Option<String>,
    pub name: Option<String>,
}

/// The edits no event has reported yet.
#[derive(Debug, Default)]
pub struct Unreported {
    /// The first and the latest of them (none: nothing to report).
    first: Option<Instant>,
    latest: Option<Instant>,
    updates: u64,
    editors: Vec<User>,
    /// More editors than `MAX_EDITORS` took part.
    more_editors: bool,
}

/// What one `document.updated` says of the edits it reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edits {
    pub updates: u64,
    pub editors: Vec<User>,
    pub more_editors: bool,
}

impl Unreported {
    /// `updates` committed at `now`.
    pub fn edited(&mut self, now: Instant, updates: u64) {
        if updates == 0 {
            return;
        }
        self.first.get_or_insert(now);
        self.latest = Some(now);
        self.updates += updates;
    }

    /// Someone whose token names them edited.
    pub fn editor(&mut self, user: &User) {
        if self.editors.contains(user) {
            return;
        }
        if self.editors.len() < MAX_EDITORS {
            self.editors.push(user.clone());
        } else {
            self.more_editors = true;
        }
    }

    /// When the event is due; `None` while there is nothing to report.
    pub fn due(&self, policy: &EventPolicy) -> Option<Instant> {
        let (first, latest) = (self.first?, self.latest?);
        Some((latest + policy.debounce).min(first + policy.max_wait))
    }

    /// What the event reports, forgetting it; `None` if nothing.
    pub fn take(&mut self) -> Option<Edits> {
        self.first?;
        let taken = std::mem::take(self);
        Some(Edits {
            updates: taken.updates,
            editors: taken.editors,
            more_editors: taken.more_editors,
        })
    }

    /// An event that could not be written: its edits wait for the next.
    pub fn put_back(&mut self, now: Instant, edits: Edits) {
        self.edited(now, edits.updates);
        for user in &edits.editors {
            self.editor(user);
        }
        self.more_editors |= edits.more_editors;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn policy() -> EventPolicy {
        EventPolicy {
            debounce: 2000 * MS,
            max_wait: 10_000 * MS,
            peers: false,
        }
    }

    #[test]
    fn nothing_is_due_without_edits() {
        let u = Unreported::default();
        assert_eq!(u.due(&policy()), None);
    }

    /// A pause of the debounce makes it due; edits that go on every second
    /// make it due at the maximum wait after the first.
    #[test]
    fn due_after_a_pause_or_at_the_maximum_wait() {
        let t0 = Instant::now();
        let mut u = Unreported::default();
        u.edited(t0, 1);
        assert_eq!(u.due(&policy()), Some(t0 + 2000 * MS));
        for s in 1..30 {
            u.edited(t0 + s * 1000 * MS, 1);
        }
        assert_eq!(u.due(&policy()), Some(t0 + 10_000 * MS));
        let edits = u.take().unwrap();
        assert_eq!(edits.updates, 30);
        assert_eq!(u.due(&policy()), None);
        assert!(u.take().is_none());
    }

    #[test]
    fn editors_are_named_once_and_bounded() {
        let mut u = Unreported::default();
        u.edited(Instant::now(), 1);
        let ada = User {
            id: Some("u1".into()),
            name: Some("Ada".into()),
        };
        u.editor(&ada);
        u.editor(&ada);
        for i in 0..40 {
            u.editor(&User {
                id: Some(format!("x{i}")),
                name: None,
            });
        }
        let edits = u.take().unwrap();
        assert_eq!(edits.editors.len(), MAX_EDITORS);
        assert_eq!(edits.editors[0], ada);
        assert!(edits.more_editors);
    }
}
