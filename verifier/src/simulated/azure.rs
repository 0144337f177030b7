//! Simulated Azure confidential-VM evidence (the az-snp-vtpm attester's version 1 JSON):
//! an HCL report over a simulated SNP report whose `REPORT_DATA` commits to the variable
//! data (with the attestation key and `user-data`), and a TPM quote signed by that key.
//!
//! The quote's PCR selection and the supplied PCR values are set independently
//! ([`AzureSpec::selection`], [`AzureSpec::pcrs`]), so tests can build evidence whose
//! values the quote does not cover.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use base64::Engine;
use trustbridge_protocol::binding::EvidenceBinding;

use super::{SimError, SimulatedTee, SnpSpec};

const TPM_GENERATED_VALUE: u32 = 0xff54_4347;
const TPM_ST_ATTEST_QUOTE: u16 = 0x8018;
const TPM_ALG_SHA256: u16 = 0x000b;

/// A vTPM attestation key (RSA-2048, RSASSA-PKCS1-v1_5 SHA-256), as Azure's paravisor
/// provisions at `0x81000003`.
pub struct AttestationKeyPair {
    key: KeyPair,
}

impl std::fmt::Debug for AttestationKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AttestationKeyPair(<private redacted>)")
    }
}

impl AttestationKeyPair {
    /// A fresh RSA-2048 key.
    pub fn generate() -> Result<Self, SimError> {
        KeyPair::generate(KeySize::Rsa2048)
            .map(|key| Self { key })
            .map_err(|_| SimError::Signing)
    }

    /// The public key as (modulus, exponent), big-endian.
    pub fn public(&self) -> Result<(Vec<u8>, Vec<u8>), SimError> {
        use x509_cert::der::asn1::UintRef;
        use x509_cert::der::{Decode, Reader, SliceReader};
        // RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }
        let der = self.key.public_key().as_ref();
        let bad = |e: x509_cert::der::Error| SimError::Certificate(e.to_string());
        SliceReader::new(der)
            .and_then(|mut r| {
                r.sequence(|seq| {
                    let n = UintRef::decode(seq)?;
                    let e = UintRef::decode(seq)?;
                    Ok((n.as_bytes().to_vec(), e.as_bytes().to_vec()))
                })
            })
            .map_err(bad)
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SimError> {
        let mut sig = vec![0u8; self.key.public_modulus_len()];
        self.key
            .sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), message, &mut sig)
            .map_err(|_| SimError::Signing)?;
        Ok(sig)
    }
}

/// What simulated Azure evidence reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AzureSpec {
    /// The SNP report (its `REPORT_DATA` is replaced by the variable data's digest).
    pub snp: SnpSpec,
    /// The HCL `user-data` (TrustBridge: the binding digest).
    pub user_data: Vec<u8>,
    /// The quote's `extraData` (the verifier's nonce).
    pub nonce: Vec<u8>,
    /// The PCRs the quote selects, ascending.
    pub selection: Vec<u8>,
    /// The PCR values the evidence JSON lists.
    pub pcrs: Vec<[u8; 32]>,
}

impl Default for AzureSpec {
    /// The default SNP guest, PCRs 0-23 selected, PCR `i` = `[i; 32]`.
    fn default() -> Self {
        Self {
            snp: SnpSpec::default(),
            user_data: vec![0; 64],
            nonce: b"challenge".to_vec(),
            selection: (0..24).collect(),
            pcrs: (0..24).map(|i| [i; 32]).collect(),
        }
    }
}

impl AzureSpec {
    /// Carries `binding` as the binding rule places it on Azure.
    pub fn bind(mut self, binding: &EvidenceBinding) -> Result<Self, SimError> {
        self.user_data = binding
            .digest()
            .map_err(|e| SimError::Binding(e.to_string()))?
            .to_vec();
        self.nonce = binding.nonce.clone();
        Ok(self)
    }
}

