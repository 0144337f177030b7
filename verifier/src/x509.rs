//! X.509 certificate parsing and chain validation.
//!
//! A chain is given leaf first, root last. Every certificate must be valid at `now`; each
//! must be issued (name and signature) by the next; every issuer must be a CA
//! (basicConstraints) within its path length and, when it has keyUsage, allowed to sign
//! certificates; the root must be self-signed. Whether the root is *trusted* is decided by
//! the caller (pinned fingerprints), before any signature is checked.
//!
//! Signatures are checked from the root down, so a chain that does not descend from its
//! (pinned) root costs at most two signature checks, however long it is.
//! [`signature_checks`] counts them, for tests that bound the work an input can cause.

use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::{digest, signature};
use x509_cert::Certificate;
use x509_cert::der::asn1::ObjectIdentifier;
use x509_cert::der::{Decode, Encode};
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, KeyUsage, SubjectKeyIdentifier,
};

use crate::VerifyError;

const OID_ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const OID_ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const OID_RSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
const OID_RSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const OID_RSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const OID_BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
const OID_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");
const OID_SUBJECT_KEY_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.14");
const OID_AUTHORITY_KEY_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.35");

/// A parsed certificate with its exact DER encoding.
#[derive(Clone, Debug)]
pub struct ParsedCertificate {
    der: Vec<u8>,
    cert: Certificate,
    subject: String,
}

/// What a verified chain reports about each certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateInfo {
    /// Subject distinguished name (RFC 4514 string).
    pub subject: String,
    /// Start of validity, Unix seconds.
    pub not_before: u64,
    /// End of validity, Unix seconds.
    pub not_after: u64,
    /// SHA-256 of the DER encoding.
    pub sha256: [u8; 32],
}

impl ParsedCertificate {
    /// Parses one DER certificate.
    pub fn from_der(der: &[u8], what: &'static str) -> Result<Self, VerifyError> {
        let cert = Certificate::from_der(der)
            .map_err(|e| VerifyError::malformed(what, format!("not a DER certificate: {e}")))?;
        let subject = cert.tbs_certificate.subject.to_string();
        Ok(Self {
            der: der.to_vec(),
            cert,
            subject,
        })
    }

    /// Parses every certificate of a PEM bundle, in order.
    pub fn from_pem_chain(pem: &[u8], what: &'static str) -> Result<Vec<Self>, VerifyError> {
        let certs = Certificate::load_pem_chain(pem)
            .map_err(|e| VerifyError::malformed(what, format!("not PEM certificates: {e}")))?;
        certs
            .into_iter()
            .map(|c| {
                let der = c
                    .to_der()
                    .map_err(|e| VerifyError::malformed(what, e.to_string()))?;
                Self::from_der(&der, what)
            })
            .collect()
    }

    /// The subject name.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The DER encoding.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The underlying certificate.
    pub fn certificate(&self) -> &Certificate {
        &self.cert
    }

    /// SHA-256 of the DER encoding.
    pub fn sha256(&self) -> [u8; 32] {
        let d = digest::digest(&digest::SHA256, &self.der);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        out
    }

    /// The subject public key: the SubjectPublicKeyInfo BIT STRING contents (an EC point or
    /// an RSAPublicKey).
    pub fn public_key_bytes(&self) -> &[u8] {
        self.cert
            .tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes()
    }

