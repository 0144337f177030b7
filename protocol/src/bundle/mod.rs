//! A sealed model bundle: one sealed stream per model file plus a signed manifest.
//!
//! ```text
//! bundle/
//!   manifest.cose          COSE_Sign1 (EdDSA) over the deterministic-CBOR Manifest
//!   <path>.sealed          one AES256_GCM_HKDF stream per model file
//! ```
//!
//! Each stream's associated data binds the asset id and the file's relative path
//! ([`associated_data`]); the manifest lists every file with its lengths and segment size,
//! the data key's id and a key commitment, and the provider's public key. This module is
//! pure: directory handling lives with the callers (CLI, relay, sentinel).

mod associated_data;
mod error;
mod file_crypto;
mod manifest;
mod names;
mod provider_key;
mod signed_manifest;

pub use associated_data::{AD_LABEL, associated_data};
pub use error::BundleError;
pub use file_crypto::{
    open_file, open_file_in_memory, open_file_owned, seal_bundle_in_memory, seal_file,
    segment_opener,
};
pub use manifest::{FORMAT_V1, FileEntry, Manifest};
pub use names::{AssetId, BundlePath, MAX_ASSET_ID_LEN, MAX_PATH_LEN};
pub use provider_key::{ProviderKeyError, ProviderPublicKey, ProviderSigningKey};
pub use signed_manifest::{MANIFEST_CONTENT_TYPE, MANIFEST_FILE, SignedManifest};

/// Suffix of a sealed file's name in a bundle directory.
pub const SEALED_SUFFIX: &str = ".sealed";
