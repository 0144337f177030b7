//! Errors of bundle-level operations.

use super::BundlePath;
use crate::KeyId;
use crate::cbor::CborError;
use crate::sealed::StreamError;

/// Why a bundle, its manifest or one of its files was rejected.
///
/// Errors about a file name the file; errors about a stream name the segment. No variant
/// carries key material or plaintext.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// The asset id has characters or a length outside the allowed set.
    #[error("invalid asset id {0:?}: use 1-128 characters from A-Z a-z 0-9 . _ - : / @ +")]
    InvalidAssetId(String),
    /// A path is not a normal relative path.
    #[error(
        "invalid bundle path {0:?}: must be a relative path without '.', '..' or empty components"
    )]
    InvalidPath(String),
    /// The manifest is not a well-formed TrustBridge manifest.
    #[error("malformed manifest: {0}")]
    ManifestMalformed(String),
    /// The manifest payload is not valid deterministic CBOR of the expected shape.
    #[error("malformed manifest payload: {0}")]
    ManifestCbor(#[from] CborError),
    /// The manifest declares a format this version does not read.
    #[error("unsupported manifest format {0:?} (this build reads trustbridge-sealed-weights/v1)")]
    UnsupportedFormat(String),
    /// The COSE algorithm is not EdDSA.
    #[error("manifest signature algorithm is not EdDSA")]
    UnsupportedAlgorithm,
    /// The Ed25519 signature does not verify.
    #[error("manifest signature is invalid (provider key {provider})")]
    BadSignature {
        /// Key id of the key named in the manifest.
        provider: KeyId,
    },
    /// The manifest was signed by another provider than the pinned one.
    #[error("manifest was signed by provider key {found}, expected {expected}")]
    ProviderMismatch {
        /// The pinned key's id.
        expected: KeyId,
        /// The signer's key id.
        found: KeyId,
    },
    /// The data key is not the bundle's (checked against the key commitment).
    #[error("wrong data key: bundle is sealed under key {expected}, this key is {found}")]
    WrongKey {
        /// The bundle's key id.
        expected: KeyId,
        /// The offered key's id.
        found: KeyId,
    },
    /// Two files have the same path, or one file's path is a directory of another.
    #[error("manifest path conflict at {0}")]
    PathConflict(BundlePath),
    /// A file's length does not match the manifest.
    #[error("{path}: length is {found} bytes, manifest says {expected}")]
    LengthMismatch {
        /// The file.
        path: BundlePath,
        /// Length recorded in the manifest.
        expected: u64,
        /// Length found.
        found: u64,
    },
    /// A file's stream failed to seal or open.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: BundlePath,
        /// What went wrong in the stream.
        #[source]
        source: StreamError,
    },
    /// Reading or writing a file failed.
    #[error("{path}: I/O error while {op}: {source}")]
    Io {
        /// The file.
        path: BundlePath,
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}
