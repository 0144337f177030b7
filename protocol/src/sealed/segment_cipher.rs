//! One stream's header and its per-segment cipher: HKDF key derivation and nonces.
//!
//! ```text
//! segment_key = HKDF-SHA256(ikm = data key, salt = header salt, info = associated data, L = 32)
//! nonce       = nonce_prefix (7) || segment number (4, big-endian) || last-segment flag (1)
//! ```
//! Each segment is AES-256-GCM with an empty AAD: the associated data acts only through the
//! key derivation, as in Tink.

use aws_lc_rs::hkdf;

use super::aead::{Aes256Gcm, NONCE_LEN};
use super::layout::{HEADER_LEN, NONCE_PREFIX_LEN, SALT_LEN, TAG_LEN};
use super::{DataKey, StreamError};

/// The random per-stream values carried in the 40-byte header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StreamHeader {
    salt: [u8; SALT_LEN],
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
}

impl StreamHeader {
    /// Fresh random salt and nonce prefix.
    pub(crate) fn random() -> Result<Self, StreamError> {
        let mut salt = [0u8; SALT_LEN];
        let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
        aws_lc_rs::rand::fill(&mut salt).map_err(|_| StreamError::Random)?;
        aws_lc_rs::rand::fill(&mut nonce_prefix).map_err(|_| StreamError::Random)?;
        Ok(Self { salt, nonce_prefix })
    }

    /// The wire encoding.
    pub(crate) fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0] = HEADER_LEN as u8;
        out[1..1 + SALT_LEN].copy_from_slice(&self.salt);
        out[1 + SALT_LEN..].copy_from_slice(&self.nonce_prefix);
        out
    }

    /// Parses the first [`HEADER_LEN`] bytes of a stream.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, StreamError> {
        let Some(header) = bytes.get(..HEADER_LEN) else {
            return Err(StreamError::HeaderTruncated {
                found: bytes.len() as u64,
            });
        };
        if usize::from(header[0]) != HEADER_LEN {
            return Err(StreamError::HeaderLength { found: header[0] });
        }
        let mut salt = [0u8; SALT_LEN];
        let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
        salt.copy_from_slice(&header[1..1 + SALT_LEN]);
        nonce_prefix.copy_from_slice(&header[1 + SALT_LEN..]);
        Ok(Self { salt, nonce_prefix })
    }
}

/// The cipher for every segment of one stream.
#[derive(Debug)]
pub(crate) struct SegmentCipher {
    aead: Aes256Gcm,
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
}

impl SegmentCipher {
    /// Derives the segment key of the stream with `header` and `associated_data`.
    pub(crate) fn derive(key: &DataKey, header: &StreamHeader, associated_data: &[u8]) -> Self {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &header.salt).extract(key.expose_secret());
        let info = [associated_data];
        // Invariant: 32 bytes is far below HKDF-SHA256's 255 * 32 byte limit.
        let okm = prk
            .expand(&info, Aes256Gcm::hkdf_len())
            .unwrap_or_else(|_| unreachable!());
        Self {
            aead: Aes256Gcm::from_hkdf(okm),
            nonce_prefix: header.nonce_prefix,
        }
    }

    fn nonce(&self, index: u32, last: bool) -> [u8; NONCE_LEN] {
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..NONCE_PREFIX_LEN].copy_from_slice(&self.nonce_prefix);
        nonce[NONCE_PREFIX_LEN..NONCE_LEN - 1].copy_from_slice(&index.to_be_bytes());
        nonce[NONCE_LEN - 1] = u8::from(last);
        nonce
    }

    /// Encrypts one segment's plaintext in place and returns its tag.
    pub(crate) fn seal(
        &self,
        index: u32,
        last: bool,
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], StreamError> {
        self.aead
            .seal_in_place(self.nonce(index, last), &[], buf)
            .map_err(|_| StreamError::Backend)
    }

    /// Verifies and decrypts one segment (`ciphertext || tag`) in place: on success the
    /// plaintext occupies the segment's first `len - 16` bytes; on failure the segment is
    /// zeroed. (No truncation diagnosis: the ciphertext is gone after a failed attempt.)
    pub(crate) fn open_in_place(
        &self,
        index: u32,
        last: bool,
        segment: &mut [u8],
    ) -> Result<(), StreamError> {
        let Some(ct_len) = segment.len().checked_sub(TAG_LEN) else {
            return Err(StreamError::SegmentTruncated {
                segment: index.into(),
            });
        };
        let (ct, tag) = segment.split_at_mut(ct_len);
        let tag: [u8; TAG_LEN] = (&*tag).try_into().map_err(|_| StreamError::Backend)?;
        self.aead
            .open_in_place(self.nonce(index, last), &[], &tag, ct)
            .map_err(|_| StreamError::SegmentAuthentication {
                segment: index.into(),
            })
    }

    /// Verifies and decrypts one segment's ciphertext in place with its tag held apart; on
    /// failure `buf` is zeroed.
    pub(crate) fn open_detached_in_place(
        &self,
        index: u32,
        last: bool,
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), super::aead::AeadError> {
        self.aead
            .open_in_place(self.nonce(index, last), &[], tag, buf)
    }

    /// Verifies and decrypts one segment (`ciphertext || tag`) into `out`, which must be
    /// exactly 16 bytes shorter. On failure `out` holds only zeros.
    ///
    /// A failing segment is tried once more with the other last-segment flag, only to name
    /// the failure precisely: a final-looking segment that verifies as non-final means the
    /// stream was truncated; a non-final-looking one that verifies as final means data was
    /// appended. Either way the segment is rejected.
    pub(crate) fn open(
        &self,
        index: u32,
        last: bool,
        segment: &[u8],
        out: &mut [u8],
    ) -> Result<(), StreamError> {
        let Some(ct_len) = segment.len().checked_sub(TAG_LEN) else {
            return Err(StreamError::SegmentTruncated {
                segment: index.into(),
            });
        };
        let (ct, tag) = segment.split_at(ct_len);
        if self
            .aead
            .open_into(self.nonce(index, last), &[], ct, tag, out)
            .is_ok()
        {
            return Ok(());
        }
        let flipped = self
            .aead
            .open_into(self.nonce(index, !last), &[], ct, tag, out)
            .is_ok();
        if flipped {
            zeroize::Zeroize::zeroize(out);
            return Err(if last {
                StreamError::Truncated {
                    segments: u64::from(index) + 1,
                }
            } else {
                StreamError::TrailingData {
                    segment: index.into(),
                }
            });
        }
        Err(StreamError::SegmentAuthentication {
            segment: index.into(),
        })
    }
}
