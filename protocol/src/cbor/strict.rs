//! A zero-copy reader and a writer for deterministic CBOR, item by item.
//!
//! The same rule as [`super::from_canonical_slice`] (RFC 8949 §4.2.1: shortest heads,
//! definite lengths, map keys in ascending order of their encoded bytes, no duplicates),
//! enforced while reading instead of by re-encoding a parsed tree, for formats read often
//! enough that the tree costs more than the check (receipts, verified by the thousand).
//! The reader refuses any head that is not the shortest form, and a caller that reads a
//! map refuses keys that are not strictly ascending ([`Reader::key_after`]).

use super::CborError;

const MAJOR_UINT: u8 = 0;
const MAJOR_NINT: u8 = 1;
const MAJOR_BYTES: u8 = 2;
const MAJOR_TEXT: u8 = 3;
const MAJOR_ARRAY: u8 = 4;
const MAJOR_MAP: u8 = 5;
const MAJOR_TAG: u8 = 6;

/// Reads deterministic CBOR items from a byte slice.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

/// A map key as read: an integer or a text string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key<'a> {
    /// An unsigned or negative integer key.
    Int(i64),
    /// A text key.
    Text(&'a str),
}

impl<'a> Reader<'a> {
    /// A reader at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    /// Bytes read so far.
    pub fn position(&self) -> usize {
        self.at
    }

    /// Fails unless every byte has been read.
    pub fn finish(&self) -> Result<(), CborError> {
        match self.bytes.len() - self.at {
            0 => Ok(()),
            n => Err(CborError::TrailingBytes(n)),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CborError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| CborError::Malformed("truncated".into()))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    /// Reads a head: (major type, argument), refusing non-shortest arguments and
    /// indefinite lengths.
    fn head(&mut self) -> Result<(u8, u64), CborError> {
        let initial = self.take(1)?[0];
        let major = initial >> 5;
        let info = initial & 0x1f;
        let value = match info {
            0..=23 => return Ok((major, u64::from(info))),
            24 => u64::from(self.take(1)?[0]),
            25 => {
                let b = self.take(2)?;
                u64::from(u16::from_be_bytes([b[0], b[1]]))
            }
            26 => {
                let b = self.take(4)?;
                u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            }
            27 => {
                let b = self.take(8)?;
                u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
            }
            31 => return Err(CborError::NotCanonical),
            _ => {
                return Err(CborError::Malformed(
                    "reserved additional information".into(),
                ));
            }
        };
        let shortest = match info {
            24 => value >= 24,
            25 => value > 0xff,
            26 => value > 0xffff,
            _ => value > 0xffff_ffff,
        };
        if !shortest {
            return Err(CborError::NotCanonical);
        }
        Ok((major, value))
    }

    fn expect(&mut self, major: u8, expected: &'static str) -> Result<u64, CborError> {
        let (m, v) = self.head()?;
        if m != major {
            return Err(CborError::FieldType {
                field: "item",
                expected,
            });
        }
        Ok(v)
    }

    fn length(&mut self, major: u8, expected: &'static str) -> Result<usize, CborError> {
        let n = self.expect(major, expected)?;
        usize::try_from(n)
            .ok()
            // Every byte, item or entry takes at least one byte of input: a count beyond
            // what is left cannot be honest (and must not size an allocation).
            .filter(|n| *n <= self.bytes.len() - self.at)
            .ok_or_else(|| CborError::Malformed("length runs past the input".into()))
    }

    /// An unsigned integer.
    pub fn uint(&mut self) -> Result<u64, CborError> {
        self.expect(MAJOR_UINT, "an unsigned integer")
    }

    /// A byte string.
    pub fn bytes(&mut self) -> Result<&'a [u8], CborError> {
        let n = self.length(MAJOR_BYTES, "a byte string")?;
        self.take(n)
    }

