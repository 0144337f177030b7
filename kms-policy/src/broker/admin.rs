//! The admin API's operations: registration, contracts, the policy.

use base64::Engine;
use trustbridge_protocol::bundle::{ProviderPublicKey, SignedManifest};
use trustbridge_protocol::key_release::{REGISTER_INFO_LABEL, hpke_info};

use super::admin_auth::{self, AdminAuthError};
use super::core::{Broker, BrokerError, bad};
use super::messages::{ContractRequest, RegisterAssetRequest};
use super::store::{AssetRecord, StoreError};
use crate::evaluate::{Contract, ContractOrigin};
use crate::policy::parse_time;

impl Broker {
    /// Checks an admin request: signed by an admin key of the policy, for this broker,
    /// within the skew window, and never seen before (the replay guard is in the store, so
    /// it survives restarts). Returns the message the admin signed, which the answer's
    /// signature covers.
    pub fn authorize_admin<'a>(
        &self,
        header: impl Fn(&str) -> Option<&'a str>,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<Vec<u8>, BrokerError> {
        let active = self.active_policy();
        let now = self.now();
        let signed = admin_auth::verify_request(
            header,
            method,
            path,
            body,
            &self.identity.public(),
            &active.admin_keys,
            now,
        )?;
        if !self
            .store
            .remember_admin_request(&signed.signature, signed.time, now)?
        {
            return Err(AdminAuthError::Replay.into());
        }
        Ok(admin_auth::signing_message(
            &self.identity.public(),
            method,
            path,
            signed.time,
            body,
        ))
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
        if let Some(pin) = &ap.manifest_sha256
            && pin.0 != digest
        {
            return Err(BrokerError::BadRequest(
                "manifest digest differs from the policy's manifest_sha256".into(),
            ));
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
        let wrapped = self.kek.wrap(&req.asset, &key)?;
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
            origin: ContractOrigin::Admin,
            active: true,
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
}
