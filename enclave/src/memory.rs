//! Memory for plaintext weights: [`PlainBuffer`].
//!
//! This is the one module of the sentinel that calls the kernel directly (`madvise(2)`,
//! `mlock(2)`), hence the only place `unsafe` is allowed. Every call is advisory or pins
//! memory; none changes the contents or validity of memory Rust owns.
//!
//! - **Huge pages** (`MADV_HUGEPAGE`): faulting in a fresh gigabyte as 4 KiB pages costs
//!   about 0.3 s of kernel time on the reference VM, more than copying the bytes; as 2 MiB
//!   pages, about a third of that.
//! - **No core dumps** (`MADV_DONTDUMP`): a crash must not write the weights to disk.
//! - **No swap** ([`PlainBuffer::lock`], `mlock`): best effort, since the default
//!   `RLIMIT_MEMLOCK` is far below a model's size; the sentinel logs when it cannot.
//! - **Zeroized on drop**, every piece of it.
#![allow(unsafe_code)]

use std::io;

use bytes::BytesMut;
use zeroize::Zeroize;

/// A zero-initialised buffer for plaintext, zeroized on drop, that can be split into
/// owned pieces (for parallel writers) and joined back without copying.
pub struct PlainBuffer(BytesMut);

impl PlainBuffer {
    /// A buffer of `len` zero bytes, advised as huge-page, never-dumped. New memory comes
    /// fresh from the kernel (no page touched yet); memory the allocator reuses (mimalloc
    /// keeps freed buffers of up to 2 GiB in its arenas) it zeroes itself.
    pub fn zeroed(len: usize) -> Self {
        let mut buf = vec![0u8; len];
        advise(&mut buf);
        // Vec -> Bytes -> BytesMut keeps the allocation (no copy) when len == capacity.
        Self(BytesMut::from(bytes::Bytes::from(buf)))
    }

    /// Splits into consecutive pieces of the given lengths (which must add up to
    /// `self.len()`; a shortfall stays in the last piece).
    pub fn split(mut self, lens: &[usize]) -> Vec<PlainBuffer> {
        let mut pieces = Vec::with_capacity(lens.len() + 1);
        for &len in lens {
            let len = len.min(self.0.len());
            pieces.push(Self(self.0.split_to(len)));
        }
        if !self.0.is_empty() || pieces.is_empty() {
            pieces.push(Self(std::mem::take(&mut self.0)));
        }
        pieces
    }

    /// Joins pieces that [`Self::split`] made, in order, without copying. Pieces that are
    /// not adjacent in memory are refused (joining them would copy plaintext into a new
    /// allocation and leave the old one unwiped).
    pub fn join(pieces: Vec<PlainBuffer>) -> Result<Self, Vec<PlainBuffer>> {
        let adjacent = pieces
            .windows(2)
            .all(|w| w[0].0.as_ptr().wrapping_add(w[0].0.len()) == w[1].0.as_ptr());
        if !adjacent {
            return Err(pieces);
        }
        let mut whole = BytesMut::new();
        for mut piece in pieces {
            let part = std::mem::take(&mut piece.0);
            if whole.is_empty() {
                whole = part;
            } else {
                whole.unsplit(part);
            }
        }
        Ok(Self(whole))
    }

    /// Pins the buffer in RAM so it is never swapped out.
    pub fn lock(&self) -> io::Result<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        // SAFETY: the range is exactly this buffer's memory, which stays allocated while
        // `self` lives; `mlock` only pins pages. The allocator may keep the memory mapped
        // after it is freed, so `Drop` unlocks it again.
        unsafe { rustix::mm::mlock(self.0.as_ptr().cast_mut().cast(), self.0.len()) }
            .map_err(io::Error::from)
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }
}

/// Makes this process undumpable and its core-dump size limit 0, so that no crash writes
/// memory to disk: the engine's working copies of the weights (candle's tensors) and the
/// requests being answered live in ordinary heap memory, which `MADV_DONTDUMP` does not
/// cover. (Undumpable also keeps other processes of the same user from attaching to it.)
pub fn forbid_core_dumps() -> io::Result<()> {
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)?;
    rustix::process::setrlimit(
        rustix::process::Resource::Core,
        rustix::process::Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    )?;
    Ok(())
}

/// Advises the page-aligned interior of `buf` as huge-page and never-dumped. Advice is
/// best effort: a kernel without transparent huge pages just ignores it.
fn advise(buf: &mut [u8]) {
    let start = buf.as_mut_ptr() as usize;
    let aligned = start.next_multiple_of(page_size());
    let Some(len) = (start + buf.len()).checked_sub(aligned) else {
        return;
    };
    let len = len - len % page_size();
    if len == 0 {
        return;
    }
    let ptr = buf.as_mut_ptr().wrapping_add(aligned - start).cast();
    for advice in [
        rustix::mm::Advice::LinuxHugepage,
        rustix::mm::Advice::LinuxDontDump,
    ] {
        // SAFETY: `ptr..ptr + len` lies inside `buf`, which we borrow mutably; both advices
        // leave the contents and the mapping's validity unchanged.
        if let Err(e) = unsafe { rustix::mm::madvise(ptr, len, advice) } {
            tracing::debug!(?advice, error = %e, "madvise refused");
        }
    }
}

fn page_size() -> usize {
    rustix::param::page_size()
}

impl std::ops::Deref for PlainBuffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl std::ops::DerefMut for PlainBuffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

impl Drop for PlainBuffer {
    fn drop(&mut self) {
        self.0.as_mut().zeroize();
        // Unpin the pages wholly inside this piece (none that a neighbour shares): an
        // allocator that keeps freed memory mapped would otherwise keep them locked, and
        // count them against RLIMIT_MEMLOCK, for the life of the process.
        let start = self.0.as_ptr() as usize;
        let aligned = start.next_multiple_of(page_size());
        let end = (start + self.0.len()) / page_size() * page_size();
        if end > aligned {
            let ptr = self.0.as_mut_ptr().wrapping_add(aligned - start).cast();
            // SAFETY: `ptr..ptr + (end - aligned)` lies inside this buffer's memory, still
            // allocated here; `munlock` only unpins pages (a page never locked is a no-op).
            if let Err(e) = unsafe { rustix::mm::munlock(ptr, end - aligned) } {
                tracing::debug!(error = %e, "munlock refused");
            }
        }
    }
}

impl std::fmt::Debug for PlainBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PlainBuffer({} bytes, redacted)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_and_join_round_trip_without_copying() {
        let mut buf = PlainBuffer::zeroed(10 << 20);
        let base = buf.as_ptr();
        buf[5] = 1;
        let mut pieces = buf.split(&[3 << 20, 3 << 20, 4 << 20]);
        assert_eq!(pieces.len(), 3);
        pieces[1][0] = 7;
        let joined = PlainBuffer::join(pieces).unwrap();
        assert_eq!(joined.as_ptr(), base, "joined in place");
        assert_eq!(joined.len(), 10 << 20);
        assert_eq!((joined[5], joined[3 << 20]), (1, 7));
        assert!(format!("{joined:?}").contains("redacted"));
    }

    #[test]
    fn pieces_out_of_order_are_refused() {
        let mut pieces = PlainBuffer::zeroed(100).split(&[50, 50]);
        pieces.swap(0, 1);
        assert!(PlainBuffer::join(pieces).is_err());
        assert_eq!(PlainBuffer::zeroed(0).split(&[]).len(), 1);
    }
}
