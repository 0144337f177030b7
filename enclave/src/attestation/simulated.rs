//! The simulated TEE as an attestation provider (only when explicitly requested).

use trustbridge_protocol::Platform;
use trustbridge_protocol::binding::EvidenceBinding;
use trustbridge_verifier::simulated::{NitroSpec, SimulatedTee, SnpSpec};

use super::{AttestError, AttestationProvider, Evidence};

/// Which evidence format the simulated TEE produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimulatedPlatform {
    /// Nitro-format attestation documents.
    Nitro,
    /// SEV-SNP-format reports with the simulated VCEK, ASK and ARK.
    Snp,
}

/// Simulated evidence from a simulation CA (see `trustbridge sim-ca init`).
#[derive(Debug)]
pub struct SimulatedProvider {
    tee: SimulatedTee,
    platform: SimulatedPlatform,
    nitro: NitroSpec,
    snp: SnpSpec,
}

impl SimulatedProvider {
    /// A provider over `tee` with its default measurements.
    pub fn new(tee: SimulatedTee, platform: SimulatedPlatform) -> Self {
        Self {
            tee,
            platform,
            nitro: NitroSpec::default(),
            snp: SnpSpec::default(),
        }
    }

    /// Uses these Nitro measurements.
    pub fn with_nitro(mut self, spec: NitroSpec) -> Self {
        self.nitro = spec;
        self
    }

    /// Uses these SNP measurements.
    pub fn with_snp(mut self, spec: SnpSpec) -> Self {
        self.snp = spec;
        self
    }
}

impl AttestationProvider for SimulatedProvider {
    fn name(&self) -> &'static str {
        match self.platform {
            SimulatedPlatform::Nitro => "simulated-nitro",
            SimulatedPlatform::Snp => "simulated-snp",
        }
    }

    fn simulated(&self) -> bool {
        true
    }

    fn evidence(&self, binding: &EvidenceBinding) -> Result<Evidence, AttestError> {
        let err = |e: trustbridge_verifier::simulated::SimError| AttestError::Device {
            provider: "simulated",
            detail: e.to_string(),
        };
        match self.platform {
            SimulatedPlatform::Nitro => {
                let doc = self
                    .tee
                    .nitro_document(&self.nitro.clone().bind(binding).map_err(err)?)
                    .map_err(err)?;
                Ok(Evidence {
                    platform: Platform::Nitro,
                    bytes: doc,
                    certificates: vec![],
                })
            }
            SimulatedPlatform::Snp => {
                let report = self
                    .tee
                    .snp_report(&self.snp.clone().bind(binding).map_err(err)?)
                    .map_err(err)?;
                let certificates = self
                    .tee
                    .snp_certificates()
                    .iter()
                    .map(|c| c.der().to_vec())
                    .collect();
                Ok(Evidence {
                    platform: Platform::Snp,
                    bytes: report,
                    certificates,
                })
            }
        }
    }
}
