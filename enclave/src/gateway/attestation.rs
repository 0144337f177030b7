//! The attestation bundle the gateway publishes: evidence that binds the gateway's keys,
//! the receipt key, the pinned keys and, once Ready, the served model's manifest digest.
//!
//! The published bundle is made once and remade when it is older than its maximum age or
//! the model changes; the receipts name its evidence (`evidence_digest`). A client that
//! wants evidence for its own nonce (freshness) gets a bundle made for it, at most
//! [`AttestationConfig::nonce_per_minute`] a minute, then 429.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use trustbridge_protocol::attestation_bundle::AttestationBundle;

use crate::attestation::AttestationProvider;
use crate::authorize::{Pins, binding_for};
use crate::keys::SentinelKeys;

/// How the bundle is published.
#[derive(Clone, Copy, Debug)]
pub struct AttestationConfig {
    /// Remake the published bundle when it is older than this.
    pub max_age: Duration,
    /// Bundles for a client's nonce, at most this many a minute (fresh evidence costs the
    /// TEE's attestation device; beyond it, 429).
    pub nonce_per_minute: u32,
}

impl Default for AttestationConfig {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(3600),
            nonce_per_minute: 60,
        }
    }
}

/// A bundle could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The TEE did not produce evidence.
    #[error("attestation: {0}")]
    Attest(String),
    /// The bundle does not hold together.
    #[error("attestation bundle: {0}")]
    Bundle(String),
    /// Too many nonce bundles this minute.
    #[error("too many attestation requests with a nonce; try again in a minute")]
    RateLimited,
    /// The nonce is not 1 to 64 bytes of hex.
    #[error("the nonce must be 1 to 64 bytes, hex")]
    BadNonce,
    /// The system random number generator failed.
    #[error("the system random number generator failed")]
    Random,
}

/// A made bundle, with what receipts need from it.
#[derive(Debug)]
pub struct Published {
    /// The bundle's JSON.
    pub json: Vec<u8>,
    /// SHA-256 of its evidence.
    pub evidence_digest: [u8; 32],
    /// The measurements its evidence reports.
    pub measurements: BTreeMap<String, Vec<u8>>,
    model: Option<[u8; 32]>,
    made: Instant,
}

/// Makes and caches bundles.
pub struct Publisher {
    keys: Arc<SentinelKeys>,
    pins: Pins,
    provider: Arc<dyn AttestationProvider>,
    config: AttestationConfig,
    current: tokio::sync::Mutex<Option<Arc<Published>>>,
    nonce_window: Mutex<(Instant, u32)>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Publisher({})", self.provider.name())
    }
}

impl Publisher {
    /// A publisher of the bundles of `keys`.
    pub fn new(
        keys: Arc<SentinelKeys>,
        pins: Pins,
        provider: Arc<dyn AttestationProvider>,
        config: AttestationConfig,
    ) -> Self {
        Self {
            keys,
            pins,
            provider,
            config,
            current: tokio::sync::Mutex::new(None),
            nonce_window: Mutex::new((Instant::now(), 0)),
        }
    }

    /// The published bundle for `model` (remade when stale or for another model).
    pub async fn published(&self, model: Option<[u8; 32]>) -> Result<Arc<Published>, PublishError> {
        let mut current = self.current.lock().await;
        if let Some(p) = current.as_ref()
            && p.model == model
            && p.made.elapsed() < self.config.max_age
        {
            return Ok(p.clone());
        }
        let mut nonce = [0u8; 32];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| PublishError::Random)?;
        let made = Arc::new(self.make(&nonce, model).await?);
        *current = Some(made.clone());
        Ok(made)
    }

    /// A bundle for the client's `nonce` (hex), rate-limited.
    pub async fn for_nonce(
        &self,
        nonce_hex: &str,
        model: Option<[u8; 32]>,
    ) -> Result<Published, PublishError> {
        let nonce = hex::decode(nonce_hex).map_err(|_| PublishError::BadNonce)?;
        if nonce.is_empty() || nonce.len() > trustbridge_protocol::binding::MAX_NONCE_LEN {
            return Err(PublishError::BadNonce);
        }
        {
            let mut window = self
                .nonce_window
                .lock()
                .map_err(|_| PublishError::RateLimited)?;
            if window.0.elapsed() >= Duration::from_secs(60) {
                *window = (Instant::now(), 0);
            }
            if window.1 >= self.config.nonce_per_minute {
                return Err(PublishError::RateLimited);
            }
            window.1 += 1;
        }
        self.make(&nonce, model).await
    }

    async fn make(&self, nonce: &[u8], model: Option<[u8; 32]>) -> Result<Published, PublishError> {
        let mut binding = binding_for(&self.keys, &self.pins, nonce);
        binding.manifest_sha256 = model;
        let provider = self.provider.clone();
        let b = binding.clone();
        let evidence = tokio::task::spawn_blocking(move || provider.evidence(&b))
            .await
            .map_err(|e| PublishError::Attest(e.to_string()))?
            .map_err(|e| PublishError::Attest(e.to_string()))?;
        let measurements =
            trustbridge_verifier::receipt::stated_measurements(evidence.platform, &evidence.bytes)
                .map_err(|e| PublishError::Attest(e.to_string()))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let bundle = AttestationBundle::new(
            evidence.platform,
            evidence.bytes,
            evidence.certificates,
            binding,
            self.keys.gateway.keys().to_vec(),
            now,
        )
        .map_err(|e| PublishError::Bundle(e.to_string()))?;
        Ok(Published {
            json: bundle
                .to_json()
                .map_err(|e| PublishError::Bundle(e.to_string()))?,
            evidence_digest: bundle.evidence_digest(),
            measurements,
            model,
            made: Instant::now(),
        })
    }
}
