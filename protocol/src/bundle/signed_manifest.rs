//! `manifest.cose`: the manifest in a COSE_Sign1 envelope signed with EdDSA (Ed25519).

use aws_lc_rs::digest;
use coset::{CoseSign1, CoseSign1Builder, HeaderBuilder, TaggedCborSerializable, iana};

use super::{BundleError, Manifest, ProviderPublicKey, ProviderSigningKey};

/// File name of the signed manifest at the root of a bundle directory.
pub const MANIFEST_FILE: &str = "manifest.cose";

/// COSE content type of the manifest payload.
pub const MANIFEST_CONTENT_TYPE: &str = "application/vnd.trustbridge.manifest+cbor";

/// A manifest whose signature has been created or verified, with its exact encoding.
#[derive(Clone, Debug)]
pub struct SignedManifest {
    manifest: Manifest,
    encoded: Vec<u8>,
    /// SHA-256 of `encoded`, computed once (every receipt names it).
    digest: [u8; 32],
}

/// SHA-256 of `manifest.cose`'s bytes.
fn sha256(encoded: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, encoded);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl SignedManifest {
    /// Signs `manifest` with `key`, which must be the manifest's `provider_key`.
    ///
    /// Protected header: `alg` = EdDSA, `kid` = the provider key id, content type
    /// [`MANIFEST_CONTENT_TYPE`]. The encoding is a tagged (18) COSE_Sign1.
    pub fn sign(manifest: Manifest, key: &ProviderSigningKey) -> Result<Self, BundleError> {
        if manifest.provider_key != key.public() {
            return Err(BundleError::ProviderMismatch {
                expected: manifest.provider_key.key_id(),
                found: key.public().key_id(),
            });
        }
        let protected = HeaderBuilder::new()
            .algorithm(iana::Algorithm::EdDSA)
            .key_id(key.public().key_id().0.to_vec())
            .content_type(MANIFEST_CONTENT_TYPE.to_owned())
            .build();
        let encoded = CoseSign1Builder::new()
            .protected(protected)
            .payload(manifest.to_cbor()?)
            .create_signature(&[], |tbs| key.sign(tbs).to_vec())
            .build()
            .to_tagged_vec()
            .map_err(|e| BundleError::ManifestMalformed(format!("COSE encoding failed: {e}")))?;
        Ok(Self {
            manifest,
            digest: sha256(&encoded),
            encoded,
        })
    }

    /// Parses `manifest.cose` and verifies its signature.
    ///
    /// The signer is the `provider_key` inside the signed payload. With `pinned`, that key
    /// must be the pinned one ([`BundleError::ProviderMismatch`] otherwise); without it, the
    /// caller learns who signed (see [`Manifest::provider_key`]) and must decide whether to
    /// trust that key.
    pub fn verify(bytes: &[u8], pinned: Option<&ProviderPublicKey>) -> Result<Self, BundleError> {
        let sign1 = CoseSign1::from_tagged_slice(bytes)
            .map_err(|e| BundleError::ManifestMalformed(format!("not a tagged COSE_Sign1: {e}")))?;
        let header = &sign1.protected.header;
        if header.alg
            != Some(coset::RegisteredLabelWithPrivate::Assigned(
                iana::Algorithm::EdDSA,
            ))
            || sign1.unprotected.alg.is_some()
        {
            return Err(BundleError::UnsupportedAlgorithm);
        }
        if !header.crit.is_empty() {
            return Err(BundleError::ManifestMalformed(
                "unsupported critical header parameters".into(),
            ));
        }
        let payload = sign1
            .payload
            .as_deref()
            .ok_or_else(|| BundleError::ManifestMalformed("detached payload".into()))?;
        let manifest = Manifest::from_cbor(payload)?;
        let signer = manifest.provider_key;
        if let Some(pinned) = pinned
            && *pinned != signer
        {
            return Err(BundleError::ProviderMismatch {
                expected: pinned.key_id(),
                found: signer.key_id(),
            });
        }
        if header.key_id != signer.key_id().0 {
            return Err(BundleError::ManifestMalformed(
                "kid does not match the manifest's provider key".into(),
            ));
        }
        sign1
            .verify_signature(&[], |sig, tbs| {
                if signer.verify(tbs, sig) {
                    Ok(())
                } else {
                    Err(())
                }
            })
            .map_err(|()| BundleError::BadSignature {
                provider: signer.key_id(),
            })?;
        Ok(Self {
            manifest,
            encoded: bytes.to_vec(),
            digest: sha256(bytes),
        })
    }

    /// The verified manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The exact bytes of `manifest.cose`.
    pub fn as_bytes(&self) -> &[u8] {
        &self.encoded
    }

    /// SHA-256 of the `manifest.cose` bytes: the model digest that key releases and
    /// receipts name.
    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }
}
