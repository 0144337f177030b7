//! Errors of the streaming AEAD.

/// Why a sealed stream could not be produced or opened.
///
/// Segment numbers are 0-based. No variant carries key material or plaintext.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The ciphertext segment size is out of range.
    #[error(
        "ciphertext segment size {size} is outside {min}..={max} bytes",
        min = super::MIN_SEGMENT_SIZE,
        max = super::MAX_SEGMENT_SIZE
    )]
    SegmentSize {
        /// The rejected size.
        size: u64,
    },
    /// The stream ends inside its 40-byte header.
    #[error("stream truncated inside its header ({found} of {len} bytes)", len = super::HEADER_LEN)]
    HeaderTruncated {
        /// Bytes present.
        found: u64,
    },
    /// The header's length byte is not 40: not an `AES256_GCM_HKDF` stream with a 32-byte key.
    #[error(
        "stream header declares {found} bytes, expected {len}: not an AES256_GCM_HKDF (32-byte key) stream",
        len = super::HEADER_LEN
    )]
    HeaderLength {
        /// The length byte found.
        found: u8,
    },
    /// A segment failed authentication: wrong key, wrong associated data, wrong segment
    /// size, or modified, reordered or swapped ciphertext.
    #[error(
        "segment {segment} failed authentication (wrong key, wrong associated data, wrong segment size, or modified data)"
    )]
    SegmentAuthentication {
        /// The failing segment.
        segment: u64,
    },
    /// The stream ends cleanly after a segment that was not sealed as the last one:
    /// trailing segments were dropped.
    #[error(
        "stream truncated: it ends after {segments} segment(s) but the last of them was not sealed as final"
    )]
    Truncated {
        /// Segments present.
        segments: u64,
    },
    /// The last segment is shorter than an authentication tag.
    #[error("stream truncated inside segment {segment}")]
    SegmentTruncated {
        /// The incomplete segment.
        segment: u64,
    },
    /// Data follows the segment that was sealed as the last one.
    #[error("data follows the final segment {segment}: the stream was extended")]
    TrailingData {
        /// The segment sealed as final.
        segment: u64,
    },
    /// The output buffer does not have the plaintext's length.
    #[error("output buffer is {found} bytes, the plaintext is {expected}")]
    OutputLength {
        /// The plaintext length.
        expected: u64,
        /// The buffer length.
        found: u64,
    },
    /// More than 2^32 segments.
    #[error("stream exceeds 2^32 segments; use a larger segment size")]
    TooManySegments,
    /// The system random number generator failed.
    #[error("system random number generator failed")]
    Random,
    /// The cryptographic backend rejected an operation that cannot fail on valid input.
    #[error("cryptographic backend failure")]
    Backend,
    /// Reading ciphertext or plaintext, or writing the output, failed.
    #[error("I/O error while {op}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl StreamError {
    pub(crate) fn io(op: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        move |source| Self::Io { op, source }
    }
}
