//! Parallel in-memory decryption: all cores, one output buffer, all-or-nothing.

use std::sync::atomic::{AtomicBool, Ordering};

use zeroize::{Zeroize, Zeroizing};

use super::layout::{SegmentSize, StreamLayout};
use super::segment_cipher::{SegmentCipher, StreamHeader};
use super::{DataKey, StreamError};

/// The number of threads [`decrypt_in_memory`] should use on this machine: one per core.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Decrypts a complete stream held in memory, opening segments on `threads` threads
/// straight from `ciphertext` into one new plaintext buffer (no intermediate copies).
///
/// The buffer is returned only when every segment, the final one included, verified. On
/// any failure the partial plaintext is zeroized and only the error is returned. The
/// returned buffer zeroizes itself on drop.
pub fn decrypt_in_memory(
    key: &DataKey,
    associated_data: &[u8],
    segment_size: SegmentSize,
    ciphertext: &[u8],
    threads: usize,
) -> Result<Zeroizing<Vec<u8>>, StreamError> {
    let layout = StreamLayout::for_ciphertext(segment_size, ciphertext.len() as u64)?;
    // Invariant: the plaintext is shorter than `ciphertext`, which is in memory.
    let mut out = Zeroizing::new(vec![0u8; layout.plaintext_len() as usize]);
    decrypt_into(
        key,
        associated_data,
        segment_size,
        ciphertext,
        &mut out,
        threads,
    )?;
    Ok(out)
}

/// Like [`decrypt_in_memory`], into a caller-provided buffer of exactly the plaintext
/// length (see [`StreamLayout::for_ciphertext`]), e.g. a pre-allocated or locked region.
/// On failure the whole buffer is zeroized.
pub fn decrypt_into(
    key: &DataKey,
    associated_data: &[u8],
    segment_size: SegmentSize,
    ciphertext: &[u8],
    out: &mut [u8],
    threads: usize,
) -> Result<(), StreamError> {
    let layout = StreamLayout::for_ciphertext(segment_size, ciphertext.len() as u64)?;
    if out.len() as u64 != layout.plaintext_len() {
        return Err(StreamError::OutputLength {
            expected: layout.plaintext_len(),
            found: out.len() as u64,
        });
    }
    let header = StreamHeader::parse(ciphertext)?;
    let cipher = SegmentCipher::derive(key, &header, associated_data);
    let result = open_all(&cipher, &layout, ciphertext, out, threads);
    if result.is_err() {
        out.zeroize();
    }
    result
}

