//! The broker's decisions, independent of HTTP.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest;
use base64::Engine;
use ed25519_dalek::SigningKey;
use trustbridge_protocol::binding::EvidenceBinding;
use trustbridge_protocol::bundle::{ProviderPublicKey, SignedManifest};
use trustbridge_protocol::key_release::{
    ChallengeRequest, ChallengeResponse, HpkeKeyPair, NONCE_TTL_SECS, REGISTER_INFO_LABEL,
    ReleaseRequest, ReleaseResponse, hpke_info, release_info, seal_data_key,
};
use trustbridge_verifier::x509::ParsedCertificate;
use trustbridge_verifier::{
    AzureEvidence, Platform, TrustRoots, VerifiedEvidence, VerifyError, check_binding,
    verify_azure, verify_nitro, verify_snp,
};

use super::admin_auth::{self, AdminAuthError, ReplayGuard};
use super::decision_log::{Decision, encode_record, sign_record};
use super::kek::Kek;
use super::messages::{ContractRequest, RegisterAssetRequest};
use super::store::{AssetRecord, NonceState, Store, StoreError};
use crate::evaluate::{Contract, Denial, DenialCode, check_contract, evaluate_evidence};
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
    /// A stored key could not be unwrapped or sealed.
    #[error("key handling failed: {0}")]
    Key(String),
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
    /// Production roots plus the policy's simulation roots.
    pub roots: TrustRoots,
    /// Admin public keys.
    pub admin_keys: Vec<[u8; 32]>,
}

impl ActivePolicy {
    fn new(text: &str) -> Result<Self, PolicyError> {
        let policy = Policy::from_toml(text)?;
        let mut roots = TrustRoots::production();
        if let Some(sim) = &policy.simulation {
            for (platform, list) in [
                (Platform::Nitro, &sim.nitro_root_sha256),
                (Platform::Snp, &sim.snp_root_sha256),
            ] {
                for fp in list {
                    let fp: [u8; 32] = fp.0.as_slice().try_into().map_err(|_| {
                        PolicyError::Invalid("simulation root fingerprints are 32 bytes".into())
                    })?;
                    roots.add_simulation_fingerprint(platform, fp, "policy simulation root");
                }
            }
        }
        let admin_keys = policy
            .admin
            .keys
            .iter()
            .filter_map(|k| k.0.as_slice().try_into().ok())
            .collect();
        Ok(Self {
            policy,
            text: text.to_owned(),
            roots,
            admin_keys,
        })
    }
}

/// Public facts about a broker.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct BrokerInfo {
    /// X25519 public key providers seal data keys to at registration (hex).
    pub registration_key: String,
    /// Ed25519 public key that signs the decision log (hex).
    pub decision_log_key: String,
    /// Whether the policy accepts simulated evidence.
    pub simulation: bool,
}

