//! The y-sync and awareness wire protocol: bytes in, messages out, and back.
//!
//! Pure code with no I/O and no knowledge of sockets or documents, so it can be
//! tested (and fuzzed) on its own. Decoding happens on the connection's task,
//! not the document actor's, so the CPU cost of parsing updates spreads over
//! all cores while the actor only applies.
//!
//! A frame is `varUint(type) • payload`; several messages may follow each other
//! in one incoming frame (y-websocket 4.x sends that), but every outgoing frame
//! carries exactly one message, because y-websocket up to 3.x reads only the
//! first message of a frame and silently ignores the rest.

use bytes::Bytes;
use yrs::encoding::read::{Cursor, Read};
use yrs::encoding::write::Write;
use yrs::sync::awareness::AwarenessUpdate;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{StateVector, Update};

use crate::validate::{self, Shape};

/// Top-level message types.
pub const MSG_SYNC: u8 = 0;
pub const MSG_AWARENESS: u8 = 1;
pub const MSG_AUTH: u8 = 2;
pub const MSG_QUERY_AWARENESS: u8 = 3;

/// Sync sub-message types.
pub const SYNC_STEP1: u8 = 0;
pub const SYNC_STEP2: u8 = 1;
pub const SYNC_UPDATE: u8 = 2;

/// Why an incoming frame was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("empty frame")]
    Empty,
    #[error("message {index} of the frame is truncated or malformed: {detail}")]
    Malformed { index: usize, detail: String },
    #[error("unknown sync message type {0}")]
    UnknownSyncType(u64),
    #[error("update does not decode: {0}")]
    BadUpdate(String),
    #[error("state vector does not decode: {0}")]
    BadStateVector(String),
    #[error("awareness update does not decode: {0}")]
    BadAwareness(String),
}

/// Whether an update arrived as a sync step 2 (answer to our step 1) or as a
/// live update. Both are applied the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateKind {
    Step2,
    Update,
}

/// A decoded document update together with the bytes it came from.
///
/// The raw bytes are what gets stored and relayed: the actor never re-encodes
/// an update it only has to forward.
#[derive(Debug)]
pub struct InboundUpdate {
    pub kind: UpdateKind,
    /// The Yjs v1 update exactly as the client sent it.
    pub raw: Bytes,
    pub update: Update,
    /// What it holds, as far as limits care (how many shared types).
    pub shape: Shape,
    /// The incoming frame itself when it holds this one update message and
    /// nothing else: it can then be relayed as-is, with no copy.
    frame: Option<Bytes>,
}

impl InboundUpdate {
    /// Decodes a Yjs v1 update that did not arrive in a frame (HTTP API).
    pub fn from_raw(raw: Bytes) -> Result<Self, ProtocolError> {
        let (update, shape) = decode_update(&raw)?;
        Ok(Self {
            kind: UpdateKind::Update,
            raw,
            update,
            shape,
            frame: None,
        })
    }

    /// The frame to relay this update to other peers with.
    pub fn relay_frame(&self) -> Bytes {
        match &self.frame {
            Some(frame) => frame.clone(),
            None => encode_update(&self.raw),
        }
    }
}

/// One message received from a client.
#[derive(Debug)]
pub enum Inbound {
    SyncStep1(StateVector),
    Update(InboundUpdate),
    Awareness(AwarenessUpdate),
    QueryAwareness,
    /// An auth message or a message type this server does not know. Clients
    /// of other servers may send such types; they are skipped, not fatal.
    Ignored(u64),
}

