//! Attestation providers: how the sentinel obtains evidence that binds its keys.
//!
//! Every provider takes the [`EvidenceBinding`] (the sentinel's public keys and the key
//! broker's nonce) and returns evidence that carries it as the binding rule prescribes
//! (`trustbridge_protocol::binding`). [`detect`] picks the provider of the machine the
//! sentinel runs on; the simulated TEE is used only when asked for explicitly.

#[cfg(feature = "azure-vtpm")]
pub mod azure_vtpm;
mod configfs_tsm;
mod detect;
mod nitro;
mod sev_guest;
#[cfg(feature = "simulated-tee")]
mod simulated;

use trustbridge_protocol::binding::EvidenceBinding;
pub use trustbridge_protocol::key_release::Evidence;

pub use configfs_tsm::{CONFIGFS_TSM_REPORT_DIR, ConfigfsTsm, parse_cert_table};
pub use detect::{Probe, TeeChoice, detect};
pub use nitro::{NSM_DEVICE, NitroNsm};
pub use sev_guest::{SEV_GUEST_DEVICE, SevGuest};
#[cfg(feature = "simulated-tee")]
pub use simulated::{SimulatedPlatform, SimulatedProvider};

/// Obtaining evidence failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttestError {
    /// The TEE device or interface is missing or refused the request.
    #[error("{provider}: {detail}")]
    Device {
        /// The provider.
        provider: &'static str,
        /// What failed.
        detail: String,
    },
    /// The binding could not be encoded.
    #[error("evidence binding: {0}")]
    Binding(String),
    /// No TEE was found.
    #[error("no TEE found; probed: {0}")]
    NoTee(String),
}

impl From<trustbridge_protocol::binding::BindingError> for AttestError {
    fn from(e: trustbridge_protocol::binding::BindingError) -> Self {
        Self::Binding(e.to_string())
    }
}

/// A source of attestation evidence.
pub trait AttestationProvider: Send + Sync {
    /// A short name for logs (`nitro-nsm`, `snp-configfs-tsm`, `snp-sev-guest`,
    /// `azure-vtpm`, `simulated-nitro`, ...).
    fn name(&self) -> &'static str;
    /// Whether the evidence is simulated (never true for hardware providers).
    fn simulated(&self) -> bool;
    /// Evidence that carries `binding`.
    fn evidence(&self, binding: &EvidenceBinding) -> Result<Evidence, AttestError>;
}

/// A provider whose evidence requests run one at a time.
///
/// Several TEE interfaces keep per-machine state between writing the report data and
/// reading the evidence (Azure's vTPM NV index, a configfs-tsm entry), and the sentinel
/// asks for evidence from several places (key release, re-authorization, the published
/// attestation bundle, clients' nonce bundles): serialized, a client's request can no
/// longer break the sentinel's own.
pub struct Serialized {
    inner: std::sync::Arc<dyn AttestationProvider>,
    lock: std::sync::Mutex<()>,
}

impl Serialized {
    /// `inner`, one request at a time.
    pub fn new(inner: std::sync::Arc<dyn AttestationProvider>) -> Self {
        Self {
            inner,
            lock: std::sync::Mutex::new(()),
        }
    }
}

impl AttestationProvider for Serialized {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn simulated(&self) -> bool {
        self.inner.simulated()
    }

    fn evidence(&self, binding: &EvidenceBinding) -> Result<Evidence, AttestError> {
        // A poisoned lock only means an earlier request panicked; the device state is
        // re-established by each request, so carry on.
        let _one = self
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.inner.evidence(binding)
    }
}