/// The key broker.
pub struct Broker {
    store: Arc<dyn Store>,
    kek: Kek,
    registration: HpkeKeyPair,
    log_key: SigningKey,
    policy: RwLock<Arc<ActivePolicy>>,
    replay: ReplayGuard,
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
        let active = ActivePolicy::new(&text)?;
        let broker = Self {
            registration: kek.registration_key(),
            log_key: kek.decision_log_key(),
            store,
            kek,
            policy: RwLock::new(Arc::new(active)),
            replay: ReplayGuard::default(),
            clock,
        };
        broker.install_policy(&text)?;
        Ok(broker)
    }

    fn install_policy(&self, text: &str) -> Result<(), BrokerError> {
        let active = ActivePolicy::new(text)?;
        for c in &active.policy.contracts {
            self.store.upsert_contract_terms(&Contract {
                id: c.id.clone(),
                asset: c.asset.clone(),
                not_before: parse_time(&c.not_before)?,
                not_after: parse_time(&c.not_after)?,
                max_releases: c.max_releases,
                revoked: c.revoked,
                releases: 0,
            })?;
        }
        if active.policy.simulation.is_some() {
            tracing::warn!(
                "SIMULATION MODE: this policy accepts SIMULATED TEE evidence; never use it in production"
            );
        }
        self.store.set_policy(text, self.now())?;
        let mut slot = self
            .policy
            .write()
            .map_err(|_| BrokerError::Key("policy lock poisoned".into()))?;
        *slot = Arc::new(active);
        Ok(())
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

    /// Public facts.
    pub fn info(&self) -> BrokerInfo {
        BrokerInfo {
            registration_key: hex::encode(self.registration.public_key()),
            decision_log_key: hex::encode(self.log_key.verifying_key().to_bytes()),
            simulation: self.active_policy().policy.simulation.is_some(),
        }
    }

    /// Issues a single-use nonce for (asset, contract).
    pub fn challenge(&self, req: &ChallengeRequest) -> Result<ChallengeResponse, ReleaseError> {
        if let Err(e) = self.check_asset_and_contract(&req.asset, &req.contract) {
            if let ReleaseError::Denied(d) = &e {
                self.log(&req.asset, &req.contract, "", &[], &[], Err(d));
            }
            return Err(e);
        }
        let mut nonce = [0u8; 32];
        aws_lc_rs::rand::fill(&mut nonce)
            .map_err(|_| BrokerError::Key("random number generator failed".into()))?;
        self.store.issue_nonce(
            &nonce,
            &req.asset,
            &req.contract,
            self.now() + NONCE_TTL_SECS,
        )?;
        Ok(ChallengeResponse {
            nonce: hex::encode(nonce),
            expires_in: NONCE_TTL_SECS,
        })
    }

    fn check_asset_and_contract(&self, asset: &str, contract: &str) -> Result<(), ReleaseError> {
        let active = self.active_policy();
        if active.policy.asset(asset).is_none() || self.store.asset(asset)?.is_none() {
            return Err(Denial::new(
                DenialCode::UnknownAsset,
                format!("asset {asset} is not registered under the policy"),
            )
            .into());
        }
        let c = self.store.contract(contract)?;
        Ok(check_contract(c.as_ref(), asset, self.now())?)
    }

    /// Decides a key release: the data key sealed to the attested release key, or why not.
    /// Every decision (release or denial) is appended to the decision log.
    pub fn release(&self, req: &ReleaseRequest) -> Result<ReleaseResponse, ReleaseError> {
        let decoded = Decoded::from_request(req)?;
        let evidence_hash = digest::digest(&digest::SHA256, &decoded.evidence)
            .as_ref()
            .to_vec();
        let (asset, contract, result) =
            match self.store.consume_nonce(&decoded.nonce, self.now())? {
                NonceState::UnknownOrUsed => (
                    String::new(),
                    String::new(),
                    Err(Denial::new(
                        DenialCode::NonceUnknownOrUsed,
                        "nonce was not issued or was already used",
                    )
                    .into()),
                ),
                NonceState::Expired => (
                    String::new(),
                    String::new(),
                    Err(Denial::new(DenialCode::NonceExpired, "nonce has expired").into()),
                ),
                NonceState::Valid { asset, contract } => {
                    let r = self.release_checked(&decoded, &asset, &contract);
                    (asset, contract, r)
                }
            };
        match &result {
            Ok(_) => self.log(
                &asset,
                &contract,
                req.platform.name(),
                &evidence_hash,
                &decoded.binding.release_key,
                Ok(()),
            ),
            Err(ReleaseError::Denied(d)) => self.log(
                &asset,
                &contract,
                req.platform.name(),
                &evidence_hash,
                &decoded.binding.release_key,
                Err(d),
            ),
            Err(ReleaseError::Failed(e)) => {
                tracing::error!(error = %e, "key release failed inside the broker")
            }
        }
        result
    }

    fn release_checked(
        &self,
        d: &Decoded,
        asset_id: &str,
        contract: &str,
    ) -> Result<ReleaseResponse, ReleaseError> {
        self.check_asset_and_contract(asset_id, contract)?;
        let active = self.active_policy();
        let asset_policy = active
            .policy
            .asset(asset_id)
            .ok_or_else(|| Denial::new(DenialCode::UnknownAsset, asset_id.to_owned()))?;
        let ev = self.verify(d, &active.roots)?;
        check_binding(&ev, &d.binding)
            .map_err(|e| Denial::new(DenialCode::BindingMismatch, e.to_string()))?;
        evaluate_evidence(&active.policy, asset_policy, &ev)?;
        let record = self
            .store
            .asset(asset_id)?
            .ok_or_else(|| Denial::new(DenialCode::UnknownAsset, asset_id.to_owned()))?;
        if !self.store.count_release(contract)? {
            return Err(Denial::new(
                DenialCode::ReleaseLimit,
                format!("contract {contract} has reached its release limit"),
            )
            .into());
        }
        let key = self
            .kek
            .unwrap(asset_id, &record.wrapped_key)
            .map_err(|e| BrokerError::Key(e.to_string()))?;
        let (enc, ct) = seal_data_key(
            &d.binding.release_key,
            &release_info(asset_id, &d.nonce),
            &key,
        )
        .map_err(|e| BrokerError::Key(e.to_string()))?;
        Ok(ReleaseResponse {
            asset: asset_id.to_owned(),
            manifest_sha256: hex::encode(record.manifest_sha256),
            provider_key: hex::encode(record.provider_key),
            enc: hex::encode(enc),
            ciphertext: hex::encode(ct),
        })
    }

    fn verify(&self, d: &Decoded, roots: &TrustRoots) -> Result<VerifiedEvidence, Denial> {
        let now = UNIX_EPOCH + Duration::from_secs(self.now());
        let result = match d.platform {
            Platform::Nitro => verify_nitro(&d.evidence, roots, now),
            Platform::Snp => verify_snp(&d.evidence, &d.certificates, roots, now),
            Platform::AzureSnpVtpm => AzureEvidence::from_json(&d.evidence)
                .and_then(|az| verify_azure(&az, &d.certificates, roots, now)),
        };
        result.map_err(|e| {
            if matches!(e, VerifyError::UntrustedRoot { .. }) && looks_simulated(d) {
                Denial::new(
                    DenialCode::SimulationNotAllowed,
                    "simulated evidence, and the policy accepts no simulation root",
                )
            } else {
                Denial::new(DenialCode::EvidenceInvalid, e.to_string())
            }
        })
    }

    fn log(
        &self,
        asset: &str,
        contract: &str,
        platform: &str,
        evidence_sha256: &[u8],
        release_key: &[u8],
        outcome: Result<(), &Denial>,
    ) {
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
        let appended = self.store.append_decision(&mut |seq, prev| {
            let record = encode_record(seq, prev, &decision);
            let signature = sign_record(&self.log_key, &record);
            (record, signature)
        });
        match (appended, outcome) {
            (Err(e), _) => tracing::error!(error = %e, "cannot append to the decision log"),
            (Ok(seq), Ok(())) => tracing::info!(seq, asset, contract, platform, "key released"),
            (Ok(seq), Err(d)) => {
                tracing::info!(seq, asset, contract, platform, reason = d.code.as_str(), detail = %d.detail, "key release denied")
            }
        }
    }

    /// Checks an admin request's signature.
    pub fn authorize_admin<'a>(
        &self,
        header: impl Fn(&str) -> Option<&'a str>,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<(), BrokerError> {
        let active = self.active_policy();
        admin_auth::verify_request(
            header,
            method,
            path,
            body,
            &active.admin_keys,
            self.now(),
            &self.replay,
        )?;
        Ok(())
    }

    /// Registers an asset: verifies the manifest against the policy's provider key (and
    /// manifest digest), opens the data key sealed to the registration key, checks it
    /// against the manifest's key commitment, and stores it wrapped under the KEK.
    pub fn register_asset(&self, req: &RegisterAssetRequest) -> Result<(), BrokerError> {
        let active = self.active_policy();
        let ap = active.policy.asset(&req.asset).ok_or_else(|| {
            BrokerError::NotFound(format!("asset {} is not in the policy", req.asset))
        })?;
        let manifest = base64::engine::general_purpose::STANDARD
            .decode(&req.manifest)
            .map_err(|e| bad("manifest", e))?;
        let provider_bytes: [u8; 32] = ap
            .provider_key
            .0
            .as_slice()
            .try_into()
            .map_err(|_| BrokerError::BadRequest("provider key".into()))?;
        let provider = ProviderPublicKey::from_bytes(&provider_bytes)
            .map_err(|e| BrokerError::BadRequest(e.to_string()))?;
        let signed = SignedManifest::verify(&manifest, Some(&provider))
            .map_err(|e| BrokerError::BadRequest(format!("manifest rejected: {e}")))?;
        if signed.manifest().asset_id.as_str() != req.asset {
            return Err(BrokerError::BadRequest(format!(
                "manifest is for asset {}, not {}",
                signed.manifest().asset_id,
                req.asset
            )));
        }
        let digest = signed.digest();
        if let Some(pin) = &ap.manifest_sha256 {
            if pin.0 != digest {
                return Err(BrokerError::BadRequest(
                    "manifest digest differs from the policy's manifest_sha256".into(),
                ));
            }
        }
        let enc = hex::decode(&req.enc).map_err(|e| bad("enc", e))?;
        let ct = hex::decode(&req.ciphertext).map_err(|e| bad("ciphertext", e))?;
        let key = self
            .registration
            .open_data_key(
                &enc,
                &ct,
                &hpke_info(REGISTER_INFO_LABEL, &req.asset, &digest),
            )
            .map_err(|e| BrokerError::BadRequest(format!("data key: {e}")))?;
        signed
            .manifest()
            .check_data_key(&key)
            .map_err(|e| BrokerError::BadRequest(e.to_string()))?;
        let wrapped = self
            .kek
            .wrap(&req.asset, &key)
            .map_err(|e| BrokerError::Key(e.to_string()))?;
        self.store.put_asset(&AssetRecord {
            id: req.asset.clone(),
            manifest,
            manifest_sha256: digest,
            provider_key: provider_bytes,
            wrapped_key: wrapped,
        })?;
        tracing::info!(asset = %req.asset, key_id = %key.key_id(), "asset registered");
        Ok(())
    }

    /// Adds a contract.
    pub fn add_contract(&self, req: &ContractRequest) -> Result<(), BrokerError> {
        if self.active_policy().policy.asset(&req.asset).is_none() {
            return Err(BrokerError::NotFound(format!(
                "asset {} is not in the policy",
                req.asset
            )));
        }
        let (nb, na) = (parse_time(&req.not_before)?, parse_time(&req.not_after)?);
        if na <= nb {
            return Err(BrokerError::BadRequest(
                "not_after must be after not_before".into(),
            ));
        }
        let c = Contract {
            id: req.id.clone(),
            asset: req.asset.clone(),
            not_before: nb,
            not_after: na,
            max_releases: req.max_releases,
            revoked: false,
            releases: 0,
        };
        self.store.add_contract(&c).map_err(|e| match e {
            StoreError::Exists(what) => BrokerError::Conflict(what),
            other => other.into(),
        })?;
        tracing::info!(contract = %req.id, asset = %req.asset, "contract added");
        Ok(())
    }

    /// Revokes a contract.
    pub fn revoke_contract(&self, id: &str) -> Result<(), BrokerError> {
        if !self.store.revoke_contract(id)? {
            return Err(BrokerError::NotFound(format!("contract {id}")));
        }
        tracing::warn!(contract = id, "contract revoked");
        Ok(())
    }

    /// Replaces the policy.
    pub fn replace_policy(&self, text: &str) -> Result<(), BrokerError> {
        self.install_policy(text)?;
        tracing::warn!("policy replaced through the admin API");
        Ok(())
    }

    /// The store (for audit tooling).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }
}