/// Decodes every message of one incoming binary frame.
///
/// Either the whole frame decodes or it is refused: a connection never gets
/// half of a frame applied.
pub fn decode_frame(frame: &Bytes) -> Result<Vec<Inbound>, ProtocolError> {
    if frame.is_empty() {
        return Err(ProtocolError::Empty);
    }
    let mut cursor = Cursor::new(frame);
    let mut messages = Vec::with_capacity(1);
    while cursor.next < frame.len() {
        let index = messages.len();
        let malformed = |e: yrs::encoding::read::Error| ProtocolError::Malformed {
            index,
            detail: e.to_string(),
        };
        let tag: u64 = cursor.read_var().map_err(malformed)?;
        let message = match tag {
            t if t == MSG_SYNC as u64 => {
                let sub: u64 = cursor.read_var().map_err(malformed)?;
                let payload = cursor.read_buf().map_err(malformed)?;
                match sub {
                    s if s == SYNC_STEP1 as u64 => {
                        validate::state_vector(payload).map_err(|e| ProtocolError::BadStateVector(e.to_string()))?;
                        Inbound::SyncStep1(
                            StateVector::decode_v1(payload)
                                .map_err(|e| ProtocolError::BadStateVector(e.to_string()))?,
                        )
                    }
                    s if s == SYNC_STEP2 as u64 || s == SYNC_UPDATE as u64 => {
                        let raw = frame.slice_ref(payload);
                        let (update, shape) = decode_update(&raw)?;
                        let kind = if s == SYNC_STEP2 as u64 {
                            UpdateKind::Step2
                        } else {
                            UpdateKind::Update
                        };
                        Inbound::Update(InboundUpdate {
                            kind,
                            raw,
                            update,
                            shape,
                            frame: None,
                        })
                    }
                    other => return Err(ProtocolError::UnknownSyncType(other)),
                }
            }
            t if t == MSG_AWARENESS as u64 => {
                let payload = cursor.read_buf().map_err(malformed)?;
                validate::awareness(payload).map_err(|e| ProtocolError::BadAwareness(e.to_string()))?;
                Inbound::Awareness(
                    AwarenessUpdate::decode_v1(payload).map_err(|e| ProtocolError::BadAwareness(e.to_string()))?,
                )
            }
            t if t == MSG_QUERY_AWARENESS as u64 => Inbound::QueryAwareness,
            t if t == MSG_AUTH as u64 => {
                // varUint(permission) • [reason string]; the server is the one
                // that grants or denies, so whatever a client says is skipped.
                let permission: u64 = cursor.read_var().map_err(malformed)?;
                if permission == 0 {
                    cursor.read_string().map_err(malformed)?;
                }
                Inbound::Ignored(tag)
            }
            other => {
                // Unknown types are length-prefixed by convention (yrs and
                // y-protocols both treat them so); skip the payload.
                cursor.read_buf().map_err(malformed)?;
                Inbound::Ignored(other)
            }
        };
        messages.push(message);
    }
    // A frame that is exactly one update message is relayed without copying.
    if let [Inbound::Update(update)] = messages.as_mut_slice() {
        if update.kind == UpdateKind::Update {
            update.frame = Some(frame.clone());
        }
    }
    Ok(messages)
}

fn decode_update(raw: &[u8]) -> Result<(Update, Shape), ProtocolError> {
    // The structural checks first: yrs trusts counts and nesting, and some
    // of what it would accept leaves a document it cannot encode (see
    // `validate`). The fuzz target checks that whatever passes both stays
    // encodable and decodable.
    let shape = validate::update_v1(raw).map_err(|e| ProtocolError::BadUpdate(e.to_string()))?;
    // yrs decodes untrusted input; a panic in it must not take down the
    // connection task with a confusing error, so it is turned into a refusal.
    match std::panic::catch_unwind(|| Update::decode_v1(raw)) {
        Ok(Ok(update)) => Ok((update, shape)),
        Ok(Err(e)) => Err(ProtocolError::BadUpdate(e.to_string())),
        Err(_) => Err(ProtocolError::BadUpdate("decoder panicked".into())),
    }
}

fn frame_with(header: &[u8], payload: &[u8]) -> Bytes {
    let mut buf = Vec::with_capacity(header.len() + 10 + payload.len());
    buf.extend_from_slice(header);
    buf.write_var(payload.len());
    buf.extend_from_slice(payload);
    Bytes::from(buf)
}

/// `sync • step1 • stateVector`
pub fn encode_step1(sv: &StateVector) -> Bytes {
    frame_with(&[MSG_SYNC, SYNC_STEP1], &sv.encode_v1())
}

/// `sync • step2 • update`
pub fn encode_step2(update: &[u8]) -> Bytes {
    frame_with(&[MSG_SYNC, SYNC_STEP2], update)
}

/// `sync • update • update`
pub fn encode_update(update: &[u8]) -> Bytes {
    frame_with(&[MSG_SYNC, SYNC_UPDATE], update)
}

/// `awareness • update`
pub fn encode_awareness(update: &AwarenessUpdate) -> Bytes {
    frame_with(&[MSG_AWARENESS], &update.encode_v1())
}

