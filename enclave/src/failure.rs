//! Why a boot step failed, and the typed reason codes a Failed or Suspended sentinel
//! reports on `/status`.

use std::fmt;

use serde::{Serialize, Serializer};
use trustbridge_protocol::key_release::{DenialCode, ReleaseClientError};

/// Why a sentinel failed or is suspended. [`FailureCode::as_str`] is the `reason` of
/// `/status` and of the logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureCode {
    /// The key broker denied the release; the denial is signed by the pinned broker key.
    Denied(DenialCode),
    /// The relay refused to tunnel to the broker (a deployment error).
    EgressRefused,
    /// An answer that the pinned broker key did not sign: the relay (or someone behind
    /// it) answered in the broker's place.
    BrokerUnauthenticated,
    /// The broker refused the request as malformed (unsigned HTTP 4xx).
    BrokerRejected,
    /// A signed answer that cannot be used.
    BrokerProtocol,
    /// A signed release for another provider than the pinned one.
    WrongProvider,
    /// Transient failures outlasted the retries.
    Unavailable,
    /// The TEE did not produce evidence.
    Attestation,
    /// The relay's manifest is not the one the broker named.
    ManifestMismatch,
    /// The manifest does not verify under the provider key the broker named.
    ManifestInvalid,
    /// The manifest does not commit to the released data key.
    WrongKey,
    /// A sealed segment did not verify.
    TamperedBundle,
    /// The relay has no such bundle file.
    BundleMissing,
    /// The relay's answer for a bundle file is not what was asked for.
    BundleInvalid,
    /// The model could not be handed to the runtime (tmpfs, FIFOs).
    ModelOutput,
    /// The built-in engine could not load the model (no chat or embeddings model in it, or
    /// a malformed one).
    ModelLoad,
    /// No re-authorization succeeded within the grace period (or the broker's lease).
    ReauthorizationOverdue,
    /// A re-authorization released another model (a new manifest or key): the sentinel
    /// stops serving the old one and loads the new.
    AssetChanged,
    /// The sentinel was shut down.
    Shutdown,
    /// A bug or a system failure inside the sentinel.
    Internal,
}

impl FailureCode {
    /// The reason code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Denied(code) => code.as_str(),
            Self::EgressRefused => "egress_refused",
            Self::BrokerUnauthenticated => "broker_unauthenticated",
            Self::BrokerRejected => "broker_rejected",
            Self::BrokerProtocol => "broker_protocol",
            Self::WrongProvider => "wrong_provider",
            Self::Unavailable => "unavailable",
            Self::Attestation => "attestation",
            Self::ManifestMismatch => "manifest_mismatch",
            Self::ManifestInvalid => "manifest_invalid",
            Self::WrongKey => "wrong_key",
            Self::TamperedBundle => "tampered_bundle",
            Self::BundleMissing => "bundle_missing",
            Self::BundleInvalid => "bundle_invalid",
            Self::ModelOutput => "model_output",
            Self::ModelLoad => "model_load",
            Self::ReauthorizationOverdue => "reauthorization_overdue",
            Self::AssetChanged => "asset_changed",
            Self::Shutdown => "shutdown",
            Self::Internal => "internal",
        }
    }

    /// The code of a key-release engine error that is not transient.
    pub fn of_release(e: &ReleaseClientError) -> Self {
        match e {
            ReleaseClientError::Denied { code, .. } => Self::Denied(*code),
            ReleaseClientError::Unavailable { .. } => Self::Unavailable,
            ReleaseClientError::Rejected { .. } => Self::BrokerRejected,
            ReleaseClientError::Unauthenticated(_) => Self::BrokerUnauthenticated,
            ReleaseClientError::WrongProvider { .. } => Self::WrongProvider,
            ReleaseClientError::WrongAsset { .. }
            | ReleaseClientError::ChallengeTooLong { .. }
            | ReleaseClientError::LeaseOutOfRange { .. }
            | ReleaseClientError::UnknownDenialCode(_)
            | ReleaseClientError::SealedKey(_)
            | ReleaseClientError::KeyIdMismatch { .. } => Self::BrokerProtocol,
            _ => Self::Internal,
        }
    }
}

impl fmt::Display for FailureCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for FailureCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl PartialEq<str> for FailureCode {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for FailureCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Why a boot step failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// Worth retrying (unreachable peer, 5xx, timeout).
    #[error("transient: {0}")]
    Transient(String),
    /// Not worth retrying (a denial, tampering): fail with this code.
    #[error("{code}: {detail}")]
    Fatal {
        /// Reason code.
        code: FailureCode,
        /// Detail.
        detail: String,
    },
}

/// A fatal step error.
pub fn fatal(code: FailureCode, detail: impl Into<String>) -> StepError {
    StepError::Fatal {
        code,
        detail: detail.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trustbridge_protocol::key_release::client::Unauthenticated;

    #[test]
    fn codes_are_the_documented_names() {
        assert_eq!(
            FailureCode::Denied(DenialCode::ContractRevoked).as_str(),
            "contract_revoked"
        );
        assert_eq!(
            FailureCode::of_release(&ReleaseClientError::Unauthenticated(
                Unauthenticated::TooLarge { len: 1 << 20 }
            )),
            FailureCode::BrokerUnauthenticated
        );
        assert_eq!(
            serde_json::to_string(&FailureCode::ReauthorizationOverdue).unwrap_or_default(),
            "\"reauthorization_overdue\""
        );
    }
}
