//! Execution receipts: a receipt against the attested sentinel that signed it, its digests
//! against the plaintexts a client kept, and a log of receipts as a set of hash chains.
//!
//! The format and the signature are [`trustbridge_protocol::receipt`]'s; this module adds
//! what ties a receipt to evidence. The receipt key is trusted only as far as verified
//! evidence binds it ([`check_bound`]): the caller verifies the attestation bundle's
//! evidence and its binding first (the evidence binding names the receipt key), then
//! checks the receipt here.

use std::collections::BTreeMap;

use ed25519_dalek::VerifyingKey;
use trustbridge_protocol::KeyId;
use trustbridge_protocol::attestation_bundle::AttestationBundle;
use trustbridge_protocol::receipt::{
    Claims, GENESIS, Receipt, ReceiptError, ReceiptVerifyingKey, SALT_LEN, UnverifiedReceipt,
    salted_digest,
};

use crate::VerifiedEvidence;

/// A receipt does not hold against its sentinel, its plaintexts or its log.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReceiptCheckError {
    /// The receipt itself (format, signature).
    #[error(transparent)]
    Receipt(#[from] ReceiptError),
    /// The bundle's receipt key is not an Ed25519 public key.
    #[error("the attestation bundle's receipt key is not an Ed25519 public key")]
    BadKey,
    /// The receipt names other evidence than the bundle's.
    #[error("evidence_digest {claimed} is not the digest of the bundle's evidence {actual}")]
    OtherEvidence {
        /// The claim.
        claimed: String,
        /// The bundle's.
        actual: String,
    },
    /// A measurement the receipt states is not what the verified evidence reports.
    #[error("measurement {name} in the receipt is not the one the evidence reports")]
    Measurement {
        /// The measurement.
        name: String,
    },
    /// The receipt names another model than the one the evidence binds.
    #[error("model {claimed} is not the model the evidence binds ({bound})")]
    OtherModel {
        /// The claim.
        claimed: String,
        /// The binding's manifest digest.
        bound: String,
    },
    /// A salted digest does not match the plaintext given.
    #[error("{which} digest does not match the {which} given (with this salt)")]
    Digest {
        /// `request` or `response`.
        which: &'static str,
    },
}

/// The bundle's receipt key (the binding names it; the bundle's own parsing checked that).
pub fn receipt_key(bundle: &AttestationBundle) -> Result<VerifyingKey, ReceiptCheckError> {
    VerifyingKey::from_bytes(&bundle.binding.receipt_key).map_err(|_| ReceiptCheckError::BadKey)
}

/// Verifies `bytes` as a receipt signed by the sentinel of `bundle`, whose evidence the
/// caller has verified as `evidence` (including the binding), and checks the claims that
/// evidence can vouch for: the evidence digest, the measurements and, when the binding
/// names one, the model.
pub fn verify_against(
    bytes: &[u8],
    bundle: &AttestationBundle,
    evidence: &VerifiedEvidence,
) -> Result<Receipt, ReceiptCheckError> {
    ReceiptAnchor::new(bundle).verify(bytes, bundle, evidence)
}

/// What [`verify_against`] derives from a bundle (its receipt key, decoded, and the
/// digest of its evidence), derived once for a client that checks many receipts against
/// the same verified bundle.
#[derive(Clone, Debug)]
pub struct ReceiptAnchor {
    key: Option<ReceiptVerifyingKey>,
    evidence_digest: [u8; 32],
}

impl ReceiptAnchor {
    /// The anchor of `bundle` (a receipt key that is not an Ed25519 public key makes
    /// every receipt checked against it fail with [`ReceiptCheckError::BadKey`]).
    pub fn new(bundle: &AttestationBundle) -> Self {
        Self {
            key: receipt_key(bundle)
                .ok()
                .map(|k| ReceiptVerifyingKey::new(&k)),
            evidence_digest: bundle.evidence_digest(),
        }
    }

    /// SHA-256 of the bundle's evidence.
    pub fn evidence_digest(&self) -> [u8; 32] {
        self.evidence_digest
    }

    /// [`verify_against`] with this anchor, which must be `bundle`'s: an anchor whose key
    /// is not the one `bundle` binds verifies nothing ([`ReceiptCheckError::BadKey`]).
    pub fn verify(
        &self,
        bytes: &[u8],
        bundle: &AttestationBundle,
        evidence: &VerifiedEvidence,
    ) -> Result<Receipt, ReceiptCheckError> {
        self.verify_parsed(UnverifiedReceipt::parse(bytes)?, bundle, evidence)
    }

    /// [`Self::verify`] of a receipt already parsed (a client that read its claimed
    /// evidence first parses it once).
    pub fn verify_parsed(
        &self,
        receipt: UnverifiedReceipt,
        bundle: &AttestationBundle,
        evidence: &VerifiedEvidence,
    ) -> Result<Receipt, ReceiptCheckError> {
        let key = self
            .key
            .as_ref()
            .filter(|k| k.public_key() == bundle.binding.receipt_key)
            .ok_or(ReceiptCheckError::BadKey)?;
        let receipt = receipt.verify_with(key)?;
        check_claims(receipt.claims(), &self.evidence_digest, bundle, evidence)?;
        Ok(receipt)
    }
}