/// Decrypts a complete stream that the caller hands over, in place: the ciphertext buffer
/// becomes the plaintext, so no second buffer is allocated (and no fresh memory is
/// faulted in). Segments are opened in place on `threads` threads, then each segment's
/// plaintext is moved down to its final offset. The buffer is returned only when every
/// segment verified; on failure it is zeroized.
pub fn decrypt_owned(
    key: &DataKey,
    associated_data: &[u8],
    segment_size: SegmentSize,
    ciphertext: Vec<u8>,
    threads: usize,
) -> Result<Zeroizing<Vec<u8>>, StreamError> {
    let layout = StreamLayout::for_ciphertext(segment_size, ciphertext.len() as u64)?;
    let header = StreamHeader::parse(&ciphertext)?;
    let cipher = SegmentCipher::derive(key, &header, associated_data);
    let mut buf = Zeroizing::new(ciphertext);
    let segments = layout.segments();
    let threads = (threads.max(1) as u64).min(segments);
    let failed = AtomicBool::new(false);
    let open_range =
        |start: u64, end: u64, region: &mut [u8], base: u64| -> Result<(), StreamError> {
            for i in start..end {
                if failed.load(Ordering::Relaxed) {
                    return Ok(());
                }
                let span = layout.segment(i);
                let seg = &mut region[(span.ciphertext.start - base) as usize
                    ..(span.ciphertext.end - base) as usize];
                if let Err(e) = cipher.open_in_place(span.index, span.last, seg) {
                    failed.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            }
            Ok(())
        };
    let body = &mut buf[crate::sealed::HEADER_LEN..];
    let result = if threads == 1 {
        open_range(0, segments, body, crate::sealed::HEADER_LEN as u64)
    } else {
        std::thread::scope(|scope| {
            let mut rest: &mut [u8] = body;
            let mut workers = Vec::with_capacity(threads as usize);
            for t in 0..threads {
                let (start, end) = (segments * t / threads, segments * (t + 1) / threads);
                let (first, last) = (
                    layout.segment(start).ciphertext.start,
                    layout.segment(end - 1).ciphertext.end,
                );
                let (mine, tail) = std::mem::take(&mut rest).split_at_mut((last - first) as usize);
                rest = tail;
                let open_range = &open_range;
                workers.push(scope.spawn(move || open_range(start, end, mine, first)));
            }
            let mut result = Ok(());
            for worker in workers {
                match worker.join() {
                    Ok(r) => result = result.and(r),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            result
        })
    };
    // On error `buf` (a Zeroizing) is wiped on drop.
    result?;
    // Each segment's plaintext moves down to its place; destinations never overlap a
    // segment that has not moved yet, because every offset shrinks.
    for i in 0..segments {
        let span = layout.segment(i);
        let len = (span.plaintext.end - span.plaintext.start) as usize;
        let from = span.ciphertext.start as usize;
        buf.copy_within(from..from + len, span.plaintext.start as usize);
    }
    buf.truncate(layout.plaintext_len() as usize);
    Ok(buf)
}

fn open_all(
    cipher: &SegmentCipher,
    layout: &StreamLayout,
    ciphertext: &[u8],
    out: &mut [u8],
    threads: usize,
) -> Result<(), StreamError> {
    let segments = layout.segments();
    let threads = (threads.max(1) as u64).min(segments);
    let failed = AtomicBool::new(false);
    let job = OpenJob {
        cipher,
        layout,
        ciphertext,
        failed: &failed,
    };
    if threads == 1 {
        return job.open_range(0, segments, out);
    }
    std::thread::scope(|scope| {
        let mut rest: &mut [u8] = out;
        let mut workers = Vec::with_capacity(threads as usize);
        for t in 0..threads {
            let (start, end) = (segments * t / threads, segments * (t + 1) / threads);
            let len = (layout.segment(end - 1).plaintext.end
                - layout.segment(start).plaintext.start) as usize;
            let (mine, tail) = std::mem::take(&mut rest).split_at_mut(len);
            rest = tail;
            let job = &job;
            workers.push(scope.spawn(move || job.open_range(start, end, mine)));
        }
        for worker in workers {
            match worker.join() {
                Ok(result) => result?,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        Ok(())
    })
}

/// What every worker shares.
struct OpenJob<'a> {
    cipher: &'a SegmentCipher,
    layout: &'a StreamLayout,
    ciphertext: &'a [u8],
    /// Set by the first failing worker so the others stop early.
    failed: &'a AtomicBool,
}

impl OpenJob<'_> {
    /// Opens segments `start..end` into `out`, which holds exactly their plaintext.
    fn open_range(&self, start: u64, end: u64, out: &mut [u8]) -> Result<(), StreamError> {
        let base = self.layout.segment(start).plaintext.start;
        for i in start..end {
            if self.failed.load(Ordering::Relaxed) {
                return Ok(());
            }
            let span = self.layout.segment(i);
            let ct = &self.ciphertext[span.ciphertext.start as usize..span.ciphertext.end as usize];
            let pt = &mut out
                [(span.plaintext.start - base) as usize..(span.plaintext.end - base) as usize];
            if let Err(e) = self.cipher.open(span.index, span.last, ct, pt) {
                self.failed.store(true, Ordering::Relaxed);
                return Err(e);
            }
        }
        Ok(())
    }
}