    /// A text string (valid UTF-8).
    pub fn text(&mut self) -> Result<&'a str, CborError> {
        let n = self.length(MAJOR_TEXT, "a text string")?;
        std::str::from_utf8(self.take(n)?)
            .map_err(|_| CborError::Malformed("text is not UTF-8".into()))
    }

    /// An array head: the number of items.
    pub fn array(&mut self) -> Result<usize, CborError> {
        self.length(MAJOR_ARRAY, "an array")
    }

    /// A map head: the number of entries.
    pub fn map(&mut self) -> Result<usize, CborError> {
        self.length(MAJOR_MAP, "a map")
    }

    /// A tag number.
    pub fn tag(&mut self) -> Result<u64, CborError> {
        self.expect(MAJOR_TAG, "a tag")
    }

    /// A map key (integer or text) that must sort strictly after the key whose encoding
    /// ended at `previous` (the reader position before it; `None` for the first key):
    /// deterministic order, no duplicates.
    pub fn key_after(
        &mut self,
        previous: Option<(usize, usize)>,
    ) -> Result<(Key<'a>, (usize, usize)), CborError> {
        let start = self.at;
        let (major, value) = self.head()?;
        let key = match major {
            MAJOR_UINT => Key::Int(
                i64::try_from(value)
                    .map_err(|_| CborError::Malformed("key out of range".into()))?,
            ),
            MAJOR_NINT => Key::Int(
                i64::try_from(value)
                    .map(|v| -1 - v)
                    .map_err(|_| CborError::Malformed("key out of range".into()))?,
            ),
            MAJOR_TEXT => {
                let n = usize::try_from(value)
                    .map_err(|_| CborError::Malformed("length runs past the input".into()))?;
                Key::Text(
                    std::str::from_utf8(self.take(n)?)
                        .map_err(|_| CborError::Malformed("text is not UTF-8".into()))?,
                )
            }
            _ => {
                return Err(CborError::FieldType {
                    field: "map key",
                    expected: "an integer or a text string",
                });
            }
        };
        let span = (start, self.at);
        if let Some((s, e)) = previous {
            match self.bytes[s..e].cmp(&self.bytes[span.0..span.1]) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => return Err(CborError::DuplicateKey),
                std::cmp::Ordering::Greater => return Err(CborError::NotCanonical),
            }
        }
        Ok((key, span))
    }
}

/// Writes deterministic CBOR items (shortest heads, definite lengths). Map entries must
/// be written in deterministic key order by the caller.
#[derive(Clone, Debug, Default)]
pub struct Writer {
    out: Vec<u8>,
}

impl Writer {
    /// An empty writer with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            out: Vec::with_capacity(capacity),
        }
    }

    /// The bytes written.
    pub fn into_vec(self) -> Vec<u8> {
        self.out
    }

    fn head(&mut self, major: u8, value: u64) -> &mut Self {
        let m = major << 5;
        // Each arm's value fits the width it is written in (the match bounds it).
        match value {
            0..=23 => self.out.push(m | value as u8),
            24..=0xff => self.out.extend_from_slice(&[m | 24, value as u8]),
            0x100..=0xffff => {
                self.out.push(m | 25);
                self.out.extend_from_slice(&(value as u16).to_be_bytes());
            }
            0x1_0000..=0xffff_ffff => {
                self.out.push(m | 26);
                self.out.extend_from_slice(&(value as u32).to_be_bytes());
            }
            _ => {
                self.out.push(m | 27);
                self.out.extend_from_slice(&value.to_be_bytes());
            }
        }
        self
    }

    /// An unsigned integer.
    pub fn uint(&mut self, v: u64) -> &mut Self {
        self.head(MAJOR_UINT, v)
    }

    /// An integer (negative ones as major type 1).
    pub fn int(&mut self, v: i64) -> &mut Self {
        if v >= 0 {
            self.head(MAJOR_UINT, v.unsigned_abs())
        } else {
            self.head(MAJOR_NINT, (-1 - v).unsigned_abs())
        }
    }

    /// A byte string.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.head(MAJOR_BYTES, b.len() as u64);
        self.out.extend_from_slice(b);
        self
    }

    /// A text string.
    pub fn text(&mut self, s: &str) -> &mut Self {
        self.head(MAJOR_TEXT, s.len() as u64);
        self.out.extend_from_slice(s.as_bytes());
        self
    }

    /// An array head of `n` items.
    pub fn array(&mut self, n: usize) -> &mut Self {
        self.head(MAJOR_ARRAY, n as u64)
    }

    /// A map head of `n` entries.
    pub fn map(&mut self, n: usize) -> &mut Self {
        self.head(MAJOR_MAP, n as u64)
    }

    /// A tag.
    pub fn tag(&mut self, t: u64) -> &mut Self {
        self.head(MAJOR_TAG, t)
    }

    /// Bytes already encoded as one or more CBOR items.
    pub fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.out.extend_from_slice(b);
        self
    }
}

