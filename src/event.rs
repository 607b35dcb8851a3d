//! What weft tells the applications around it: the event types and the JSON
//! envelope every consumer sees (a webhook's body, the `data:` of an SSE
//! message). A leaf: storage renders envelopes inside the transaction that
//! writes them, the actor and the API describe what happened, and the feed
//! and the webhooks read them back.
//!
//! The envelope is rendered once, when the event is written, and stored as
//! text: every consumer gets exactly the same bytes (webhook signatures are
//! over the body), on every retry and after every restart.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// The kinds of event weft emits, serialised as dotted strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    DocumentCreated,
    DocumentUpdated,
    DocumentDeleted,
    VersionCreated,
    VersionRestored,
    PeerJoined,
    PeerLeft,
    TokenRevoked,
}

impl EventType {
    pub const ALL: [EventType; 8] = [
        EventType::DocumentCreated,
        EventType::DocumentUpdated,
        EventType::DocumentDeleted,
        EventType::VersionCreated,
        EventType::VersionRestored,
        EventType::PeerJoined,
        EventType::PeerLeft,
        EventType::TokenRevoked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::DocumentCreated => "document.created",
            EventType::DocumentUpdated => "document.updated",
            EventType::DocumentDeleted => "document.deleted",
            EventType::VersionCreated => "version.created",
            EventType::VersionRestored => "version.restored",
            EventType::PeerJoined => "peer.joined",
            EventType::PeerLeft => "peer.left",
            EventType::TokenRevoked => "token.revoked",
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event type weft does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event type '{0}' (known: document.created, document.updated, document.deleted, version.created, version.restored, peer.joined, peer.left, token.revoked)")]
pub struct UnknownEventType(pub String);

impl FromStr for EventType {
    type Err = UnknownEventType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownEventType(s.to_string()))
    }
}

impl Serialize for EventType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// An event to be written: its envelope is rendered by the store, inside
/// the transaction, with a fresh id and the commit's time.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub kind: EventType,
    /// The document it concerns (`None`: a token revocation).
    pub document: Option<String>,
    /// The type's own fields (README, *Events*).
    pub data: serde_json::Value,
}

/// An envelope as rendered: its id and its JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub id: String,
    pub body: String,
}

impl NewEvent {
    pub fn new(kind: EventType, document: Option<&str>, data: serde_json::Value) -> Self {
        Self {
            kind,
            document: document.map(str::to_string),
            data,
        }
    }

    /// The envelope at `now_ms` (Unix milliseconds) with a new id.
    pub fn render(&self, now_ms: i64) -> Rendered {
        let id = new_event_id();
        let body = serde_json::json!({
            "id": id,
            "type": self.kind,
            "time": rfc3339(now_ms),
            "document": self.document,
            "data": self.data,
        })
        .to_string();
        Rendered { id, body }
    }
}

/// `evt_` and 32 hex digits of a random (v4) UUID: 122 random bits, so
/// unique across nodes and database resets without coordination, which is
/// what receivers deduplicate by (the Standard Webhooks `webhook-id`).
pub fn new_event_id() -> String {
    format!("evt_{}", uuid::Uuid::new_v4().simple())
}

/// Unix milliseconds as RFC 3339 in UTC with milliseconds
/// (`2026-11-30T22:20:05.123Z`). Written here rather than with a date
/// crate: it is the one date format weft writes.
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_round_trip_through_their_names() {
        for t in EventType::ALL {
            assert_eq!(t.as_str().parse::<EventType>(), Ok(t));
        }
        assert!("document.touched".parse::<EventType>().is_err());
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_796_076_005_000), "2026-11-30T22:00:05.000Z");
    }

    #[test]
    fn envelope_has_every_field() {
        let event = NewEvent::new(EventType::VersionCreated, Some("notes/a"), serde_json::json!({"id": 3}));
        let r = event.render(0);
        assert!(r.id.starts_with("evt_") && r.id.len() >= 30);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["id"], r.id.as_str());
        assert_eq!(v["type"], "version.created");
        assert_eq!(v["time"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["document"], "notes/a");
        assert_eq!(v["data"]["id"], 3);
        assert_ne!(event.render(0).id, r.id, "ids are fresh");
    }
}
