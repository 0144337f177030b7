//! What a client accepts from a sentinel before it sends it anything: the client policy
//! (`client.toml`) and the verification of a sentinel's attestation bundle against it.
//!
//! `trustbridge proxy` checks every bundle it uses with [`ClientPolicy::verify_bundle`],
//! and `tb-verify receipt --policy` checks the bundle a receipt is verified against the
//! same way: one rule for both. The order is the verifier's usual one: the evidence against
//! pinned roots (the production roots, plus simulation roots only when the policy has a
//! `[simulation]` section), then the appraisal (debug, simulation, migration agent, the
//! accepted measurement sets of [`crate::reference_values`], TCB), then the evidence binding
//! (the bundle's key configuration and receipt key are the ones the evidence binds), the
//! pinned broker and provider keys, and the loaded model. Fail closed: a policy without a
//! measurement set accepts nothing, and a bundle without a loaded model is refused.
//!
//! ```toml
//! broker_key = "…64 hex…"          # the key broker the sentinel must pin (required)
//! provider_key = "…64 hex…"        # the model provider it must pin (optional)
//! models = ["…manifest sha256…"]   # accepted models (optional: any model released to it)
//!
//! [[nitro]]                        # accepted measurement sets, as in the broker's policy
//! pcr0 = "…96 hex…"
//! ```

use std::time::SystemTime;

use serde::Deserialize;
use trustbridge_protocol::attestation_bundle::AttestationBundle;

use crate::reference_values::{
    AzureSet, HexValue, MeasurementSets, NitroSet, ReferenceValueError, Simulation, SnpSet,
};
use crate::x509::ParsedCertificate;
use crate::{Appraisal, Checks, Policy, PolicyError, TrustRoots, VerifiedEvidence, VerifyError};

/// Largest client policy file read.
pub const MAX_POLICY_LEN: usize = 64 << 10;

/// The client policy cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientPolicyError {
    /// Larger than [`MAX_POLICY_LEN`].
    #[error("the client policy is larger than {MAX_POLICY_LEN} bytes")]
    TooLarge,
    /// Not TOML of the policy's shape (unknown fields included).
    #[error("invalid client policy: {0}")]
    Syntax(#[from] toml::de::Error),
    /// A key that is not 32 bytes.
    #[error("invalid client policy: {0} must be 32 bytes (64 hex digits)")]
    KeyLength(&'static str),
    /// No measurement set: the policy would accept nothing.
    #[error(
        "invalid client policy: no accepted measurement set ([[nitro]], [[snp]] or [[azure]]); a policy without one accepts no sentinel"
    )]
    NoMeasurements,
    /// A measurement set that cannot be meant.
    #[error("invalid client policy: {0}")]
    Sets(#[from] ReferenceValueError),
}

/// A client's rules for the sentinels it talks to.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClientPolicy {
    /// The key broker identity key the sentinel must pin (hex): the broker whose policy
    /// decides which builds receive the model key.
    pub broker_key: HexValue,
    /// The provider key the sentinel must pin (hex), when the client requires one.
    pub provider_key: Option<HexValue>,
    /// Manifest digests (SHA-256 of `manifest.cose`, hex) of the models the client
    /// accepts; any model the broker released to the sentinel when empty.
    #[serde(default)]
    pub models: Vec<HexValue>,
    /// Accept a debug-mode TEE (development only: its memory is readable by the host).
    #[serde(default)]
    pub allow_debug: bool,
    /// SEV-SNP: accept a guest whose policy allows a migration agent.
    #[serde(default)]
    pub allow_migration_agent: bool,
    /// Simulation roots: present only where simulated evidence is acceptable (the demo).
    pub simulation: Option<Simulation>,
    /// Accepted Nitro measurement sets.
    #[serde(default)]
    pub nitro: Vec<NitroSet>,
    /// Accepted SEV-SNP measurement sets.
    #[serde(default)]
    pub snp: Vec<SnpSet>,
    /// Accepted Azure vTPM SNP measurement sets.
    #[serde(default)]
    pub azure: Vec<AzureSet>,
}