/// A map whose entries are added in any order and written in deterministic order (keys
/// by their encoded bytes, RFC 8949 section 4.2.1) by [`MapWriter::finish`]. The entries
/// are encoded as they come into one buffer, so a map of many entries costs two
/// allocations, not two per entry. Keys must be distinct (checked in debug builds), and
/// each closure must write exactly one item.
#[derive(Debug, Default)]
pub struct MapWriter {
    entries: Writer,
    /// Each entry's start, the end of its key and its end in `entries`.
    spans: Vec<(usize, usize, usize)>,
}

impl MapWriter {
    /// An empty map with room for `entries` entries of `bytes` bytes in all.
    pub fn with_capacity(entries: usize, bytes: usize) -> Self {
        Self {
            entries: Writer::with_capacity(bytes),
            spans: Vec::with_capacity(entries),
        }
    }

    /// Adds the entry whose key `key` writes and whose value `value` writes (one CBOR
    /// item each).
    pub fn entry(
        &mut self,
        key: impl FnOnce(&mut Writer),
        value: impl FnOnce(&mut Writer),
    ) -> &mut Self {
        let start = self.entries.out.len();
        key(&mut self.entries);
        let key_end = self.entries.out.len();
        value(&mut self.entries);
        self.spans.push((start, key_end, self.entries.out.len()));
        self
    }

