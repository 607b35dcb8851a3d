//! y-sync frames the load generator builds and reads without a CRDT.
//!
//! A writer that had to run a yrs transaction per update would spend the load
//! generator's core on itself; instead [`Appender`] writes the Yjs v1 bytes of
//! "append this text after my last character" directly (a unit test checks
//! that yrs reads them back as the intended text). Every update carries a
//! [`Mark`]: a sequence number and the intended send time, as ASCII digits in
//! the inserted text, so that any server (one that relays the bytes, or one
//! that re-encodes the update as the reference server does) delivers them
//! intact and a reader finds them without applying anything.

use yrs::encoding::read::{Cursor, Read};
use yrs::encoding::write::Write;

/// Top-level message types and sync sub-types of y-protocols.
pub const MSG_SYNC: u8 = 0;
pub const MSG_AWARENESS: u8 = 1;
pub const MSG_QUERY_AWARENESS: u8 = 3;
pub const SYNC_STEP1: u8 = 0;
pub const SYNC_STEP2: u8 = 1;
pub const SYNC_UPDATE: u8 = 2;

/// The root text every generated update appends to.
const ROOT: &str = "t";

const MARK_BYTE: u8 = b'~';
const SEQ_DIGITS: usize = 8;
const TIME_DIGITS: usize = 12;
/// Length of the inserted text: `~` + 8 digits of sequence + 12 of micros.
const MARK_LEN: usize = 1 + SEQ_DIGITS + TIME_DIGITS;

/// What an update carries: who can tell how late it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub seq: u64,
    /// Intended send time, microseconds on the load generator's clock.
    pub micros: u64,
}

impl Mark {
    pub fn text(&self) -> [u8; MARK_LEN] {
        let mut out = [b'0'; MARK_LEN];
        out[0] = MARK_BYTE;
        write_digits(&mut out[1..1 + SEQ_DIGITS], self.seq);
        write_digits(&mut out[1 + SEQ_DIGITS..], self.micros);
        out
    }

    /// Reads a mark from exactly `MARK_LEN` bytes.
    pub fn parse(bytes: &[u8]) -> Option<Mark> {
        if bytes.len() != MARK_LEN || bytes[0] != MARK_BYTE {
            return None;
        }
        Some(Mark {
            seq: read_digits(&bytes[1..1 + SEQ_DIGITS])?,
            micros: read_digits(&bytes[1 + SEQ_DIGITS..])?,
        })
    }
}

fn write_digits(out: &mut [u8], mut value: u64) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

fn read_digits(bytes: &[u8]) -> Option<u64> {
    bytes.iter().try_fold(0u64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + u64::from(b - b'0'))
    })
}

/// A sync message frame: `0 • sub • varUint(len) • payload`.
pub fn sync_frame(sub: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 6);
    out.push(MSG_SYNC);
    out.push(sub);
    out.write_var(payload.len());
    out.extend_from_slice(payload);
    out
}

/// step1 with an empty state vector (a client that holds nothing).
pub fn empty_step1() -> Vec<u8> {
    sync_frame(SYNC_STEP1, &[0])
}

/// step2 with an empty update: "I have nothing you lack".
pub fn empty_step2() -> Vec<u8> {
    sync_frame(SYNC_STEP2, &[0, 0])
}

/// An awareness message with one client's state (`json`, or `null` to
/// remove it), as y-protocols' `encodeAwarenessUpdate` writes it.
pub fn awareness(client: u64, clock: u32, json: &str) -> Vec<u8> {
    let mut payload = Vec::with_capacity(json.len() + 16);
    payload.write_var(1u32);
    payload.write_var(client);
    payload.write_var(u64::from(clock));
    payload.write_var(json.len() as u64);
    payload.extend_from_slice(json.as_bytes());
    let mut out = Vec::with_capacity(payload.len() + 6);
    out.push(MSG_AWARENESS);
    out.write_var(payload.len() as u64);
    out.extend_from_slice(&payload);
    out
}