fn bad(field: &str, e: impl std::fmt::Display) -> BrokerError {
    BrokerError::BadRequest(format!("{field}: {e}"))
}

/// Whether unverifiable evidence carries the simulated TEE's markers.
fn looks_simulated(d: &Decoded) -> bool {
    const MARK: &str = "TrustBridge SIMULATION";
    match d.platform {
        Platform::Nitro => {
            trustbridge_verifier::nitro::parse_nitro(&d.evidence).is_ok_and(|(_, doc)| {
                doc.module_id
                    .starts_with(trustbridge_verifier::nitro::SIMULATED_MODULE_PREFIX)
            })
        }
        _ => d.certificates.iter().any(|c| c.subject().contains(MARK)),
    }
}

/// A release request with its fields decoded.
struct Decoded {
    nonce: Vec<u8>,
    platform: Platform,
    evidence: Vec<u8>,
    certificates: Vec<ParsedCertificate>,
    binding: EvidenceBinding,
}

impl Decoded {
    fn from_request(req: &ReleaseRequest) -> Result<Self, BrokerError> {
        let b64 = |field: &str, s: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| bad(field, e))
        };
        let key32 = |field: &str, s: &str| -> Result<[u8; 32], BrokerError> {
            let mut out = [0u8; 32];
            hex::decode_to_slice(s, &mut out).map_err(|e| bad(field, e))?;
            Ok(out)
        };
        let nonce = hex::decode(&req.nonce).map_err(|e| bad("nonce", e))?;
        let platform = req.platform;
        let certificates = req
            .certificates
            .iter()
            .map(|c| {
                b64("certificates", c).and_then(|der| {
                    ParsedCertificate::from_der(&der, "certificate")
                        .map_err(|e| bad("certificates", e))
                })
            })
            .collect::<Result<_, _>>()?;
        let binding = EvidenceBinding {
            nonce: nonce.clone(),
            ohttp_keys_sha256: key32("binding.ohttp_keys_sha256", &req.binding.ohttp_keys_sha256)?,
            receipt_key: key32("binding.receipt_key", &req.binding.receipt_key)?,
            release_key: key32("binding.release_key", &req.binding.release_key)?,
        };
        Ok(Self {
            nonce,
            platform,
            evidence: b64("evidence", &req.evidence)?,
            certificates,
            binding,
        })
    }
}
