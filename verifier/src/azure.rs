//! Azure confidential VMs: SEV-SNP reached through a vTPM.
//!
//! Order of checks, each failing with its own reason:
//! 1. the HCL report parses and its variable data holds the attestation key (AK);
//! 2. the embedded SNP report verifies (VCEK chain, signature, chip id, TCB);
//! 3. the digest of the variable data equals `REPORT_DATA` (so the SNP hardware vouches for
//!    the AK and `user-data`);
//! 4. the TPM quote is signed by that AK, and its PCR digest matches the supplied PCRs.
//!
//! Only the PCRs the quote selects become measurements (`tpm_pcr<i>`): the quote signs
//! their digest, and nothing signs a PCR it does not select. Supplied values are the
//! selected PCRs' values in ascending PCR order (the az-snp-vtpm rule); a supplied value
//! that no selected PCR accounts for is an error, never a measurement.
//!
//! The quote's `extraData` (the verifier's nonce) and the HCL `user-data` (TrustBridge's
//! evidence binding) are reported as binding fields for the policy step.

use std::time::SystemTime;

use base64::Engine;
use serde_json::Value;

use crate::evidence::{Checks, Platform, VerifiedEvidence};
use crate::hcl_report::HclReport;
use crate::snp::verify_snp_logged;
use crate::tpm_quote::{TpmQuote, describe_selection};
use crate::x509::ParsedCertificate;
use crate::{TrustRoots, VerifyError};

/// Azure vTPM SNP evidence, as confidential-containers' az-snp-vtpm attester produces it.
#[derive(Clone, Debug)]
pub struct AzureEvidence {
    /// The HCL report.
    pub hcl_report: Vec<u8>,
    /// The TPM quote's `TPMS_ATTEST` message.
    pub quote_message: Vec<u8>,
    /// The TPM quote's signature.
    pub quote_signature: Vec<u8>,
    /// PCR values of the SHA-256 bank: the values of the PCRs the quote selects, in
    /// ascending PCR order (PCR0..PCR23 for the usual full selection).
    pub pcrs: Vec<[u8; 32]>,
    /// The VCEK (and any chain certificates) that came with the evidence.
    pub certificates: Vec<ParsedCertificate>,
}

fn bad(detail: impl Into<String>) -> VerifyError {
    VerifyError::malformed("Azure evidence", detail)
}

fn b64(s: &str) -> Result<Vec<u8>, VerifyError> {
    let s = s.trim().trim_end_matches('=');
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(s))
        .map_err(|e| bad(format!("bad base64: {e}")))
}

fn byte_array(v: &Value, what: &str) -> Result<Vec<u8>, VerifyError> {
    v.as_array()
        .ok_or_else(|| bad(format!("{what} is not a byte array")))?
        .iter()
        .map(|x| {
            x.as_u64()
                .and_then(|b| u8::try_from(b).ok())
                .ok_or_else(|| bad(format!("{what} is not a byte array")))
        })
        .collect()
}

fn hex_field(v: &Value, what: &str) -> Result<Vec<u8>, VerifyError> {
    v.as_str()
        .and_then(|s| hex::decode(s).ok())
        .ok_or_else(|| bad(format!("{what} is not hex")))
}

fn pcr_list(values: Vec<Vec<u8>>) -> Result<Vec<[u8; 32]>, VerifyError> {
    values
        .into_iter()
        .map(|p| <[u8; 32]>::try_from(p).map_err(|_| bad("a PCR value is not 32 bytes")))
        .collect()
}

/// Largest Azure evidence JSON accepted (a genuine one is about 8 KiB; version 0, with
/// byte arrays, about 20 KiB).
pub const MAX_EVIDENCE_LEN: usize = 256 * 1024;

