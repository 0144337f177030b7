//! The key release: challenges and releases, each answer signed by the broker's identity
//! key over its fields and the digest of the request it answers.

use std::time::{Duration, UNIX_EPOCH};

use aws_lc_rs::digest;
use base64::Engine;
use trustbridge_protocol::binding::EvidenceBinding;
use trustbridge_protocol::bundle::{AssetId, MAX_ASSET_ID_LEN};
use trustbridge_protocol::key_release::{
    ChallengeRequest, ChallengeResponse, NONCE_TTL_SECS, Nonce, ReleaseRequest, ReleaseResponse,
    ReleaseStatement, Statement, release_info, seal_data_key,
};
use trustbridge_verifier::snp::MAX_SUPPLIED_CERTIFICATES;
use trustbridge_verifier::x509::ParsedCertificate;
use trustbridge_verifier::{Platform, TrustRoots, VerifiedEvidence, VerifyError, check_binding};

use super::core::{ActivePolicy, Broker, BrokerError, ReleaseError, bad};
use super::store::{AssetRecord, NonceState};
use crate::evaluate::{Denial, DenialCode, check_contract, evaluate_evidence};

impl Broker {
    /// Issues a single-use nonce for (asset, contract), signed for the request whose body
    /// has digest `request_sha256`.
    pub fn challenge(
        &self,
        req: &ChallengeRequest,
        request_sha256: &[u8; 32],
    ) -> Result<ChallengeResponse, ReleaseError> {
        // Ids of sane shape before anything is looked up or logged: they are echoed in
        // the signed answer and the decision log.
        let contract_ok = |c: &str| {
            !c.is_empty() && c.len() <= MAX_ASSET_ID_LEN && !c.chars().any(char::is_control)
        };
        if AssetId::new(&req.asset).is_err() || !contract_ok(&req.contract) {
            return Err(BrokerError::BadRequest(format!(
                "asset and contract ids are 1 to {MAX_ASSET_ID_LEN} printable characters"
            ))
            .into());
        }
        if let Err(e) = self.check_asset_and_contract(&req.asset, &req.contract) {
            if let ReleaseError::Denied(d) = &e {
                // A denial is answered even when its record cannot be written (logged).
                let _ = self.log(&req.asset, &req.contract, "", &[], &[], Err(d));
            }
            return Err(e);
        }
        let nonce = Nonce::random().map_err(|_| BrokerError::Random)?;
        self.store.issue_nonce(
            nonce.as_bytes(),
            &req.asset,
            &req.contract,
            self.now() + NONCE_TTL_SECS,
        )?;
        let statement = Statement::Challenge {
            asset: req.asset.clone(),
            contract: req.contract.clone(),
            nonce: nonce.as_bytes().to_vec(),
            expires_in: NONCE_TTL_SECS,
        };
        Ok(ChallengeResponse {
            nonce,
            expires_in: NONCE_TTL_SECS,
            signature: self.sign(&statement, request_sha256)?,
        })
    }

    /// The asset's registration, checked against the policy in force, and the contract.
    fn check_asset_and_contract(
        &self,
        asset: &str,
        contract: &str,
    ) -> Result<AssetRecord, ReleaseError> {
        self.check_asset_and_contract_under(&self.active_policy(), asset, contract)
    }

    /// [`Self::check_asset_and_contract`] under the policy snapshot `active`.
    fn check_asset_and_contract_under(
        &self,
        active: &ActivePolicy,
        asset: &str,
        contract: &str,
    ) -> Result<AssetRecord, ReleaseError> {
        let unknown = || {
            Denial::new(
                DenialCode::UnknownAsset,
                format!("asset {asset} is not registered under the policy"),
            )
        };
        let pins = active.policy.asset(asset).ok_or_else(unknown)?;
        let record = self.store.asset(asset)?.ok_or_else(unknown)?;
        // The registration was checked against the policy of its day; the policy may have
        // moved on (another provider, another manifest) since.
        if pins.provider_key.0 != record.provider_key {
            return Err(Denial::new(
                DenialCode::AssetPolicyMismatch,
                format!(
                    "asset {asset} was registered with provider key {}, the policy now pins {}: register it again",
                    hex::encode(record.provider_key),
                    hex::encode(&pins.provider_key.0)
                ),
            )
            .into());
        }
        if let Some(pin) = &pins.manifest_sha256
            && pin.0 != record.manifest_sha256
        {
            return Err(Denial::new(
                    DenialCode::AssetPolicyMismatch,
                    format!(
                        "asset {asset} was registered with manifest {}, the policy now pins {}: register it again",
                        hex::encode(record.manifest_sha256),
                        hex::encode(&pin.0)
                    ),
                )
                .into());
        }
        let c = self.store.contract(contract)?;
        check_contract(c.as_ref(), asset, self.now())?;
        Ok(record)
    }

