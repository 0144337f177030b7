//! Admin API request bodies.

use serde::{Deserialize, Serialize};

/// `POST /v1/admin/assets`: register an asset's manifest and data key. The data key is
/// HPKE-sealed to the broker's registration key with `info` =
/// `hpke_info(REGISTER_INFO_LABEL, asset, SHA-256(manifest))`, so it never crosses the
/// admin channel in the clear.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterAssetRequest {
    /// The asset id.
    pub asset: String,
    /// `manifest.cose`, base64.
    pub manifest: String,
    /// HPKE encapsulated key, hex.
    pub enc: String,
    /// HPKE ciphertext of the data key, hex.
    pub ciphertext: String,
}

/// `POST /v1/admin/contracts`: add a contract.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContractRequest {
    /// Contract id.
    pub id: String,
    /// The asset.
    pub asset: String,
    /// Start, RFC 3339.
    pub not_before: String,
    /// End, RFC 3339.
    pub not_after: String,
    /// Release limit (unlimited when absent).
    #[serde(default)]
    pub max_releases: Option<u64>,
}
