//! Segment arithmetic of the `AES256_GCM_HKDF` streaming-AEAD wire format.
//!
//! ```text
//! stream  = header || segment_0 || segment_1 || ... || segment_{n-1}
//! header  = header_len (1 byte, = 40) || salt (32 bytes) || nonce_prefix (7 bytes)
//! segment = AES-256-GCM ciphertext || tag (16 bytes)
//! ```
//!
//! Every segment but the last fills the ciphertext segment size exactly; segment 0 is
//! shorter by the header length. The last segment may be anything from a bare tag (only
//! for an empty stream) up to a full segment. These are Tink's rules (first-segment offset
//! 0), so the lengths here match Tink's byte for byte.

use std::ops::Range;

use super::StreamError;

/// Length of the data key (input key material) and of the HKDF-derived segment key.
pub const KEY_LEN: usize = 32;
/// Length of the per-stream random HKDF salt (equal to the derived key size in Tink).
pub const SALT_LEN: usize = 32;
/// Length of the per-stream random nonce prefix.
pub const NONCE_PREFIX_LEN: usize = 7;
/// Length of the stream header: a length byte, the salt and the nonce prefix.
pub const HEADER_LEN: usize = 1 + SALT_LEN + NONCE_PREFIX_LEN;
/// Length of an AES-GCM tag.
pub const TAG_LEN: usize = 16;
/// Smallest ciphertext segment size: segment 0 must carry at least one plaintext byte.
pub const MIN_SEGMENT_SIZE: u32 = (HEADER_LEN + TAG_LEN + 1) as u32;
/// Largest ciphertext segment size (Tink stores it as a signed 32-bit integer).
pub const MAX_SEGMENT_SIZE: u32 = i32::MAX as u32;
/// Default ciphertext segment size: 4 MiB. See `docs/SEALED-WEIGHTS.md` for the reasoning.
pub const DEFAULT_SEGMENT_SIZE: u32 = 4 << 20;
/// Segment numbers are 32-bit in the nonce, so a stream has at most 2^32 segments.
pub const MAX_SEGMENTS: u64 = 1 << 32;

/// A validated ciphertext segment size in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentSize(u32);

impl Default for SegmentSize {
    fn default() -> Self {
        Self(DEFAULT_SEGMENT_SIZE)
    }
}

impl std::fmt::Display for SegmentSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl SegmentSize {
    /// Checks `bytes` against [`MIN_SEGMENT_SIZE`]..=[`MAX_SEGMENT_SIZE`].
    pub fn new(bytes: u64) -> Result<Self, StreamError> {
        match u32::try_from(bytes) {
            Ok(b) if (MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&b) => Ok(Self(b)),
            _ => Err(StreamError::SegmentSize { size: bytes }),
        }
    }

    /// The ciphertext segment size in bytes.
    pub fn get(self) -> u32 {
        self.0
    }

    /// Ciphertext bytes of segment `index` when it is not the last one.
    pub fn ciphertext_segment_len(self, index: u64) -> u64 {
        u64::from(self.0) - if index == 0 { HEADER_LEN as u64 } else { 0 }
    }

    /// Plaintext bytes of segment `index` when it is not the last one.
    pub fn plaintext_segment_len(self, index: u64) -> u64 {
        self.ciphertext_segment_len(index) - TAG_LEN as u64
    }
}

/// Where one segment sits in the ciphertext and in the plaintext.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentSpan {
    /// The segment number that goes into the nonce.
    pub index: u32,
    /// Whether the segment is sealed as the last one.
    pub last: bool,
    /// Byte range of the segment (ciphertext and tag) in the whole stream, header included.
    pub ciphertext: Range<u64>,
    /// Byte range of the segment's plaintext in the whole plaintext.
    pub plaintext: Range<u64>,
}

/// The segment layout of one complete stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamLayout {
    segment_size: SegmentSize,
    segments: u64,
    plaintext_len: u64,
    ciphertext_len: u64,
}

impl StreamLayout {
    /// The layout Tink produces for a plaintext of `plaintext_len` bytes.
    pub fn for_plaintext(
        segment_size: SegmentSize,
        plaintext_len: u64,
    ) -> Result<Self, StreamError> {
        let first = segment_size.plaintext_segment_len(0);
        let rest = segment_size.plaintext_segment_len(1);
        let segments = if plaintext_len <= first {
            1
        } else {
            1 + (plaintext_len - first).div_ceil(rest)
        };
        if segments > MAX_SEGMENTS {
            return Err(StreamError::TooManySegments);
        }
        let ciphertext_len = (HEADER_LEN as u64)
            .checked_add(plaintext_len)
            .and_then(|n| n.checked_add(segments * TAG_LEN as u64))
            .ok_or(StreamError::TooManySegments)?;
        Ok(Self {
            segment_size,
            segments,
            plaintext_len,
            ciphertext_len,
        })
    }

