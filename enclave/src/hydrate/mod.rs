//! Hydrate and Decrypt: fetch the sealed bundle from the relay, check it against what the
//! key release named, and decrypt it on all cores into memory.
//!
//! - The manifest must have the digest the broker named, verify under the provider key the
//!   broker named, and commit to the released data key.
//! - Each sealed file is downloaded in ranged chunks by `concurrency` parallel tasks, and
//!   every segment is verified and decrypted in place the moment it lands ([`download`]):
//!   one copy from the socket, contiguous plaintext at the end.
//! - A failed chunk is retried with back-off from its first unopened segment, so a relay
//!   restart only delays hydration. A segment that does not verify is fatal
//!   (`tampered_bundle`).
//! - Plaintext lives only in memory ([`PlainBuffer`]: huge pages, excluded from core
//!   dumps, locked against swap where the limit allows, zeroized on drop); nothing is
//!   written to disk.

use std::collections::BTreeMap;

use trustbridge_protocol::bundle::{
    MANIFEST_FILE, ProviderPublicKey, SEALED_SUFFIX, SignedManifest,
};
use trustbridge_transport::Endpoint;

use crate::authorize::Released;
use crate::boot::{Backoff, StepError};
use crate::failure::{FailureCode, fatal};
use crate::memory::PlainBuffer;
use crate::output::{OutputError, SwapPolicy};

mod download;
mod range_get;

/// Largest manifest accepted from the relay.
const MAX_MANIFEST: u64 = 16 << 20;

/// How hydration downloads.
#[derive(Clone, Copy, Debug)]
pub struct HydrateConfig {
    /// Parallel chunk requests (`TB_DOWNLOAD_CONCURRENCY`).
    pub concurrency: usize,
    /// Chunk size in bytes (`TB_DOWNLOAD_CHUNK_BYTES`), rounded down to whole segments
    /// (at least one).
    pub chunk_bytes: u64,
    /// Retry policy for each request.
    pub backoff: Backoff,
}

impl Default for HydrateConfig {
    /// 8 parallel 16 MiB chunks and the default back-off.
    fn default() -> Self {
        Self {
            concurrency: 8,
            chunk_bytes: 16 << 20,
            backoff: Backoff::default(),
        }
    }
}

/// The decrypted model, in memory.
pub struct Model {
    /// The verified manifest.
    pub manifest: SignedManifest,
    /// Plaintext by bundle path (zeroized on drop; empty once handed to a tmpfs runtime).
    pub files: std::sync::Arc<BTreeMap<String, PlainBuffer>>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Model({} files, asset {})",
            self.files.len(),
            self.manifest.manifest().asset_id
        )
    }
}

/// Percent-encodes a bundle path for a URL (each component; `/` kept).
fn url_path(path: &str) -> String {
    path.split('/')
        .map(|c| {
            c.bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Fetches the manifest and checks it against the key release: the digest and provider
/// key the broker named, and the commitment to the released data key.
pub async fn fetch_manifest(
    source: &Endpoint,
    released: &Released,
    config: &HydrateConfig,
) -> Result<SignedManifest, StepError> {
    let path = format!("/bundle/{MANIFEST_FILE}");
    let bytes = config
        .backoff
        .retry_async(&path, || async {
            range_get::get(source, &path, None, MAX_MANIFEST)
                .await?
                .into_vec()
                .await
        })
        .await?;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes);
    if digest.as_ref() != released.manifest_sha256 {
        return Err(fatal(
            FailureCode::ManifestMismatch,
            "the relay's manifest is not the one the key broker named",
        ));
    }
    let provider = ProviderPublicKey::from_bytes(&released.provider_key)
        .map_err(|e| fatal(FailureCode::ManifestInvalid, e.to_string()))?;
    let manifest = SignedManifest::verify(&bytes, Some(&provider))
        .map_err(|e| fatal(FailureCode::ManifestInvalid, e.to_string()))?;
    manifest
        .manifest()
        .check_data_key(&released.key)
        .map_err(|e| fatal(FailureCode::WrongKey, e.to_string()))?;
    Ok(manifest)
}

/// How far a hydration got, for `/status`: plaintext bytes verified and decrypted, of the
/// model's total.
#[derive(Debug, Default)]
pub struct HydrateProgress {
    done: std::sync::atomic::AtomicU64,
    total: std::sync::atomic::AtomicU64,
}

impl HydrateProgress {
    /// A new hydration of `total` bytes.
    fn start(&self, total: u64) {
        use std::sync::atomic::Ordering;
        self.done.store(0, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
    }

    /// `bytes` more verified and decrypted.
    pub(crate) fn add(&self, bytes: u64) {
        self.done
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// (bytes done, total) of the latest hydration.
    pub fn get(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering;
        (
            self.done.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
        )
    }
}

/// Downloads every file of `manifest`, verifying and decrypting each segment as it
/// arrives.
pub async fn fetch_files(
    source: &Endpoint,
    released: &Released,
    manifest: SignedManifest,
    config: &HydrateConfig,
) -> Result<Model, StepError> {
    fetch_files_tracked(
        source,
        released,
        manifest,
        config,
        &HydrateProgress::default(),
    )
    .await
}

/// [`fetch_files`], counting the bytes done in `progress`.
pub async fn fetch_files_tracked(
    source: &Endpoint,
    released: &Released,
    manifest: SignedManifest,
    config: &HydrateConfig,
    progress: &HydrateProgress,
) -> Result<Model, StepError> {
    progress.start(
        manifest
            .manifest()
            .files
            .iter()
            .map(|e| e.plaintext_len)
            .sum(),
    );
    let mut files = BTreeMap::new();
    for entry in &manifest.manifest().files {
        let started = std::time::Instant::now();
        let path = format!("/bundle/{}{SEALED_SUFFIX}", url_path(entry.path.as_str()));
        let plain = download::download(
            source,
            &path,
            &released.key,
            manifest.manifest(),
            entry,
            config,
            progress,
        )
        .await?;
        tracing::info!(path = %entry.path, bytes = entry.ciphertext_len, ms = started.elapsed().as_millis() as u64, "sealed file downloaded and verified");
        files.insert(entry.path.as_str().to_owned(), plain);
    }
    Ok(Model {
        manifest,
        files: std::sync::Arc::new(files),
    })
}

/// Pins the model's memory against swap. Where `RLIMIT_MEMLOCK` does not allow it, the
/// plaintext could be swapped: refused while swap is active, unless `swap` allows it.
pub fn lock(model: &Model, swap: &SwapPolicy) -> Result<(), OutputError> {
    let mut unlocked = 0usize;
    for (path, plain) in model.files.iter() {
        if let Err(e) = plain.lock() {
            tracing::warn!(%path, bytes = plain.len(), error = %e, "cannot lock plaintext in RAM (raise RLIMIT_MEMLOCK)");
            unlocked += 1;
        }
    }
    if unlocked > 0 {
        swap.check_unlocked()?;
    }
    Ok(())
}

/// Hydrate and Decrypt in one call: [`fetch_manifest`], [`fetch_files`], [`lock`].
pub async fn hydrate(
    source: &Endpoint,
    released: &Released,
    config: &HydrateConfig,
    swap: &SwapPolicy,
) -> Result<Model, StepError> {
    let manifest = fetch_manifest(source, released, config).await?;
    let model = fetch_files(source, released, manifest, config).await?;
    lock(&model, swap).map_err(|e| fatal(FailureCode::ModelOutput, e.to_string()))?;
    Ok(model)
}