impl AzureEvidence {
    /// Parses the JSON evidence: version 0 (byte arrays, PEM VCEK) or versions 1 and 2
    /// (`hcl_report` base64url, `tpm_quote` hex, `vcek` base64url DER). Evidence over
    /// [`MAX_EVIDENCE_LEN`] is refused before it is parsed.
    pub fn from_json(bytes: &[u8]) -> Result<Self, VerifyError> {
        if bytes.len() > MAX_EVIDENCE_LEN {
            return Err(bad(format!(
                "{} bytes, more than the {MAX_EVIDENCE_LEN} accepted",
                bytes.len()
            )));
        }
        let j: Value = serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
        match j.get("version").map(Value::as_u64) {
            None => {
                let q = &j["quote"];
                let pcrs = q["pcrs"]
                    .as_array()
                    .ok_or_else(|| bad("quote.pcrs missing"))?;
                let pcrs = pcr_list(
                    pcrs.iter()
                        .map(|p| byte_array(p, "quote.pcrs[]"))
                        .collect::<Result<_, _>>()?,
                )?;
                let vcek = j["vcek"].as_str().ok_or_else(|| bad("vcek missing"))?;
                Ok(Self {
                    hcl_report: byte_array(&j["report"], "report")?,
                    quote_message: byte_array(&q["message"], "quote.message")?,
                    quote_signature: byte_array(&q["signature"], "quote.signature")?,
                    pcrs,
                    certificates: ParsedCertificate::from_pem_chain(vcek.as_bytes(), "VCEK")?,
                })
            }
            Some(Some(1 | 2)) => {
                let q = &j["tpm_quote"];
                let pcrs = q["pcrs"]
                    .as_array()
                    .ok_or_else(|| bad("tpm_quote.pcrs missing"))?;
                let pcrs = pcr_list(
                    pcrs.iter()
                        .map(|p| hex_field(p, "tpm_quote.pcrs[]"))
                        .collect::<Result<_, _>>()?,
                )?;
                let vcek = j["vcek"].as_str().ok_or_else(|| bad("vcek missing"))?;
                Ok(Self {
                    hcl_report: b64(j["hcl_report"]
                        .as_str()
                        .ok_or_else(|| bad("hcl_report missing"))?)?,
                    quote_message: hex_field(&q["message"], "tpm_quote.message")?,
                    quote_signature: hex_field(&q["signature"], "tpm_quote.signature")?,
                    pcrs,
                    certificates: vec![ParsedCertificate::from_der(&b64(vcek)?, "VCEK")?],
                })
            }
            Some(other) => Err(bad(format!(
                "unsupported evidence version {other:?} (0, 1 and 2 are supported)"
            ))),
        }
    }
}

/// Verifies Azure vTPM SNP evidence; `extra` supplies chain certificates (ASK, ARK).
pub fn verify_azure(
    ev: &AzureEvidence,
    extra: &[ParsedCertificate],
    roots: &TrustRoots,
    now: SystemTime,
) -> Result<VerifiedEvidence, VerifyError> {
    verify_azure_logged(ev, extra, roots, now, &mut Checks::default())
}

/// Like [`verify_azure`], recording each check.
pub fn verify_azure_logged(
    ev: &AzureEvidence,
    extra: &[ParsedCertificate],
    roots: &TrustRoots,
    now: SystemTime,
    checks: &mut Checks,
) -> Result<VerifiedEvidence, VerifyError> {
    let hcl = HclReport::parse(&ev.hcl_report).map_err(|e| checks.failed(e))?;
    checks.pass(
        "format",
        "HCL report with variable data and attestation key",
    );
    let mut certs = ev.certificates.clone();
    certs.extend(extra.iter().cloned());
    let mut verified = verify_snp_logged(
        &hcl.snp_report,
        &certs,
        roots,
        now,
        Platform::AzureSnpVtpm,
        checks,
    )?;

    let digest = hcl.var_data_digest().map_err(|e| checks.failed(e))?;
    let report_data = verified.binding.report_data.clone().unwrap_or_default();
    if report_data.get(..digest.len()) != Some(digest.as_slice()) {
        return Err(checks.failed(VerifyError::Binding(
            "HCL variable data digest does not match the SNP REPORT_DATA".into(),
        )));
    }
    checks.pass(
        "platform binding",
        "SNP REPORT_DATA commits to the HCL variable data (attestation key, user-data)",
    );

    let quote = TpmQuote::parse(&ev.quote_message).map_err(|e| checks.failed(e))?;
    TpmQuote::verify_signature(&ev.quote_message, &ev.quote_signature, &hcl.ak)
        .map_err(|e| checks.failed(e))?;
    checks.pass(
        "quote signature",
        "TPM quote signed by the attestation key (RSASSA-PKCS1-v1_5 SHA-256)",
    );
    let covered = quote.covered_pcrs(&ev.pcrs).map_err(|e| checks.failed(e))?;
    checks.pass(
        "quote PCRs",
        format!(
            "PCRs {} match the quoted digest; no other PCR is reported",
            describe_selection(&quote.selected)
        ),
    );
    for (index, value) in covered {
        verified
            .measurements
            .insert(format!("tpm_pcr{index}"), value.to_vec());
    }
    verified.binding.hcl_user_data = hcl.user_data;
    verified.binding.quote_nonce = Some(quote.extra_data);
    Ok(verified)
}
