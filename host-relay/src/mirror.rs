//! Mirroring a bundle from an object store into the relay's bundle directory, which the
//! bundle server then serves (with `sendfile`).
//!
//! The manifest is fetched first and lists the sealed files with their lengths. Each
//! missing or incomplete file is downloaded in ranged chunks (`TB_DOWNLOAD_CHUNK_BYTES`),
//! `TB_DOWNLOAD_CONCURRENCY` at a time, into `.partial/<path>.sealed`; every finished chunk
//! is recorded in a `.done` journal beside it, so a relay restarted mid-download resumes
//! where it stopped. A file is renamed into place only when complete, and the manifest
//! last, so the directory never looks complete when it is not. Requests are retried by
//! the store's client, and each chunk a few more times on top (a body cut mid-stream).
//!
//! The relay cannot verify what it mirrors (it holds no key): the sentinel does, segment by
//! segment. The relay checks only the lengths the manifest gives.

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use trustbridge_protocol::bundle::{MANIFEST_FILE, SEALED_SUFFIX, SignedManifest};

use crate::source::BundleSource;

/// Download settings.
#[derive(Clone, Copy, Debug)]
pub struct MirrorConfig {
    /// Chunks in flight.
    pub concurrency: usize,
    /// Chunk size in bytes.
    pub chunk_bytes: u64,
}

impl Default for MirrorConfig {
    /// 8 chunks of 16 MiB in flight.
    fn default() -> Self {
        Self {
            concurrency: 8,
            chunk_bytes: 16 << 20,
        }
    }
}

/// What a mirror run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MirrorReport {
    /// Files already complete.
    pub files_present: usize,
    /// Files downloaded (fully or partly) by this run.
    pub files_fetched: usize,
    /// Chunks downloaded by this run.
    pub chunks_fetched: usize,
    /// Chunks a previous run had already finished.
    pub chunks_resumed: usize,
}