impl SimulatedTee {
    /// An HCL report as Azure's paravisor builds it: header, the SNP report (whose
    /// `REPORT_DATA[..32]` = SHA-256 of the variable data), IGVM request data, and the
    /// variable data holding `ak` and `user_data`.
    pub fn hcl_report(
        &self,
        snp: &SnpSpec,
        ak: &(Vec<u8>, Vec<u8>),
        user_data: &[u8],
    ) -> Result<Vec<u8>, SimError> {
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let var_data = serde_json::to_vec(&serde_json::json!({
            "keys": [{"kid": "HCLAkPub", "key_ops": ["sign"], "kty": "RSA",
                      "e": b64(&ak.1), "n": b64(&ak.0)}],
            "user-data": hex::encode_upper(user_data),
        }))
        .map_err(|e| SimError::Binding(e.to_string()))?;
        let mut spec = snp.clone();
        spec.report_data = [0; 64];
        spec.report_data[..32].copy_from_slice(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &var_data).as_ref(),
        );
        let report = self.snp_report(&spec)?;
        let len32 = |n: usize| u32::try_from(n).map_err(|_| SimError::Signing);
        let mut r = Vec::new();
        r.extend_from_slice(b"HCLA");
        let total = 32 + report.len() + 20 + var_data.len();
        for word in [2, len32(total)?, 2, 0] {
            r.extend_from_slice(&word.to_le_bytes());
        }
        r.resize(32, 0);
        r.extend_from_slice(&report);
        for word in [len32(20 + var_data.len())?, 1, 2, 1, len32(var_data.len())?] {
            r.extend_from_slice(&word.to_le_bytes());
        }
        r.extend_from_slice(&var_data);
        Ok(r)
    }

    /// Azure evidence (version 1 JSON) signed by `ak`: the HCL report, a quote of
    /// `spec.selection` whose digest covers `spec.pcrs` in order, and the VCEK.
    pub fn azure_evidence(
        &self,
        ak: &AttestationKeyPair,
        spec: &AzureSpec,
    ) -> Result<Vec<u8>, SimError> {
        let hcl = self.hcl_report(&spec.snp, &ak.public()?, &spec.user_data)?;
        let message = quote_message(&spec.nonce, &spec.selection, &spec.pcrs)?;
        let signature = ak.sign(&message)?;
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let json = serde_json::json!({
            "version": 1,
            "hcl_report": b64(&hcl),
            "tpm_quote": {
                "signature": hex::encode(signature),
                "message": hex::encode(message),
                "pcrs": spec.pcrs.iter().map(hex::encode).collect::<Vec<_>>(),
            },
            "vcek": b64(self.snp_certificates()[0].der()),
        });
        serde_json::to_vec(&json).map_err(|e| SimError::Binding(e.to_string()))
    }
}

/// A `TPMS_ATTEST` quote of `selection` (SHA-256 bank) with `extraData` = `nonce` and the
/// digest of `values` in order.
fn quote_message(nonce: &[u8], selection: &[u8], values: &[[u8; 32]]) -> Result<Vec<u8>, SimError> {
    let too_long = || SimError::Binding("quote field too long".into());
    let mut m = Vec::new();
    m.extend_from_slice(&TPM_GENERATED_VALUE.to_be_bytes());
    m.extend_from_slice(&TPM_ST_ATTEST_QUOTE.to_be_bytes());
    let signer = [0x5au8; 34]; // qualifiedSigner: a TPM2B_NAME
    m.extend_from_slice(
        &u16::try_from(signer.len())
            .map_err(|_| too_long())?
            .to_be_bytes(),
    );
    m.extend_from_slice(&signer);
    m.extend_from_slice(
        &u16::try_from(nonce.len())
            .map_err(|_| too_long())?
            .to_be_bytes(),
    );
    m.extend_from_slice(nonce);
    m.extend_from_slice(&[0u8; 17]); // clockInfo
    m.extend_from_slice(&[0u8; 8]); // firmwareVersion
    m.extend_from_slice(&1u32.to_be_bytes()); // one PCR selection
    m.extend_from_slice(&TPM_ALG_SHA256.to_be_bytes());
    let mut bitmap = [0u8; 3];
    for &i in selection {
        let byte = bitmap.get_mut(usize::from(i / 8)).ok_or_else(too_long)?;
        *byte |= 1 << (i % 8);
    }
    m.push(3);
    m.extend_from_slice(&bitmap);
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for v in values {
        ctx.update(v);
    }
    let digest = ctx.finish();
    m.extend_from_slice(&32u16.to_be_bytes());
    m.extend_from_slice(digest.as_ref());
    Ok(m)
}
