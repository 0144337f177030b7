//! AWS Nitro Enclaves attestation documents.
//!
//! A document is a COSE_Sign1 (tagged or not) signed with ES384 by the enclave's leaf
//! certificate, whose chain is `cabundle` (root first). The payload is checked field by
//! field against AWS's rules ("Verifying the root of trust", attestation document
//! specification): types, sizes, digest `SHA384`, PCR indices and lengths.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ciborium::Value;
use coset::{CborSerializable, CoseSign1, TaggedCborSerializable, iana};

use crate::evidence::{BindingFields, Checks, Platform, VerifiedEvidence};
use crate::roots::anchor_chain;
use crate::x509::{ParsedCertificate, verify_p384_fixed};
use crate::{TrustRoots, VerifyError};

/// Prefix of a simulated enclave's `module_id`.
pub const SIMULATED_MODULE_PREFIX: &str = "sim-";
/// Largest attestation document accepted: a document at the field limits of AWS's rules
/// (16 PCRs, a 1 KiB public key, 512 bytes of user data and nonce, the 4-certificate
/// chain) is under 8 KiB.
pub const MAX_DOCUMENT_LEN: usize = 16 * 1024;
/// Most `cabundle` entries accepted (AWS's chains have 4: the root and 3 intermediates).
pub const MAX_CABUNDLE_LEN: usize = 8;

/// The decoded payload of a Nitro attestation document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NitroDocument {
    /// Enclave module id, e.g. `i-0123...-enc0123...`.
    pub module_id: String,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// PCR index to value (48 bytes each, SHA-384).
    pub pcrs: BTreeMap<u8, Vec<u8>>,
    /// The signing (leaf) certificate, DER.
    pub certificate: Vec<u8>,
    /// The CA bundle, root first, DER.
    pub cabundle: Vec<Vec<u8>>,
    /// Optional public key.
    pub public_key: Option<Vec<u8>>,
    /// Optional user data.
    pub user_data: Option<Vec<u8>>,
    /// Optional nonce.
    pub nonce: Option<Vec<u8>>,
}

/// Parses a document (raw CBOR, tagged or untagged COSE_Sign1) without verifying it.
/// Documents over [`MAX_DOCUMENT_LEN`] are refused before any parsing.
pub fn parse_nitro(document: &[u8]) -> Result<(CoseSign1, NitroDocument), VerifyError> {
    if document.len() > MAX_DOCUMENT_LEN {
        return Err(VerifyError::malformed(
            "Nitro attestation document",
            format!(
                "{} bytes, more than the {MAX_DOCUMENT_LEN} a genuine document can have",
                document.len()
            ),
        ));
    }
    let sign1 = if document.first() == Some(&0xd2) {
        CoseSign1::from_tagged_slice(document)
    } else {
        CoseSign1::from_slice(document)
    }
    .map_err(|e| {
        VerifyError::malformed(
            "Nitro attestation document",
            format!("not a COSE_Sign1: {e}"),
        )
    })?;
    let payload = sign1
        .payload
        .as_deref()
        .ok_or_else(|| VerifyError::malformed("Nitro attestation document", "no payload"))?;
    let doc = parse_payload(payload)?;
    Ok((sign1, doc))
}

fn parse_payload(payload: &[u8]) -> Result<NitroDocument, VerifyError> {
    let bad = |detail: String| VerifyError::malformed("Nitro attestation document", detail);
    let mut rest = payload;
    let value: Value =
        ciborium::from_reader(&mut rest).map_err(|e| bad(format!("payload is not CBOR: {e}")))?;
    if !rest.is_empty() {
        return Err(bad("trailing bytes after the payload".into()));
    }
    let Value::Map(entries) = value else {
        return Err(bad("payload is not a map".into()));
    };
    let mut fields = BTreeMap::new();
    for (k, v) in entries {
        let Value::Text(k) = k else {
            return Err(bad("payload has a non-text key".into()));
        };
        if fields.insert(k.clone(), v).is_some() {
            return Err(bad(format!("duplicate field {k}")));
        }
    }
    let mut take = |name: &str| fields.remove(name);
    let bytes = |v: Option<Value>,
                 name: &str,
                 min: usize,
                 max: usize,
                 required: bool|
     -> Result<Option<Vec<u8>>, VerifyError> {
        match v {
            None | Some(Value::Null) if !required => Ok(None),
            Some(Value::Bytes(b)) if (min..=max).contains(&b.len()) => Ok(Some(b)),
            _ => Err(VerifyError::malformed(
                "Nitro attestation document",
                format!("{name} must be a byte string of {min} to {max} bytes"),
            )),
        }
    };
    let module_id = match take("module_id") {
        Some(Value::Text(s)) if !s.is_empty() => s,
        _ => return Err(bad("module_id must be a non-empty text string".into())),
    };
    match take("digest") {
        Some(Value::Text(s)) if s == "SHA384" => {}
        _ => return Err(bad("digest must be \"SHA384\"".into())),
    }
    let timestamp_ms = match take("timestamp") {
        Some(Value::Integer(i)) => u64::try_from(i128::from(i)).ok().filter(|&t| t > 0),
        _ => None,
    }
    .ok_or_else(|| bad("timestamp must be a positive integer".into()))?;
    let pcrs = match take("pcrs") {
        Some(Value::Map(m)) if (1..=32).contains(&m.len()) => {
            let mut pcrs = BTreeMap::new();
            for (k, v) in m {
                let index = match k {
                    Value::Integer(i) => u8::try_from(i128::from(i)).ok().filter(|&i| i < 32),
                    _ => None,
                }
                .ok_or_else(|| bad("PCR index must be 0 to 31".into()))?;
                let value = match v {
                    Value::Bytes(b) if b.len() == 48 => b,
                    _ => return Err(bad(format!("PCR{index} must be 48 bytes (SHA-384)"))),
                };
                if pcrs.insert(index, value).is_some() {
                    return Err(bad(format!("PCR{index} appears twice")));
                }
            }
            pcrs
        }
        _ => return Err(bad("pcrs must be a map of 1 to 32 entries".into())),
    };
    let certificate = bytes(take("certificate"), "certificate", 1, 1024, true)?.unwrap_or_default();
    let cabundle = match take("cabundle") {
        Some(Value::Array(a)) if a.len() > MAX_CABUNDLE_LEN => {
            return Err(bad(format!(
                "cabundle has {} certificates, at most {MAX_CABUNDLE_LEN} are accepted",
                a.len()
            )));
        }
        Some(Value::Array(a)) if !a.is_empty() => a
            .into_iter()
            .map(|c| bytes(Some(c), "cabundle entry", 1, 1024, true).map(Option::unwrap_or_default))
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err(bad("cabundle must be a non-empty array".into())),
    };
    let public_key = bytes(take("public_key"), "public_key", 1, 1024, false)?;
    let user_data = bytes(take("user_data"), "user_data", 0, 512, false)?;
    let nonce = bytes(take("nonce"), "nonce", 0, 512, false)?;
    if let Some(extra) = fields.keys().next() {
        return Err(bad(format!("unknown field {extra}")));
    }
    Ok(NitroDocument {
        module_id,
        timestamp_ms,
        pcrs,
        certificate,
        cabundle,
        public_key,
        user_data,
        nonce,
    })
}

