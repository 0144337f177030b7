//! Azure confidential VMs: SEV-SNP reached through the vTPM (cargo feature `azure-vtpm`).
//!
//! On Azure the guest runs above a paravisor (HCL) and cannot ask the AMD secure processor
//! itself. The paravisor does, and publishes the result in the vTPM as an HCL report: the
//! SNP report, whose `REPORT_DATA` commits to a JSON "variable data" that holds the vTPM's
//! attestation key (AK) and the guest's `user-data`. The binding rule puts TrustBridge's
//! binding digest in that `user-data` and the broker's nonce in a TPM quote by the AK:
//!
//! 1. write the binding digest to NV index `0x01400002`;
//! 2. read the HCL report from `0x01400001` until its `user-data` is the digest (the
//!    paravisor regenerates it; a report that never reflects it is an error, never
//!    evidence about somebody else's data);
//! 3. quote PCRs 0..=23 with the AK, `extraData` = the nonce;
//! 4. attach the VCEK that endorses the report (IMDS, see [`certs`]) and encode the
//!    evidence as the confidential-containers `az-snp-vtpm` attester does (version 1
//!    JSON), which the verifier's `AzureEvidence::from_json` reads.

pub mod certs;
pub mod tpm;

use std::time::{Duration, Instant};
use trustbridge_protocol::Platform;

use base64::Engine;
use trustbridge_protocol::binding::EvidenceBinding;
use trustbridge_verifier::hcl_report::HclReport;

use self::certs::{CertificateCache, CertificateSource};
use self::tpm::{Quote, Vtpm};
use super::{AttestError, AttestationProvider, Evidence};

/// The TCTI of an Azure confidential VM's vTPM (through the kernel's resource manager).
pub const DEFAULT_TCTI: &str = "device:/dev/tpmrm0";

/// How the Azure attester reaches the vTPM and the certificates.
#[derive(Clone, Debug)]
pub struct AzureVtpmConfig {
    /// The TPM's TCTI string ([`DEFAULT_TCTI`] on Azure).
    pub tcti: String,
    /// How long to wait for the paravisor to regenerate the HCL report.
    pub refresh_timeout: Duration,
    /// Where the VCEK comes from.
    pub certificates: CertificateSource,
}

/// Evidence from an Azure confidential VM's vTPM.
#[derive(Debug)]
pub struct AzureVtpm {
    config: AzureVtpmConfig,
    certificates: CertificateCache,
}

fn device_error(detail: impl Into<String>) -> AttestError {
    AttestError::Device {
        provider: "azure-vtpm",
        detail: detail.into(),
    }
}

/// How often the HCL report is read while waiting for the paravisor.
const REFRESH_POLL: Duration = Duration::from_millis(50);

impl AzureVtpm {
    /// The provider for `config`.
    pub fn new(config: AzureVtpmConfig) -> Self {
        Self {
            certificates: CertificateCache::new(config.certificates.clone()),
            config,
        }
    }

    /// Whether the TPM at `tcti` is an Azure confidential VM's vTPM (it holds an HCL
    /// report). False when no TPM answers.
    pub fn present(tcti: &str) -> bool {
        // A missing device is not worth libtss2's error log.
        if let Some(path) = tcti.strip_prefix("device:")
            && !std::path::Path::new(path).exists()
        {
            return false;
        }
        Vtpm::open(tcti).is_ok_and(|mut t| t.has_hcl_report())
    }

    /// Steps 1 and 2: the HCL report that carries `user_data`, as read and parsed.
    fn fresh_hcl_report(
        &self,
        tpm: &mut Vtpm,
        user_data: &[u8],
    ) -> Result<(Vec<u8>, HclReport), AttestError> {
        let err = |e: tpm::VtpmError| device_error(e.to_string());
        tpm.write_report_data(user_data).map_err(err)?;
        let deadline = Instant::now() + self.config.refresh_timeout;
        loop {
            let report = tpm.read_hcl_report().map_err(err)?;
            let parsed = HclReport::parse(&report)
                .map_err(|e| device_error(format!("NV index 0x01400001: {e}")))?;
            if parsed.user_data.as_deref() == Some(user_data) {
                return Ok((report, parsed));
            }
            if Instant::now() >= deadline {
                return Err(device_error(format!(
                    "the HCL report still carried other user-data after {:?}: the \
                     paravisor did not regenerate it",
                    self.config.refresh_timeout
                )));
            }
            std::thread::sleep(REFRESH_POLL);
        }
    }
}

impl AttestationProvider for AzureVtpm {
    fn name(&self) -> &'static str {
        "azure-vtpm"
    }

    fn simulated(&self) -> bool {
        false
    }

    fn evidence(&self, binding: &EvidenceBinding) -> Result<Evidence, AttestError> {
        let digest = binding.digest()?;
        let mut tpm = Vtpm::open(&self.config.tcti).map_err(|e| device_error(e.to_string()))?;
        let (hcl_report, parsed) = self.fresh_hcl_report(&mut tpm, &digest)?;
        let certificates = self
            .certificates
            .for_report(&parsed.snp_report)
            .map_err(|e| device_error(format!("VCEK: {e}")))?;
        let quote = tpm
            .quote(&binding.nonce)
            .map_err(|e| device_error(e.to_string()))?;
        Ok(Evidence {
            platform: Platform::AzureSnpVtpm,
            bytes: evidence_json(&hcl_report, &quote, &certificates.vcek),
            certificates: certificates.chain,
        })
    }
}

/// The evidence document, version 1 of the `az-snp-vtpm` attester's format:
/// `hcl_report` and `vcek` base64url, the quote's fields hex.
pub fn evidence_json(hcl_report: &[u8], quote: &Quote, vcek_der: &[u8]) -> Vec<u8> {
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let json = serde_json::json!({
        "version": 1,
        "tpm_quote": {
            "signature": hex::encode(&quote.signature),
            "message": hex::encode(&quote.message),
            "pcrs": quote.pcrs.iter().map(hex::encode).collect::<Vec<_>>(),
        },
        "hcl_report": b64(hcl_report),
        "vcek": b64(vcek_der),
    });
    // A `Value` always serializes.
    serde_json::to_vec(&json).unwrap_or_default()
}
