//! Sending part of a file to a connection.
//!
//! On TCP and Unix sockets the kernel moves the bytes (`sendfile(2)`): no copy through the
//! relay's memory, and on Linux 6.5+ Unix sockets not even a copy into the socket buffer.
//! On vsock, whose stream type exposes no readiness hook to drive `sendfile` with, the
//! bytes are read and written in 1 MiB pieces.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use tokio::io::{AsyncWriteExt, Interest};
use trustbridge_transport::Stream;

/// Largest single `sendfile` call (the kernel caps one call near 2 GiB anyway).
const SENDFILE_MAX: u64 = 1 << 30;
/// Piece size for the copying path.
const COPY_PIECE: usize = 1 << 20;

/// Sends `len` bytes of `file` from `offset`. A file that ends early (truncated while
/// served) is an error: the response promised `len` bytes, so the caller must close.
pub(crate) async fn send_file(
    stream: &mut Stream,
    file: &File,
    offset: u64,
    len: u64,
) -> io::Result<()> {
    // The same loop for both socket types, which share `async_io` but no trait for it.
    macro_rules! sendfile_all {
        ($socket:expr) => {{
            let (mut at, end) = (offset, offset + len);
            while at < end {
                let sock = &$socket;
                let n = sock
                    .async_io(Interest::WRITABLE, || sendfile(sock, file, at, end - at))
                    .await?;
                if n == 0 {
                    return Err(truncated());
                }
                at += n as u64;
            }
            Ok(())
        }};
    }
    match stream {
        Stream::Unix(s) => sendfile_all!(s),
        Stream::Tcp(s) => sendfile_all!(s),
        Stream::Vsock(_) => copy(stream, file, offset, len).await,
    }
}

fn sendfile(
    to: &impl std::os::fd::AsFd,
    file: &File,
    offset: u64,
    count: u64,
) -> io::Result<usize> {
    let mut off = offset;
    let count = usize::try_from(count.min(SENDFILE_MAX)).unwrap_or(usize::MAX);
    Ok(rustix::fs::sendfile(to, file, Some(&mut off), count)?)
}

async fn copy(stream: &mut Stream, file: &File, mut offset: u64, len: u64) -> io::Result<()> {
    let end = offset + len;
    let mut buf = vec![0u8; COPY_PIECE];
    while offset < end {
        let want = (end - offset).min(COPY_PIECE as u64) as usize;
        let file = file.try_clone()?;
        let (n, back) = tokio::task::spawn_blocking(move || {
            let r = file.read_at(&mut buf[..want], offset);
            (r, buf)
        })
        .await
        .map_err(io::Error::other)?;
        buf = back;
        match n? {
            0 => return Err(truncated()),
            n => {
                stream.write_all(&buf[..n]).await?;
                offset += n as u64;
            }
        }
    }
    Ok(())
}

fn truncated() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the file got shorter while it was being served",
    )
}
