//! Hydrate and Decrypt: fetch the sealed bundle from the relay, check it against what the
//! key release named, and decrypt it on all cores into memory.
//!
//! - The manifest must have the digest the broker named, verify under the provider key the
//!   broker named, and commit to the released data key.
//! - Each sealed file is downloaded in ranged chunks by `concurrency` parallel requests; a
//!   failed chunk is retried with back-off (so a relay restart only delays hydration) and
//!   chunks already received are kept (resume).
//! - Decryption runs in parallel and returns plaintext only when every segment verified;
//!   any failure is fatal (`tampered_bundle`). Plaintext lives only in memory, in buffers
//!   that are zeroized on drop; nothing is written to disk.

use std::collections::BTreeMap;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use trustbridge_protocol::bundle::{
    self, FileEntry, MANIFEST_FILE, ProviderPublicKey, SEALED_SUFFIX, SignedManifest,
};
use trustbridge_transport::Endpoint;
use zeroize::Zeroizing;

use crate::authorize::Released;
use crate::boot::{Backoff, StepError};

/// How hydration downloads.
#[derive(Clone, Copy, Debug)]
pub struct HydrateConfig {
    /// Parallel chunk requests (`TB_DOWNLOAD_CONCURRENCY`).
    pub concurrency: usize,
    /// Chunk size in bytes (`TB_DOWNLOAD_CHUNK_BYTES`).
    pub chunk_bytes: u64,
    /// Retry policy for each request.
    pub backoff: Backoff,
    /// Decryption threads.
    pub threads: usize,
}

impl Default for HydrateConfig {
    /// 8 parallel 8 MiB chunks, the default back-off, one decryption thread per core.
    fn default() -> Self {
        Self {
            concurrency: 8,
            chunk_bytes: 8 << 20,
            backoff: Backoff::default(),
            threads: trustbridge_protocol::sealed::default_threads(),
        }
    }
}