/// A bundle the client policy refuses, with the check that refused it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleRefused {
    /// A certificate the bundle carries does not parse.
    #[error("the attestation bundle carries a certificate that does not parse: {0}")]
    Certificate(VerifyError),
    /// The evidence does not verify (signature, chain, roots, time).
    #[error("the evidence does not verify: {0}")]
    Evidence(VerifyError),
    /// The verified evidence is not acceptable (appraisal, binding, pins).
    #[error("{0}")]
    Policy(#[from] PolicyError),
    /// The sentinel has no model loaded (not Ready).
    #[error("the sentinel has loaded no model yet (its binding names none)")]
    NoModel,
    /// The sentinel serves a model the policy does not accept.
    #[error("the sentinel serves model {0}, which the client policy does not accept")]
    OtherModel(String),
}

impl BundleRefused {
    /// The short name of the check that refused the bundle.
    pub fn check(&self) -> &'static str {
        match self {
            Self::Certificate(_) | Self::Evidence(_) => "evidence",
            Self::Policy(e) => e.check(),
            Self::NoModel | Self::OtherModel(_) => "model",
        }
    }
}

/// A bundle the client policy accepts: the bundle and what its evidence verifiably says.
#[derive(Clone, Debug)]
pub struct VerifiedBundle {
    /// The bundle.
    pub bundle: AttestationBundle,
    /// The verified evidence.
    pub evidence: VerifiedEvidence,
    /// The loaded model's manifest digest, as the evidence binds it.
    pub model: [u8; 32],
    /// When it was verified.
    pub verified_at: SystemTime,
}

impl ClientPolicy {
    /// Parses and validates a client policy (size checked first).
    pub fn from_toml(text: &str) -> Result<Self, ClientPolicyError> {
        if text.len() > MAX_POLICY_LEN {
            return Err(ClientPolicyError::TooLarge);
        }
        let policy: Self = toml::from_str(text)?;
        if policy.broker_key.0.len() != 32 {
            return Err(ClientPolicyError::KeyLength("broker_key"));
        }
        if policy
            .provider_key
            .as_ref()
            .is_some_and(|k| k.0.len() != 32)
        {
            return Err(ClientPolicyError::KeyLength("provider_key"));
        }
        if policy.models.iter().any(|m| m.0.len() != 32) {
            return Err(ClientPolicyError::KeyLength("models"));
        }
        let sets = policy.sets();
        if sets.nitro.is_empty() && sets.snp.is_empty() && sets.azure.is_empty() {
            return Err(ClientPolicyError::NoMeasurements);
        }
        sets.validate()?;
        let mut roots = TrustRoots::empty();
        if let Some(sim) = &policy.simulation {
            sim.trust(&mut roots)?;
        }
        Ok(policy)
    }

