//! Structural checks of untrusted input before yrs decodes it.
//!
//! yrs trusts the counts it reads: an awareness message or a state vector
//! that announces 200 million entries in 20 bytes makes it reserve (and
//! initialise) a hash table of that size, a third of a second and hundreds of
//! megabytes per frame; an update nesting arrays a few hundred thousand deep
//! overflows its recursive decoder's stack, which aborts the whole process.
//! These walkers read the same lib0 v1 layouts as yrs, without allocating,
//! and refuse any count larger than the bytes left to hold it, any nesting
//! deeper than [`MAX_DEPTH`], and clocks past [`MAX_CLOCK`].
//!
//! They must accept everything Yjs writes: they only add limits, never
//! reinterpret. yrs still decodes (and may refuse) what passes.

use std::fmt;

/// Deepest nesting of Any values (arrays and maps inside arrays and maps).
/// Yjs documents nest JSON values a handful of levels; yrs recurses once per
/// level on a thread stack of 2 MiB.
pub(crate) const MAX_DEPTH: usize = 64;

/// Highest clock an update may reach. A client's clock counts its own
/// operations, so real documents stay many orders of magnitude below; yrs's
/// clock arithmetic is `u32` and wraps near `u32::MAX` (found by fuzzing).
pub(crate) const MAX_CLOCK: u64 = (u32::MAX / 2) as u64;

/// Why input was refused, shown to the client in the close reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(String);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub(crate) type Result<T> = std::result::Result<T, Invalid>;

fn invalid<T>(what: impl Into<String>) -> Result<T> {
    Err(Invalid(what.into()))
}

/// Content types of an item (the low five bits of its info byte), as yrs
/// and Yjs number them.
pub(crate) mod content {
    pub const GC: u8 = 0;
    pub const DELETED: u8 = 1;
    pub const JSON: u8 = 2;
    pub const BINARY: u8 = 3;
    pub const STRING: u8 = 4;
    pub const EMBED: u8 = 5;
    pub const FORMAT: u8 = 6;
    pub const TYPE: u8 = 7;
    pub const ANY: u8 = 8;
    pub const DOC: u8 = 9;
    pub const SKIP: u8 = 10;
}

pub(crate) const HAS_ORIGIN: u8 = 0b1000_0000;
pub(crate) const HAS_RIGHT_ORIGIN: u8 = 0b0100_0000;
pub(crate) const HAS_PARENT_SUB: u8 = 0b0010_0000;
/// Type refs (yrs `TYPE_REFS_*`) whose encoding carries a name.
const XML_ELEMENT: u8 = 3;

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        let Some(&b) = self.buf.get(self.pos) else {
            return invalid("truncated");
        };
        self.pos += 1;
        Ok(b)
    }

    fn skip(&mut self, n: u64) -> Result<()> {
        if n > self.left() as u64 {
            return invalid(format!("claims {n} bytes where {} are left", self.left()));
        }
        self.pos += n as usize;
        Ok(())
    }

    /// An unsigned lib0 varint (values past 64 bits are refused).
    ///
    /// Not yrs's `read_var`: that one shifts with wrap-around, so eleven
    /// bytes or bits past the 64th read as a smaller number, and a
    /// validator must refuse what yrs would silently misread.
    pub(crate) fn var(&mut self) -> Result<u64> {
        let mut value = 0u64;
        let mut shift = 0u32;
        loop {
            let b = self.u8()?;
            if shift >= 64 || (shift == 63 && b > 1) {
                return invalid("varint longer than 64 bits");
            }
            value |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(value);
            }
            shift += 7;
        }
    }

    /// A signed lib0 varint: skipped, its value does not matter here (so
    /// not read with yrs's `read_var_signed`, which would compute it).
    fn signed_var(&mut self) -> Result<()> {
        for _ in 0..11 {
            if self.u8()? < 0x80 {
                return Ok(());
            }
        }
        invalid("signed varint too long")
    }

    /// A count of things that each take at least `min_bytes` bytes.
    pub(crate) fn count(&mut self, min_bytes: u64) -> Result<u64> {
        let n = self.var()?;
        if n.saturating_mul(min_bytes) > self.left() as u64 {
            return invalid(format!("claims {n} entries where {} bytes are left", self.left()));
        }
        Ok(n)
    }

    /// A string's length in UTF-16 code units, which is how Yjs and yrs
    /// count its clock ticks (yrs checks that it is UTF-8).
    fn utf16_len(&mut self) -> Result<u64> {
        let n = self.var()?;
        let start = self.pos;
        self.skip(n)?;
        let units = self.buf[start..self.pos]
            .iter()
            .map(|&b| match b {
                0x80..=0xbf => 0, // continuation byte
                0xf0.. => 2,      // four bytes: a surrogate pair
                _ => 1,
            })
            .sum();
        Ok(units)
    }

    /// A length-prefixed byte string.
    pub(crate) fn bytes(&mut self) -> Result<u64> {
        let n = self.var()?;
        self.skip(n)?;
        Ok(n)
    }

    pub(crate) fn id(&mut self) -> Result<()> {
        self.var()?;
        self.var()?;
        Ok(())
    }

    /// A lib0 Any value, at most `depth` levels deep.
    pub(crate) fn any(&mut self, depth: usize) -> Result<()> {
        if depth == 0 {
            return invalid(format!("values nested deeper than {MAX_DEPTH} levels"));
        }
        match self.u8()? {
            127 | 126 | 121 | 120 => Ok(()),
            125 => self.signed_var(),
            124 => self.skip(4),
            123 | 122 => self.skip(8),
            119 | 116 => self.bytes().map(drop),
            118 => {
                for _ in 0..self.count(2)? {
                    self.bytes()?;
                    self.any(depth - 1)?;
                }
                Ok(())
            }
            117 => {
                for _ in 0..self.count(1)? {
                    self.any(depth - 1)?;
                }
                Ok(())
            }
            tag => invalid(format!("unknown value type {tag}")),
        }
    }
}