    /// Decides a key release: the data key sealed to the attested release key, or why not,
    /// signed for the request whose body has digest `request_sha256`. Every decision
    /// (release or denial) is appended to the decision log.
    pub fn release(
        &self,
        req: &ReleaseRequest,
        request_sha256: &[u8; 32],
    ) -> Result<ReleaseResponse, ReleaseError> {
        let decoded = Decoded::from_request(req)?;
        let evidence_hash = digest::digest(&digest::SHA256, &decoded.evidence)
            .as_ref()
            .to_vec();
        let (asset, contract, result) = match self
            .store
            .consume_nonce(decoded.nonce.as_bytes(), self.now())?
        {
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
                let r = self.release_checked(&decoded, &asset, &contract, request_sha256);
                (asset, contract, r)
            }
        };
        let log = |outcome| {
            self.log(
                &asset,
                &contract,
                req.platform.name(),
                &evidence_hash,
                &decoded.binding.release_key,
                outcome,
            )
        };
        match result {
            // No key leaves without its record.
            Ok(response) => match log(Ok(())) {
                Ok(()) => Ok(response),
                Err(e) => Err(ReleaseError::Failed(e.into())),
            },
            Err(ReleaseError::Denied(d)) => {
                // A denial is answered even when its record cannot be written (logged).
                let _ = log(Err(&d));
                Err(ReleaseError::Denied(d))
            }
            Err(ReleaseError::Failed(e)) => {
                tracing::error!(error = %e, "key release failed inside the broker");
                Err(ReleaseError::Failed(e))
            }
        }
    }

    fn release_checked(
        &self,
        d: &Decoded,
        asset_id: &str,
        contract: &str,
        request_sha256: &[u8; 32],
    ) -> Result<ReleaseResponse, ReleaseError> {
        // One snapshot of the policy for the whole decision.
        let active = self.active_policy();
        let record = self.check_asset_and_contract_under(&active, asset_id, contract)?;
        let asset_policy = active
            .policy
            .asset(asset_id)
            .ok_or_else(|| Denial::new(DenialCode::UnknownAsset, asset_id.to_owned()))?;
        let ev = self.verify(d, &active.roots)?;
        check_binding(&ev, &d.binding)
            .map_err(|e| Denial::new(DenialCode::BindingMismatch, e.to_string()))?;
        // What the (now attested) binding says the sentinel trusts must be us and this asset.
        let identity = self.identity.public();
        if &d.binding.broker_key != identity.as_bytes() {
            return Err(Denial::new(
                DenialCode::WrongBroker,
                format!(
                    "the sentinel pins broker key {}, this broker is {identity}",
                    hex::encode(d.binding.broker_key)
                ),
            )
            .into());
        }
        if let Some(pinned) = d.binding.provider_key
            && pinned != record.provider_key
        {
            return Err(Denial::new(
                DenialCode::WrongProvider,
                format!(
                    "the sentinel pins provider key {}, asset {asset_id} is signed by {}",
                    hex::encode(pinned),
                    hex::encode(record.provider_key)
                ),
            )
            .into());
        }
        if let Some(manifest) = d.binding.manifest_sha256
            && manifest != record.manifest_sha256
        {
            return Err(Denial::new(
                DenialCode::BindingMismatch,
                "the binding names another manifest than the asset's",
            )
            .into());
        }
        evaluate_evidence(&active.policy, asset_policy, &ev)?;
        // Everything that can fail is done before the release is counted, so a count
        // always has its decision record (the caller appends it).
        let key = self
            .kek
            .unwrap(asset_id, &record.wrapped_key)
            .map_err(BrokerError::from)?;
        let (enc, ciphertext) = seal_data_key(
            &d.binding.release_key,
            &release_info(asset_id, d.nonce.as_bytes()),
            &key,
        )
        .map_err(BrokerError::from)?;
        let release = ReleaseStatement {
            asset: asset_id.to_owned(),
            contract: contract.to_owned(),
            nonce: d.nonce.as_bytes().to_vec(),
            release_key: d.binding.release_key,
            manifest_sha256: record.manifest_sha256,
            provider_key: record.provider_key,
            key_id: key.key_id().to_string(),
            enc,
            ciphertext,
            lease_secs: asset_policy.lease_secs,
            policy_sha256: active.text_sha256,
        };
        let signature = self.sign(&Statement::Release(release.clone()), request_sha256)?;
        let now = self.now();
        if !self.store.count_release(contract, asset_id, now)? {
            // The contract changed while the evidence was checked (revoked, replaced,
            // past its window), or it is at its limit: say which.
            let current = self.store.contract(contract)?;
            check_contract(current.as_ref(), asset_id, now)?;
            return Err(Denial::new(
                DenialCode::ReleaseLimit,
                format!("contract {contract} has reached its release limit"),
            )
            .into());
        }
        Ok(ReleaseResponse {
            asset: release.asset,
            contract: release.contract,
            manifest_sha256: hex::encode(release.manifest_sha256),
            provider_key: hex::encode(release.provider_key),
            key_id: release.key_id,
            enc: hex::encode(release.enc),
            ciphertext: hex::encode(release.ciphertext),
            lease_secs: release.lease_secs,
            policy_sha256: hex::encode(release.policy_sha256),
            signature,
        })
    }

    fn verify(&self, d: &Decoded, roots: &TrustRoots) -> Result<VerifiedEvidence, Denial> {
        let now = UNIX_EPOCH + Duration::from_secs(self.now());
        let result = trustbridge_verifier::verify_logged(
            d.platform,
            &d.evidence,
            &d.certificates,
            roots,
            now,
            &mut trustbridge_verifier::Checks::default(),
        );
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
    nonce: Nonce,
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
        if req.certificates.len() > MAX_SUPPLIED_CERTIFICATES {
            return Err(BrokerError::BadRequest(format!(
                "{} certificates, at most {MAX_SUPPLIED_CERTIFICATES} accompany evidence",
                req.certificates.len()
            )));
        }
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
        let binding = req
            .binding
            .to_binding(&req.nonce)
            .map_err(|e| BrokerError::BadRequest(e.to_string()))?;
        Ok(Self {
            nonce: req.nonce,
            platform: req.platform,
            evidence: b64("evidence", &req.evidence)?,
            certificates,
            binding,
        })
    }
}
