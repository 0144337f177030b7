//! What the key broker's identity key signs: every answer a sentinel or a provider acts on.
//!
//! The broker has a long-term Ed25519 identity key. Every challenge, release, denial and
//! broker-information answer carries a signature over a canonical encoding of what it says
//! *and* of the request it answers:
//!
//! ```text
//! statement = deterministic CBOR map {
//!     "v": 1,
//!     "kind": "challenge" | "release" | "denial" | "broker",
//!     "broker": bstr 32,            the identity key that signs (the one the reader pins)
//!     "request_sha256": bstr 32,    SHA-256 of the request body as sent (empty for a GET)
//!     ... the fields of the kind, below
//! }
//! signature = Ed25519(identity key, "trustbridge/kms/response/v1" || 0x00 || statement)
//!
//! challenge: asset, contract, nonce, expires_in
//! release:   asset, contract, nonce, release_key, manifest_sha256, provider_key, key_id,
//!            enc, ciphertext, lease_secs, policy_sha256
//! denial:    error, detail
//! broker:    registration_key, decision_log_key, simulation
//! admin:     method, path                    (an admin request was carried out)
//! ```
//!
//! For an admin answer, `request_sha256` is the SHA-256 of the message the admin signed
//! (broker key, method, path, time and body digest), not of the body alone: two requests
//! with the same body at different times get different answers, so an answer to an
//! earlier request cannot be replayed as the answer to a later one.
//!
//! The reader rebuilds the statement from the fields it parsed, its own request and the key
//! it pins, and verifies the signature: a field the signature does not cover is never used.
//! Covering the request makes each answer fresh: a challenge request carries a random
//! client nonce, and a release request the broker's single-use nonce, so an old answer
//! replayed by the relay does not verify.

use aws_lc_rs::digest;
use ciborium::Value;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use super::vocabulary::BrokerKey;
use crate::cbor::{self, CborError};

/// Domain-separation label of the broker's signatures.
pub const BROKER_SIGNATURE_LABEL: &[u8] = b"trustbridge/kms/response/v1";
/// Version of the statement encoding.
pub const STATEMENT_VERSION: u64 = 1;

/// What a broker answer says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Statement {
    /// A challenge was issued.
    Challenge {
        /// The asset.
        asset: String,
        /// The contract.
        contract: String,
        /// The single-use nonce.
        nonce: Vec<u8>,
        /// Seconds until it expires.
        expires_in: u64,
    },
    /// A data key was released.
    Release(ReleaseStatement),
    /// A request was denied.
    Denial {
        /// The reason code.
        error: String,
        /// The detail.
        detail: String,
    },
    /// The broker's public keys.
    Broker {
        /// The X25519 key providers seal data keys to at registration.
        registration_key: [u8; 32],
        /// The Ed25519 key that signs the decision log.
        decision_log_key: [u8; 32],
        /// Whether the policy accepts simulated evidence.
        simulation: bool,
    },
    /// An admin request was carried out.
    Admin {
        /// Its method.
        method: String,
        /// Its path.
        path: String,
    },
}

/// What a release answer says: the fields of [`Statement::Release`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleaseStatement {
    /// The asset.
    pub asset: String,
    /// The contract.
    pub contract: String,
    /// The nonce the release consumed.
    pub nonce: Vec<u8>,
    /// The X25519 key the data key is sealed to.
    pub release_key: [u8; 32],
    /// SHA-256 of the asset's registered `manifest.cose`.
    pub manifest_sha256: [u8; 32],
    /// The provider's Ed25519 key that signs that manifest.
    pub provider_key: [u8; 32],
    /// The key id of the released data key.
    pub key_id: String,
    /// HPKE encapsulated key.
    pub enc: Vec<u8>,
    /// HPKE ciphertext of the data key.
    pub ciphertext: Vec<u8>,
    /// How long the release is good for: a sentinel that is not authorized again within
    /// this many seconds stops serving, whatever its configuration says.
    pub lease_secs: u64,
    /// SHA-256 of the text of the key-release policy the release was decided under (the
    /// `policy_digest` of the sentinel's receipts).
    pub policy_sha256: [u8; 32],
}

