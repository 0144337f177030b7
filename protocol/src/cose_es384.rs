//! COSE_Sign1 signed with ES384 (ECDSA P-384 with SHA-384, the fixed-size `r ‖ s`
//! signature): the envelope of AWS Nitro attestation documents and of an EIF's signature
//! section. One signer for both the simulated Nitro hardware and `trustbridge eif`.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::EcdsaKeyPair;
use coset::{CborSerializable, CoseSign1Builder, HeaderBuilder, iana};

/// A COSE_Sign1 could not be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CoseSignError {
    /// The signature could not be computed (the random source failed).
    #[error("ES384 signing failed")]
    Sign,
    /// The envelope could not be encoded.
    #[error("the COSE_Sign1 could not be encoded")]
    Encoding,
}

/// The untagged COSE_Sign1 of `payload`: protected header `{1: -35}` (ES384), empty
/// unprotected header, no external data, signed with `key` (a P-384 key made for
/// `ECDSA_P384_SHA384_FIXED_SIGNING`).
pub fn sign1_es384(key: &EcdsaKeyPair, payload: Vec<u8>) -> Result<Vec<u8>, CoseSignError> {
    let rng = SystemRandom::new();
    let mut failed = false;
    let sign1 = CoseSign1Builder::new()
        .protected(
            HeaderBuilder::new()
                .algorithm(iana::Algorithm::ES384)
                .build(),
        )
        .payload(payload)
        .create_signature(&[], |tbs| match key.sign(&rng, tbs) {
            Ok(sig) => sig.as_ref().to_vec(),
            Err(_) => {
                failed = true;
                Vec::new()
            }
        })
        .build();
    if failed {
        return Err(CoseSignError::Sign);
    }
    sign1.to_vec().map_err(|_| CoseSignError::Encoding)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code
    use super::*;
    use aws_lc_rs::signature::{
        ECDSA_P384_SHA384_FIXED, ECDSA_P384_SHA384_FIXED_SIGNING, KeyPair, UnparsedPublicKey,
    };
    use coset::CoseSign1;

    #[test]
    fn the_envelope_verifies_under_the_key_and_not_once_tampered() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng).unwrap();
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let bytes = sign1_es384(&key, b"payload".to_vec()).unwrap();
        let sign1 = CoseSign1::from_slice(&bytes).unwrap();
        assert_eq!(
            sign1.protected.header.alg,
            Some(coset::Algorithm::Assigned(iana::Algorithm::ES384))
        );
        assert!(sign1.unprotected.is_empty());
        assert_eq!(sign1.payload.as_deref(), Some(&b"payload"[..]));
        let public = UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, key.public_key().as_ref());
        sign1
            .verify_signature(&[], |sig, tbs| public.verify(tbs, sig))
            .unwrap();
        let mut tampered = sign1.clone();
        tampered.payload = Some(b"payloaD".to_vec());
        assert!(
            tampered
                .verify_signature(&[], |sig, tbs| public.verify(tbs, sig))
                .is_err()
        );
    }
}