    fn sets(&self) -> MeasurementSets<'_> {
        MeasurementSets {
            nitro: &self.nitro,
            snp: &self.snp,
            azure: &self.azure,
        }
    }

    /// The roots evidence must chain to: the production roots, and the simulation roots
    /// when the policy names any.
    pub fn trust_roots(&self) -> TrustRoots {
        let mut roots = TrustRoots::production();
        if let Some(sim) = &self.simulation {
            // Validated by `from_toml`; a policy built otherwise with a bad fingerprint
            // simply trusts no simulation root.
            let _ = sim.trust(&mut roots);
        }
        roots
    }

    /// The appraisal rules (simulation accepted only with a `[simulation]` section).
    pub fn appraisal(&self) -> Appraisal {
        Appraisal {
            allow_simulated: self.simulation.is_some(),
            allow_debug: self.allow_debug,
            allow_migration_agent: self.allow_migration_agent,
            references: self.sets().references(),
        }
    }

    fn key(v: &HexValue) -> Option<[u8; 32]> {
        v.0.as_slice().try_into().ok()
    }

    /// Verifies `bundle` at `now` against `roots` (normally [`Self::trust_roots`]) and this
    /// policy, recording each check in `checks`.
    pub fn verify_bundle(
        &self,
        bundle: AttestationBundle,
        roots: &TrustRoots,
        now: SystemTime,
        checks: &mut Checks,
    ) -> Result<VerifiedBundle, BundleRefused> {
        let evidence = verify_bundle_evidence(&bundle, roots, now, checks)?;
        let model = self.accept(&bundle, &evidence, checks)?;
        Ok(VerifiedBundle {
            bundle,
            evidence,
            model,
            verified_at: now,
        })
    }

    /// The policy's part: the appraisal of verified evidence, the binding of the bundle's
    /// keys, the pins and the model. Returns the model's manifest digest.
    pub fn accept(
        &self,
        bundle: &AttestationBundle,
        evidence: &VerifiedEvidence,
        checks: &mut Checks,
    ) -> Result<[u8; 32], BundleRefused> {
        self.appraisal().appraise(evidence, checks)?;
        Policy {
            binding: Some(bundle.binding.clone()),
            broker_key: Self::key(&self.broker_key),
            provider_key: self.provider_key.as_ref().and_then(Self::key),
            ..Policy::default()
        }
        .check_binding_and_pins(evidence, checks)?;
        let Some(model) = bundle.binding.manifest_sha256 else {
            checks.fail("model", BundleRefused::NoModel.to_string());
            return Err(BundleRefused::NoModel);
        };
        if !self.models.is_empty() && !self.models.iter().any(|m| m.0 == model) {
            let e = BundleRefused::OtherModel(hex::encode(model));
            checks.fail("model", e.to_string());
            return Err(e);
        }
        checks.pass(
            "model",
            format!("the evidence binds model {}", hex::encode(model)),
        );
        Ok(model)
    }
}

/// The bundle's evidence verified at `now` against `roots`, with the certificates the
/// bundle carries (no policy yet).
pub fn verify_bundle_evidence(
    bundle: &AttestationBundle,
    roots: &TrustRoots,
    now: SystemTime,
    checks: &mut Checks,
) -> Result<VerifiedEvidence, BundleRefused> {
    let certificates = bundle
        .certificates
        .iter()
        .map(|der| ParsedCertificate::from_der(der, "bundle certificate"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| BundleRefused::Certificate(checks.failed(e)))?;
    crate::verify_logged(
        bundle.platform,
        &bundle.evidence,
        &certificates,
        roots,
        now,
        checks,
    )
    .map_err(BundleRefused::Evidence)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn key() -> String {
        "11".repeat(32)
    }

    #[test]
    fn a_policy_without_measurements_accepts_nothing() {
        let e = ClientPolicy::from_toml(&format!("broker_key = \"{}\"\n", key())).unwrap_err();
        assert!(matches!(e, ClientPolicyError::NoMeasurements), "{e}");
    }

    #[test]
    fn unknown_fields_and_bad_lengths_are_refused() {
        let ok = format!(
            "broker_key = \"{}\"\n[[nitro]]\npcr0 = \"{}\"\n",
            key(),
            "10".repeat(48)
        );
        let p = ClientPolicy::from_toml(&ok).unwrap();
        assert!(!p.appraisal().allow_simulated);
        for bad in [
            format!("{ok}typo = 1\n"),
            ok.replace(&key(), "11"),
            ok.replace(&"10".repeat(48), "10"),
            format!("models = [\"00\"]\n{ok}"),
            format!("{ok}[simulation]\nnitro_root_sha256 = [\"00\"]\n"),
            ok.replace("pcr0", "pcr3"),
        ] {
            assert!(ClientPolicy::from_toml(&bad).is_err(), "{bad}");
        }
        assert!(matches!(
            ClientPolicy::from_toml(&" ".repeat(MAX_POLICY_LEN + 1)),
            Err(ClientPolicyError::TooLarge)
        ));
    }
}
