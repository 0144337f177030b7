//! AMD SEV-SNP through the legacy `/dev/sev-guest` device, for kernels without configfs-tsm
//! (before Linux 6.7).
//!
//! The guest asks the AMD secure processor for a report with `SNP_GET_EXT_REPORT`, which
//! also returns the host's certificate table (VCEK, ASK, ARK) when the host provides one.
//! A kernel or host that does not support the extended request is asked again with
//! `SNP_GET_REPORT`, and the broker then needs the VCEK from elsewhere.
//!
//! Everything but the two ioctls is plain byte handling, kept here and tested: the request
//! layout, the `MSG_REPORT_RSP` response, the error codes, and the certificate-buffer
//! retry. The ioctls themselves live in [`ioctl`], the one place this provider needs
//! `unsafe`.

mod ioctl;

use std::path::PathBuf;
use trustbridge_protocol::Platform;

use trustbridge_protocol::binding::EvidenceBinding;
use trustbridge_verifier::snp_report::REPORT_LEN;

use super::{AttestError, AttestationProvider, Evidence, parse_cert_table};

/// The legacy SEV guest device.
pub const SEV_GUEST_DEVICE: &str = "/dev/sev-guest";

/// `snp_report_req`: 64 bytes of report data, the VMPL, 28 reserved bytes.
pub(crate) const REPORT_REQUEST_LEN: usize = 96;
/// `snp_report_resp`: the firmware's `MSG_REPORT_RSP`, padded to 4000 bytes.
pub(crate) const REPORT_RESPONSE_LEN: usize = 4000;
/// The page size the kernel requires the certificate buffer to be a multiple of.
pub(crate) const CERT_PAGE: usize = 4096;
/// The largest certificate buffer the kernel accepts (`SEV_FW_BLOB_MAX_SIZE`).
pub(crate) const CERT_MAX: usize = 0x4000;
/// `SNP_GUEST_VMM_ERR_INVALID_LEN`: the certificate buffer was too small.
const VMM_ERR_INVALID_LEN: u32 = 1;
/// `SNP_GUEST_VMM_ERR_BUSY`: the host's request queue was busy.
const VMM_ERR_BUSY: u32 = 2;

/// A failed guest request, as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GuestRequestError {
    /// The ioctl's errno.
    pub(crate) errno: i32,
    /// The firmware's error code (lower half of `exitinfo2`).
    pub(crate) fw_error: u32,
    /// The hypervisor's error code (upper half of `exitinfo2`).
    pub(crate) vmm_error: u32,
}

impl std::fmt::Display for GuestRequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let errno = std::io::Error::from_raw_os_error(self.errno);
        write!(f, "{errno}")?;
        match self.vmm_error {
            0 => {}
            VMM_ERR_INVALID_LEN => f.write_str("; certificate buffer too small")?,
            VMM_ERR_BUSY => f.write_str("; the host was busy")?,
            other => write!(f, "; hypervisor error {other}")?,
        }
        if self.fw_error != 0 {
            write!(f, "; firmware error {:#x}", self.fw_error)?;
        }
        Ok(())
    }
}

/// What the ioctl layer does; a trait so the retry logic is tested without the device.
pub(crate) trait GuestDevice {
    /// `SNP_GET_REPORT`.
    fn get_report(
        &self,
        request: &[u8; REPORT_REQUEST_LEN],
        response: &mut [u8; REPORT_RESPONSE_LEN],
    ) -> Result<(), GuestRequestError>;

    /// `SNP_GET_EXT_REPORT` with a certificate buffer of `certs.len()` bytes; on
    /// `VMM_ERR_INVALID_LEN` the returned `Some(len)` is the size the host needs.
    fn get_ext_report(
        &self,
        request: &[u8; REPORT_REQUEST_LEN],
        response: &mut [u8; REPORT_RESPONSE_LEN],
        certs: &mut [u8],
    ) -> Result<(), (GuestRequestError, Option<usize>)>;
}

/// SNP evidence through `/dev/sev-guest`: `REPORT_DATA` = binding digest, VMPL 0.
#[derive(Debug, Clone)]
pub struct SevGuest {
    device: PathBuf,
}

