//! Opening a stream one segment at a time, wherever its bytes happen to land.
//!
//! A receiver that downloads a stream in pieces can place each segment's ciphertext
//! directly at the segment's final plaintext offset and keep the 16-byte tag aside, then
//! open the segment in place: one copy from the network into memory, decryption while the
//! bytes are still in cache, and a contiguous plaintext buffer at the end with nothing to
//! move. [`SegmentOpener`] is that receiver's cipher; the layout tells it where every
//! segment lives.

use super::aead::AeadError;
use super::layout::TAG_LEN;
use super::segment_cipher::{SegmentCipher, StreamHeader};
use super::{DataKey, StreamError, StreamLayout};

/// Opens the segments of one stream independently, in any order and on any thread.
#[derive(Debug)]
pub struct SegmentOpener {
    cipher: SegmentCipher,
    layout: StreamLayout,
}

impl SegmentOpener {
    /// The opener for the stream whose first [`super::HEADER_LEN`] bytes are `header` and whose
    /// layout is `layout` (from the stream's known ciphertext length).
    pub fn new(
        key: &DataKey,
        associated_data: &[u8],
        layout: StreamLayout,
        header: &[u8],
    ) -> Result<Self, StreamError> {
        let header = StreamHeader::parse(header)?;
        Ok(Self {
            cipher: SegmentCipher::derive(key, &header, associated_data),
            layout,
        })
    }

    /// The stream's layout.
    pub fn layout(&self) -> &StreamLayout {
        &self.layout
    }

    /// Verifies and decrypts segment `index` in place: `buf` holds the segment's ciphertext
    /// without its tag (exactly the segment's plaintext length) and becomes its plaintext.
    /// On failure `buf` is zeroed, so no unverified plaintext is left behind.
    pub fn open_in_place(
        &self,
        index: u64,
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), StreamError> {
        if index >= self.layout.segments() {
            return Err(StreamError::TrailingData { segment: index });
        }
        let span = self.layout.segment(index);
        if buf.len() as u64 != span.plaintext.end - span.plaintext.start {
            return Err(StreamError::SegmentTruncated { segment: index });
        }
        self.cipher
            .open_detached_in_place(span.index, span.last, buf, tag)
            .map_err(|AeadError| StreamError::SegmentAuthentication { segment: index })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sealed::HEADER_LEN;
    use crate::sealed::{SegmentSize, decrypt_in_memory, encrypt_to_vec};

    /// Scatters each segment's ciphertext to its plaintext offset, opens in place.
    fn scatter_open(
        key: &DataKey,
        ad: &[u8],
        size: SegmentSize,
        ct: &[u8],
        order: impl Iterator<Item = u64>,
    ) -> Result<Vec<u8>, StreamError> {
        let layout = StreamLayout::for_ciphertext(size, ct.len() as u64)?;
        let opener = SegmentOpener::new(key, ad, layout, &ct[..HEADER_LEN])?;
        let mut out = vec![0u8; layout.plaintext_len() as usize];
        for i in order {
            let span = layout.segment(i);
            let (pt, c) = (span.plaintext, span.ciphertext);
            let body_end = (c.end - TAG_LEN as u64) as usize;
            let dst = &mut out[pt.start as usize..pt.end as usize];
            dst.copy_from_slice(&ct[c.start as usize..body_end]);
            let tag: [u8; TAG_LEN] = ct[body_end..c.end as usize].try_into().unwrap();
            opener.open_in_place(i, dst, &tag)?;
        }
        Ok(out)
    }

    #[test]
    fn scattered_segments_open_to_the_same_plaintext_in_any_order() {
        let key = DataKey::generate().unwrap();
        let size = SegmentSize::new(100).unwrap();
        for len in [0usize, 1, 43, 44, 45, 84, 85, 1000] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let ct = encrypt_to_vec(&key, b"ad", size, &plain).unwrap();
            let segments = StreamLayout::for_ciphertext(size, ct.len() as u64)
                .unwrap()
                .segments();
            assert_eq!(
                scatter_open(&key, b"ad", size, &ct, 0..segments).unwrap(),
                plain
            );
            assert_eq!(
                scatter_open(&key, b"ad", size, &ct, (0..segments).rev()).unwrap(),
                decrypt_in_memory(&key, b"ad", size, &ct, 1)
                    .unwrap()
                    .to_vec()
            );
        }
    }

    #[test]
    fn tampering_wrong_context_and_wrong_slots_fail() {
        let key = DataKey::generate().unwrap();
        let size = SegmentSize::new(100).unwrap();
        let plain = vec![9u8; 500];
        let ct = encrypt_to_vec(&key, b"ad", size, &plain).unwrap();
        let layout = StreamLayout::for_ciphertext(size, ct.len() as u64).unwrap();
        let all = || 0..layout.segments();
        for at in [HEADER_LEN + 3, 150, ct.len() - 1] {
            let mut bad = ct.clone();
            bad[at] ^= 1;
            assert!(matches!(
                scatter_open(&key, b"ad", size, &bad, all()),
                Err(StreamError::SegmentAuthentication { .. })
            ));
        }
        assert!(scatter_open(&key, b"other", size, &ct, all()).is_err());
        let opener = SegmentOpener::new(&key, b"ad", layout, &ct[..HEADER_LEN]).unwrap();
        // Segment 1's bytes presented as segment 2: wrong nonce, rejected and zeroed.
        let s1 = layout.segment(1);
        let mut buf = ct[s1.ciphertext.start as usize..s1.ciphertext.end as usize - 16].to_vec();
        let tag: [u8; 16] = ct[s1.ciphertext.end as usize - 16..s1.ciphertext.end as usize]
            .try_into()
            .unwrap();
        assert!(opener.open_in_place(2, &mut buf, &tag).is_err());
        assert!(buf.iter().all(|&b| b == 0));
        // Wrong slot length and out-of-range index.
        assert!(opener.open_in_place(1, &mut [0u8; 3], &tag).is_err());
        assert!(
            opener
                .open_in_place(layout.segments(), &mut [], &tag)
                .is_err()
        );
        // A header that is not one.
        assert!(SegmentOpener::new(&key, b"ad", layout, &[0u8; 10]).is_err());
    }
}
