//! Streaming decryption: reader in, writer out, one verified segment at a time.

use std::io::{self, Read, Write};

use zeroize::Zeroizing;

use super::layout::{HEADER_LEN, SegmentSize, TAG_LEN};
use super::segment_cipher::{SegmentCipher, StreamHeader};
use super::{DataKey, StreamError};

/// Decrypts a stream from `reader` into `writer` and returns the plaintext length.
///
/// A segment's plaintext is written only after its tag has verified, and the final segment
/// is recognised by the end of the input, so truncation, extension, reordering and
/// swapping are all detected. When an error is returned, the segments written before it
/// were authentic but the stream as a whole was not: the caller must discard the output
/// (the CLI writes to a temporary file and removes it). Memory use is two segments.
pub fn decrypt_stream<R: Read, W: Write>(
    key: &DataKey,
    associated_data: &[u8],
    segment_size: SegmentSize,
    mut reader: R,
    mut writer: W,
) -> Result<u64, StreamError> {
    let mut header = [0u8; HEADER_LEN];
    let n = read_full(&mut reader, &mut header)?;
    let header = StreamHeader::parse(&header[..n])?;
    let cipher = SegmentCipher::derive(key, &header, associated_data);

    let size = segment_size.get() as usize;
    // One ciphertext segment plus one look-ahead byte that tells whether it is the last.
    let mut ct = vec![0u8; size + 1];
    let mut pt = Zeroizing::new(vec![0u8; size - TAG_LEN]);
    let mut filled = 0;
    let mut index: u64 = 0;
    let mut total: u64 = 0;
    loop {
        let want = segment_size.ciphertext_segment_len(index) as usize;
        filled += read_full(&mut reader, &mut ct[filled..=want])?;
        let last = filled <= want;
        let seg_len = filled.min(want);
        let index32 = u32::try_from(index).map_err(|_| StreamError::TooManySegments)?;
        let out = &mut pt[..seg_len.saturating_sub(TAG_LEN)];
        cipher.open(index32, last, &ct[..seg_len], out)?;
        writer
            .write_all(out)
            .map_err(StreamError::io("writing plaintext"))?;
        total += out.len() as u64;
        if last {
            break;
        }
        ct[0] = ct[want];
        filled = 1;
        index += 1;
    }
    writer
        .flush()
        .map_err(StreamError::io("writing plaintext"))?;
    Ok(total)
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full<R: Read>(reader: &mut R, buf: &mut [u8]) -> Result<usize, StreamError> {
    let mut done = 0;
    while done < buf.len() {
        match reader.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(StreamError::Io {
                    op: "reading ciphertext",
                    source: e,
                });
            }
        }
    }
    Ok(done)
}
