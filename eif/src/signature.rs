//! The signature section: AWS's format, a CBOR array of `{signing_certificate, signature}`
//! whose byte fields are arrays of integers (serde's encoding of `Vec<u8>`), the
//! certificate as PEM and the signature a COSE_Sign1 (ES384, untagged) over the CBOR map
//! `{register_index: 0, register_value: PCR0}`. PCR8 measures the certificate's DER.
//!
//! nitro-cli verifies the signature and the certificate's validity before it launches a
//! signed image; [`verify`] does the same checks so `trustbridge eif measure` never reports
//! PCR8 for a signature that does not hold.

use std::time::SystemTime;

use aws_lc_rs::signature::{
    ECDSA_P384_SHA384_FIXED, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};
use ciborium::Value;
use coset::{CborSerializable, CoseSign1, iana};
use trustbridge_verifier::x509::ParsedCertificate;
use x509_cert::der::pem::LineEnding;

use crate::{PCR_LEN, PcrHasher};

/// Largest signature section accepted (AWS's limit).
pub const MAX_SIGNATURE_LEN: usize = 32 * 1024;

/// Signing or verifying the image failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The certificate is not one PEM X.509 certificate.
    #[error("the signing certificate is not a PEM X.509 certificate")]
    Certificate,
    /// Nitro images are signed with ECDSA P-384.
    #[error("the signing certificate's key is not ECDSA P-384")]
    NotP384,
    /// The key file is not a PEM P-384 private key (PKCS#8 or SEC1).
    #[error("the signing key is not a PEM ECDSA P-384 private key (PKCS#8 or SEC1)")]
    Key,
    /// Key and certificate do not belong together.
    #[error("the signing key does not match the certificate's public key")]
    KeyMismatch,
    /// The certificate is outside its validity period (nitro-cli refuses to launch it).
    #[error("the signing certificate is not valid now: {0}")]
    Validity(String),
    /// The random number generator failed.
    #[error("signing failed (random number generator)")]
    Sign,
    /// A malformed signature section.
    #[error("the signature section is malformed: {0}")]
    Malformed(&'static str),
    /// The signature does not verify under the certificate's key.
    #[error("the image signature does not verify under its certificate")]
    BadSignature,
    /// The signature covers another PCR0 than the image's.
    #[error("the image signature covers another image (PCR0 differs)")]
    WrongImage,
}

/// A signing key and its certificate.
pub struct Signer {
    key: EcdsaKeyPair,
    certificate: ParsedCertificate,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({})", self.certificate.subject())
    }
}

impl Signer {
    /// The signer from PEM files' contents, checked: P-384, key matching the certificate,
    /// certificate valid at `now`.
    pub fn from_pem(
        certificate_pem: &[u8],
        key_pem: &[u8],
        now: SystemTime,
    ) -> Result<Self, SignatureError> {
        let certificate = one_certificate(certificate_pem)?;
        if !certificate.is_p384() {
            return Err(SignatureError::NotP384);
        }
        let der = private_key_der(key_pem)?;
        let key = EcdsaKeyPair::from_private_key_der(&ECDSA_P384_SHA384_FIXED_SIGNING, &der)
            .map_err(|_| SignatureError::Key)?;
        if key.public_key().as_ref() != certificate.public_key_bytes() {
            return Err(SignatureError::KeyMismatch);
        }
        certificate
            .check_validity(now)
            .map_err(|e| SignatureError::Validity(e.to_string()))?;
        Ok(Self { key, certificate })
    }

    /// PCR8: the certificate's measurement.
    pub fn pcr8(&self) -> [u8; PCR_LEN] {
        pcr8(self.certificate.der())
    }

    /// The signature section for an image whose PCR0 is `pcr0`.
    pub fn section(&self, pcr0: &[u8; PCR_LEN]) -> Result<Vec<u8>, SignatureError> {
        let payload = encode(&pcr_info(pcr0))?;
        let cose = trustbridge_protocol::cose_es384::sign1_es384(&self.key, payload).map_err(
            |e| match e {
                trustbridge_protocol::cose_es384::CoseSignError::Sign => SignatureError::Sign,
                _ => SignatureError::Malformed("COSE encoding"),
            },
        )?;
        let pem = x509_cert::der::pem::encode_string(
            "CERTIFICATE",
            LineEnding::LF,
            self.certificate.der(),
        )
        .map_err(|_| SignatureError::Certificate)?;
        encode(&Value::Array(vec![Value::Map(vec![
            (
                Value::Text("signing_certificate".into()),
                int_array(pem.as_bytes()),
            ),
            (Value::Text("signature".into()), int_array(&cose)),
        ])]))
    }
}

/// PCR8 of a DER certificate.
pub fn pcr8(der: &[u8]) -> [u8; PCR_LEN] {
    let mut h = PcrHasher::new();
    h.update(der);
    h.finish()
}

