//! Sealing and opening one file of a bundle, bound to its asset id and path.

use std::io::{Read, Write};

use zeroize::Zeroizing;

use super::{AssetId, BundleError, BundlePath, FileEntry, Manifest, associated_data};
use crate::sealed::{self, DataKey, SegmentSize};

/// Seals the plaintext from `reader` as bundle file `path` into `writer`, and returns its
/// manifest entry.
pub fn seal_file<R: Read, W: Write>(
    key: &DataKey,
    asset_id: &AssetId,
    path: BundlePath,
    segment_size: SegmentSize,
    reader: R,
    writer: W,
) -> Result<FileEntry, BundleError> {
    let ad = associated_data(asset_id, &path);
    let len = sealed::encrypt_stream(key, &ad, segment_size, reader, writer).map_err(|source| {
        BundleError::File {
            path: path.clone(),
            source,
        }
    })?;
    FileEntry::new(path, len, segment_size)
}

/// Opens bundle file `entry` of `manifest` from `reader` into `writer`, streaming.
///
/// Checks the data key against the manifest's commitment first, then reads exactly the
/// manifest's ciphertext length and fails if the input is shorter or longer. As with
/// [`sealed::decrypt_stream`], on error the caller must discard what was written.
pub fn open_file<R: Read, W: Write>(
    key: &DataKey,
    manifest: &Manifest,
    entry: &FileEntry,
    reader: R,
    writer: W,
) -> Result<u64, BundleError> {
    manifest.check_data_key(key)?;
    let ad = associated_data(&manifest.asset_id, &entry.path);
    let mut counted = CountingReader {
        inner: reader.take(entry.ciphertext_len),
        count: 0,
        ended: false,
    };
    let result = sealed::decrypt_stream(key, &ad, entry.segment_size, &mut counted, writer);
    let short = counted.ended && counted.count < entry.ciphertext_len;
    if short {
        // The input ran out before the manifest's length: that, not the segment that
        // happened to fail, is the diagnosis.
        return Err(BundleError::LengthMismatch {
            path: entry.path.clone(),
            expected: entry.ciphertext_len,
            found: counted.count,
        });
    }
    // Otherwise a stream error names the failing segment; the reader stopped early, so no
    // byte count would mean anything.
    let written = result.map_err(|source| BundleError::File {
        path: entry.path.clone(),
        source,
    })?;
    let mut rest = counted.inner.into_inner();
    let mut probe = [0u8; 1];
    let extra = loop {
        match rest.read(&mut probe) {
            Ok(n) => break n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(BundleError::Io {
                    path: entry.path.clone(),
                    op: "reading ciphertext",
                    source,
                });
            }
        }
    };
    if extra > 0 {
        return Err(BundleError::LengthMismatch {
            path: entry.path.clone(),
            expected: entry.ciphertext_len,
            found: entry.ciphertext_len + 1,
        });
    }
    if written != entry.plaintext_len {
        return Err(BundleError::LengthMismatch {
            path: entry.path.clone(),
            expected: entry.plaintext_len,
            found: written,
        });
    }
    Ok(written)
}

/// Opens bundle file `entry` of `manifest` held in memory, on `threads` threads. The
/// plaintext is returned only when every segment verified.
pub fn open_file_in_memory(
    key: &DataKey,
    manifest: &Manifest,
    entry: &FileEntry,
    ciphertext: &[u8],
    threads: usize,
) -> Result<Zeroizing<Vec<u8>>, BundleError> {
    let ad = checked_associated_data(key, manifest, entry, ciphertext.len())?;
    sealed::decrypt_in_memory(key, &ad, entry.segment_size, ciphertext, threads).map_err(|source| {
        BundleError::File {
            path: entry.path.clone(),
            source,
        }
    })
}