/// A state vector (sync step 1): `count • (client, clock)*`.
pub fn state_vector(buf: &[u8]) -> Result<()> {
    let mut r = Reader::new(buf);
    for _ in 0..r.count(2)? {
        r.var()?;
        r.var()?;
    }
    Ok(())
}

/// An awareness update: `count • (client, clock, json)*`.
pub fn awareness(buf: &[u8]) -> Result<()> {
    let mut r = Reader::new(buf);
    for _ in 0..r.count(3)? {
        r.var()?;
        r.var()?;
        r.bytes()?;
    }
    Ok(())
}

/// What an update holds, as far as limits and ordering care.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shape {
    /// Items that create a shared type (a nested map, array, text, XML
    /// node). A document's nesting depth can never exceed how many it holds.
    pub types: u64,
    /// For each client the update holds blocks of, which of that client's
    /// clocks it needs the document to hold already, and where it ends.
    pub spans: Vec<Span>,
}

/// One client's blocks in an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// The client id, as yrs reads it (53 bits).
    pub client: u64,
    /// The document must hold this client's clocks below `needs` for the
    /// update to integrate in order: the clock of its first block, or of
    /// the first block after a gap (a skip) between its blocks.
    pub needs: u64,
    /// The clock after its last block.
    pub end: u64,
}

/// yrs keeps the low 53 bits of a client id (what JavaScript numbers hold).
pub(crate) const CLIENT_BITS: u64 = (1 << 53) - 1;

/// A Yjs v1 update: `clients • (blocks • client • clock • block*)* •
/// delete set`.
pub fn update_v1(buf: &[u8]) -> Result<Shape> {
    let mut shape = Shape::default();
    let mut r = Reader::new(buf);
    let groups = r.count(3)?;
    // Every group's client, kept only when there are several (most updates
    // hold one: no allocation for them).
    let mut clients = Vec::new();
    for _ in 0..groups {
        let blocks = r.count(1)?;
        let client = r.var()? & CLIENT_BITS;
        if groups > 1 {
            clients.push(client);
        }
        let mut clock = r.var()?;
        let mut span: Option<Span> = None;
        let mut after_skip = true;
        for _ in 0..blocks {
            let (len, skip) = block(&mut r, &mut shape)?;
            if !skip {
                let span = span.get_or_insert(Span {
                    client,
                    needs: clock,
                    end: clock,
                });
                if after_skip {
                    span.needs = clock;
                }
                span.end = clock + len;
            }
            after_skip = skip;
            clock = clock.saturating_add(len);
            if clock > MAX_CLOCK {
                return invalid(format!("client {client}'s blocks reach clock {clock}"));
            }
        }
        shape.spans.extend(span);
    }
    // Encoders write each client's blocks as one group. yrs reads a
    // client's second group into the same list, out of clock order, and
    // integrating that list corrupted its memory (a segfault found by cargo
    // fuzz, tests/fuzz.rs); Yjs would drop the first group.
    clients.sort_unstable();
    if let Some(pair) = clients.windows(2).find(|pair| pair[0] == pair[1]) {
        return invalid(format!("client {} has two groups of blocks in one update", pair[0]));
    }
    for _ in 0..r.count(2)? {
        let client = r.var()?;
        for _ in 0..r.count(2)? {
            let start = r.var()?;
            let len = r.var()?;
            if start.saturating_add(len) > MAX_CLOCK {
                return invalid(format!(
                    "deletions of client {client} reach clock {}",
                    start.saturating_add(len)
                ));
            }
        }
    }
    Ok(shape)
}

