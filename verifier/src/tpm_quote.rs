//! TPM 2.0 quotes: a `TPMS_ATTEST` of type `TPM_ST_ATTEST_QUOTE`, signed by the attestation
//! key with RSASSA-PKCS1-v1_5 / SHA-256, over a PCR selection and digest.

use aws_lc_rs::{digest, signature};

use crate::VerifyError;
use crate::hcl_report::AttestationKey;

const TPM_GENERATED_VALUE: u32 = 0xff54_4347;
const TPM_ST_ATTEST_QUOTE: u16 = 0x8018;
const TPM_ALG_SHA256: u16 = 0x000b;

/// A parsed quote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TpmQuote {
    /// `extraData`: the verifier's nonce.
    pub extra_data: Vec<u8>,
    /// Selected PCR indices of the SHA-256 bank, ascending.
    pub selected: Vec<u8>,
    /// The quoted PCR digest.
    pub pcr_digest: Vec<u8>,
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], VerifyError> {
        if self.0.len() < n {
            return Err(VerifyError::malformed("TPM quote", "truncated TPMS_ATTEST"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, VerifyError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, VerifyError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, VerifyError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn sized(&mut self) -> Result<Vec<u8>, VerifyError> {
        let n = self.u16()? as usize;
        Ok(self.take(n)?.to_vec())
    }
}

impl TpmQuote {
    /// Parses a `TPMS_ATTEST` quote message.
    pub fn parse(message: &[u8]) -> Result<Self, VerifyError> {
        let bad = |d: &str| VerifyError::malformed("TPM quote", d.to_owned());
        let mut r = Reader(message);
        if r.u32()? != TPM_GENERATED_VALUE {
            return Err(bad("not TPM-generated (magic)"));
        }
        if r.u16()? != TPM_ST_ATTEST_QUOTE {
            return Err(bad("not a quote (type)"));
        }
        let _qualified_signer = r.sized()?;
        let extra_data = r.sized()?;
        r.take(17 + 8)?; // clockInfo and firmwareVersion
        let count = r.u32()?;
        let mut selected = Vec::new();
        for _ in 0..count {
            let hash = r.u16()?;
            let size = r.u8()? as usize;
            let bitmap = r.take(size)?;
            if hash != TPM_ALG_SHA256 {
                return Err(VerifyError::UnsupportedAlgorithm(format!(
                    "PCR bank {hash:#06x}, expected SHA-256"
                )));
            }
            for (byte, bits) in bitmap.iter().enumerate() {
                for bit in 0..8 {
                    if bits & (1 << bit) != 0 {
                        selected.push((byte * 8 + bit) as u8);
                    }
                }
            }
        }
        let pcr_digest = r.sized()?;
        if !r.0.is_empty() {
            return Err(bad("trailing bytes"));
        }
        Ok(Self {
            extra_data,
            selected,
            pcr_digest,
        })
    }

    /// Verifies the quote `signature` over `message` with the attestation key.
    pub fn verify_signature(
        message: &[u8],
        sig: &[u8],
        ak: &AttestationKey,
    ) -> Result<(), VerifyError> {
        signature::RsaPublicKeyComponents { n: &ak.n, e: &ak.e }
            .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, sig)
            .map_err(|_| VerifyError::Signature { what: "TPM quote" })
    }

    /// Checks the quoted digest against the supplied PCR values (index = position).
    pub fn check_pcrs(&self, pcrs: &[[u8; 32]]) -> Result<(), VerifyError> {
        let mut ctx = digest::Context::new(&digest::SHA256);
        for &i in &self.selected {
            let pcr = pcrs.get(usize::from(i)).ok_or_else(|| {
                VerifyError::malformed("TPM quote", format!("PCR{i} is selected but not supplied"))
            })?;
            ctx.update(pcr);
        }
        if ctx.finish().as_ref() != self.pcr_digest.as_slice() {
            return Err(VerifyError::Binding(
                "PCR values do not match the quoted PCR digest".into(),
            ));
        }
        Ok(())
    }
}