/// Verifies a signature section against the image's `pcr0`; returns the certificate's
/// DER (what PCR8 measures). Validity is checked at `now`.
pub fn verify(
    section: &[u8],
    pcr0: &[u8; PCR_LEN],
    now: SystemTime,
) -> Result<ParsedCertificate, SignatureError> {
    if section.len() > MAX_SIGNATURE_LEN {
        return Err(SignatureError::Malformed("too long"));
    }
    let value: Value =
        ciborium::de::from_reader(section).map_err(|_| SignatureError::Malformed("not CBOR"))?;
    let Value::Array(items) = value else {
        return Err(SignatureError::Malformed("not an array"));
    };
    // nitro-cli checks the first entry: it is the one over PCR0.
    let Some(Value::Map(entry)) = items.into_iter().next() else {
        return Err(SignatureError::Malformed("no signature entry"));
    };
    let field = |name: &str| -> Result<Vec<u8>, SignatureError> {
        let v = entry
            .iter()
            .find(|(k, _)| k.as_text() == Some(name))
            .map(|(_, v)| v)
            .ok_or(SignatureError::Malformed("missing field"))?;
        bytes_of(v).ok_or(SignatureError::Malformed("a field is not bytes"))
    };
    let certificate = one_certificate(&field("signing_certificate")?)?;
    if !certificate.is_p384() {
        return Err(SignatureError::NotP384);
    }
    let sign1 = CoseSign1::from_slice(&field("signature")?)
        .map_err(|_| SignatureError::Malformed("not a COSE_Sign1"))?;
    if sign1.protected.header.alg != Some(coset::Algorithm::Assigned(iana::Algorithm::ES384)) {
        return Err(SignatureError::Malformed("not ES384"));
    }
    let key = UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, certificate.public_key_bytes());
    sign1
        .verify_signature(&[], |sig, tbs| key.verify(tbs, sig))
        .map_err(|_| SignatureError::BadSignature)?;
    let payload = sign1
        .payload
        .as_deref()
        .ok_or(SignatureError::Malformed("no payload"))?;
    let info: Value =
        ciborium::de::from_reader(payload).map_err(|_| SignatureError::Malformed("payload"))?;
    if info != pcr_info(pcr0) {
        return Err(SignatureError::WrongImage);
    }
    certificate
        .check_validity(now)
        .map_err(|e| SignatureError::Validity(e.to_string()))?;
    Ok(certificate)
}

/// The DER of the one private-key block (PKCS#8 `PRIVATE KEY` or SEC1 `EC PRIVATE KEY`)
/// in a PEM file; other blocks (`openssl ecparam -genkey` writes `EC PARAMETERS` first)
/// are skipped.
fn private_key_der(pem: &[u8]) -> Result<zeroize::Zeroizing<Vec<u8>>, SignatureError> {
    let text = std::str::from_utf8(pem).map_err(|_| SignatureError::Key)?;
    let mut found = None;
    for label in ["PRIVATE KEY", "EC PRIVATE KEY"] {
        let begin = format!("-----BEGIN {label}-----");
        let end = format!("-----END {label}-----");
        if let Some(start) = text.find(&begin) {
            let stop = text[start..]
                .find(&end)
                .map(|e| start + e + end.len())
                .ok_or(SignatureError::Key)?;
            if found.is_some() || text[stop..].contains(&begin) {
                return Err(SignatureError::Key);
            }
            found = Some(&text[start..stop]);
        }
    }
    let block = found.ok_or(SignatureError::Key)?;
    let (_, der) =
        x509_cert::der::pem::decode_vec(block.as_bytes()).map_err(|_| SignatureError::Key)?;
    Ok(zeroize::Zeroizing::new(der))
}

fn one_certificate(pem: &[u8]) -> Result<ParsedCertificate, SignatureError> {
    let mut certs = ParsedCertificate::from_pem_chain(pem, "the EIF signing certificate")
        .map_err(|_| SignatureError::Certificate)?;
    match (certs.pop(), certs.is_empty()) {
        (Some(c), true) => Ok(c),
        _ => Err(SignatureError::Certificate),
    }
}

fn pcr_info(pcr0: &[u8; PCR_LEN]) -> Value {
    Value::Map(vec![
        (
            Value::Text("register_index".into()),
            Value::Integer(0.into()),
        ),
        (Value::Text("register_value".into()), int_array(pcr0)),
    ])
}

fn int_array(bytes: &[u8]) -> Value {
    Value::Array(bytes.iter().map(|b| Value::Integer((*b).into())).collect())
}

/// Bytes as serde writes `Vec<u8>` (an array of integers), or a byte string.
fn bytes_of(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::Bytes(b) => Some(b.clone()),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_integer().and_then(|n| u8::try_from(n).ok()))
            .collect(),
        _ => None,
    }
}

fn encode(v: &Value) -> Result<Vec<u8>, SignatureError> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(v, &mut out).map_err(|_| SignatureError::Malformed("encoding"))?;
    Ok(out)
}
