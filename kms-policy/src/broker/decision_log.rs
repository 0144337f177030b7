//! The decision log: every release and every denial, as a signed, hash-chained record.
//!
//! ```text
//! record    = deterministic CBOR { seq, time, prev, outcome, reason, asset, contract,
//!                                  platform, evidence_sha256, release_key, detail }
//! prev      = SHA-256(previous record), 32 zero bytes for the first
//! signature = Ed25519(decision-log key, "trustbridge/kms/decision/v1" || record)
//! ```
//!
//! Changing, removing, reordering or inserting a record breaks a signature or the chain;
//! [`verify_log`] finds the first broken record.

use aws_lc_rs::digest;
use ciborium::Value;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use trustbridge_protocol::cbor::{self, CborError, MapReader, text_map};

use super::store::StoredDecision;

const SIGNATURE_LABEL: &[u8] = b"trustbridge/kms/decision/v1";

/// What was decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Unix seconds.
    pub time: u64,
    /// Whether the key was released.
    pub released: bool,
    /// The denial reason code (empty for a release).
    pub reason: String,
    /// The asset asked for.
    pub asset: String,
    /// The contract.
    pub contract: String,
    /// The evidence platform, if the request got that far.
    pub platform: String,
    /// SHA-256 of the evidence, if any.
    pub evidence_sha256: Vec<u8>,
    /// The key-release public key the data key was (or would have been) sealed to.
    pub release_key: Vec<u8>,
    /// Human-readable detail (no key material).
    pub detail: String,
}

/// A decision-log entry that fails verification.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("decision log broken at record {seq}: {reason}")]
pub struct LogError {
    /// The first bad record.
    pub seq: u64,
    /// What is wrong.
    pub reason: String,
}

/// Encodes record number `seq` after `prev` (the previous record's bytes).
pub fn encode_record(seq: u64, prev: Option<&[u8]>, d: &Decision) -> Result<Vec<u8>, CborError> {
    let prev_hash = prev.map_or([0u8; 32], sha256);
    let map = text_map([
        ("seq", Value::from(seq)),
        ("time", Value::from(d.time)),
        ("prev", Value::Bytes(prev_hash.to_vec())),
        (
            "outcome",
            Value::Text(if d.released { "release" } else { "deny" }.into()),
        ),
        ("reason", Value::Text(d.reason.clone())),
        ("asset", Value::Text(d.asset.clone())),
        ("contract", Value::Text(d.contract.clone())),
        ("platform", Value::Text(d.platform.clone())),
        ("evidence_sha256", Value::Bytes(d.evidence_sha256.clone())),
        ("release_key", Value::Bytes(d.release_key.clone())),
        ("detail", Value::Text(d.detail.clone())),
    ]);
    cbor::to_canonical_vec(&map)
}

/// Decodes a record into (seq, prev hash, decision).
pub fn decode_record(bytes: &[u8]) -> Result<(u64, [u8; 32], Decision), String> {
    let mut m = MapReader::new(
        cbor::from_canonical_slice(bytes).map_err(|e| e.to_string())?,
        "decision",
    )
    .map_err(|e| e.to_string())?;
    let e = |e: trustbridge_protocol::cbor::CborError| e.to_string();
    let seq = m.u64("seq").map_err(e)?;
    let prev = m.byte_array::<32>("prev").map_err(e)?;
    let outcome = m.text("outcome").map_err(e)?;
    let d = Decision {
        time: m.u64("time").map_err(e)?,
        released: match outcome.as_str() {
            "release" => true,
            "deny" => false,
            other => return Err(format!("unknown outcome {other:?}")),
        },
        reason: m.text("reason").map_err(e)?,
        asset: m.text("asset").map_err(e)?,
        contract: m.text("contract").map_err(e)?,
        platform: m.text("platform").map_err(e)?,
        evidence_sha256: m.bytes("evidence_sha256").map_err(e)?,
        release_key: m.bytes("release_key").map_err(e)?,
        detail: m.text("detail").map_err(e)?,
    };
    m.finish().map_err(e)?;
    Ok((seq, prev, d))
}