/// The decrypted model, in memory.
pub struct Model {
    /// The verified manifest.
    pub manifest: SignedManifest,
    /// Plaintext by bundle path (zeroized on drop).
    pub files: BTreeMap<String, Zeroizing<Vec<u8>>>,
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

fn fatal(code: &str, detail: impl Into<String>) -> StepError {
    StepError::Fatal {
        code: code.to_owned(),
        detail: detail.into(),
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

/// Sends `GET path` (with an inclusive `range`) over a fresh connection to `source` and
/// returns the response, or the error its status means.
async fn request(
    source: &Endpoint,
    path: &str,
    range: Option<(u64, u64)>,
) -> Result<hyper::Response<hyper::body::Incoming>, StepError> {
    let transient = |e: String| StepError::Transient(format!("relay {path}: {e}"));
    let stream = trustbridge_transport::connect(source)
        .await
        .map_err(|e| transient(e.to_string()))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| transient(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = hyper::Request::get(path).header(hyper::header::HOST, "relay");
    if let Some((start, end)) = range {
        req = req.header(hyper::header::RANGE, format!("bytes={start}-{end}"));
    }
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(|e| fatal("internal", e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| transient(e.to_string()))?;
    match (resp.status().as_u16(), range) {
        (200, None) | (206, Some(_)) => Ok(resp),
        (404, _) => Err(fatal("bundle_missing", format!("the relay has no {path}"))),
        (s, _) if s >= 500 => Err(transient(format!("HTTP {s}"))),
        (s, _) => Err(fatal("bundle_missing", format!("{path}: HTTP {s}"))),
    }
}

/// One whole-file GET.
async fn get(source: &Endpoint, path: &str) -> Result<Bytes, StepError> {
    let resp = request(source, path, None).await?;
    Ok(resp
        .into_body()
        .collect()
        .await
        .map_err(|e| StepError::Transient(format!("relay {path}: {e}")))?
        .to_bytes())
}

/// [`get`] with retries on transient failures.
async fn get_retrying(source: &Endpoint, path: &str, backoff: Backoff) -> Result<Bytes, StepError> {
    let mut retry = backoff.retrier(path);
    loop {
        match get(source, path).await {
            Err(StepError::Transient(e)) => tokio::time::sleep(retry.next_wait(&e)?).await,
            other => return other,
        }
    }
}

/// One ranged GET streamed straight into `dst` (the range `start..start + dst.len()`).
async fn fetch_into(
    source: &Endpoint,
    path: &str,
    start: u64,
    dst: &mut [u8],
) -> Result<(), StepError> {
    let transient = |e: String| StepError::Transient(format!("relay {path}: {e}"));
    let end = start + dst.len() as u64 - 1;
    let resp = request(source, path, Some((start, end))).await?;
    let mut body = resp.into_body();
    let mut written = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| transient(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            let next = written + data.len();
            if next > dst.len() {
                return Err(transient("range answer longer than requested".into()));
            }
            dst[written..next].copy_from_slice(&data);
            written = next;
        }
    }
    if written != dst.len() {
        return Err(transient(format!(
            "short range answer ({written} of {} bytes)",
            dst.len()
        )));
    }
    Ok(())
}

/// [`fetch_into`] with retries on transient failures (each attempt restarts the chunk).
async fn fetch_chunk(
    source: &Endpoint,
    path: &str,
    start: u64,
    dst: &mut [u8],
    backoff: Backoff,
) -> Result<(), StepError> {
    let mut retry = backoff.retrier(path);
    loop {
        match fetch_into(source, path, start, dst).await {
            Err(StepError::Transient(e)) => tokio::time::sleep(retry.next_wait(&e)?).await,
            other => return other,
        }
    }
}

/// Downloads one sealed file in parallel ranged chunks, each streamed into its place in one
/// buffer; a failed chunk is retried (from its start) with back-off, the others are kept.
async fn download(
    source: &Endpoint,
    entry: &FileEntry,
    config: &HydrateConfig,
) -> Result<Vec<u8>, StepError> {
    use futures_util::{StreamExt, TryStreamExt};
    let path = format!("/bundle/{}{SEALED_SUFFIX}", url_path(entry.path.as_str()));
    let chunk = usize::try_from(config.chunk_bytes.max(1)).unwrap_or(usize::MAX);
    let mut out = vec![0u8; entry.ciphertext_len as usize];
    let fetches: Vec<_> = out
        .chunks_mut(chunk)
        .enumerate()
        .map(|(i, dst)| fetch_chunk(source, &path, (i * chunk) as u64, dst, config.backoff))
        .collect();
    futures_util::stream::iter(fetches)
        .buffer_unordered(config.concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    Ok(out)
}

/// The verified manifest and the downloaded (still sealed) files.
pub struct Fetched {
    /// The verified manifest.
    pub manifest: SignedManifest,
    /// Ciphertext by bundle path.
    pub sealed: Vec<(FileEntry, Vec<u8>)>,
}

/// Hydrate: fetches the manifest and every sealed file, and checks the manifest against the
/// key release (digest, provider key, key commitment).
pub async fn fetch(
    source: &Endpoint,
    released: &Released,
    config: &HydrateConfig,
) -> Result<Fetched, StepError> {
    let bytes = get_retrying(source, &format!("/bundle/{MANIFEST_FILE}"), config.backoff).await?;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes);
    if digest.as_ref() != released.manifest_sha256 {
        return Err(fatal(
            "manifest_mismatch",
            "the relay's manifest is not the one the key broker named",
        ));
    }
    let provider = ProviderPublicKey::from_bytes(&released.provider_key)
        .map_err(|e| fatal("manifest_invalid", e.to_string()))?;
    let manifest = SignedManifest::verify(&bytes, Some(&provider))
        .map_err(|e| fatal("manifest_invalid", e.to_string()))?;
    manifest
        .manifest()
        .check_data_key(&released.key)
        .map_err(|e| fatal("wrong_key", e.to_string()))?;
    let mut sealed = Vec::new();
    for entry in &manifest.manifest().files {
        let started = std::time::Instant::now();
        let ciphertext = download(source, entry, config).await?;
        tracing::info!(path = %entry.path, bytes = entry.ciphertext_len, ms = started.elapsed().as_millis() as u64, "sealed file downloaded");
        sealed.push((entry.clone(), ciphertext));
    }
    Ok(Fetched { manifest, sealed })
}

/// Decrypt: opens every file on all cores into zeroizing memory.
pub async fn decrypt(
    fetched: Fetched,
    released: &Released,
    threads: usize,
) -> Result<Model, StepError> {
    let Fetched { manifest, sealed } = fetched;
    let m = manifest.manifest().clone();
    let key = released.key.clone();
    let files = tokio::task::spawn_blocking(move || {
        let mut files = BTreeMap::new();
        for (entry, ciphertext) in sealed {
            // In place: the downloaded ciphertext becomes the plaintext, no new allocation.
            let plain = bundle::open_file_owned(&key, &m, &entry, ciphertext, threads)
                .map_err(|e| fatal("tampered_bundle", e.to_string()))?;
            files.insert(entry.path.as_str().to_owned(), plain);
        }
        Ok::<_, StepError>(files)
    })
    .await
    .map_err(|e| fatal("internal", e.to_string()))??;
    Ok(Model { manifest, files })
}

/// Hydrate and Decrypt in one call.
pub async fn hydrate(
    source: &Endpoint,
    released: &Released,
    config: &HydrateConfig,
) -> Result<Model, StepError> {
    let fetched = fetch(source, released, config).await?;
    decrypt(fetched, released, config.threads).await
}
