//! The broker's decisions, independent of HTTP.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use trustbridge_protocol::key_release::{
    AdminAnswer, BrokerIdentity, BrokerInfo, BrokerKey, ErrorBody, HpkeError, HpkeKeyPair,
    Statement, StatementEncoding, request_digest,
};
use trustbridge_verifier::TrustRoots;
use trustbridge_verifier::crl::RevocationList;

use super::admin_auth::AdminAuthError;
use super::decision_log::{Decision, encode_record, sign_record};
use super::kek::{Kek, KekError};
use super::store::{Store, StoreError};
use crate::evaluate::{Contract, ContractOrigin, Denial};
use crate::policy::{Policy, PolicyError, parse_time};

/// A broker operation failed for a reason other than a policy denial.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The request is malformed.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Admin authentication failed.
    #[error("unauthorized: {0}")]
    Unauthorized(#[from] AdminAuthError),
    /// The admin request conflicts with existing state.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The admin request names something unknown.
    #[error("not found: {0}")]
    NotFound(String),
    /// The policy is invalid.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// No policy was given and none is stored.
    #[error("no policy: pass --policy FILE (it is then stored in the database)")]
    NoPolicy,
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored data key could not be wrapped or unwrapped.
    #[error(transparent)]
    Kek(#[from] KekError),
    /// A data key could not be sealed to a release key.
    #[error("sealing the data key failed: {0}")]
    Seal(#[from] HpkeError),
    /// A statement could not be signed.
    #[error(transparent)]
    Sign(#[from] StatementEncoding),
    /// The system random number generator failed.
    #[error("the system random number generator failed")]
    Random,
    /// A lock was poisoned by a panic in another request.
    #[error("the {0} lock is poisoned")]
    Poisoned(&'static str),
}

/// A challenge or release that produced no key.
#[derive(Debug)]
pub enum ReleaseError {
    /// The policy denied it (HTTP 403 with the reason code); recorded in the decision log.
    Denied(Denial),
    /// The request was malformed or the broker failed (HTTP 400 or 500).
    Failed(BrokerError),
}

impl From<Denial> for ReleaseError {
    fn from(d: Denial) -> Self {
        Self::Denied(d)
    }
}

impl From<StoreError> for ReleaseError {
    fn from(e: StoreError) -> Self {
        Self::Failed(e.into())
    }
}

impl From<BrokerError> for ReleaseError {
    fn from(e: BrokerError) -> Self {
        Self::Failed(e)
    }
}

/// The policy in force, with what is derived from it.
#[derive(Debug)]
pub struct ActivePolicy {
    /// The parsed policy.
    pub policy: Policy,
    /// Its source text.
    pub text: String,
    /// SHA-256 of the source text: what releases name as the policy they were decided under.
    pub text_sha256: [u8; 32],
    /// Production roots plus the policy's simulation roots.
    pub roots: TrustRoots,
    /// Admin public keys.
    pub admin_keys: Vec<[u8; 32]>,
}

impl ActivePolicy {
    fn new(text: &str, revocations: &[RevocationList]) -> Result<Self, PolicyError> {
        let policy = Policy::from_toml(text)?;
        let mut roots = TrustRoots::production();
        if let Some(sim) = &policy.simulation {
            sim.trust(&mut roots)
                .map_err(|e| PolicyError::Invalid(e.to_string()))?;
        }
        for list in revocations {
            roots.add_revocation_list(list.clone());
        }
        let admin_keys = policy
            .admin
            .keys
            .iter()
            .filter_map(|k| k.0.as_slice().try_into().ok())
            .collect();
        let mut text_sha256 = [0u8; 32];
        text_sha256.copy_from_slice(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes()).as_ref(),
        );
        Ok(Self {
            policy,
            text: text.to_owned(),
            text_sha256,
            roots,
            admin_keys,
        })
    }
}

/// The key broker.
pub struct Broker {
    pub(super) store: Arc<dyn Store>,
    pub(super) kek: Kek,
    pub(super) identity: BrokerIdentity,
    pub(super) registration: HpkeKeyPair,
    log_key: SigningKey,
    policy: RwLock<Arc<ActivePolicy>>,
    revocations: RwLock<Vec<RevocationList>>,
    /// Held while the policy or the revocation lists change.
    policy_change: Mutex<()>,
    clock: Box<dyn Fn() -> u64 + Send + Sync>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Broker(<keys redacted>)")
    }
}

fn system_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Broker {
    /// Opens a broker on `store` with `kek`. `policy_text`, when given, replaces the stored
    /// policy; otherwise the stored one is used.
    pub fn open(
        store: Arc<dyn Store>,
        kek: Kek,
        policy_text: Option<&str>,
    ) -> Result<Self, BrokerError> {
        Self::with_clock(store, kek, policy_text, Box::new(system_now))
    }

    /// Like [`Self::open`] with a clock (Unix seconds), for tests.
    pub fn with_clock(
        store: Arc<dyn Store>,
        kek: Kek,
        policy_text: Option<&str>,
        clock: Box<dyn Fn() -> u64 + Send + Sync>,
    ) -> Result<Self, BrokerError> {
        let text = match policy_text {
            Some(t) => t.to_owned(),
            None => store.policy()?.ok_or(BrokerError::NoPolicy)?,
        };
        let active = ActivePolicy::new(&text, &[])?;
        let broker = Self {
            identity: kek.broker_identity(),
            registration: kek.registration_key(),
            log_key: kek.decision_log_key(),
            store,
            kek,
            policy: RwLock::new(Arc::new(active)),
            revocations: RwLock::new(Vec::new()),
            policy_change: Mutex::new(()),
            clock,
        };
        broker.install_policy(&text)?;
        Ok(broker)
    }

    pub(super) fn install_policy(&self, text: &str) -> Result<(), BrokerError> {
        let active = ActivePolicy::new(text, &self.revocation_lists())?;
        let contracts = active
            .policy
            .contracts
            .iter()
            .map(|c| {
                Ok(Contract {
                    id: c.id.clone(),
                    asset: c.asset.clone(),
                    not_before: parse_time(&c.not_before)?,
                    not_after: parse_time(&c.not_after)?,
                    max_releases: c.max_releases,
                    revoked: c.revoked,
                    releases: 0,
                    origin: ContractOrigin::Policy,
                    active: true,
                })
            })
            .collect::<Result<Vec<_>, PolicyError>>()?;
        // One change of policy (or of revocation lists) at a time, so the stored text,
        // the contracts and the policy in force always come from the same policy.
        let _change = self
            .policy_change
            .lock()
            .map_err(|_| BrokerError::Poisoned("policy change"))?;
        let deactivated = self
            .store
            .replace_policy(text, &contracts, self.now())
            .map_err(|e| match e {
                StoreError::AdminContract(_) => BrokerError::Conflict(e.to_string()),
                other => other.into(),
            })?;
        for id in deactivated {
            tracing::warn!(contract = %id, "contract deactivated: the new policy no longer declares it");
        }
        if active.policy.simulation.is_some() {
            tracing::warn!(
                "SIMULATION MODE: this policy accepts SIMULATED TEE evidence; never use it in production"
            );
        }
        *self
            .policy
            .write()
            .map_err(|_| BrokerError::Poisoned("policy"))? = Arc::new(active);
        Ok(())
    }

    /// Checks evidence chains against these revocation lists too (AMD's, from a KDS
    /// cache: `tb-kms serve --kds-cache`), from now on and after policy replacements.
    pub fn set_revocation_lists(&self, lists: Vec<RevocationList>) -> Result<(), BrokerError> {
        let _change = self
            .policy_change
            .lock()
            .map_err(|_| BrokerError::Poisoned("policy change"))?;
        let active = ActivePolicy::new(&self.active_policy().text, &lists)?;
        *self
            .revocations
            .write()
            .map_err(|_| BrokerError::Poisoned("revocation list"))? = lists;
        *self
            .policy
            .write()
            .map_err(|_| BrokerError::Poisoned("policy"))? = Arc::new(active);
        Ok(())
    }

    fn revocation_lists(&self) -> Vec<RevocationList> {
        self.revocations
            .read()
            .map(|l| l.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// The policy in force.
    pub fn active_policy(&self) -> Arc<ActivePolicy> {
        self.policy
            .read()
            .map(|p| p.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Unix seconds on the broker's clock.
    pub fn now(&self) -> u64 {
        (self.clock)()
    }

    /// The broker's identity key: what sentinels and providers pin.
    pub fn identity_key(&self) -> BrokerKey {
        self.identity.public()
    }

    /// Signs `statement` for the request with body digest `request_sha256`.
    pub(super) fn sign(
        &self,
        statement: &Statement,
        request_sha256: &[u8; 32],
    ) -> Result<String, BrokerError> {
        Ok(self.identity.sign(statement, request_sha256)?)
    }

    /// The answer to the admin request `method path` that was carried out, signed for
    /// `request_sha256`, the digest of the message the admin signed, so that the admin
    /// knows this very request was.
    pub fn admin_answer(
        &self,
        method: &str,
        path: &str,
        request_sha256: &[u8; 32],
    ) -> Result<AdminAnswer, BrokerError> {
        let statement = Statement::Admin {
            method: method.to_owned(),
            path: path.to_owned(),
        };
        Ok(AdminAnswer {
            signature: self.sign(&statement, request_sha256)?,
        })
    }

    /// Public facts, signed by the identity key (`GET /v1/broker`).
    pub fn info(&self) -> Result<BrokerInfo, BrokerError> {
        let registration_key = self.registration.public_key();
        let decision_log_key = self.log_key.verifying_key().to_bytes();
        let simulation = self.active_policy().policy.simulation.is_some();
        let statement = Statement::Broker {
            registration_key,
            decision_log_key,
            simulation,
        };
        Ok(BrokerInfo {
            identity_key: self.identity.public(),
            registration_key: hex::encode(registration_key),
            decision_log_key: hex::encode(decision_log_key),
            simulation,
            signature: self.sign(&statement, &request_digest(b""))?,
        })
    }

    /// The 403 body of `denial`, signed for the request whose body has digest
    /// `request_sha256`: clients believe only denials the identity key signs.
    pub fn denial_body(
        &self,
        denial: &Denial,
        request_sha256: &[u8; 32],
    ) -> Result<ErrorBody, BrokerError> {
        let statement = Statement::Denial {
            error: denial.code.as_str().to_owned(),
            detail: denial.detail.clone(),
        };
        Ok(ErrorBody {
            error: denial.code.as_str().to_owned(),
            detail: denial.detail.clone(),
            signature: Some(self.sign(&statement, request_sha256)?),
        })
    }

    /// The store (for audit tooling).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Appends a decision to the log. A release whose record cannot be written must not
    /// leave: the caller turns the error into a failure (no key without its record).
    pub(super) fn log(
        &self,
        asset: &str,
        contract: &str,
        platform: &str,
        evidence_sha256: &[u8],
        release_key: &[u8],
        outcome: Result<(), &Denial>,
    ) -> Result<(), StoreError> {
        let decision = Decision {
            time: self.now(),
            released: outcome.is_ok(),
            reason: outcome
                .err()
                .map(|d| d.code.as_str().to_owned())
                .unwrap_or_default(),
            asset: asset.to_owned(),
            contract: contract.to_owned(),
            platform: platform.to_owned(),
            evidence_sha256: evidence_sha256.to_vec(),
            release_key: release_key.to_vec(),
            detail: outcome.err().map(|d| d.detail.clone()).unwrap_or_default(),
        };
        let seq = self
            .store
            .append_decision(&mut |seq, prev| {
                let record = encode_record(seq, prev, &decision)?;
                let signature = sign_record(&self.log_key, &record);
                Ok((record, signature))
            })
            .inspect_err(|e| tracing::error!(error = %e, "cannot append to the decision log"))?;
        match outcome {
            Ok(()) => tracing::info!(seq, asset, contract, platform, "key released"),
            Err(d) => {
                tracing::info!(seq, asset, contract, platform, reason = d.code.as_str(), detail = %d.detail, "key release denied")
            }
        }
        Ok(())
    }
}

pub(super) fn bad(field: &str, e: impl std::fmt::Display) -> BrokerError {
    BrokerError::BadRequest(format!("{field}: {e}"))
}