/// Signs a record.
pub fn sign_record(key: &SigningKey, record: &[u8]) -> Vec<u8> {
    key.sign(&[SIGNATURE_LABEL, record].concat())
        .to_bytes()
        .to_vec()
}

/// Verifies the whole log with the broker's decision-log public key; returns the number of
/// records.
pub fn verify_log(entries: &[StoredDecision], key: &VerifyingKey) -> Result<usize, LogError> {
    let mut prev: Option<&[u8]> = None;
    for (i, entry) in entries.iter().enumerate() {
        let expected_seq = i as u64 + 1;
        let fail = |reason: String| LogError {
            seq: entry.seq,
            reason,
        };
        if entry.seq != expected_seq {
            return Err(fail(format!(
                "sequence number {}, expected {expected_seq} (record missing or reordered)",
                entry.seq
            )));
        }
        let sig: [u8; 64] = entry
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| fail("signature is not 64 bytes".into()))?;
        key.verify_strict(
            &[SIGNATURE_LABEL, &entry.record].concat(),
            &Signature::from_bytes(&sig),
        )
        .map_err(|_| fail("signature does not verify (record modified)".into()))?;
        let (seq, prev_hash, _) = decode_record(&entry.record).map_err(fail)?;
        if seq != entry.seq {
            return Err(fail(format!("record says sequence {seq}")));
        }
        if prev_hash != prev.map_or([0u8; 32], sha256) {
            return Err(fail(
                "previous-record hash does not match (chain broken)".into(),
            ));
        }
        prev = Some(&entry.record);
    }
    Ok(entries.len())
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, bytes).as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(n: u64, key: &SigningKey) -> Vec<StoredDecision> {
        let mut out: Vec<StoredDecision> = Vec::new();
        for seq in 1..=n {
            let d = Decision {
                time: 1000 + seq,
                released: seq % 2 == 0,
                reason: if seq % 2 == 0 {
                    String::new()
                } else {
                    "measurement_mismatch".into()
                },
                asset: "a".into(),
                contract: "c".into(),
                platform: "nitro".into(),
                evidence_sha256: vec![seq as u8; 32],
                release_key: vec![1; 32],
                detail: String::new(),
            };
            let record = encode_record(seq, out.last().map(|e| e.record.as_slice()), &d).unwrap();
            let signature = sign_record(key, &record);
            out.push(StoredDecision {
                seq,
                record,
                signature,
            });
        }
        out
    }

    #[test]
    fn intact_log_verifies_and_every_tampering_is_found() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let vk = key.verifying_key();
        let entries = log(5, &key);
        assert_eq!(verify_log(&entries, &vk), Ok(5));
        let (seq, _, d) = decode_record(&entries[1].record).unwrap();
        assert_eq!((seq, d.released), (2, true));

        let mut modified = entries.clone();
        modified[2].record[10] ^= 1;
        assert_eq!(verify_log(&modified, &vk).unwrap_err().seq, 3);
        let mut removed = entries.clone();
        removed.remove(1);
        assert_eq!(verify_log(&removed, &vk).unwrap_err().seq, 3);
        let mut reordered = entries.clone();
        reordered.swap(1, 2);
        assert!(verify_log(&reordered, &vk).is_err());
        // Re-signed by another key: every signature fails.
        let other = SigningKey::from_bytes(&[4; 32]);
        assert_eq!(verify_log(&log(2, &other), &vk).unwrap_err().seq, 1);
        // A forged record with a valid signature but a wrong chain link.
        let mut forged = entries.clone();
        let d = decode_record(&entries[3].record).unwrap().2;
        forged[3].record = encode_record(4, Some(&entries[1].record), &d).unwrap();
        forged[3].signature = sign_record(&key, &forged[3].record);
        assert!(
            verify_log(&forged, &vk)
                .unwrap_err()
                .reason
                .contains("chain")
        );
    }
}