/// Verifies a Nitro attestation document at `now` against `roots`.
pub fn verify_nitro(
    document: &[u8],
    roots: &TrustRoots,
    now: SystemTime,
) -> Result<VerifiedEvidence, VerifyError> {
    verify_nitro_logged(document, roots, now, &mut Checks::default())
}

/// Like [`verify_nitro`], recording each check in `checks`.
pub fn verify_nitro_logged(
    document: &[u8],
    roots: &TrustRoots,
    now: SystemTime,
    checks: &mut Checks,
) -> Result<VerifiedEvidence, VerifyError> {
    let (sign1, doc) = parse_nitro(document).map_err(|e| checks.failed(e))?;
    checks.pass(
        "format",
        format!(
            "COSE_Sign1 with a well-formed payload, module {}",
            doc.module_id
        ),
    );

    let alg = sign1.protected.header.alg.clone();
    if alg
        != Some(coset::RegisteredLabelWithPrivate::Assigned(
            iana::Algorithm::ES384,
        ))
    {
        return Err(checks.failed(VerifyError::UnsupportedAlgorithm(format!(
            "COSE algorithm {alg:?}, expected ES384"
        ))));
    }
    // cabundle is root first; the chain to validate is leaf first. Its root (cabundle[0])
    // is looked up among the pinned roots before any signature is checked.
    let leaf = ParsedCertificate::from_der(&doc.certificate, "Nitro signing certificate")
        .map_err(|e| checks.failed(e))?;
    let mut chain = vec![leaf];
    for der in doc.cabundle.iter().rev() {
        chain.push(
            ParsedCertificate::from_der(der, "Nitro cabundle certificate")
                .map_err(|e| checks.failed(e))?,
        );
    }
    chain[0].check_leaf_usage().map_err(|e| checks.failed(e))?;
    let trusted = anchor_chain(
        &chain,
        roots,
        Platform::Nitro,
        now,
        "leaf -> cabundle -> root signatures, CA flags and path lengths",
        checks,
    )?;
    let simulated = trusted.simulated || doc.module_id.starts_with(SIMULATED_MODULE_PREFIX);
    checks.pass(
        "trusted root",
        format!(
            "{}{}",
            trusted.label,
            if simulated { " (SIMULATION)" } else { "" }
        ),
    );

    // The COSE signature last: the chain above establishes the leaf key it is checked with.
    let leaf = &chain[0];
    sign1
        .verify_signature(&[], |sig, tbs| {
            verify_p384_fixed(leaf, tbs, sig, "COSE_Sign1")
        })
        .map_err(|e| checks.failed(e))?;
    checks.pass("evidence signature", format!("ES384 by {}", leaf.subject()));

    let debug = doc.pcrs.get(&0).is_some_and(|p| p.iter().all(|&b| b == 0));
    let mut measurements = BTreeMap::new();
    for (i, v) in &doc.pcrs {
        measurements.insert(format!("pcr{i}"), v.clone());
    }
    let mut facts = BTreeMap::new();
    facts.insert("module_id".to_owned(), doc.module_id.clone());
    facts.insert("timestamp_ms".to_owned(), doc.timestamp_ms.to_string());
    Ok(VerifiedEvidence {
        platform: Platform::Nitro,
        simulated,
        debug,
        measurements,
        binding: BindingFields {
            nonce: doc.nonce,
            user_data: doc.user_data,
            public_key: doc.public_key,
            ..BindingFields::default()
        },
        timestamp: Some(UNIX_EPOCH + Duration::from_millis(doc.timestamp_ms)),
        chain: chain.iter().map(ParsedCertificate::info).collect(),
        facts,
        snp: None,
    })
}
