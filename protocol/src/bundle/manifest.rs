//! The manifest: what a bundle contains, under which key, from which provider.

use std::collections::HashSet;

use ciborium::Value;

use super::{AssetId, BundleError, BundlePath, ProviderPublicKey};
use crate::KeyId;
use crate::cbor::{self, MapReader, text_map};
use crate::sealed::{DataKey, SegmentSize, StreamLayout};

/// The format id of version 1 bundles.
pub const FORMAT_V1: &str = "trustbridge-sealed-weights/v1";

/// One sealed file of a bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    /// Path relative to the bundle root (the sealed file is `<path>.sealed`).
    pub path: BundlePath,
    /// Plaintext length in bytes.
    pub plaintext_len: u64,
    /// Ciphertext length in bytes (header and tags included).
    pub ciphertext_len: u64,
    /// Ciphertext segment size of the file's stream.
    pub segment_size: SegmentSize,
}

impl FileEntry {
    /// The entry of a file of `plaintext_len` bytes sealed with `segment_size`.
    pub fn new(
        path: BundlePath,
        plaintext_len: u64,
        segment_size: SegmentSize,
    ) -> Result<Self, BundleError> {
        let layout =
            StreamLayout::for_plaintext(segment_size, plaintext_len).map_err(|source| {
                BundleError::File {
                    path: path.clone(),
                    source,
                }
            })?;
        Ok(Self {
            path,
            plaintext_len,
            ciphertext_len: layout.ciphertext_len(),
            segment_size,
        })
    }
}

/// The signed content of `manifest.cose`.
///
/// Encoded as a deterministic CBOR map with text keys:
/// `format`, `asset_id`, `created_at` (Unix seconds), `provider_key` (32-byte Ed25519
/// public key), `key_id` (8 bytes), `key_commitment` (32 bytes) and `files`, an array of
/// maps `{path, plaintext_len, ciphertext_len, segment_size}` sorted by path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// The model asset this bundle seals.
    pub asset_id: AssetId,
    /// When the bundle was sealed (Unix seconds).
    pub created_at: u64,
    /// The provider key that signs the manifest.
    pub provider_key: ProviderPublicKey,
    /// Public id of the data key.
    pub key_id: KeyId,
    /// HMAC commitment to the data key and asset id (see [`DataKey::commitment`]).
    pub key_commitment: [u8; 32],
    /// The sealed files, sorted by path.
    pub files: Vec<FileEntry>,
}

impl Manifest {
    /// A manifest for `files` sealed under `data_key`; sorts and checks the files.
    pub fn new(
        asset_id: AssetId,
        created_at: u64,
        provider_key: ProviderPublicKey,
        data_key: &DataKey,
        mut files: Vec<FileEntry>,
    ) -> Result<Self, BundleError> {
        files.sort_by(|a, b| a.path.cmp(&b.path));
        check_paths(&files)?;
        Ok(Self {
            key_id: data_key.key_id(),
            key_commitment: data_key.commitment(asset_id.as_str()),
            asset_id,
            created_at,
            provider_key,
            files,
        })
    }

    /// Fails with [`BundleError::WrongKey`] unless `key` is the bundle's data key.
    pub fn check_data_key(&self, key: &DataKey) -> Result<(), BundleError> {
        if key.matches_commitment(self.asset_id.as_str(), &self.key_commitment) {
            Ok(())
        } else {
            Err(BundleError::WrongKey {
                expected: self.key_id,
                found: key.key_id(),
            })
        }
    }

    /// The entry for `path`.
    pub fn file(&self, path: &BundlePath) -> Option<&FileEntry> {
        self.files
            .binary_search_by(|f| f.path.cmp(path))
            .ok()
            .map(|i| &self.files[i])
    }

    /// Sum of the files' plaintext lengths.
    pub fn total_plaintext_len(&self) -> u64 {
        self.files.iter().map(|f| f.plaintext_len).sum()
    }

    /// Sum of the files' ciphertext lengths.
    pub fn total_ciphertext_len(&self) -> u64 {
        self.files.iter().map(|f| f.ciphertext_len).sum()
    }

