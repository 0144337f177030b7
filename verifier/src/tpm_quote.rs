//! TPM 2.0 quotes: a `TPMS_ATTEST` of type `TPM_ST_ATTEST_QUOTE`, signed by the attestation
//! key with RSASSA-PKCS1-v1_5 / SHA-256, over a PCR selection and digest.
//!
//! The quote signs the *selection* and the digest of the selected PCRs, not their values:
//! the values travel beside it. A value is covered by the signature only through the
//! digest, and only when its PCR is selected. [`TpmQuote::covered_pcrs`] therefore takes
//! the supplied values as the az-snp-vtpm attester lists them (the values of the selected
//! PCRs, in ascending PCR order) and refuses any value that no selected PCR accounts for.

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
            // A TPM 2.0 PC-client TPM has 24 PCRs: three bytes of selection bitmap.
            if size > 3 {
                return Err(bad("PCR selection beyond PCR 23"));
            }
            let bitmap = r.take(size)?;
            if hash != TPM_ALG_SHA256 {
                return Err(VerifyError::UnsupportedAlgorithm(format!(
                    "PCR bank {hash:#06x}, expected SHA-256"
                )));
            }
            for (byte, bits) in bitmap.iter().enumerate() {
                for bit in 0..8 {
                    if bits & (1 << bit) != 0 {
                        // byte < 3 (checked above), so the index is below 24.
                        selected.push((byte * 8 + bit) as u8);
                    }
                }
            }
        }
        // The TPM digests the selected PCRs in selection order; a PCR selected twice (two
        // SHA-256 selections) would make one value count twice. Real quotes have one bank.
        if selected.windows(2).any(|w| w[0] >= w[1]) {
            return Err(bad("PCR selection is not one ascending SHA-256 selection"));
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
        crate::x509::count_signature_check();
        signature::RsaPublicKeyComponents { n: &ak.n, e: &ak.e }
            .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, sig)
            .map_err(|_| VerifyError::Signature { what: "TPM quote" })
    }

    /// The PCR values the quote covers, as `(index, value)` in ascending index order.
    ///
    /// `values` are the values of the selected PCRs, in selection order (ascending index),
    /// as the az-snp-vtpm attester supplies them; with the usual selection of PCRs 0-23
    /// they are PCR0..PCR23. Their SHA-256 must equal the quoted digest. A value for which
    /// no PCR is selected is an error: nothing signs it, so nobody may report it.
    pub fn covered_pcrs(&self, values: &[[u8; 32]]) -> Result<Vec<(u8, [u8; 32])>, VerifyError> {
        if values.len() != self.selected.len() {
            return Err(VerifyError::malformed(
                "TPM quote",
                format!(
                    "{} PCR values supplied, but the quote selects {} PCRs ({}): values the quote does not select are not covered by its signature",
                    values.len(),
                    self.selected.len(),
                    describe_selection(&self.selected)
                ),
            ));
        }
        let mut ctx = digest::Context::new(&digest::SHA256);
        for value in values {
            ctx.update(value);
        }
        if ctx.finish().as_ref() != self.pcr_digest.as_slice() {
            return Err(VerifyError::Binding(
                "PCR values do not match the quoted PCR digest".into(),
            ));
        }
        Ok(self
            .selected
            .iter()
            .copied()
            .zip(values.iter().copied())
            .collect())
    }
}

/// `0-23`, `0,7`, `none`: the selected PCRs for messages.
pub fn describe_selection(selected: &[u8]) -> String {
    if selected.is_empty() {
        return "none".to_owned();
    }
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < selected.len() {
        let start = selected[i];
        let mut end = start;
        while i + 1 < selected.len() && selected[i + 1] == end.wrapping_add(1) {
            i += 1;
            end = selected[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A quote message selecting `bitmap` in one SHA-256 bank.
    fn quote(bitmap: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&TPM_GENERATED_VALUE.to_be_bytes());
        m.extend_from_slice(&TPM_ST_ATTEST_QUOTE.to_be_bytes());
        m.extend_from_slice(&0u16.to_be_bytes()); // qualifiedSigner
        m.extend_from_slice(&2u16.to_be_bytes()); // extraData
        m.extend_from_slice(&[7, 7]);
        m.extend_from_slice(&[0; 17 + 8]);
        m.extend_from_slice(&1u32.to_be_bytes());
        m.extend_from_slice(&TPM_ALG_SHA256.to_be_bytes());
        m.push(u8::try_from(bitmap.len()).unwrap());
        m.extend_from_slice(bitmap);
        m.extend_from_slice(&32u16.to_be_bytes());
        m.extend_from_slice(&[0; 32]);
        m
    }

    #[test]
    fn selections_are_read_and_bounded_to_24_pcrs() {
        let q = TpmQuote::parse(&quote(&[0x81, 0, 0x80])).unwrap();
        assert_eq!(q.selected, vec![0, 7, 23]);
        assert_eq!(q.extra_data, vec![7, 7]);
        assert_eq!(describe_selection(&q.selected), "0,7,23");
        // A fourth selection byte would name PCRs 24-31, which no PC-client TPM has.
        assert!(TpmQuote::parse(&quote(&[0, 0, 0, 1])).is_err());
        let mut trailing = quote(&[1, 0, 0]);
        trailing.push(0);
        assert!(TpmQuote::parse(&trailing).is_err());
    }
}
