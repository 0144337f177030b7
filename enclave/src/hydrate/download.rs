//! Downloading one sealed file and opening it as it arrives.
//!
//! The file's segments are grouped into chunks of about `chunk_bytes`; each chunk is one
//! ranged GET, run as its own task (so chunks spread over every core), at most
//! `concurrency` at a time. As a chunk's body streams in, each segment's ciphertext is
//! read straight into the place its plaintext belongs in the one output buffer, its tag
//! aside, and it is verified and decrypted there at once, while still in cache. The output
//! is therefore contiguous plaintext with nothing left to move, after one copy from the
//! socket.
//!
//! A chunk that fails transiently is retried with back-off from its first segment not yet
//! opened (resume); segments already opened are kept. A segment that fails to verify is
//! fatal (`tampered_bundle`) and every other chunk is cancelled; all plaintext pieces are
//! zeroized as they drop.

use std::sync::Arc;

use trustbridge_protocol::bundle::{self, FileEntry, Manifest};
use trustbridge_protocol::sealed::{HEADER_LEN, SegmentOpener, TAG_LEN};
use trustbridge_transport::Endpoint;

use super::{HydrateConfig, range_get};
use crate::boot::{Backoff, StepError};
use crate::failure::{FailureCode, fatal};
use crate::memory::PlainBuffer;

/// One chunk's job: segments `first..end`, whose plaintext starts at `base`.
struct Chunk {
    first: u64,
    end: u64,
    base: u64,
}

/// Downloads and opens the sealed file `entry`, available at `path` on `source`.
pub(crate) async fn download(
    source: &Endpoint,
    path: &str,
    key: &trustbridge_protocol::sealed::DataKey,
    manifest: &Manifest,
    entry: &FileEntry,
    config: &HydrateConfig,
    progress: &super::HydrateProgress,
) -> Result<PlainBuffer, StepError> {
    let header_end = (HEADER_LEN as u64)
        .min(entry.ciphertext_len)
        .saturating_sub(1);
    let header = config
        .backoff
        .retry_async(path, || async {
            range_get::get(source, path, Some((0, header_end)), 0)
                .await?
                .into_vec()
                .await
        })
        .await?;
    let opener = bundle::segment_opener(key, manifest, entry, &header)
        .map_err(|e| fatal(FailureCode::TamperedBundle, e.to_string()))?;
    let layout = *opener.layout();
    let per_chunk = (config.chunk_bytes / u64::from(layout.segment_size().get())).max(1);
    let chunks: Vec<Chunk> = (0..layout.segments())
        .step_by(per_chunk as usize)
        .map(|first| Chunk {
            first,
            end: (first + per_chunk).min(layout.segments()),
            base: layout.segment(first).plaintext.start,
        })
        .collect();
    let lens: Vec<usize> = chunks
        .iter()
        .map(|c| (layout.segment(c.end - 1).plaintext.end - c.base) as usize)
        .collect();
    let pieces = PlainBuffer::zeroed(layout.plaintext_len() as usize).split(&lens);
    let opener = Arc::new(opener);
    let permits = Arc::new(tokio::sync::Semaphore::new(config.concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (index, (chunk, piece)) in chunks.into_iter().zip(pieces).enumerate() {
        let (source, path, opener, permits) = (
            source.clone(),
            path.to_owned(),
            opener.clone(),
            permits.clone(),
        );
        let backoff = config.backoff;
        tasks.spawn(async move {
            let _permit = permits
                .acquire_owned()
                .await
                .map_err(|e| fatal(FailureCode::Internal, e.to_string()))?;
            let piece = fetch_chunk(&source, &path, &opener, chunk, piece, backoff).await?;
            Ok::<_, StepError>((index, piece))
        });
    }
    let mut done = Vec::with_capacity(tasks.len());
    while let Some(joined) = tasks.join_next().await {
        match joined.map_err(|e| fatal(FailureCode::Internal, e.to_string()))? {
            Ok(piece) => {
                progress.add(piece.1.len() as u64);
                done.push(piece);
            }
            // Dropping `tasks` cancels the other chunks; their pieces are zeroized.
            Err(e) => return Err(e),
        }
    }
    done.sort_by_key(|(index, _)| *index);
    PlainBuffer::join(done.into_iter().map(|(_, piece)| piece).collect())
        .map_err(|_| fatal(FailureCode::Internal, "plaintext pieces are not contiguous"))
}

/// One chunk, retried from its first unopened segment until done or out of attempts.
async fn fetch_chunk(
    source: &Endpoint,
    path: &str,
    opener: &SegmentOpener,
    chunk: Chunk,
    mut piece: PlainBuffer,
    backoff: Backoff,
) -> Result<PlainBuffer, StepError> {
    let mut next = chunk.first;
    let mut retry = backoff.retrier(path);
    loop {
        match receive(source, path, opener, &chunk, &mut next, &mut piece).await {
            Ok(()) => return Ok(piece),
            Err(StepError::Transient(e)) => {
                tracing::debug!(path, segment = next, error = %e, "chunk interrupted; resuming");
                tokio::time::sleep(retry.next_wait(&e)?).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// One ranged GET for segments `*next..chunk.end`, each opened in place as it lands;
/// `*next` advances past every opened segment.
async fn receive(
    source: &Endpoint,
    path: &str,
    opener: &SegmentOpener,
    chunk: &Chunk,
    next: &mut u64,
    piece: &mut [u8],
) -> Result<(), StepError> {
    let layout = opener.layout();
    let range = (
        layout.segment(*next).ciphertext.start,
        layout.segment(chunk.end - 1).ciphertext.end - 1,
    );
    let mut body = range_get::get(source, path, Some(range), 0).await?;
    while *next < chunk.end {
        let span = layout.segment(*next);
        let slot = &mut piece[(span.plaintext.start - chunk.base) as usize
            ..(span.plaintext.end - chunk.base) as usize];
        body.read_exact(slot).await?;
        let mut tag = [0u8; TAG_LEN];
        body.read_exact(&mut tag).await?;
        opener
            .open_in_place(*next, slot, &tag)
            .map_err(|e| fatal(FailureCode::TamperedBundle, format!("{path}: {e}")))?;
        *next += 1;
    }
    debug_assert_eq!(body.remaining(), 0);
    Ok(())
}
