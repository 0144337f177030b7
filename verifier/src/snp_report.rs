//! The AMD SEV-SNP attestation report (SNP firmware ABI, report versions 2 to 5).
//!
//! Fixed layout, 1184 bytes, little-endian. The signature is ECDSA P-384 with SHA-384 over
//! bytes `0x000..0x2A0`; `r` and `s` are 72-byte little-endian fields at `0x2A0` and `0x2E8`.

use crate::VerifyError;

/// Length of a report.
pub const REPORT_LEN: usize = 0x4A0;
/// Length of the signed part.
pub const SIGNED_LEN: usize = 0x2A0;
/// Guest policy bit: debugging allowed.
pub const POLICY_DEBUG: u64 = 1 << 19;

/// Which key signed the report (`flags` bits 2..4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigningKey {
    /// Versioned Chip Endorsement Key.
    Vcek,
    /// Versioned Loaded Endorsement Key (cloud provider).
    Vlek,
}

/// A TCB version, as raw bytes; decoded per product by [`Tcb::components`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tcb(pub [u8; 8]);

/// The named components of a TCB version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TcbComponents {
    /// FMC SPL (Turin only).
    pub fmc: Option<u8>,
    /// Bootloader SPL.
    pub bootloader: u8,
    /// TEE (PSP OS) SPL.
    pub tee: u8,
    /// SNP firmware SPL.
    pub snp: u8,
    /// Microcode SPL.
    pub microcode: u8,
}

impl Tcb {
    /// Decodes the components: Milan and Genoa put bootloader, tee at bytes 0, 1 and snp,
    /// microcode at 6, 7; Turin puts fmc, bootloader, tee, snp at 0..4 and microcode at 7.
    pub fn components(self, turin: bool) -> TcbComponents {
        let b = self.0;
        if turin {
            TcbComponents {
                fmc: Some(b[0]),
                bootloader: b[1],
                tee: b[2],
                snp: b[3],
                microcode: b[7],
            }
        } else {
            TcbComponents {
                fmc: None,
                bootloader: b[0],
                tee: b[1],
                snp: b[6],
                microcode: b[7],
            }
        }
    }
}

/// The fields of a report that verification and policy use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnpReport {
    /// Report format version (2 to 5).
    pub version: u32,
    /// Guest SVN.
    pub guest_svn: u32,
    /// Guest policy.
    pub policy: u64,
    /// VMPL of the requesting guest code.
    pub vmpl: u32,
    /// Current TCB.
    pub current_tcb: Tcb,
    /// Platform info flags.
    pub platform_info: u64,
    /// Which key signed.
    pub signing_key: SigningKey,
    /// `AUTHOR_KEY_EN`: the guest was launched with an ID-key author key.
    pub author_key_en: bool,
    /// Guest-provided data (the evidence binding digest, for TrustBridge).
    pub report_data: [u8; 64],
    /// Launch measurement.
    pub measurement: [u8; 48],
    /// Host-provided data.
    pub host_data: [u8; 32],
    /// ID key digest.
    pub id_key_digest: [u8; 48],
    /// Reported TCB: the one the endorsement key must certify.
    pub reported_tcb: Tcb,
    /// CPUID family (version 3 and later; 0 before).
    pub cpuid_family: u8,
    /// CPUID model (version 3 and later; 0 before).
    pub cpuid_model: u8,
    /// Chip id (zero when masked).
    pub chip_id: [u8; 64],
    /// Committed TCB.
    pub committed_tcb: Tcb,
    /// Launch TCB.
    pub launch_tcb: Tcb,
    /// Firmware (major, minor, build) that produced the report.
    pub current_version: (u8, u8, u8),
    /// The signature as big-endian `r || s` (48 bytes each).
    pub signature: [u8; 96],
}

fn arr<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[at..at + N]);
    out
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(arr(b, at))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(arr(b, at))
}