/// What kind of message a frame starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Step1,
    Step2,
    Update,
    Awareness,
    Other,
}

pub fn kind(frame: &[u8]) -> Kind {
    match frame {
        [MSG_SYNC, SYNC_STEP1, ..] => Kind::Step1,
        [MSG_SYNC, SYNC_STEP2, ..] => Kind::Step2,
        [MSG_SYNC, SYNC_UPDATE, ..] => Kind::Update,
        [MSG_AWARENESS, ..] => Kind::Awareness,
        _ => Kind::Other,
    }
}

/// The payload of a sync message frame (the update of step2/update).
pub fn sync_payload(frame: &[u8]) -> Option<&[u8]> {
    let rest = frame.get(2..)?;
    let mut cursor = Cursor::new(rest);
    let len: usize = cursor.read_var().ok()?;
    rest.get(cursor.next..cursor.next.checked_add(len)?)
}

/// The mark of an update frame that holds one generated append. The text is
/// the last thing in such an update, followed by an empty delete set (one
/// zero byte), so it is looked for there first; anything else is scanned.
pub fn find_mark(frame: &[u8]) -> Option<Mark> {
    if kind(frame) != Kind::Update {
        return None;
    }
    let update = sync_payload(frame)?;
    if update.len() > MARK_LEN {
        let at = update.len() - 1 - MARK_LEN;
        if let Some(mark) = Mark::parse(&update[at..at + MARK_LEN]) {
            return Some(mark);
        }
    }
    update
        .windows(MARK_LEN)
        .filter(|w| w[0] == MARK_BYTE)
        .find_map(Mark::parse)
}

/// Every mark of an update frame: one, unless the server merged updates.
pub fn frame_marks(frame: &[u8]) -> impl Iterator<Item = Mark> + '_ {
    let update = if kind(frame) == Kind::Update {
        sync_payload(frame).unwrap_or_default()
    } else {
        &[]
    };
    all_marks(update)
}

/// Every mark in an update (a document's whole state: one client's appends
/// may be merged into one string there, so marks are found by scanning).
pub fn all_marks(update: &[u8]) -> impl Iterator<Item = Mark> + '_ {
    update
        .windows(MARK_LEN)
        .filter(|w| w[0] == MARK_BYTE)
        .filter_map(Mark::parse)
}

/// Appends text to the root text [`ROOT`] as one client, each append an update
/// of its own, encoded by hand (Yjs v1): one struct, a string item whose left
/// origin is this client's previous character.
#[derive(Debug, Clone)]
pub struct Appender {
    client: u64,
    clock: u64,
}

impl Appender {
    /// `client` must be unique among the writers of a document (and below 2^53).
    pub fn new(client: u64) -> Self {
        Self { client, clock: 0 }
    }

    /// The Yjs v1 update that appends `text` (ASCII) after this client's
    /// previous append (the first one goes to the start of the text).
    pub fn update(&mut self, text: &[u8]) -> Vec<u8> {
        let mut u = Vec::with_capacity(text.len() + 24);
        u.write_var(1u32); // one client
        u.write_var(1u32); // one struct
        u.write_var(self.client);
        u.write_var(self.clock);
        if self.clock == 0 {
            // String content (4), no origins: the parent is named.
            u.push(4);
            u.write_var(1u32);
            u.write_var(ROOT.len());
            u.extend_from_slice(ROOT.as_bytes());
        } else {
            u.push(0x80 | 4); // has a left origin
            u.write_var(self.client);
            u.write_var(self.clock - 1);
        }
        u.write_var(text.len());
        u.extend_from_slice(text);
        u.write_var(0u32); // empty delete set
        self.clock += text.len() as u64;
        u
    }

