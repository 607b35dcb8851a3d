//! The Hocuspocus wire format (`@hocuspocus/provider` 4.x): many documents
//! over one socket. Pure, like [`crate::protocol`], which it builds on.
//!
//! A frame is `varString(address) · varUint(type) · body` (lib0). The
//! address is the document name, or `name + "\0" + sessionId` when the
//! provider uses session awareness; answers go to the same address. The
//! types 0 (sync), 1 (awareness) and 3 (query awareness) carry the
//! y-websocket message that follows the address unchanged, so the bytes
//! after the address *are* a y-websocket frame: they are decoded by
//! [`protocol::decode_frame`] and relayed as they are (the document actor
//! speaks y-websocket; the session puts the address in front).
//!
//! The other types are Hocuspocus's own: 2 auth (`0 Token · varString
//! token · varString providerVersion` from the client; `2 Authenticated ·
//! varString scope` or `1 PermissionDenied · varString reason` from the
//! server), 4 sync reply, 5 stateless (a string, both ways), 6 broadcast
//! stateless (between Hocuspocus servers only: refused from a client), 7
//! close (client: detach this document; server: with a reason), 8 sync
//! status (server: `varUint 1` applied, `0` refused, one per step2 or
//! update received) and 9/10 ping/pong, which are a single byte with no
//! address at all.

use bytes::Bytes;
use yrs::encoding::read::{Cursor, Read};
use yrs::encoding::write::Write;

use crate::protocol::{self, Inbound, ProtocolError};

pub const SYNC: u64 = 0;
pub const AWARENESS: u64 = 1;
pub const AUTH: u64 = 2;
pub const QUERY_AWARENESS: u64 = 3;
pub const SYNC_REPLY: u64 = 4;
pub const STATELESS: u64 = 5;
pub const BROADCAST_STATELESS: u64 = 6;
pub const CLOSE: u64 = 7;
pub const SYNC_STATUS: u64 = 8;
pub const PING: u8 = 9;
pub const PONG: u8 = 10;

/// Auth sub-types (`@hocuspocus/common`, `AuthMessageType`).
pub const AUTH_TOKEN: u64 = 0;
pub const AUTH_PERMISSION_DENIED: u64 = 1;
pub const AUTH_AUTHENTICATED: u64 = 2;

/// Longest address accepted: a document name (at most 512 bytes) and a
/// session id with room to spare. Addresses are kept per attached
/// document, so they are bounded.
pub const MAX_ADDRESS: usize = 1024;

/// The separator between a document name and a session id in an address.
pub const SESSION_SEPARATOR: char = '\0';

/// Why an incoming Hocuspocus frame was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HocuspocusError {
    #[error("empty frame")]
    Empty,
    #[error("the frame's address is truncated or not UTF-8: {0}")]
    Address(String),
    #[error("the frame's address is {0} bytes, more than {MAX_ADDRESS}")]
    AddressTooLong(usize),
    #[error("message of type {kind} is truncated or malformed: {detail}")]
    Malformed { kind: u64, detail: String },
    #[error("a Hocuspocus frame holds one message; this one holds {0}")]
    SeveralMessages(usize),
    #[error("broadcast-stateless is for servers only; clients send stateless (5)")]
    BroadcastStateless,
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

/// One decoded frame.
#[derive(Debug)]
pub enum Frame {
    /// The server asked for a sign of life (the provider answers pings).
    Ping,
    /// The answer to our ping.
    Pong,
    /// A message for the document at `address`.
    Doc { address: String, message: Message },
}

/// A message addressed to one document.
#[derive(Debug)]
pub enum Message {
    /// A y-sync or awareness message (types 0, 1, 3, 4), decoded as on the
    /// y-websocket endpoint; exactly one.
    Sync(Inbound),
    /// The provider's token (empty when it has none) for this document.
    Auth { token: String },
    /// An application's string for the document's other peers.
    Stateless(String),
    /// The provider detaches this document.
    Close,
    /// A type a client has no business sending (sync status, an auth
    /// answer) or one this server does not know: skipped, not fatal, as
    /// Hocuspocus does.
    Ignored(u64),
}

/// The document part of an address (before the session separator).
pub fn doc_part(address: &str) -> &str {
    address.split(SESSION_SEPARATOR).next().unwrap_or_default()
}