    /// The named curve of an EC public key, if it is one.
    fn ec_curve(&self) -> Option<ObjectIdentifier> {
        let spki = &self.cert.tbs_certificate.subject_public_key_info;
        if spki.algorithm.oid != OID_EC_PUBLIC_KEY {
            return None;
        }
        spki.algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<ObjectIdentifier>().ok())
    }

    /// Whether the key is an ECDSA P-384 key.
    pub fn is_p384(&self) -> bool {
        self.ec_curve() == Some(OID_P384)
    }

    /// Summary for reports.
    pub fn info(&self) -> CertificateInfo {
        let v = &self.cert.tbs_certificate.validity;
        CertificateInfo {
            subject: self.subject.clone(),
            not_before: v.not_before.to_unix_duration().as_secs(),
            not_after: v.not_after.to_unix_duration().as_secs(),
            sha256: self.sha256(),
        }
    }

    /// The DER value of extension `oid`, if present.
    pub fn extension(&self, oid: &ObjectIdentifier) -> Option<&[u8]> {
        self.cert
            .tbs_certificate
            .extensions
            .as_ref()?
            .iter()
            .find(|e| &e.extn_id == oid)
            .map(|e| e.extn_value.as_bytes())
    }

    /// The subjectKeyIdentifier, if present and well-formed.
    pub fn subject_key_id(&self) -> Option<Vec<u8>> {
        self.extension(&OID_SUBJECT_KEY_ID)
            .and_then(|der| SubjectKeyIdentifier::from_der(der).ok())
            .map(|ski| ski.0.as_bytes().to_vec())
    }

    /// The keyIdentifier of the authorityKeyIdentifier, if present and well-formed.
    pub fn authority_key_id(&self) -> Option<Vec<u8>> {
        self.extension(&OID_AUTHORITY_KEY_ID)
            .and_then(|der| AuthorityKeyIdentifier::from_der(der).ok())
            .and_then(|aki| aki.key_identifier)
            .map(|id| id.as_bytes().to_vec())
    }

    /// Fails unless valid at `now`.
    pub fn check_validity(&self, now: SystemTime) -> Result<(), VerifyError> {
        let info = self.info();
        let now = unix_secs(now);
        if now < info.not_before {
            return Err(VerifyError::CertificateNotYetValid {
                subject: info.subject,
                not_before: info.not_before,
                now,
            });
        }
        if now > info.not_after {
            return Err(VerifyError::CertificateExpired {
                subject: info.subject,
                not_after: info.not_after,
                now,
            });
        }
        Ok(())
    }

    /// Verifies `signature` over `message` with this certificate's key, using the
    /// algorithm named by `alg_oid` (with `alg_params`, for RSASSA-PSS).
    fn verify_with(
        &self,
        alg_oid: ObjectIdentifier,
        alg_params: Option<&[u8]>,
        message: &[u8],
        sig: &[u8],
    ) -> Result<(), SigError> {
        let curve = self.ec_curve();
        let alg: &dyn signature::VerificationAlgorithm = match (alg_oid, curve) {
            (OID_ECDSA_SHA384, Some(OID_P384)) => &signature::ECDSA_P384_SHA384_ASN1,
            (OID_ECDSA_SHA384, Some(OID_P256)) => &signature::ECDSA_P256_SHA384_ASN1,
            (OID_ECDSA_SHA256, Some(OID_P256)) => &signature::ECDSA_P256_SHA256_ASN1,
            (OID_ECDSA_SHA256, Some(OID_P384)) => &signature::ECDSA_P384_SHA256_ASN1,
            (OID_RSA_SHA256, None) => &signature::RSA_PKCS1_2048_8192_SHA256,
            (OID_RSA_SHA384, None) => &signature::RSA_PKCS1_2048_8192_SHA384,
            (OID_RSA_PSS, None) => {
                // AMD's ARK/ASK sign with RSASSA-PSS, SHA-384, MGF1-SHA-384, 48-byte salt.
                let params = alg_params.ok_or(SigError::Unsupported(
                    "RSASSA-PSS without parameters".into(),
                ))?;
                if !contains_oid(params, &OID_SHA384) {
                    return Err(SigError::Unsupported(
                        "RSASSA-PSS with a hash other than SHA-384".into(),
                    ));
                }
                &signature::RSA_PSS_2048_8192_SHA384
            }
            (oid, _) => {
                return Err(SigError::Unsupported(format!(
                    "signature algorithm {oid} with this key type"
                )));
            }
        };
        count_signature_check();
        signature::UnparsedPublicKey::new(alg, self.public_key_bytes())
            .verify(message, sig)
            .map_err(|_| SigError::Invalid)
    }

    /// Verifies `sig` over `message` with this certificate's key, under the algorithm
    /// `alg` of a certificate or CRL signature (ECDSA P-256/P-384, RSA PKCS#1, RSASSA-PSS
    /// SHA-384); `subject` names the signed object in errors.
    pub(crate) fn verify_signed(
        &self,
        alg: &x509_cert::spki::AlgorithmIdentifierOwned,
        message: &[u8],
        sig: &[u8],
        subject: &str,
    ) -> Result<(), VerifyError> {
        let params = alg.parameters.as_ref().map(|p| p.value());
        self.verify_with(alg.oid, params, message, sig)
            .map_err(|e| match e {
                SigError::Invalid => VerifyError::CertificateSignature {
                    subject: subject.to_owned(),
                },
                SigError::Unsupported(s) => VerifyError::UnsupportedAlgorithm(s),
            })
    }

    /// The serial number, as its DER content bytes.
    pub fn serial(&self) -> &[u8] {
        self.cert.tbs_certificate.serial_number.as_bytes()
    }

    /// Verifies that `issuer` signed this certificate.
    fn verify_issued_by(&self, issuer: &ParsedCertificate) -> Result<(), VerifyError> {
        if self.cert.tbs_certificate.issuer != issuer.cert.tbs_certificate.subject {
            return Err(VerifyError::IssuerMismatch {
                subject: self.subject.clone(),
                issuer: issuer.subject.clone(),
            });
        }
        let tbs = self
            .cert
            .tbs_certificate
            .to_der()
            .map_err(|e| VerifyError::malformed("certificate", e.to_string()))?;
        let alg = &self.cert.signature_algorithm;
        if alg != &self.cert.tbs_certificate.signature {
            return Err(VerifyError::malformed(
                "certificate",
                "outer and inner signature algorithms differ",
            ));
        }
        let params = alg.parameters.as_ref().map(|p| p.value());
        let sig =
            self.cert.signature.as_bytes().ok_or_else(|| {
                VerifyError::malformed("certificate", "signature has unused bits")
            })?;
        issuer
            .verify_with(alg.oid, params, &tbs, sig)
            .map_err(|e| match e {
                SigError::Invalid => VerifyError::CertificateSignature {
                    subject: self.subject.clone(),
                },
                SigError::Unsupported(s) => VerifyError::UnsupportedAlgorithm(s),
            })
    }

    /// basicConstraints: (is a CA, path length limit).
    fn basic_constraints(&self) -> Result<(bool, Option<u8>), VerifyError> {
        match self.extension(&OID_BASIC_CONSTRAINTS) {
            None => Ok((false, None)),
            Some(der) => {
                let bc = BasicConstraints::from_der(der)
                    .map_err(|e| VerifyError::malformed("basicConstraints", e.to_string()))?;
                Ok((bc.ca, bc.path_len_constraint))
            }
        }
    }

    /// keyUsage bits, when the extension is present.
    fn key_usage(&self) -> Result<Option<KeyUsage>, VerifyError> {
        self.extension(&OID_KEY_USAGE)
            .map(|der| {
                KeyUsage::from_der(der)
                    .map_err(|e| VerifyError::malformed("keyUsage", e.to_string()))
            })
            .transpose()
    }

    /// Fails unless this (leaf) certificate may sign evidence: not a CA, and digitalSignature
    /// when keyUsage is present.
    pub fn check_leaf_usage(&self) -> Result<(), VerifyError> {
        if self.basic_constraints()?.0 {
            return Err(VerifyError::LeafUsage {
                subject: self.subject.clone(),
                reason: "a CA certificate does not sign evidence",
            });
        }
        if let Some(ku) = self.key_usage()?
            && !ku.digital_signature()
        {
            return Err(VerifyError::LeafUsage {
                subject: self.subject.clone(),
                reason: "keyUsage lacks digitalSignature",
            });
        }
        Ok(())
    }
}