/// `auth • permissionDenied • reason`: what y-websocket's client logs as
/// "Permission denied to access <url>".
pub fn encode_auth_denied(reason: &str) -> Bytes {
    frame_with(&[MSG_AUTH, 0], reason.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use yrs::{Doc, GetString, ReadTxn, Text, Transact};

    /// `queryAwareness`: clients send it, weft never does.
    fn encode_query_awareness() -> Bytes {
        Bytes::from_static(&[MSG_QUERY_AWARENESS])
    }

    fn text_update(s: &str) -> Vec<u8> {
        let doc = Doc::new();
        let text = doc.get_or_insert_text("t");
        text.push(&mut doc.transact_mut(), s);
        let update = doc.transact().encode_state_as_update_v1(&StateVector::default());
        update
    }

    #[test]
    fn single_update_frame_is_relayed_without_copy() {
        let frame = encode_update(&text_update("hi"));
        let msgs = decode_frame(&frame).unwrap();
        let [Inbound::Update(u)] = msgs.as_slice() else {
            panic!("expected one update, got {msgs:?}")
        };
        assert_eq!(u.relay_frame().as_ptr(), frame.as_ptr());
    }

    #[test]
    fn several_messages_per_frame_are_all_decoded() {
        let mut frame = BytesMut::new();
        frame.extend_from_slice(&encode_step1(&StateVector::default()));
        frame.extend_from_slice(&encode_step2(&text_update("a")));
        frame.extend_from_slice(&encode_query_awareness());
        let msgs = decode_frame(&frame.freeze()).unwrap();
        assert!(matches!(msgs[0], Inbound::SyncStep1(_)));
        assert!(matches!(&msgs[1], Inbound::Update(u) if u.kind == UpdateKind::Step2));
        assert!(matches!(msgs[2], Inbound::QueryAwareness));
        // A step2 inside a larger frame is re-encoded as an update to relay.
        let Inbound::Update(u) = &msgs[1] else { unreachable!() };
        let relayed = decode_frame(&u.relay_frame()).unwrap();
        assert!(matches!(&relayed[0], Inbound::Update(r) if r.kind == UpdateKind::Update));
    }

    #[test]
    fn decoded_update_applies() {
        let frame = encode_update(&text_update("hello"));
        let Inbound::Update(u) = decode_frame(&frame).unwrap().pop().unwrap() else {
            panic!()
        };
        let doc = Doc::new();
        doc.transact_mut().apply_update(u.update).unwrap();
        let text = doc.get_or_insert_text("t");
        assert_eq!(text.get_string(&doc.transact()), "hello");
    }

    #[test]
    fn malformed_frames_are_refused() {
        assert_eq!(decode_frame(&Bytes::new()).unwrap_err(), ProtocolError::Empty);
        // sync, update, length 200 but only 2 bytes follow
        assert!(matches!(
            decode_frame(&Bytes::from_static(&[0, 2, 200, 1, 1, 1])),
            Err(ProtocolError::Malformed { .. })
        ));
        assert_eq!(
            decode_frame(&Bytes::from_static(&[0, 7, 0])).unwrap_err(),
            ProtocolError::UnknownSyncType(7)
        );
        assert!(matches!(
            decode_frame(&Bytes::from_static(&[0, 2, 3, 0xff, 0xff, 0xff])),
            Err(ProtocolError::BadUpdate(_))
        ));
        // one good message followed by garbage refuses the whole frame
        let mut frame = BytesMut::new();
        frame.extend_from_slice(&encode_update(&text_update("x")));
        frame.extend_from_slice(&[0, 2, 9]);
        assert!(decode_frame(&frame.freeze()).is_err());
    }

    #[test]
    fn unknown_and_auth_messages_are_skipped() {
        let mut frame = BytesMut::new();
        frame.extend_from_slice(&[9, 2, 0xaa, 0xbb]);
        frame.extend_from_slice(&encode_auth_denied("no"));
        frame.extend_from_slice(&encode_query_awareness());
        let msgs = decode_frame(&frame.freeze()).unwrap();
        assert!(matches!(
            msgs[..],
            [Inbound::Ignored(9), Inbound::Ignored(2), Inbound::QueryAwareness]
        ));
    }
}