/// A broker answer whose signature does not verify under the pinned key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the answer is not signed by the pinned broker key {0}")]
pub struct BadBrokerSignature(pub BrokerKey);

/// A statement that cannot be encoded (never for the field types statements have; an
/// error rather than an empty encoding, which would sign nothing in particular).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("broker statement cannot be encoded: {0}")]
pub struct StatementEncoding(pub CborError);

impl Statement {
    fn kind(&self) -> &'static str {
        match self {
            Self::Challenge { .. } => "challenge",
            Self::Release(_) => "release",
            Self::Denial { .. } => "denial",
            Self::Broker { .. } => "broker",
            Self::Admin { .. } => "admin",
        }
    }

    /// The canonical encoding signed by `broker` in answer to a request with body digest
    /// `request_sha256`.
    pub fn encode(
        &self,
        broker: &BrokerKey,
        request_sha256: &[u8; 32],
    ) -> Result<Vec<u8>, StatementEncoding> {
        let bytes = |b: &[u8]| Value::Bytes(b.to_vec());
        let text = |t: &str| Value::Text(t.to_owned());
        let mut fields = vec![
            ("v", Value::from(STATEMENT_VERSION)),
            ("kind", text(self.kind())),
            ("broker", bytes(broker.as_bytes())),
            ("request_sha256", bytes(request_sha256)),
        ];
        match self {
            Self::Challenge {
                asset,
                contract,
                nonce,
                expires_in,
            } => fields.extend([
                ("asset", text(asset)),
                ("contract", text(contract)),
                ("nonce", bytes(nonce)),
                ("expires_in", Value::from(*expires_in)),
            ]),
            Self::Release(r) => fields.extend([
                ("asset", text(&r.asset)),
                ("contract", text(&r.contract)),
                ("nonce", bytes(&r.nonce)),
                ("release_key", bytes(&r.release_key)),
                ("manifest_sha256", bytes(&r.manifest_sha256)),
                ("provider_key", bytes(&r.provider_key)),
                ("key_id", text(&r.key_id)),
                ("enc", bytes(&r.enc)),
                ("ciphertext", bytes(&r.ciphertext)),
                ("lease_secs", Value::from(r.lease_secs)),
                ("policy_sha256", bytes(&r.policy_sha256)),
            ]),
            Self::Denial { error, detail } => {
                fields.extend([("error", text(error)), ("detail", text(detail))]);
            }
            Self::Broker {
                registration_key,
                decision_log_key,
                simulation,
            } => fields.extend([
                ("registration_key", bytes(registration_key)),
                ("decision_log_key", bytes(decision_log_key)),
                ("simulation", Value::Bool(*simulation)),
            ]),
            Self::Admin { method, path } => {
                fields.extend([("method", text(method)), ("path", text(path))]);
            }
        }
        let map = Value::Map(
            fields
                .into_iter()
                .map(|(k, v)| (Value::Text(k.to_owned()), v))
                .collect(),
        );
        cbor::to_canonical_vec(&map).map_err(StatementEncoding)
    }

    /// Verifies `signature` (64 bytes) by `broker` over this statement answering
    /// `request_sha256`.
    pub fn verify(
        &self,
        broker: &BrokerKey,
        request_sha256: &[u8; 32],
        signature: &[u8],
    ) -> Result<(), BadBrokerSignature> {
        let bad = || BadBrokerSignature(*broker);
        let signature = Signature::from_slice(signature).map_err(|_| bad())?;
        let key = VerifyingKey::from_bytes(broker.as_bytes()).map_err(|_| bad())?;
        let statement = self.encode(broker, request_sha256).map_err(|_| bad())?;
        key.verify_strict(&signed_message(&statement), &signature)
            .map_err(|_| bad())
    }
}

fn signed_message(statement: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(BROKER_SIGNATURE_LABEL.len() + 1 + statement.len());
    m.extend_from_slice(BROKER_SIGNATURE_LABEL);
    m.push(0);
    m.extend_from_slice(statement);
    m
}