/// One block: how many clock ticks it spans, and whether it is a skip (a
/// gap in the update).
pub(crate) fn block(r: &mut Reader<'_>, shape: &mut Shape) -> Result<(u64, bool)> {
    let info = r.u8()?;
    if info == content::GC || info == content::SKIP {
        return Ok((r.var()?, info == content::SKIP));
    }
    Ok((item(r, info, shape)?, false))
}

/// Skips an item's header: its origins or, without them, its parent and
/// parent sub. Shared with `originals`, which walks the same blocks.
pub(crate) fn item_header(r: &mut Reader<'_>, info: u8) -> Result<()> {
    if info & HAS_ORIGIN != 0 {
        r.id()?;
    }
    if info & HAS_RIGHT_ORIGIN != 0 {
        r.id()?;
    }
    if info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN) == 0 {
        if r.var()? == 1 {
            r.bytes()?; // parent: a root's name
        } else {
            r.id()?; // parent: a nested type's item
        }
        if info & HAS_PARENT_SUB != 0 {
            r.bytes()?;
        }
    }
    Ok(())
}

fn item(r: &mut Reader<'_>, info: u8, shape: &mut Shape) -> Result<u64> {
    let kind = info & 0b1_1111;
    item_header(r, info)?;
    match kind {
        content::DELETED => r.var(),
        content::JSON => invalid("legacy JSON content (Yjs 12 and older) is not accepted"),
        content::BINARY | content::EMBED => r.bytes().map(|_| 1),
        content::STRING => r.utf16_len(),
        content::FORMAT => {
            r.bytes()?;
            r.bytes()?;
            Ok(1)
        }
        content::TYPE => {
            if r.u8()? == XML_ELEMENT {
                r.bytes()?;
            }
            shape.types += 1;
            Ok(1)
        }
        content::ANY => {
            let n = r.count(1)?;
            for _ in 0..n {
                r.any(MAX_DEPTH)?;
            }
            Ok(n)
        }
        content::DOC => {
            r.bytes()?; // guid
            r.any(MAX_DEPTH)?; // options
            Ok(1)
        }
        other => invalid(format!("unknown content type {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::sync::awareness::{AwarenessUpdate, AwarenessUpdateEntry};
    use yrs::updates::encoder::Encode;
    use yrs::{Any, Array, Doc, Map, ReadTxn, StateVector, Text, Transact, WriteTxn, XmlFragment};

    fn var(n: u64) -> Vec<u8> {
        use yrs::encoding::write::Write;
        let mut v = Vec::new();
        v.write_var(n);
        v
    }

    /// Everything Yjs/yrs writes passes: every content type, nested values,
    /// deletions, several clients.
    #[test]
    fn real_updates_pass() {
        let doc = Doc::with_client_id(1);
        let other = Doc::with_client_id(u64::from(u32::MAX) * 1000);
        for d in [&doc, &other] {
            let mut txn = d.transact_mut();
            let text = txn.get_or_insert_text("text");
            text.insert(&mut txn, 0, "héllo wörld 🎉");
            text.format(&mut txn, 0, 5, [("bold".into(), Any::Bool(true))].into_iter().collect());
            text.insert_embed(&mut txn, 3, Any::from(vec![Any::from(1), Any::from("x")]));
            text.remove_range(&mut txn, 1, 2);
            let map = txn.get_or_insert_map("map");
            map.insert(&mut txn, "n", 1.5);
            map.insert(&mut txn, "big", i64::MIN);
            map.insert(&mut txn, "bin", Any::from(vec![1u8, 2, 3].as_slice()));
            map.insert(&mut txn, "nested", yrs::MapPrelim::default());
            let array = txn.get_or_insert_array("array");
            let deep = (0..20).fold(Any::Null, |acc, i| Any::from(vec![acc, Any::from(i)]));
            array.insert(&mut txn, 0, deep);
            array.insert(&mut txn, 1, yrs::ArrayPrelim::default());
            let xml = txn.get_or_insert_xml_fragment("prosemirror");
            let p = xml.insert(&mut txn, 0, yrs::XmlElementPrelim::empty("paragraph"));
            p.insert(&mut txn, 0, yrs::XmlTextPrelim::new("para"));
            xml.insert(&mut txn, 1, yrs::XmlTextPrelim::new("loose"));
        }
        let update = doc.transact().encode_state_as_update_v1(&StateVector::default());
        let shape = update_v1(&update).unwrap();
        assert_eq!(shape.types, 5, "map, array, paragraph and two XML texts");
        // clocks count UTF-16 units, as yrs does ("🎉" is two, "é" one)
        let clock = doc.transact().state_vector().get(&yrs::ClientID::new(1));
        assert_eq!(
            shape.spans,
            [Span {
                client: 1,
                needs: 0,
                end: u64::from(clock)
            }]
        );
        let merged = yrs::merge_updates_v1([
            update.as_slice(),
            &other.transact().encode_state_as_update_v1(&StateVector::default()),
        ])
        .unwrap();
        assert_eq!(update_v1(&merged).unwrap().types, 10);
        assert_eq!(state_vector(&doc.transact().state_vector().encode_v1()), Ok(()));
        let mut clients = std::collections::HashMap::new();
        clients.insert(
            yrs::ClientID::new(7),
            AwarenessUpdateEntry {
                clock: 3,
                json: r#"{"user":{"name":"a"}}"#.into(),
            },
        );
        assert_eq!(awareness(&AwarenessUpdate { clients }.encode_v1()), Ok(()));
    }

    #[test]
    fn counts_larger_than_the_input_are_refused() {
        let bomb = [var(200_000_000), vec![1, 1, 0]].concat();
        assert!(awareness(&bomb).is_err());
        assert!(state_vector(&bomb).is_err());
        assert!(update_v1(&bomb).is_err());
        // an Any map inside an update
        let any_map = [vec![1, 1, 5, 0, 8, 1, 1, b't', 1, 118], var(200_000_000), vec![0]].concat();
        assert!(update_v1(&any_map).unwrap_err().0.contains("claims 200000000 entries"));
    }

    #[test]
    fn a_client_in_two_groups_is_refused() {
        // Two groups of client 5, each one string item "a" under root "t":
        // clocks 0 and 1, each group valid alone.
        let group = |clock: u8| vec![1, 5, clock, 4, 1, 1, b't', 1, b'a'];
        let one = [vec![1], group(0), vec![0]].concat();
        assert!(update_v1(&one).is_ok());
        let twice = [vec![2], group(0), group(1), vec![0]].concat();
        assert!(update_v1(&twice).unwrap_err().0.contains("client 5 has two groups"));
        // Different clients are fine.
        let two = [vec![2], group(0), vec![1, 6, 0, 4, 1, 1, b't', 1, b'a'], vec![0]].concat();
        assert!(update_v1(&two).is_ok());
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut u = vec![1, 1, 5, 0, 8, 1, 1, b't', 1];
        for _ in 0..100_000 {
            u.extend([117, 1]);
        }
        u.extend([126, 0]);
        assert!(update_v1(&u).unwrap_err().0.contains("nested deeper"));
    }

    #[test]
    fn clocks_near_the_top_and_json_content_are_refused() {
        let gc = [vec![1, 1, 7], var(u64::from(u32::MAX)), vec![0, 5, 0]].concat();
        assert!(update_v1(&gc).unwrap_err().0.contains("reach clock"));
        let json = vec![1, 1, 5, 0, 2, 1, 1, b't', 1, 2, b'{', b'}', 0];
        assert!(update_v1(&json).unwrap_err().0.contains("legacy JSON"));
    }
}
