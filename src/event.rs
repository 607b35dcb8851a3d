// STUB (not committed)
use std::str::FromStr;
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
#[derive(Debug, thiserror::Error)]
#[error("unknown event type '{0}'")]
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