impl SevGuest {
    /// The provider for the device at `device` (normally [`SEV_GUEST_DEVICE`]).
    pub fn new(device: impl Into<PathBuf>) -> Self {
        Self {
            device: device.into(),
        }
    }
}

fn device_error(detail: String) -> AttestError {
    AttestError::Device {
        provider: "snp-sev-guest",
        detail,
    }
}

impl AttestationProvider for SevGuest {
    fn name(&self) -> &'static str {
        "snp-sev-guest"
    }

    fn simulated(&self) -> bool {
        false
    }

    fn evidence(&self, binding: &EvidenceBinding) -> Result<Evidence, AttestError> {
        let digest = binding.digest()?;
        let device = ioctl::Device::open(&self.device)
            .map_err(|e| device_error(format!("{}: {e}", self.device.display())))?;
        request_evidence(&device, &digest)
    }
}

/// The `snp_report_req` for `report_data` at VMPL 0.
pub(crate) fn report_request(report_data: &[u8; 64]) -> [u8; REPORT_REQUEST_LEN] {
    let mut req = [0u8; REPORT_REQUEST_LEN];
    req[..64].copy_from_slice(report_data);
    // vmpl (u32 at offset 64) stays 0, as do the reserved bytes.
    req
}

/// The report inside a `MSG_REPORT_RSP`: status (u32), report size (u32), 24 reserved
/// bytes, then the report.
pub(crate) fn report_from_response(resp: &[u8; REPORT_RESPONSE_LEN]) -> Result<Vec<u8>, String> {
    let word = |at: usize| u32::from_le_bytes([resp[at], resp[at + 1], resp[at + 2], resp[at + 3]]);
    let status = word(0);
    if status != 0 {
        let what = match status {
            0x16 => "invalid parameters",
            _ => "error",
        };
        return Err(format!("the firmware answered status {status:#x} ({what})"));
    }
    let size = word(4) as usize;
    if size != REPORT_LEN {
        return Err(format!(
            "the firmware returned a {size}-byte report, expected {REPORT_LEN}"
        ));
    }
    Ok(resp[0x20..0x20 + REPORT_LEN].to_vec())
}

/// The whole request: an extended report with a certificate buffer grown to what the host
/// asks for (once), else a plain report; then the checks on the answer.
pub(crate) fn request_evidence(
    device: &dyn GuestDevice,
    report_data: &[u8; 64],
) -> Result<Evidence, AttestError> {
    let request = report_request(report_data);
    let mut response = [0u8; REPORT_RESPONSE_LEN];
    let mut certs = vec![0u8; CERT_PAGE];
    let mut grown = false;
    let certificates = loop {
        match device.get_ext_report(&request, &mut response, &mut certs) {
            Ok(()) => break parse_cert_table(&certs),
            Err((_, Some(needed))) if !grown && needed <= CERT_MAX => {
                certs = vec![0u8; needed.div_ceil(CERT_PAGE) * CERT_PAGE];
                grown = true;
            }
            Err((e, Some(needed))) => {
                return Err(device_error(format!(
                    "the host's certificate table needs {needed} bytes, more than the \
                     kernel's limit of {CERT_MAX} ({e})"
                )));
            }
            // No extended request (an older kernel, or a host that keeps no certificates
            // for its guests): a plain report; the broker then needs the VCEK from
            // elsewhere.
            Err((ext, None)) => {
                tracing::info!(error = %ext, "SNP_GET_EXT_REPORT failed; trying SNP_GET_REPORT");
                device.get_report(&request, &mut response).map_err(|e| {
                    device_error(format!("SNP_GET_EXT_REPORT: {ext}; SNP_GET_REPORT: {e}"))
                })?;
                break Vec::new();
            }
        }
    };
    let report = report_from_response(&response).map_err(device_error)?;
    if report[0x50..0x90] != report_data[..] {
        return Err(device_error(
            "the report does not carry the requested report data".into(),
        ));
    }
    Ok(Evidence {
        platform: Platform::Snp,
        bytes: report,
        certificates,
    })
}

#[cfg(test)]
mod tests;