thread_local! {
    static SIGNATURE_CHECKS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many signatures this thread has checked so far (instrumentation: tests bound the
/// signature work an input can cause with it).
pub fn signature_checks() -> u64 {
    SIGNATURE_CHECKS.with(std::cell::Cell::get)
}

pub(crate) fn count_signature_check() {
    SIGNATURE_CHECKS.with(|c| c.set(c.get() + 1));
}

/// A signature check failed or could not be attempted.
enum SigError {
    Invalid,
    Unsupported(String),
}

/// Verifies `sig` (ECDSA P-384 r||s, 96 bytes) over `message` with `cert`'s key.
pub(crate) fn verify_p384_fixed(
    cert: &ParsedCertificate,
    message: &[u8],
    sig: &[u8],
    what: &'static str,
) -> Result<(), VerifyError> {
    if !cert.is_p384() {
        return Err(VerifyError::UnsupportedAlgorithm(format!(
            "{what}: signing key is not ECDSA P-384"
        )));
    }
    count_signature_check();
    signature::UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, cert.public_key_bytes())
        .verify(message, sig)
        .map_err(|_| VerifyError::Signature { what })
}

/// Validates `chain` (leaf first, root last) at `now`; see the module docs. Signatures
/// are checked from the root down.
pub fn verify_chain(chain: &[ParsedCertificate], now: SystemTime) -> Result<(), VerifyError> {
    let Some(root) = chain.last() else {
        return Err(VerifyError::malformed("certificate chain", "empty"));
    };
    for cert in chain {
        cert.check_validity(now)?;
    }
    // The cheap structural checks on every issuer first, then the signatures, root first.
    for (i, pair) in chain.windows(2).enumerate() {
        let issuer = &pair[1];
        let (is_ca, path_len) = issuer.basic_constraints()?;
        if !is_ca {
            return Err(VerifyError::NotAnIssuer {
                subject: issuer.subject.clone(),
                reason: "basicConstraints cA is not set",
            });
        }
        // Intermediate CA certificates below this issuer, not counting the leaf.
        let below = i as u64;
        if path_len.is_some_and(|limit| below > u64::from(limit)) {
            return Err(VerifyError::NotAnIssuer {
                subject: issuer.subject.clone(),
                reason: "path length constraint exceeded",
            });
        }
        if let Some(ku) = issuer.key_usage()?
            && !ku.key_cert_sign()
        {
            return Err(VerifyError::NotAnIssuer {
                subject: issuer.subject.clone(),
                reason: "keyUsage lacks keyCertSign",
            });
        }
        if pair[0].cert.tbs_certificate.issuer != issuer.cert.tbs_certificate.subject {
            return Err(VerifyError::IssuerMismatch {
                subject: pair[0].subject.clone(),
                issuer: issuer.subject.clone(),
            });
        }
    }
    root.verify_issued_by(root)?;
    for pair in chain.windows(2).rev() {
        pair[0].verify_issued_by(&pair[1])?;
    }
    Ok(())
}

/// Seconds since the Unix epoch (0 before it).
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Whether the DER `haystack` contains the encoded OID `oid`.
fn contains_oid(haystack: &[u8], oid: &ObjectIdentifier) -> bool {
    let body = oid.as_bytes();
    haystack
        .windows(body.len() + 2)
        .any(|w| w[0] == 0x06 && usize::from(w[1]) == body.len() && &w[2..] == body)
}