    /// The layout of a stream whose ciphertext is `ciphertext_len` bytes long, or an
    /// error when no complete stream has that length.
    pub fn for_ciphertext(
        segment_size: SegmentSize,
        ciphertext_len: u64,
    ) -> Result<Self, StreamError> {
        if ciphertext_len < HEADER_LEN as u64 {
            return Err(StreamError::HeaderTruncated {
                found: ciphertext_len,
            });
        }
        let size = u64::from(segment_size.get());
        let segments = if ciphertext_len <= size {
            1
        } else {
            1 + (ciphertext_len - size).div_ceil(size)
        };
        if segments > MAX_SEGMENTS {
            return Err(StreamError::TooManySegments);
        }
        // Segments before the last are full: segment 0 is short by the header.
        let full_before_last = match segments {
            1 => 0,
            n => size - HEADER_LEN as u64 + (n - 2) * size,
        };
        let last_len = ciphertext_len - HEADER_LEN as u64 - full_before_last;
        if last_len < TAG_LEN as u64 {
            return Err(StreamError::SegmentTruncated {
                segment: segments - 1,
            });
        }
        let plaintext_len = ciphertext_len - HEADER_LEN as u64 - segments * TAG_LEN as u64;
        Ok(Self {
            segment_size,
            segments,
            plaintext_len,
            ciphertext_len,
        })
    }

    /// The ciphertext segment size.
    pub fn segment_size(&self) -> SegmentSize {
        self.segment_size
    }

    /// Number of segments (at least 1).
    pub fn segments(&self) -> u64 {
        self.segments
    }

    /// Total plaintext length.
    pub fn plaintext_len(&self) -> u64 {
        self.plaintext_len
    }

    /// Total ciphertext length, header included.
    pub fn ciphertext_len(&self) -> u64 {
        self.ciphertext_len
    }

    /// The span of segment `index`; `index` must be below [`Self::segments`].
    pub fn segment(&self, index: u64) -> SegmentSpan {
        let last = index + 1 == self.segments;
        let (ct_start, pt_start) = if index == 0 {
            (HEADER_LEN as u64, 0)
        } else {
            let size = u64::from(self.segment_size.get());
            let ct = size + (index - 1) * size;
            (ct, ct - HEADER_LEN as u64 - index * TAG_LEN as u64)
        };
        let (ct_end, pt_end) = if last {
            (self.ciphertext_len, self.plaintext_len)
        } else {
            let ct_len = self.segment_size.ciphertext_segment_len(index);
            (ct_start + ct_len, pt_start + ct_len - TAG_LEN as u64)
        };
        SegmentSpan {
            // Invariant: index < segments <= MAX_SEGMENTS = 2^32, checked at construction.
            index: u32::try_from(index).unwrap_or(u32::MAX),
            last,
            ciphertext: ct_start..ct_end,
            plaintext: pt_start..pt_end,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_size_bounds() {
        assert!(SegmentSize::new(u64::from(MIN_SEGMENT_SIZE) - 1).is_err());
        assert!(SegmentSize::new(u64::from(MIN_SEGMENT_SIZE)).is_ok());
        assert!(SegmentSize::new(u64::from(MAX_SEGMENT_SIZE)).is_ok());
        assert!(SegmentSize::new(u64::from(MAX_SEGMENT_SIZE) + 1).is_err());
        assert_eq!(SegmentSize::default().get(), 4 * 1024 * 1024);
    }

    #[test]
    fn layouts_round_trip_and_tile_the_stream() {
        for size in [57u64, 64, 100, 4096] {
            let seg = SegmentSize::new(size).unwrap();
            for pt_len in 0..(5 * size) {
                let a = StreamLayout::for_plaintext(seg, pt_len).unwrap();
                let b = StreamLayout::for_ciphertext(seg, a.ciphertext_len()).unwrap();
                assert_eq!(a, b, "size {size} pt {pt_len}");
                let mut ct_pos = HEADER_LEN as u64;
                let mut pt_pos = 0;
                for i in 0..a.segments() {
                    let s = a.segment(i);
                    assert_eq!(s.ciphertext.start, ct_pos);
                    assert_eq!(s.plaintext.start, pt_pos);
                    assert_eq!(
                        s.ciphertext.end - s.ciphertext.start,
                        s.plaintext.end - s.plaintext.start + TAG_LEN as u64
                    );
                    assert!(s.ciphertext.end - s.ciphertext.start <= seg.ciphertext_segment_len(i));
                    assert_eq!(s.last, i + 1 == a.segments());
                    ct_pos = s.ciphertext.end;
                    pt_pos = s.plaintext.end;
                }
                assert_eq!((ct_pos, pt_pos), (a.ciphertext_len(), pt_len));
            }
        }
    }

    #[test]
    fn full_last_segment_is_not_followed_by_an_empty_one() {
        // Tink seals a plaintext that exactly fills segment 0 as one (last) segment.
        let seg = SegmentSize::new(100).unwrap();
        let l = StreamLayout::for_plaintext(seg, seg.plaintext_segment_len(0)).unwrap();
        assert_eq!((l.segments(), l.ciphertext_len()), (1, 100));
    }

    #[test]
    fn impossible_ciphertext_lengths_are_rejected() {
        let seg = SegmentSize::new(100).unwrap();
        assert!(matches!(
            StreamLayout::for_ciphertext(seg, 39),
            Err(StreamError::HeaderTruncated { .. })
        ));
        // Header plus less than a tag.
        assert!(matches!(
            StreamLayout::for_ciphertext(seg, 55),
            Err(StreamError::SegmentTruncated { segment: 0 })
        ));
        // A full first segment plus 15 bytes of a second.
        assert!(matches!(
            StreamLayout::for_ciphertext(seg, 115),
            Err(StreamError::SegmentTruncated { segment: 1 })
        ));
    }
}