/// Decodes one incoming frame. Either it decodes whole or it is refused.
pub fn decode(frame: &Bytes) -> Result<Frame, HocuspocusError> {
    match frame.as_ref() {
        [] => return Err(HocuspocusError::Empty),
        [PING] => return Ok(Frame::Ping),
        [PONG] => return Ok(Frame::Pong),
        _ => {}
    }
    let mut cursor = Cursor::new(frame);
    let address = cursor.read_buf().map_err(|e| HocuspocusError::Address(e.to_string()))?;
    if address.len() > MAX_ADDRESS {
        return Err(HocuspocusError::AddressTooLong(address.len()));
    }
    let address = std::str::from_utf8(address)
        .map_err(|e| HocuspocusError::Address(e.to_string()))?
        .to_string();
    // What follows the address: a y-websocket message for the sync types.
    let rest = frame.slice(cursor.next..);
    let kind: u64 = cursor.read_var().map_err(|e| HocuspocusError::Malformed {
        kind: u64::MAX,
        detail: e.to_string(),
    })?;
    let malformed = |e: yrs::encoding::read::Error| HocuspocusError::Malformed {
        kind,
        detail: e.to_string(),
    };
    let message = match kind {
        SYNC | AWARENESS | QUERY_AWARENESS => Message::Sync(one(protocol::decode_frame(&rest)?)?),
        SYNC_REPLY => {
            // As sync, under its own type byte (one byte: 4 < 128).
            let mut frame = Vec::with_capacity(rest.len());
            frame.push(SYNC as u8);
            frame.extend_from_slice(&rest[1..]);
            Message::Sync(one(protocol::decode_frame(&Bytes::from(frame))?)?)
        }
        AUTH => {
            let sub: u64 = cursor.read_var().map_err(malformed)?;
            if sub == AUTH_TOKEN {
                let token = cursor.read_string().map_err(malformed)?.to_string();
                // The provider's version follows (4.x); older ones send none.
                if cursor.next < frame.len() {
                    cursor.read_string().map_err(malformed)?;
                }
                Message::Auth { token }
            } else {
                Message::Ignored(kind)
            }
        }
        STATELESS => Message::Stateless(cursor.read_string().map_err(malformed)?.to_string()),
        BROADCAST_STATELESS => return Err(HocuspocusError::BroadcastStateless),
        CLOSE => Message::Close,
        other => Message::Ignored(other),
    };
    Ok(Frame::Doc { address, message })
}

fn one(mut messages: Vec<Inbound>) -> Result<Inbound, HocuspocusError> {
    match messages.len() {
        1 => Ok(messages.pop().expect("one message")),
        n => Err(HocuspocusError::SeveralMessages(n)),
    }
}

/// `address · body`, where `body` is a message as the document actor
/// writes it for y-websocket (`type · payload`) or one of this module's
/// bodies.
pub fn address(address: &str, body: &[u8]) -> Bytes {
    let mut buf = Vec::with_capacity(address.len() + 2 + body.len());
    buf.write_string(address);
    buf.extend_from_slice(body);
    Bytes::from(buf)
}

/// `auth · Authenticated · "read-write" | "readonly"`
pub fn authenticated(writable: bool) -> Bytes {
    let mut buf = vec![AUTH as u8, AUTH_AUTHENTICATED as u8];
    buf.write_string(if writable { "read-write" } else { "readonly" });
    Bytes::from(buf)
}

/// `auth · PermissionDenied · reason`
pub fn permission_denied(reason: &str) -> Bytes {
    let mut buf = vec![AUTH as u8, AUTH_PERMISSION_DENIED as u8];
    buf.write_string(reason);
    Bytes::from(buf)
}

/// `syncStatus · 1 | 0`: the update was stored (1) or refused (0).
pub fn sync_status(applied: bool) -> Bytes {
    Bytes::from_static(if applied {
        &[SYNC_STATUS as u8, 1]
    } else {
        &[SYNC_STATUS as u8, 0]
    })
}

/// `stateless · payload`
pub fn stateless(payload: &str) -> Bytes {
    let mut buf = vec![STATELESS as u8];
    buf.write_string(payload);
    Bytes::from(buf)
}

/// `close · reason`: the server detached this document.
pub fn close(reason: &str) -> Bytes {
    let mut buf = vec![CLOSE as u8];
    buf.write_string(reason);
    Bytes::from(buf)
}

/// The server's ping: one byte, no address.
pub fn ping() -> Bytes {
    Bytes::from_static(&[PING])
}