    /// An update frame carrying `mark` as its text.
    pub fn frame(&mut self, mark: Mark) -> Vec<u8> {
        sync_frame(SYNC_UPDATE, &self.update(&mark.text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::updates::decoder::Decode;
    use yrs::{GetString, ReadTxn, Transact, Update};

    #[test]
    fn marks_round_trip() {
        let mark = Mark {
            seq: 1234,
            micros: 987_654_321,
        };
        let text = mark.text();
        assert_eq!(&text, b"~00001234000987654321");
        assert_eq!(Mark::parse(&text), Some(mark));
        assert_eq!(Mark::parse(b"~0000123400098765432x"), None);
    }

    /// The hand-made bytes are what yrs would accept from two real clients
    /// typing concurrently: both texts arrive whole and in order.
    #[test]
    fn appended_updates_apply_in_yrs() {
        let doc = yrs::Doc::new();
        let text = doc.get_or_insert_text(ROOT);
        let mut a = Appender::new(1001);
        let mut b = Appender::new(1002);
        let mut expected_a = String::new();
        let mut expected_b = String::new();
        for seq in 0..50u64 {
            for (app, expected, base) in [(&mut a, &mut expected_a, 0), (&mut b, &mut expected_b, 1_000_000)] {
                let mark = Mark {
                    seq,
                    micros: base + seq,
                };
                let frame = app.frame(mark);
                assert_eq!(find_mark(&frame), Some(mark));
                assert_eq!(frame_marks(&frame).collect::<Vec<_>>(), vec![mark]);
                let update = Update::decode_v1(sync_payload(&frame).unwrap()).unwrap();
                let mut txn = doc.transact_mut();
                txn.apply_update(update).unwrap();
                assert!(!txn.has_missing_updates());
                drop(txn);
                expected.push_str(std::str::from_utf8(&mark.text()).unwrap());
            }
        }
        let got = text.get_string(&doc.transact());
        assert_eq!(got.len(), expected_a.len() + expected_b.len());
        // Each client's appends stay contiguous and in order.
        assert!(got.contains(&expected_a), "{got}");
        assert!(got.contains(&expected_b), "{got}");
    }

    #[test]
    fn a_generated_update_is_about_thirty_bytes() {
        let mut a = Appender::new(1);
        a.frame(Mark { seq: 0, micros: 0 });
        for _ in 0..100_000 {
            a.frame(Mark { seq: 1, micros: 1 });
        }
        let frame = a.frame(Mark { seq: 2, micros: 2 });
        let update = sync_payload(&frame).unwrap();
        assert!((28..=40).contains(&update.len()), "{}", update.len());
    }

    #[test]
    fn awareness_messages_decode_in_yrs() {
        use yrs::sync::{Message, MessageReader};
        use yrs::updates::decoder::DecoderV1;
        let mut frame = awareness(12345, 7, r#"{"cursor":1}"#);
        frame.push(MSG_QUERY_AWARENESS);
        frame.extend(empty_step1());
        let mut decoder = DecoderV1::new(yrs::encoding::read::Cursor::new(&frame));
        let messages: Vec<Message> = MessageReader::new(&mut decoder).map(Result::unwrap).collect();
        assert_eq!(messages.len(), 3);
        let Message::Awareness(update) = &messages[0] else {
            panic!("{:?}", messages[0]);
        };
        let entry = &update.clients[&yrs::ClientID::new(12345)];
        assert_eq!((entry.clock, &*entry.json), (7, r#"{"cursor":1}"#));
        assert!(matches!(messages[1], Message::AwarenessQuery));
        assert!(matches!(
            messages[2],
            Message::Sync(yrs::sync::SyncMessage::SyncStep1(_))
        ));
    }

    #[test]
    fn frames_are_recognised() {
        assert_eq!(kind(&empty_step1()), Kind::Step1);
        assert_eq!(kind(&empty_step2()), Kind::Step2);
        assert_eq!(sync_payload(&empty_step2()), Some(&[0u8, 0][..]));
        assert_eq!(kind(&[1, 0]), Kind::Awareness);
    }
}