/// The claims of a receipt the bundle's key signed, against the bundle and its verified
/// evidence.
pub fn check_bound(
    claims: &Claims,
    bundle: &AttestationBundle,
    evidence: &VerifiedEvidence,
) -> Result<(), ReceiptCheckError> {
    check_claims(claims, &bundle.evidence_digest(), bundle, evidence)
}

/// [`check_bound`], with the digest of the bundle's evidence given.
fn check_claims(
    claims: &Claims,
    actual: &[u8; 32],
    bundle: &AttestationBundle,
    evidence: &VerifiedEvidence,
) -> Result<(), ReceiptCheckError> {
    if claims.evidence_digest != *actual {
        return Err(ReceiptCheckError::OtherEvidence {
            claimed: hex::encode(claims.evidence_digest),
            actual: hex::encode(actual),
        });
    }
    // Only what the evidence signs is a measurement: a name it does not report, or
    // another value, is refused.
    for (name, value) in &claims.measurements {
        if evidence.measurements.get(name) != Some(value) {
            return Err(ReceiptCheckError::Measurement { name: name.clone() });
        }
    }
    if let Some(bound) = bundle.binding.manifest_sha256
        && claims.model != bound
    {
        return Err(ReceiptCheckError::OtherModel {
            claimed: hex::encode(claims.model),
            bound: hex::encode(bound),
        });
    }
    Ok(())
}

/// Checks the salted request and response digests against the plaintexts a client kept.
pub fn check_digests(
    claims: &Claims,
    salt: &[u8; SALT_LEN],
    request: &[u8],
    response: &[u8],
) -> Result<(), ReceiptCheckError> {
    check_digest_values(
        claims,
        &salted_digest(salt, request),
        &salted_digest(salt, response),
    )
}

/// Checks the salted request and response digests a client computed (a streamed response
/// is digested as it arrives) against the receipt's.
pub fn check_digest_values(
    claims: &Claims,
    request_digest: &[u8; 32],
    response_digest: &[u8; 32],
) -> Result<(), ReceiptCheckError> {
    if *request_digest != claims.request_digest {
        return Err(ReceiptCheckError::Digest { which: "request" });
    }
    if *response_digest != claims.response_digest {
        return Err(ReceiptCheckError::Digest { which: "response" });
    }
    Ok(())
}

/// A receipt log does not hold together.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogError {
    /// A sequence number is missing.
    #[error("receipt {index}: boot {issuer} jumps from sequence {last} to {found}")]
    Gap {
        /// Position in the log.
        index: usize,
        /// The boot's receipt key id.
        issuer: KeyId,
        /// The last sequence seen.
        last: u64,
        /// The sequence found.
        found: u64,
    },
    /// Two receipts of one boot with the same sequence number, or a sequence going back.
    #[error(
        "receipt {index}: boot {issuer} has sequence {sequence} twice or out of order (a fork)"
    )]
    Fork {
        /// Position in the log.
        index: usize,
        /// The boot's receipt key id.
        issuer: KeyId,
        /// The repeated sequence.
        sequence: u64,
    },
    /// `previous` is not the digest of the boot's receipt before it.
    #[error(
        "receipt {index}: boot {issuer} sequence {sequence} does not chain to the receipt before it"
    )]
    Chain {
        /// Position in the log.
        index: usize,
        /// The boot's receipt key id.
        issuer: KeyId,
        /// Its sequence.
        sequence: u64,
    },
    /// A boot's first receipt (sequence 0) does not start from the genesis digest.
    #[error(
        "receipt {index}: boot {issuer} sequence 0 does not start the chain (previous is not zero)"
    )]
    Genesis {
        /// Position in the log.
        index: usize,
        /// The boot's receipt key id.
        issuer: KeyId,
    },
}

/// One boot's chain in a log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Boot {
    /// The boot's receipt key id.
    pub issuer: KeyId,
    /// Its first sequence in the log (0 unless the log starts mid-chain).
    pub first: u64,
    /// Its last sequence.
    pub last: u64,
    /// Receipts in the log.
    pub count: u64,
}