    /// Writes the map (its head, then its entries in deterministic order) to `w`.
    pub fn finish(mut self, w: &mut Writer) {
        let bytes = &self.entries.out;
        self.spans
            .sort_by(|a, b| bytes[a.0..a.1].cmp(&bytes[b.0..b.1]));
        debug_assert!(
            self.spans
                .windows(2)
                .all(|p| bytes[p[0].0..p[0].1] != bytes[p[1].0..p[1].1]),
            "a map's keys must be distinct"
        );
        w.map(self.spans.len());
        for &(start, _, end) in &self.spans {
            w.raw(&bytes[start..end]);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_map_writer_puts_entries_in_deterministic_order() {
        let mut m = MapWriter::default();
        // Added in no particular order; the encoded keys sort bytewise: 0x01 (1), 0x19 0x0109
        // (265), 0x20 (-1), 0x61 "a", 0x62 "bb", 0x63 "abc" (shorter text first).
        m.entry(
            |k| {
                k.text("bb");
            },
            |v| {
                v.uint(2);
            },
        )
        .entry(
            |k| {
                k.int(265);
            },
            |v| {
                v.bytes(b"x");
            },
        )
        .entry(
            |k| {
                k.text("a");
            },
            |v| {
                v.text("long value");
            },
        )
        .entry(
            |k| {
                k.int(-1);
            },
            |v| {
                v.uint(0);
            },
        )
        .entry(
            |k| {
                k.text("abc");
            },
            |v| {
                v.array(0);
            },
        )
        .entry(
            |k| {
                k.int(1);
            },
            |v| {
                v.uint(1000);
            },
        );
        let mut w = Writer::default();
        m.finish(&mut w);
        let b = w.into_vec();
        let mut r = Reader::new(&b);
        assert_eq!(r.map().unwrap(), 6);
        let mut previous = None;
        let mut keys = Vec::new();
        for _ in 0..6 {
            // `key_after` refuses keys out of deterministic order.
            let (key, span) = r.key_after(previous).unwrap();
            previous = Some(span);
            keys.push(format!("{key:?}"));
            match key {
                Key::Text("a") => assert_eq!(r.text().unwrap(), "long value"),
                Key::Text("abc") => assert_eq!(r.array().unwrap(), 0),
                Key::Int(265) => assert_eq!(r.bytes().unwrap(), b"x"),
                _ => {
                    r.uint().unwrap();
                }
            }
        }
        r.finish().unwrap();
        assert_eq!(
            keys,
            [
                "Int(1)",
                "Int(265)",
                "Int(-1)",
                "Text(\"a\")",
                "Text(\"bb\")",
                "Text(\"abc\")"
            ]
        );
        // An empty map is its head alone.
        let mut w = Writer::default();
        MapWriter::default().finish(&mut w);
        assert_eq!(w.into_vec(), [0xa0]);
    }

    #[test]
    fn heads_are_shortest_and_round_trip() {
        for v in [
            0u64,
            23,
            24,
            255,
            256,
            65535,
            65536,
            u32::MAX as u64,
            u64::MAX,
        ] {
            let mut w = Writer::default();
            w.uint(v);
            let b = w.into_vec();
            let mut r = Reader::new(&b);
            assert_eq!(r.uint().unwrap(), v);
            r.finish().unwrap();
            // The same value under the shortest head, and it matches ciborium's encoding.
            let mut c = Vec::new();
            ciborium::into_writer(&ciborium::Value::from(v), &mut c).unwrap();
            assert_eq!(b, c);
        }
        // 5 written in one extra byte is not deterministic.
        assert_eq!(Reader::new(&[0x18, 5]).uint(), Err(CborError::NotCanonical));
        assert_eq!(
            Reader::new(&[0x19, 0, 0xff]).uint(),
            Err(CborError::NotCanonical)
        );
        // Indefinite-length byte string.
        assert_eq!(Reader::new(&[0x5f]).bytes(), Err(CborError::NotCanonical));
        // A length beyond the input.
        assert!(
            Reader::new(&[0x5a, 0xff, 0xff, 0xff, 0xff])
                .bytes()
                .is_err()
        );
    }

    #[test]
    fn keys_must_ascend() {
        let mut w = Writer::default();
        w.map(3).int(1).uint(0).int(-8).uint(0).text("a").uint(0);
        let b = w.into_vec();
        let mut r = Reader::new(&b);
        assert_eq!(r.map().unwrap(), 3);
        let mut prev = None;
        let mut keys = Vec::new();
        for _ in 0..3 {
            let (k, span) = r.key_after(prev).unwrap();
            keys.push(k);
            r.uint().unwrap();
            prev = Some(span);
        }
        assert_eq!(keys, [Key::Int(1), Key::Int(-8), Key::Text("a")]);
        // Descending and duplicate keys.
        let b = [0xa2, 0x02, 0x00, 0x01, 0x00];
        let mut r = Reader::new(&b);
        r.map().unwrap();
        let (_, s) = r.key_after(None).unwrap();
        r.uint().unwrap();
        assert_eq!(r.key_after(Some(s)), Err(CborError::NotCanonical));
        let b = [0xa2, 0x01, 0x00, 0x01, 0x00];
        let mut r = Reader::new(&b);
        r.map().unwrap();
        let (_, s) = r.key_after(None).unwrap();
        r.uint().unwrap();
        assert_eq!(r.key_after(Some(s)), Err(CborError::DuplicateKey));
    }
}