/// SHA-256 of a request body: what a statement names as `request_sha256`.
pub fn request_digest(body: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, body).as_ref());
    out
}

/// The broker's identity key: signs its statements. The private key is zeroized on drop
/// and never printed.
pub struct BrokerIdentity {
    key: SigningKey,
}

impl std::fmt::Debug for BrokerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BrokerIdentity({}, <private redacted>)", self.public())
    }
}

impl BrokerIdentity {
    /// The identity with Ed25519 private key `key`.
    pub fn new(key: SigningKey) -> Self {
        Self { key }
    }

    /// The public identity key, as relying parties pin it.
    pub fn public(&self) -> BrokerKey {
        BrokerKey::from_bytes(self.key.verifying_key().to_bytes())
    }

    /// Signs `statement` answering a request with body digest `request_sha256`; returns
    /// the signature as hex, as answers carry it.
    pub fn sign(
        &self,
        statement: &Statement,
        request_sha256: &[u8; 32],
    ) -> Result<String, StatementEncoding> {
        let message = signed_message(&statement.encode(&self.public(), request_sha256)?);
        Ok(hex::encode(self.key.sign(&message).to_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release_statement() -> ReleaseStatement {
        ReleaseStatement {
            asset: "a".into(),
            contract: "c".into(),
            nonce: vec![1; 32],
            release_key: [2; 32],
            manifest_sha256: [3; 32],
            provider_key: [4; 32],
            key_id: "k".into(),
            enc: vec![5; 32],
            ciphertext: vec![6; 48],
            lease_secs: 600,
            policy_sha256: [7; 32],
        }
    }

    fn release() -> Statement {
        Statement::Release(release_statement())
    }

    #[test]
    fn a_signature_covers_every_field_the_request_and_the_key() {
        let id = BrokerIdentity::new(SigningKey::from_bytes(&[9; 32]));
        let request = request_digest(b"{}");
        let sig = hex::decode(id.sign(&release(), &request).unwrap()).unwrap();
        assert_eq!(release().verify(&id.public(), &request, &sig), Ok(()));
        // Another request, another key, and every field changed one at a time.
        assert!(
            release()
                .verify(&id.public(), &request_digest(b"{ }"), &sig)
                .is_err()
        );
        let other = BrokerIdentity::new(SigningKey::from_bytes(&[8; 32])).public();
        assert_eq!(
            release().verify(&other, &request, &sig),
            Err(BadBrokerSignature(other))
        );
        type Mutation = fn(&mut ReleaseStatement);
        let mutations: [Mutation; 11] = [
            |r| r.asset = "b".into(),
            |r| r.contract = "d".into(),
            |r| r.nonce = vec![0; 32],
            |r| r.release_key = [0; 32],
            |r| r.manifest_sha256 = [0; 32],
            |r| r.provider_key = [0; 32],
            |r| r.key_id = "other".into(),
            |r| r.enc = vec![0; 32],
            |r| r.ciphertext = vec![7; 48],
            |r| r.lease_secs = 601,
            |r| r.policy_sha256 = [8; 32],
        ];
        for mutate in mutations {
            let mut fields = release_statement();
            mutate(&mut fields);
            let changed = Statement::Release(fields);
            assert_ne!(changed, release());
            assert!(
                changed.verify(&id.public(), &request, &sig).is_err(),
                "{changed:?}"
            );
        }
        // A denial signed for one request is no challenge answer, and vice versa.
        let denial = Statement::Denial {
            error: "contract_revoked".into(),
            detail: "x".into(),
        };
        let sig = hex::decode(id.sign(&denial, &request).unwrap()).unwrap();
        assert!(denial.verify(&id.public(), &request, &sig).is_ok());
        assert!(
            Statement::Denial {
                error: "release_limit".into(),
                detail: "x".into()
            }
            .verify(&id.public(), &request, &sig)
            .is_err()
        );
        assert!(!format!("{id:?}").contains(&hex::encode([9u8; 32])));
    }
}