/// Checks a log of verified receipts as one hash chain per boot (one receipt key per
/// boot), each boot's receipts taken in sequence order: an honest relay logs receipts in
/// the order their answers finish, which concurrent requests interleave. Refused: the
/// same sequence twice (a duplicate or a fork), a missing sequence (a gap), a `previous`
/// that is not the digest of the receipt before it, and a sequence 0 that does not start
/// from [`GENESIS`]. A boot may start past sequence 0 (a log read from `after=SEQ`);
/// [`Boot::first`] shows it, and `tb-verify log` refuses it unless told the log is partial.
/// Errors name the log position of the offending receipt.
pub fn check_chains(receipts: &[Receipt]) -> Result<Vec<Boot>, LogError> {
    let mut order: Vec<KeyId> = Vec::new();
    let mut by_boot: BTreeMap<KeyId, Vec<(usize, &Receipt)>> = BTreeMap::new();
    for (index, r) in receipts.iter().enumerate() {
        let issuer = r.claims().issuer;
        let list = by_boot.entry(issuer).or_default();
        if list.is_empty() {
            order.push(issuer);
        }
        list.push((index, r));
    }
    let mut boots = Vec::with_capacity(order.len());
    for issuer in order {
        let mut list = by_boot.remove(&issuer).unwrap_or_default();
        list.sort_by_key(|(_, r)| r.claims().sequence);
        let Some(&(index, head)) = list.first() else {
            continue;
        };
        if head.claims().sequence == 0 && head.claims().previous != GENESIS {
            return Err(LogError::Genesis { index, issuer });
        }
        for pair in list.windows(2) {
            let ((_, a), (index, b)) = (pair[0], pair[1]);
            let (sa, sb) = (a.claims().sequence, b.claims().sequence);
            if sb == sa {
                return Err(LogError::Fork {
                    index,
                    issuer,
                    sequence: sb,
                });
            }
            if sb != sa + 1 {
                return Err(LogError::Gap {
                    index,
                    issuer,
                    last: sa,
                    found: sb,
                });
            }
            if b.claims().previous != a.digest() {
                return Err(LogError::Chain {
                    index,
                    issuer,
                    sequence: sb,
                });
            }
        }
        let last = list.last().map_or(head, |(_, r)| r);
        boots.push(Boot {
            issuer,
            first: head.claims().sequence,
            last: last.claims().sequence,
            count: list.len() as u64,
        });
    }
    Ok(boots)
}

/// The measurements a sentinel states in its receipts, read from evidence it produced
/// itself inside the TEE (so it parses without verifying: it has nothing to verify its
/// own hardware against). Relying parties never take these on trust: [`check_bound`]
/// compares them with what the *verified* evidence reports.
///
/// Nitro: `pcr0`, `pcr1`, `pcr2` (image, kernel, application) and `pcr8` (signing
/// certificate) when set; SEV-SNP and Azure: the launch `measurement`.
pub fn stated_measurements(
    platform: crate::Platform,
    evidence: &[u8],
) -> Result<BTreeMap<String, Vec<u8>>, crate::VerifyError> {
    let mut out = BTreeMap::new();
    match platform {
        crate::Platform::Nitro => {
            let (_, doc) = crate::nitro::parse_nitro(evidence)?;
            for i in [0u8, 1, 2, 8] {
                if let Some(v) = doc.pcrs.get(&i).filter(|v| v.iter().any(|b| *b != 0)) {
                    out.insert(format!("pcr{i}"), v.clone());
                }
            }
        }
        crate::Platform::Snp => {
            let r = crate::snp_report::SnpReport::parse(evidence)?;
            out.insert("measurement".to_owned(), r.measurement.to_vec());
        }
        crate::Platform::AzureSnpVtpm => {
            let azure = crate::AzureEvidence::from_json(evidence)?;
            let hcl = crate::hcl_report::HclReport::parse(&azure.hcl_report)?;
            let r = crate::snp_report::SnpReport::parse(&hcl.snp_report)?;
            out.insert("measurement".to_owned(), r.measurement.to_vec());
        }
    }
    Ok(out)
}

/// Verifies many receipts (a log) on every core: the list is split into one contiguous
/// part per core, each verified with Ed25519 batch verification
/// ([`trustbridge_protocol::receipt::verify_batch`]). The receipts come back in order;
/// the error names the index of the first bad receipt of the first part that has one.
pub fn verify_all(
    receipts: Vec<(UnverifiedReceipt, VerifyingKey)>,
) -> Result<Vec<Receipt>, (usize, ReceiptError)> {
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    // Below a few batches per core, threads cost more than they save.
    if threads == 1 || receipts.len() < 512 {
        return trustbridge_protocol::receipt::verify_batch(receipts);
    }
    let per = receipts.len().div_ceil(threads);
    let mut parts = Vec::with_capacity(threads);
    let mut rest = receipts.into_iter();
    loop {
        let part: Vec<_> = rest.by_ref().take(per).collect();
        if part.is_empty() {
            break;
        }
        parts.push(part);
    }
    let results: Vec<Result<Vec<Receipt>, (usize, ReceiptError)>> = std::thread::scope(|s| {
        let handles: Vec<_> = parts
            .into_iter()
            .map(|part| s.spawn(move || trustbridge_protocol::receipt::verify_batch(part)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err((
                        0,
                        ReceiptError::BadSignature("(verifier thread panicked)".into()),
                    ))
                })
            })
            .collect()
    });
    let mut out = Vec::new();
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(mut v) => out.append(&mut v),
            Err((j, e)) => return Err((i * per + j, e)),
        }
    }
    Ok(out)
}
