//! Azure's HCL (host compatibility layer) attestation report: an SNP report plus the
//! "variable data" (a JSON document with the vTPM attestation key) that the SNP
//! `REPORT_DATA` commits to.
//!
//! ```text
//! 0x000  header (32 bytes): "HCLA", version, report_size, request_type, status, reserved
//! 0x020  SNP attestation report (1184 bytes)
//! 0x4C0  IGVM request data: data_size, version, report_type, hash_type, variable_data_size
//! 0x4D4  variable data (JSON): keys [HCLAkPub, HCLEkPub as RSA JWK], vm-configuration, user-data
//! ```

use aws_lc_rs::digest;
use base64::Engine;

use crate::VerifyError;
use crate::snp_report::REPORT_LEN;

const SNP_OFFSET: usize = 0x20;
const IGVM_OFFSET: usize = SNP_OFFSET + REPORT_LEN;
const VAR_DATA_OFFSET: usize = IGVM_OFFSET + 20;

/// The vTPM attestation key (RSA) from the variable data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttestationKey {
    /// Modulus, big-endian.
    pub n: Vec<u8>,
    /// Public exponent, big-endian.
    pub e: Vec<u8>,
}

/// A parsed HCL report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HclReport {
    /// The embedded SNP report.
    pub snp_report: Vec<u8>,
    /// The variable data exactly as hashed into `REPORT_DATA`.
    pub var_data: Vec<u8>,
    /// The IGVM hash type: 1 SHA-256, 2 SHA-384, 3 SHA-512.
    pub hash_type: u32,
    /// The attestation key (`HCLAkPub`).
    pub ak: AttestationKey,
    /// The `user-data` field, hex-decoded (absent in older reports).
    pub user_data: Option<Vec<u8>>,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

impl HclReport {
    /// Parses an HCL report and its variable data.
    pub fn parse(b: &[u8]) -> Result<Self, VerifyError> {
        let bad = |d: String| VerifyError::malformed("HCL report", d);
        if b.len() < VAR_DATA_OFFSET {
            return Err(bad(format!("{} bytes is too short", b.len())));
        }
        if &b[..4] != b"HCLA" {
            return Err(bad("missing HCLA signature".into()));
        }
        let report_type = u32_at(b, IGVM_OFFSET + 8);
        if report_type != 2 {
            return Err(bad(format!(
                "IGVM report type {report_type}, expected 2 (SNP)"
            )));
        }
        let hash_type = u32_at(b, IGVM_OFFSET + 12);
        let var_len = u32_at(b, IGVM_OFFSET + 16) as usize;
        let var_data = VAR_DATA_OFFSET
            .checked_add(var_len)
            .and_then(|end| b.get(VAR_DATA_OFFSET..end))
            .ok_or_else(|| {
                bad(format!(
                    "variable data of {var_len} bytes runs past the report"
                ))
            })?
            .to_vec();
        let json: serde_json::Value = serde_json::from_slice(&var_data)
            .map_err(|e| bad(format!("variable data is not JSON: {e}")))?;
        let ak = json["keys"]
            .as_array()
            .and_then(|keys| keys.iter().find(|k| k["kid"] == "HCLAkPub"))
            .and_then(|k| {
                let dec = |field: &str| {
                    k[field].as_str().and_then(|s| {
                        base64::engine::general_purpose::URL_SAFE_NO_PAD
                            .decode(s.trim_end_matches('='))
                            .ok()
                    })
                };
                (k["kty"] == "RSA").then_some(())?;
                Some(AttestationKey {
                    n: dec("n")?,
                    e: dec("e")?,
                })
            })
            .ok_or_else(|| {
                bad("cannot get the attestation key HCLAkPub from the variable data".into())
            })?;
        let user_data = match json.get("user-data") {
            None => None,
            Some(v) => Some(
                v.as_str()
                    .and_then(|s| hex::decode(s).ok())
                    .ok_or_else(|| bad("user-data is not hex".into()))?,
            ),
        };
        Ok(Self {
            snp_report: b[SNP_OFFSET..IGVM_OFFSET].to_vec(),
            var_data,
            hash_type,
            ak,
            user_data,
        })
    }

    /// The digest of the variable data under the report's hash type.
    pub fn var_data_digest(&self) -> Result<Vec<u8>, VerifyError> {
        let alg = match self.hash_type {
            1 => &digest::SHA256,
            2 => &digest::SHA384,
            3 => &digest::SHA512,
            other => {
                return Err(VerifyError::UnsupportedAlgorithm(format!(
                    "IGVM hash type {other}"
                )));
            }
        };
        Ok(digest::digest(alg, &self.var_data).as_ref().to_vec())
    }
}
