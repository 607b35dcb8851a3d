//! A subscription: where to post, with which secret, and which events.
//! Two origins: `--webhook` (configured; ids derived from the URL so they
//! stay the same across restarts, and their cursors with them) and the API
//! (stored in the `webhooks` table).

use std::collections::BTreeSet;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::sign::Secret;
use super::target::WebhookUrl;
use crate::event::EventType;
use crate::storage::StoredWebhook;

/// Frequent events a subscription gets only when it names them.
pub const OPT_IN: [EventType; 2] = [EventType::PeerJoined, EventType::PeerLeft];
/// Longest document prefix a subscription may filter on.
pub const MAX_PREFIX: usize = 512;

#[derive(Debug, Clone)]
pub struct Subscription {
    pub id: String,
    pub url: WebhookUrl,
    pub secret: Secret,
    /// `None`: every type but the opt-in ones.
    pub events: Option<BTreeSet<EventType>>,
    pub prefix: Option<String>,
    /// `document.updated` carries the document's JSON content.
    pub content: bool,
    /// Given with `--webhook`: not deletable through the API.
    pub configured: bool,
    pub created_ms: Option<i64>,
}

impl Subscription {
    /// A `--webhook` URL: every default event type, the shared secret.
    pub fn configured(url: WebhookUrl, secret: Secret) -> Self {
        let digest = Sha256::digest(url.to_string().as_bytes());
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Self {
            id: format!("wh_cfg_{hex}"),
            url,
            secret,
            events: None,
            prefix: None,
            content: false,
            configured: true,
            created_ms: None,
        }
    }

    /// A fresh id for a subscription made through the API.
    pub fn new_id() -> String {
        format!("wh_{}", uuid::Uuid::new_v4().simple())
    }

    /// The types, as given: each known, at least one.
    pub fn parse_events(types: &[String]) -> Result<BTreeSet<EventType>, String> {
        if types.is_empty() {
            return Err("events, when given, must name at least one event type".into());
        }
        types
            .iter()
            .map(|t| {
                if t == crate::events::PEER_COUNTS {
                    // A live count, never stored: nothing a delivery could retry.
                    return Err(format!(
                        "{t} is only on the feed (GET /api/events), never sent to webhooks"
                    ));
                }
                t.parse::<EventType>().map_err(|e| e.to_string())
            })
            .collect()
    }

    pub fn parse_prefix(prefix: Option<String>) -> Result<Option<String>, String> {
        match prefix {
            Some(p) if p.len() > MAX_PREFIX => Err(format!("prefix is longer than {MAX_PREFIX} bytes")),
            Some(p) if p.is_empty() => Ok(None),
            other => Ok(other),
        }
    }

    /// A stored subscription, checked as when it was made (a row written
    /// by another weft, or by hand, is not trusted blindly).
    pub fn from_stored(row: &StoredWebhook) -> Result<Self, String> {
        Ok(Self {
            id: row.id.clone(),
            url: WebhookUrl::parse(&row.url)?,
            secret: Secret::parse(&row.secret)?,
            events: row.events.as_deref().map(Self::parse_events).transpose()?,
            prefix: Self::parse_prefix(row.prefix.clone())?,
            content: row.content,
            configured: false,
            created_ms: Some(row.created_ms),
        })
    }

    pub fn to_stored(&self) -> StoredWebhook {
        StoredWebhook {
            id: self.id.clone(),
            url: self.url.to_string(),
            secret: self.secret.as_str().to_string(),
            events: self
                .events
                .as_ref()
                .map(|set| set.iter().map(|t| t.as_str().to_string()).collect()),
            prefix: self.prefix.clone(),
            content: self.content,
            created_ms: self.created_ms.unwrap_or_default(),
        }
    }

    /// Whether an event of type `kind` about `document` goes to this
    /// subscription. An event about no document (`token.revoked`) does
    /// not match a prefix.
    pub fn wants(&self, kind: &str, document: Option<&str>) -> bool {
        let Ok(kind) = kind.parse::<EventType>() else {
            return false;
        };
        let type_ok = match &self.events {
            Some(set) => set.contains(&kind),
            None => !OPT_IN.contains(&kind),
        };
        let prefix_ok = match &self.prefix {
            Some(p) => document.is_some_and(|d| d.starts_with(p.as_str())),
            None => true,
        };
        type_ok && prefix_ok
    }

    /// What `GET /api/webhooks` shows: never the secret.
    pub fn view(&self, cursor: Option<i64>) -> SubscriptionView {
        SubscriptionView {
            id: self.id.clone(),
            url: self.url.to_string(),
            events: match &self.events {
                Some(set) => set.iter().map(|t| t.as_str()).collect(),
                None => EventType::ALL
                    .iter()
                    .filter(|t| !OPT_IN.contains(t))
                    .map(|t| t.as_str())
                    .collect(),
            },
            prefix: self.prefix.clone(),
            content: self.content,
            configured: self.configured,
            created_ms: self.created_ms,
            cursor,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SubscriptionView {
    pub id: String,
    pub url: String,
    pub events: Vec<&'static str>,
    pub prefix: Option<String>,
    pub content: bool,
    /// From `--webhook`: cannot be deleted through the API.
    pub configured: bool,
    #[serde(skip)]
    pub created_ms: Option<i64>,
    /// The last event seq delivered or given up on.
    pub cursor: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(events: Option<&[&str]>, prefix: Option<&str>) -> Subscription {
        let mut s = Subscription::configured(
            WebhookUrl::parse("https://example.com/hook").unwrap(),
            Secret::generate(),
        );
        s.events =
            events.map(|e| Subscription::parse_events(&e.iter().map(|t| t.to_string()).collect::<Vec<_>>()).unwrap());
        s.prefix = prefix.map(str::to_string);
        s
    }

    #[test]
    fn types_and_prefix_select_events() {
        let all = sub(None, None);
        assert!(all.wants("document.updated", Some("a")));
        assert!(all.wants("token.revoked", None));
        assert!(!all.wants("peer.joined", Some("a")), "peer events are opt-in");
        let peers = sub(Some(&["peer.joined"]), Some("notes/"));
        assert!(peers.wants("peer.joined", Some("notes/today")));
        assert!(!peers.wants("peer.joined", Some("other")));
        assert!(!peers.wants("document.updated", Some("notes/today")));
        assert!(!sub(None, Some("notes/")).wants("token.revoked", None));
        assert!(Subscription::parse_events(&["nope".into()])
            .unwrap_err()
            .contains("unknown event type"));
        assert!(Subscription::parse_events(&[]).is_err());
    }

    #[test]
    fn configured_ids_are_stable_per_url() {
        let url = WebhookUrl::parse("https://example.com/hook").unwrap();
        let a = Subscription::configured(url.clone(), Secret::generate());
        let b = Subscription::configured(url, Secret::generate());
        assert_eq!(a.id, b.id);
        assert!(a.id.starts_with("wh_cfg_"));
        let c = Subscription::configured(
            WebhookUrl::parse("https://example.com/other").unwrap(),
            Secret::generate(),
        );
        assert_ne!(a.id, c.id);
    }
}