impl SnpReport {
    /// Parses a report. Checks length, version, signature algorithm and signing-key field.
    pub fn parse(b: &[u8]) -> Result<Self, VerifyError> {
        let bad = |d: String| VerifyError::malformed("SNP report", d);
        if b.len() != REPORT_LEN {
            return Err(bad(format!("{} bytes, expected {REPORT_LEN}", b.len())));
        }
        let version = u32_at(b, 0x00);
        if !(2..=5).contains(&version) {
            return Err(bad(format!(
                "unsupported report version {version} (2 to 5 are supported)"
            )));
        }
        let sig_algo = u32_at(b, 0x34);
        if sig_algo != 1 {
            return Err(VerifyError::UnsupportedAlgorithm(format!(
                "SNP signature algorithm {sig_algo}, expected 1 (ECDSA P-384 SHA-384)"
            )));
        }
        // 0x48: bit 0 AUTHOR_KEY_EN, bit 1 MASK_CHIP_KEY, bits 4:2 SIGNING_KEY, the rest
        // reserved and zero (SNP firmware ABI, ATTESTATION_REPORT).
        let flags = u32_at(b, 0x48);
        if flags >> 5 != 0 {
            return Err(bad(format!(
                "reserved bits of the key information field are set ({flags:#x})"
            )));
        }
        if flags & 0b10 != 0 {
            return Err(VerifyError::UnsignedReport(
                "the host set MASK_CHIP_KEY, so the firmware zeroed the signature instead of signing",
            ));
        }
        let signing_key = match (flags >> 2) & 0b111 {
            0 => SigningKey::Vcek,
            1 => SigningKey::Vlek,
            7 => {
                return Err(VerifyError::UnsignedReport(
                    "the signing key field is 7 (none): the firmware did not sign the report",
                ));
            }
            other => {
                return Err(bad(format!(
                    "signing key field {other} is reserved: report is not signed by a VCEK or VLEK"
                )));
            }
        };
        let (cpuid_family, cpuid_model) = if version >= 3 {
            (b[0x188], b[0x189])
        } else {
            (0, 0)
        };
        Ok(Self {
            version,
            guest_svn: u32_at(b, 0x04),
            policy: u64_at(b, 0x08),
            vmpl: u32_at(b, 0x30),
            current_tcb: Tcb(arr(b, 0x38)),
            platform_info: u64_at(b, 0x40),
            signing_key,
            author_key_en: flags & 0b1 != 0,
            report_data: arr(b, 0x50),
            measurement: arr(b, 0x90),
            host_data: arr(b, 0xC0),
            id_key_digest: arr(b, 0xE0),
            reported_tcb: Tcb(arr(b, 0x180)),
            cpuid_family,
            cpuid_model,
            chip_id: arr(b, 0x1A0),
            committed_tcb: Tcb(arr(b, 0x1E0)),
            current_version: (b[0x1EA], b[0x1E9], b[0x1E8]),
            launch_tcb: Tcb(arr(b, 0x1F0)),
            signature: signature_be(b)?,
        })
    }

    /// Whether the guest policy allows debugging.
    pub fn debug(&self) -> bool {
        self.policy & POLICY_DEBUG != 0
    }

    /// Whether `CHIP_ID` is all zero: the host set `MASK_CHIP_ID` (SNP_SET_CONFIG), so the
    /// report does not say which chip produced it. The endorsement key's signature still
    /// does: a VCEK is specific to one chip.
    pub fn chip_id_masked(&self) -> bool {
        self.chip_id.iter().all(|&b| b == 0)
    }
}

/// Converts the little-endian 72-byte `r` and `s` into big-endian 48-byte halves.
///
/// Everything after `r` and `s` (0x330..0x4A0) is reserved and not covered by the
/// signature, so it must be zero: no byte of an accepted report can vary unsigned.
fn signature_be(b: &[u8]) -> Result<[u8; 96], VerifyError> {
    if b[0x330..REPORT_LEN].iter().any(|&x| x != 0) {
        return Err(VerifyError::malformed(
            "SNP report",
            "reserved bytes after the signature are not zero",
        ));
    }
    let mut out = [0u8; 96];
    for (half, at) in [(0usize, 0x2A0usize), (48, 0x2E8)] {
        let field = &b[at..at + 72];
        if field[48..].iter().any(|&x| x != 0) {
            return Err(VerifyError::malformed(
                "SNP report",
                "signature component exceeds 384 bits",
            ));
        }
        for i in 0..48 {
            out[half + i] = field[47 - i];
        }
    }
    Ok(out)
}
