//! Certificate revocation lists (RFC 5280 v2 CRLs), as AMD's Key Distribution Service
//! publishes them for each product (`/vcek/v1/{product}/crl` for the ASK,
//! `/vlek/v1/{product}/crl` for the ASVK), signed by the product's ARK.
//!
//! A list is believed only once its signature verifies under the key of the certificate
//! in the chain whose subject is the list's issuer, so a list in a cache proves nothing by
//! being there. Lists are checked while a chain is anchored ([`crate::TrustRoots`]): any
//! certificate of the chain (a VCEK, a VLEK, an ASK or an ASVK) whose issuer published a
//! list that names its serial number is refused. A list past its next update is still
//! used (revocations only accumulate) and the check says it is stale.

use std::time::SystemTime;

use x509_cert::crl::CertificateList;
use x509_cert::der::{Decode, Encode};

use crate::VerifyError;
use crate::x509::{ParsedCertificate, unix_secs};

/// Largest CRL accepted (AMD's are under 1 KiB).
pub const MAX_CRL_LEN: usize = 1 << 20;

/// A parsed (not yet verified) revocation list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevocationList {
    list: CertificateList,
    issuer: String,
}

impl RevocationList {
    /// Parses a DER CRL.
    pub fn from_der(der: &[u8]) -> Result<Self, VerifyError> {
        if der.len() > MAX_CRL_LEN {
            return Err(VerifyError::malformed(
                "certificate revocation list",
                format!("{} bytes, more than {MAX_CRL_LEN}", der.len()),
            ));
        }
        let list = CertificateList::from_der(der).map_err(|e| {
            VerifyError::malformed("certificate revocation list", format!("not a DER CRL: {e}"))
        })?;
        let issuer = list.tbs_cert_list.issuer.to_string();
        Ok(Self { list, issuer })
    }

    /// The issuer's name.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Whether `cert` is the issuer this list names.
    pub(crate) fn issued_by(&self, cert: &ParsedCertificate) -> bool {
        self.list.tbs_cert_list.issuer == cert.certificate().tbs_certificate.subject
    }

    /// Verifies the list's signature with `issuer`'s key (which must be the certificate
    /// the list names as issuer).
    pub fn verify(&self, issuer: &ParsedCertificate) -> Result<(), VerifyError> {
        if !self.issued_by(issuer) {
            return Err(VerifyError::RevocationListInvalid {
                issuer: self.issuer.clone(),
            });
        }
        let invalid = || VerifyError::RevocationListInvalid {
            issuer: self.issuer.clone(),
        };
        if self.list.signature_algorithm != self.list.tbs_cert_list.signature {
            return Err(invalid());
        }
        let tbs = self.list.tbs_cert_list.to_der().map_err(|_| invalid())?;
        let sig = self.list.signature.as_bytes().ok_or_else(invalid)?;
        issuer
            .verify_signed(&self.list.signature_algorithm, &tbs, sig, &self.issuer)
            .map_err(|e| match e {
                VerifyError::CertificateSignature { .. } => invalid(),
                other => other,
            })
    }

    /// Whether the list names the serial number `serial` (DER content bytes).
    pub fn revokes(&self, serial: &[u8]) -> bool {
        self.list
            .tbs_cert_list
            .revoked_certificates
            .iter()
            .flatten()
            .any(|r| r.serial_number.as_bytes() == serial)
    }

    /// Unix seconds of the list's issue time (thisUpdate).
    pub fn this_update(&self) -> u64 {
        self.list
            .tbs_cert_list
            .this_update
            .to_unix_duration()
            .as_secs()
    }

    /// Unix seconds of the list's next update, if it names one.
    pub fn next_update(&self) -> Option<u64> {
        self.list
            .tbs_cert_list
            .next_update
            .map(|t| t.to_unix_duration().as_secs())
    }

    /// Whether the list is past its next update at `now`.
    pub fn stale_at(&self, now: SystemTime) -> bool {
        self.next_update().is_some_and(|n| unix_secs(now) > n)
    }
}

/// Checks every certificate of `chain` (leaf first) against the lists whose issuer is the
/// next certificate up: a list must verify under that certificate's key, and must not name
/// the certificate's serial number. Returns how many lists applied, and how many of those
/// were stale at `now`.
pub(crate) fn check_chain(
    chain: &[ParsedCertificate],
    lists: &[RevocationList],
    now: SystemTime,
) -> Result<(usize, usize), VerifyError> {
    let (mut applied, mut stale) = (0, 0);
    for pair in chain.windows(2) {
        let (cert, issuer) = (&pair[0], &pair[1]);
        for list in lists.iter().filter(|l| l.issued_by(issuer)) {
            list.verify(issuer)?;
            applied += 1;
            if list.stale_at(now) {
                stale += 1;
            }
            if list.revokes(cert.serial()) {
                return Err(VerifyError::Revoked {
                    subject: cert.subject().to_owned(),
                    serial: hex::encode(cert.serial()),
                    issuer: list.issuer.clone(),
                });
            }
        }
    }
    Ok((applied, stale))
}