/// The answer to a client's ping.
pub fn pong() -> Bytes {
    Bytes::from_static(&[PONG])
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::updates::encoder::Encode;
    use yrs::{ReadTxn, StateVector, Text, Transact};

    fn framed(address: &str, body: &[u8]) -> Bytes {
        super::address(address, body)
    }

    fn doc(frame: &Bytes) -> (String, Message) {
        match decode(frame).unwrap() {
            Frame::Doc { address, message } => (address, message),
            other => panic!("not a document frame: {other:?}"),
        }
    }

    #[test]
    fn ping_and_pong_are_one_byte_without_address() {
        assert!(matches!(decode(&pong()).unwrap(), Frame::Pong));
        assert!(matches!(decode(&ping()).unwrap(), Frame::Ping));
        assert_eq!(decode(&Bytes::new()).unwrap_err(), HocuspocusError::Empty);
    }

    #[test]
    fn auth_with_and_without_provider_version() {
        let mut body = vec![AUTH as u8, AUTH_TOKEN as u8];
        body.write_string("secret");
        let old = framed("notes", &body);
        body.write_string("4.8.0");
        let new = framed("notes\0abc", &body);
        for (frame, want) in [(old, "notes"), (new, "notes\0abc")] {
            let (address, message) = doc(&frame);
            assert_eq!(address, want);
            assert_eq!(doc_part(&address), "notes");
            assert!(matches!(message, Message::Auth { token } if token == "secret"));
        }
    }

    #[test]
    fn sync_messages_are_the_y_websocket_messages_after_the_address() {
        let sv = StateVector::default();
        let (_, step1) = doc(&framed("d", &protocol::encode_step1(&sv)));
        assert!(matches!(step1, Message::Sync(Inbound::SyncStep1(_))));
        let ydoc = yrs::Doc::new();
        let text = ydoc.get_or_insert_text("t");
        text.insert(&mut ydoc.transact_mut(), 0, "hi");
        let update = ydoc.transact().encode_state_as_update_v1(&sv);
        let (_, message) = doc(&framed("d", &protocol::encode_update(&update)));
        let Message::Sync(Inbound::Update(update_in)) = message else {
            panic!("an update")
        };
        // Relayed as the y-websocket message, without the address.
        assert_eq!(update_in.relay_frame(), protocol::encode_update(&update));
        let (_, reply) = doc(&framed(
            "d",
            &[&[SYNC_REPLY as u8][..], &protocol::encode_step1(&sv)[1..]].concat(),
        ));
        assert!(matches!(reply, Message::Sync(Inbound::SyncStep1(_))));
        let (_, query) = doc(&framed("d", &[QUERY_AWARENESS as u8]));
        assert!(matches!(query, Message::Sync(Inbound::QueryAwareness)));
        let _ = sv.encode_v1();
    }

    #[test]
    fn stateless_close_and_unknown_types() {
        let (_, m) = doc(&framed("d", &stateless("hello")));
        assert!(matches!(m, Message::Stateless(s) if s == "hello"));
        let (_, m) = doc(&framed("d", &[CLOSE as u8]));
        assert!(matches!(m, Message::Close));
        let (_, m) = doc(&framed("d", &sync_status(true)));
        assert!(matches!(m, Message::Ignored(SYNC_STATUS)));
    }

    #[test]
    fn refusals() {
        let mut body = vec![BROADCAST_STATELESS as u8];
        body.write_string("x");
        assert_eq!(
            decode(&framed("d", &body)).unwrap_err(),
            HocuspocusError::BroadcastStateless
        );
        // Two y-sync messages after one address.
        let two = [
            protocol::encode_step1(&StateVector::default()),
            protocol::encode_step1(&StateVector::default()),
        ]
        .concat();
        assert_eq!(
            decode(&framed("d", &two)).unwrap_err(),
            HocuspocusError::SeveralMessages(2)
        );
        // Truncated address, address only, invalid UTF-8, too long.
        assert!(matches!(
            decode(&Bytes::from_static(&[5, b'a'])),
            Err(HocuspocusError::Address(_))
        ));
        assert!(matches!(
            decode(&framed("d", &[])),
            Err(HocuspocusError::Malformed { .. })
        ));
        assert!(matches!(
            decode(&Bytes::from_static(&[2, 0xff, 0xfe, 0])),
            Err(HocuspocusError::Address(_))
        ));
        let long = "x".repeat(MAX_ADDRESS + 1);
        assert_eq!(
            decode(&framed(&long, &[CLOSE as u8])).unwrap_err(),
            HocuspocusError::AddressTooLong(MAX_ADDRESS + 1)
        );
        // A truncated token.
        assert!(matches!(
            decode(&framed("d", &[AUTH as u8, AUTH_TOKEN as u8, 10, b'a'])),
            Err(HocuspocusError::Malformed { kind: AUTH, .. })
        ));
    }

    #[test]
    fn server_messages_decode_as_the_provider_reads_them() {
        // The provider reads sync status with readVarInt: 0 and 1 are the
        // same byte in both encodings.
        assert_eq!(sync_status(true).as_ref(), &[8, 1]);
        assert_eq!(sync_status(false).as_ref(), &[8, 0]);
        let frame = address("n", &authenticated(false));
        assert_eq!(frame.as_ref(), b"\x01n\x02\x02\x08readonly");
        assert_eq!(address("n", &permission_denied("no")).as_ref(), b"\x01n\x02\x01\x02no");
        assert_eq!(address("n", &close("bye")).as_ref(), b"\x01n\x07\x03bye");
    }
}