/// A per-segment opener for one sealed file whose stream header (its first
/// [`sealed::HEADER_LEN`] bytes) is `header`: for receivers that decrypt segments in place
/// as they arrive. Checks the key against the manifest first, like the other openers.
pub fn segment_opener(
    key: &DataKey,
    manifest: &Manifest,
    entry: &FileEntry,
    header: &[u8],
) -> Result<sealed::SegmentOpener, BundleError> {
    let ad = checked_associated_data(key, manifest, entry, entry.ciphertext_len as usize)?;
    let file_error = |source| BundleError::File {
        path: entry.path.clone(),
        source,
    };
    let layout = sealed::StreamLayout::for_ciphertext(entry.segment_size, entry.ciphertext_len)
        .map_err(file_error)?;
    sealed::SegmentOpener::new(key, &ad, layout, header).map_err(file_error)
}

/// Seals in-memory files into a complete bundle in `dir` (`<path>.sealed` files and the
/// signed `manifest.cose`) and returns the manifest. For small bundles built in code
/// (tests, fixtures); `trustbridge seal` is the tool for model directories.
pub fn seal_bundle_in_memory(
    dir: &std::path::Path,
    key: &DataKey,
    provider: &super::ProviderSigningKey,
    asset_id: &AssetId,
    segment_size: SegmentSize,
    files: &[(&str, &[u8])],
) -> Result<super::SignedManifest, BundleError> {
    let mut entries = Vec::with_capacity(files.len());
    for (name, data) in files {
        let path = BundlePath::new(name)?;
        let io = |op| {
            let path = path.clone();
            move |source| BundleError::Io { path, op, source }
        };
        let file = dir.join(format!("{name}{}", super::SEALED_SUFFIX));
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(io("creating its directory"))?;
        }
        let out = std::fs::File::create(&file).map_err(io("creating the sealed file"))?;
        entries.push(seal_file(key, asset_id, path, segment_size, *data, out)?);
    }
    let manifest = Manifest::new(asset_id.clone(), 0, provider.public(), key, entries)?;
    let signed = super::SignedManifest::sign(manifest, provider)?;
    std::fs::write(dir.join(super::MANIFEST_FILE), signed.as_bytes()).map_err(|source| {
        BundleError::Io {
            // Invariant: "manifest.cose" is a valid bundle path.
            path: BundlePath::new(super::MANIFEST_FILE).unwrap_or_else(|_| unreachable!()),
            op: "writing the manifest",
            source,
        }
    })?;
    Ok(signed)
}

/// Checks `key` against the manifest and the ciphertext's length against `entry`; returns
/// the entry's associated data.
fn checked_associated_data(
    key: &DataKey,
    manifest: &Manifest,
    entry: &FileEntry,
    len: usize,
) -> Result<Vec<u8>, BundleError> {
    manifest.check_data_key(key)?;
    if len as u64 != entry.ciphertext_len {
        return Err(BundleError::LengthMismatch {
            path: entry.path.clone(),
            expected: entry.ciphertext_len,
            found: len as u64,
        });
    }
    Ok(associated_data(&manifest.asset_id, &entry.path))
}

/// Counts bytes read and remembers whether the input ended.
struct CountingReader<R> {
    inner: R,
    count: u64,
    ended: bool,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        self.ended |= n == 0 && !buf.is_empty();
        Ok(n)
    }
}

/// Like [`open_file_in_memory`], decrypting in place in the ciphertext buffer the caller
/// hands over (no second allocation): the fastest way to load a downloaded model.
pub fn open_file_owned(
    key: &DataKey,
    manifest: &Manifest,
    entry: &FileEntry,
    ciphertext: Vec<u8>,
    threads: usize,
) -> Result<Zeroizing<Vec<u8>>, BundleError> {
    let ad = checked_associated_data(key, manifest, entry, ciphertext.len())?;
    sealed::decrypt_owned(key, &ad, entry.segment_size, ciphertext, threads).map_err(|source| {
        BundleError::File {
            path: entry.path.clone(),
            source,
        }
    })
}
