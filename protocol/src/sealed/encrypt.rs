//! Streaming encryption into the `AES256_GCM_HKDF` wire format.

use std::io::{self, Read, Write};

use zeroize::Zeroizing;

use super::layout::{HEADER_LEN, MAX_SEGMENTS, SegmentSize};
use super::segment_cipher::{SegmentCipher, StreamHeader};
use super::{DataKey, StreamError};

/// Encrypts a plaintext stream segment by segment into `W`.
///
/// Like Tink, a segment is sealed as non-final only once more plaintext arrives after it,
/// so a plaintext that exactly fills its segments ends in a full final segment and an empty
/// plaintext is one empty final segment. Call [`StreamEncryptor::finish`]: a stream that was
/// never finished has no final segment and every reader rejects it as truncated.
pub struct StreamEncryptor<W: Write> {
    writer: W,
    cipher: SegmentCipher,
    segment_size: SegmentSize,
    /// Plaintext of the segment being filled (zeroized on drop).
    buf: Zeroizing<Vec<u8>>,
    index: u64,
    plaintext_len: u64,
}

impl<W: Write> std::fmt::Debug for StreamEncryptor<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamEncryptor")
            .field("segment_size", &self.segment_size)
            .field("segment", &self.index)
            .field("plaintext_len", &self.plaintext_len)
            .finish_non_exhaustive()
    }
}

impl<W: Write> StreamEncryptor<W> {
    /// Starts a stream: draws a fresh salt and nonce prefix and writes the header.
    pub fn new(
        key: &DataKey,
        associated_data: &[u8],
        segment_size: SegmentSize,
        mut writer: W,
    ) -> Result<Self, StreamError> {
        let header = StreamHeader::random()?;
        let cipher = SegmentCipher::derive(key, &header, associated_data);
        writer
            .write_all(&header.to_bytes())
            .map_err(StreamError::io("writing ciphertext"))?;
        // Reserve the largest segment up front so the buffer never reallocates and leaves an
        // unzeroized copy of plaintext behind.
        let capacity = segment_size.plaintext_segment_len(1) as usize;
        Ok(Self {
            writer,
            cipher,
            segment_size,
            buf: Zeroizing::new(Vec::with_capacity(capacity)),
            index: 0,
            plaintext_len: 0,
        })
    }

    /// Adds plaintext to the stream.
    pub fn write_plaintext(&mut self, mut data: &[u8]) -> Result<(), StreamError> {
        while !data.is_empty() {
            let capacity = self.segment_size.plaintext_segment_len(self.index) as usize;
            if self.buf.len() == capacity {
                // The buffered segment is full and more plaintext follows: it is not final.
                self.seal_buffered(false)?;
                continue;
            }
            let take = (capacity - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            self.plaintext_len += take as u64;
            data = &data[take..];
        }
        Ok(())
    }

    /// Seals the final segment, flushes and returns the writer.
    pub fn finish(mut self) -> Result<W, StreamError> {
        self.seal_buffered(true)?;
        self.writer
            .flush()
            .map_err(StreamError::io("writing ciphertext"))?;
        Ok(self.writer)
    }

    /// Plaintext bytes accepted so far.
    pub fn plaintext_len(&self) -> u64 {
        self.plaintext_len
    }

    fn seal_buffered(&mut self, last: bool) -> Result<(), StreamError> {
        if self.index >= MAX_SEGMENTS {
            return Err(StreamError::TooManySegments);
        }
        let index = u32::try_from(self.index).map_err(|_| StreamError::TooManySegments)?;
        let tag = self.cipher.seal(index, last, &mut self.buf)?;
        self.writer
            .write_all(&self.buf)
            .map_err(StreamError::io("writing ciphertext"))?;
        self.writer
            .write_all(&tag)
            .map_err(StreamError::io("writing ciphertext"))?;
        self.buf.clear();
        self.index += 1;
        Ok(())
    }
}

impl<W: Write> Write for StreamEncryptor<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.write_plaintext(data).map_err(io::Error::other)?;
        Ok(data.len())
    }

    /// Flushes the underlying writer; buffered plaintext stays buffered until its segment
    /// is complete or [`StreamEncryptor::finish`] is called.
    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

/// Encrypts everything `reader` yields into `writer`; returns the plaintext length.
pub fn encrypt_stream<R: Read, W: Write>(
    key: &DataKey,
    associated_data: &[u8],
    segment_size: SegmentSize,
    mut reader: R,
    writer: W,
) -> Result<u64, StreamError> {
    let mut enc = StreamEncryptor::new(key, associated_data, segment_size, writer)?;
    let mut chunk = Zeroizing::new(vec![0u8; 256 * 1024]);
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(StreamError::Io {
                    op: "reading plaintext",
                    source: e,
                });
            }
        };
        enc.write_plaintext(&chunk[..n])?;
    }
    let len = enc.plaintext_len();
    enc.finish()?;
    Ok(len)
}

/// Encrypts `plaintext` into a new buffer.
pub fn encrypt_to_vec(
    key: &DataKey,
    associated_data: &[u8],
    segment_size: SegmentSize,
    plaintext: &[u8],
) -> Result<Vec<u8>, StreamError> {
    let expected = super::StreamLayout::for_plaintext(segment_size, plaintext.len() as u64)?;
    let mut out =
        Vec::with_capacity(usize::try_from(expected.ciphertext_len()).unwrap_or(HEADER_LEN));
    let mut enc = StreamEncryptor::new(key, associated_data, segment_size, &mut out)?;
    enc.write_plaintext(plaintext)?;
    enc.finish()?;
    Ok(out)
}