/// Why mirroring failed.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// The store failed (after its retries).
    #[error("{path}: {source}")]
    Store {
        /// The object.
        path: String,
        /// The error.
        source: object_store::Error,
    },
    /// The manifest does not parse.
    #[error("the source's manifest is invalid: {0}")]
    Manifest(String),
    /// An object is not as long as the manifest says.
    #[error("{path}: {found} bytes where the manifest says {expected}")]
    Length {
        /// The object.
        path: String,
        /// The manifest's length.
        expected: u64,
        /// What arrived.
        found: u64,
    },
    /// Local disk.
    #[error("{path}: {source}")]
    Io {
        /// The local path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> MirrorError + '_ {
    move |source| MirrorError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Mirrors the bundle at `source` into `dir`.
pub async fn mirror(
    source: &BundleSource,
    dir: &Path,
    config: MirrorConfig,
) -> Result<MirrorReport, MirrorError> {
    let store_err = |path: &str| {
        let path = path.to_owned();
        move |source| MirrorError::Store { path, source }
    };
    let manifest_path = source.path(MANIFEST_FILE);
    let manifest_bytes = source
        .store
        .get(&manifest_path)
        .await
        .map_err(store_err(manifest_path.as_ref()))?
        .bytes()
        .await
        .map_err(store_err(manifest_path.as_ref()))?;
    let manifest = SignedManifest::verify(&manifest_bytes, None)
        .map_err(|e| MirrorError::Manifest(e.to_string()))?;
    let mut report = MirrorReport::default();
    for entry in &manifest.manifest().files {
        let name = format!("{}{SEALED_SUFFIX}", entry.path.as_str());
        let target = dir.join(&name);
        if std::fs::metadata(&target).is_ok_and(|m| m.len() == entry.ciphertext_len) {
            report.files_present += 1;
            continue;
        }
        let (fetched, resumed) =
            mirror_file(source, &name, entry.ciphertext_len, dir, &target, config).await?;
        report.files_fetched += 1;
        report.chunks_fetched += fetched;
        report.chunks_resumed += resumed;
    }
    let target = dir.join(MANIFEST_FILE);
    let staged = dir.join(format!(".{MANIFEST_FILE}.partial"));
    std::fs::write(&staged, &manifest_bytes).map_err(io(&staged))?;
    std::fs::rename(&staged, &target).map_err(io(&target))?;
    Ok(report)
}

/// One file: its missing chunks, then the rename. Returns (fetched, resumed) chunks.
async fn mirror_file(
    source: &BundleSource,
    name: &str,
    len: u64,
    dir: &Path,
    target: &Path,
    config: MirrorConfig,
) -> Result<(usize, usize), MirrorError> {
    let partial = dir.join(".partial").join(name);
    let journal = partial.with_extension("done");
    let parent = partial.parent().unwrap_or(dir);
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o644)
        .open(&partial)
        .map_err(io(&partial))?;
    file.set_len(len).map_err(io(&partial))?;
    let chunk = config.chunk_bytes.max(1);
    let chunks = len.div_ceil(chunk) as usize;
    let done: BTreeSet<usize> = std::fs::read_to_string(&journal)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse().ok())
        .filter(|&i| i < chunks)
        .collect();
    let resumed = done.len();
    let file = Arc::new(file);
    let journal_file = Arc::new(std::sync::Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&journal)
            .map_err(io(&journal))?,
    ));
    let permits = Arc::new(tokio::sync::Semaphore::new(config.concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for index in (0..chunks).filter(|i| !done.contains(i)) {
        let (store, path) = (source.store.clone(), source.path(name));
        let (file, journal_file, permits) = (file.clone(), journal_file.clone(), permits.clone());
        let (partial, journal) = (partial.clone(), journal.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let start = index as u64 * chunk;
            let end = (start + chunk).min(len);
            let bytes = fetch_range(&*store, &path, start, end).await?;
            file.write_all_at(&bytes, start).map_err(io(&partial))?;
            // The chunk is recorded only once its bytes are written (and, at the end,
            // synced before the rename).
            let mut j = journal_file
                .lock()
                .map_err(|_| io(&journal)(std::io::Error::other("journal lock poisoned")))?;
            writeln!(j, "{index}").map_err(io(&journal))?;
            Ok::<_, MirrorError>(())
        });
    }
    let fetched = tasks.len();
    while let Some(joined) = tasks.join_next().await {
        joined.map_err(|e| io(&partial)(std::io::Error::other(e)))??;
    }
    file.sync_all().map_err(io(&partial))?;
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    std::fs::rename(&partial, target).map_err(io(target))?;
    let _ = std::fs::remove_file(&journal);
    tracing::info!(
        file = name,
        bytes = len,
        chunks_fetched = fetched,
        chunks_resumed = resumed,
        "bundle file mirrored"
    );
    Ok((fetched, resumed))
}

/// `start..end` of `path`, retried a few times on top of the store's own retries.
async fn fetch_range(
    store: &dyn object_store::ObjectStore,
    path: &object_store::path::Path,
    start: u64,
    end: u64,
) -> Result<bytes::Bytes, MirrorError> {
    const ATTEMPTS: u32 = 4;
    let mut attempt = 0;
    loop {
        attempt += 1;
        match store.get_range(path, start..end).await {
            Ok(bytes) if bytes.len() as u64 == end - start => return Ok(bytes),
            Ok(bytes) => {
                return Err(MirrorError::Length {
                    path: path.to_string(),
                    expected: end - start,
                    found: bytes.len() as u64,
                });
            }
            Err(e) if attempt < ATTEMPTS && !matches!(e, object_store::Error::NotFound { .. }) => {
                tracing::warn!(path = %path, start, attempt, error = %e, "chunk failed; retrying");
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            Err(source) => {
                return Err(MirrorError::Store {
                    path: path.to_string(),
                    source,
                });
            }
        }
    }
}