    /// The deterministic CBOR encoding.
    pub fn to_cbor(&self) -> Result<Vec<u8>, BundleError> {
        let files = self
            .files
            .iter()
            .map(|f| {
                text_map([
                    ("path", Value::Text(f.path.as_str().to_owned())),
                    ("plaintext_len", Value::from(f.plaintext_len)),
                    ("ciphertext_len", Value::from(f.ciphertext_len)),
                    ("segment_size", Value::from(f.segment_size.get())),
                ])
            })
            .collect();
        let map = text_map([
            ("format", Value::Text(FORMAT_V1.to_owned())),
            ("asset_id", Value::Text(self.asset_id.as_str().to_owned())),
            ("created_at", Value::from(self.created_at)),
            (
                "provider_key",
                Value::Bytes(self.provider_key.to_bytes().to_vec()),
            ),
            ("key_id", Value::Bytes(self.key_id.0.to_vec())),
            ("key_commitment", Value::Bytes(self.key_commitment.to_vec())),
            ("files", Value::Array(files)),
        ]);
        Ok(cbor::to_canonical_vec(&map)?)
    }

    /// Parses and validates the deterministic CBOR encoding.
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, BundleError> {
        let mut m = MapReader::new(cbor::from_canonical_slice(bytes)?, "manifest")?;
        let format = m.text("format")?;
        if format != FORMAT_V1 {
            return Err(BundleError::UnsupportedFormat(format));
        }
        let asset_id = AssetId::new(&m.text("asset_id")?)?;
        let created_at = m.u64("created_at")?;
        let provider_key = ProviderPublicKey::from_bytes(&m.byte_array::<32>("provider_key")?)
            .map_err(|e| BundleError::ManifestMalformed(format!("provider_key: {e}")))?;
        let key_id = KeyId(m.byte_array::<8>("key_id")?);
        let key_commitment = m.byte_array::<32>("key_commitment")?;
        let files = m
            .array("files")?
            .into_iter()
            .map(parse_file_entry)
            .collect::<Result<Vec<_>, _>>()?;
        m.finish()?;
        if !files.windows(2).all(|w| w[0].path < w[1].path) {
            return Err(BundleError::ManifestMalformed(
                "files are not sorted by path".into(),
            ));
        }
        check_paths(&files)?;
        Ok(Self {
            asset_id,
            created_at,
            provider_key,
            key_id,
            key_commitment,
            files,
        })
    }
}

fn parse_file_entry(value: Value) -> Result<FileEntry, BundleError> {
    let mut f = MapReader::new(value, "files[]")?;
    let path = BundlePath::new(&f.text("path")?)?;
    let plaintext_len = f.u64("plaintext_len")?;
    let ciphertext_len = f.u64("ciphertext_len")?;
    let segment_size =
        SegmentSize::new(f.u64("segment_size")?).map_err(|source| BundleError::File {
            path: path.clone(),
            source,
        })?;
    f.finish()?;
    let entry = FileEntry::new(path, plaintext_len, segment_size)?;
    if entry.ciphertext_len != ciphertext_len {
        return Err(BundleError::ManifestMalformed(format!(
            "{}: ciphertext_len {ciphertext_len} does not match plaintext_len {plaintext_len} at segment size {segment_size}",
            entry.path
        )));
    }
    Ok(entry)
}

/// At least one file; no duplicate path; no path that is a directory of another.
fn check_paths(files: &[FileEntry]) -> Result<(), BundleError> {
    if files.is_empty() {
        return Err(BundleError::ManifestMalformed(
            "a bundle holds at least one file".into(),
        ));
    }
    let mut seen = HashSet::with_capacity(files.len());
    for f in files {
        if !seen.insert(f.path.as_str()) {
            return Err(BundleError::PathConflict(f.path.clone()));
        }
    }
    for f in files {
        let path = f.path.as_str();
        let mut ancestors = path.match_indices('/').map(|(i, _)| &path[..i]);
        if ancestors.any(|dir| seen.contains(dir)) {
            return Err(BundleError::PathConflict(f.path.clone()));
        }
    }
    Ok(())
}
