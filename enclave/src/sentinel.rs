//! The running sentinel: the boot task that drives the state machine, and the health API.
//!
//! | route | |
//! |---|---|
//! | `GET /health` | 200 when Ready, 503 otherwise |
//! | `GET /readiness` | 200 from Decrypt on, 503 before |
//! | `GET /status` | JSON: state, reason (when Failed), asset, contract, uptime, requests |

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use trustbridge_transport::Endpoint;

use crate::attestation::AttestationProvider;
use crate::authorize::{EgressLimits, KmsTarget, Pins, Released, authorize, binding_for};
use crate::boot::{Backoff, BootMachine, BootState, StepError};
use crate::hydrate::{HydrateConfig, Model, fetch_files, fetch_manifest, lock};
use crate::keys::SentinelKeys;
use crate::output::{ModelOutput, Published, publish};

/// What the sentinel needs to boot.
#[derive(Clone, Debug)]
pub struct SentinelConfig {
    /// The asset to serve.
    pub asset: String,
    /// The contract to release it under.
    pub contract: String,
    /// The key broker, as the relay's egress allow-list names it.
    pub kms: KmsTarget,
    /// The broker identity key (and provider key) the sentinel trusts.
    pub pins: Pins,
    /// Time limits of the key release through the relay.
    pub egress_limits: EgressLimits,
    /// The relay's egress endpoint.
    pub egress: Endpoint,
    /// The relay's bundle endpoint.
    pub bundles: Endpoint,
    /// Download settings.
    pub hydrate: HydrateConfig,
    /// Retry policy for the key release.
    pub backoff: Backoff,
    /// How often a Ready (or Suspended) sentinel asks the broker again; `None`: never.
    pub reauthorize_every: Option<std::time::Duration>,
    /// Where the decrypted model goes (runtime-proxy mode).
    pub output: ModelOutput,
}

/// A sentinel: its state, model and counters.
pub struct Sentinel {
    config: SentinelConfig,
    machine: Mutex<BootMachine>,
    model: Mutex<Option<Arc<Model>>>,
    published: Mutex<Option<Published>>,
    requests: AtomicU64,
    simulated: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Sentinel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Sentinel(asset {}, state {})",
            self.config.asset,
            self.state()
        )
    }
}

impl Sentinel {
    /// A sentinel in state Boot.
    pub fn new(config: SentinelConfig) -> Arc<Self> {
        Arc::new(Self {
            config,
            machine: Mutex::new(BootMachine::default()),
            model: Mutex::new(None),
            published: Mutex::new(None),
            requests: AtomicU64::new(0),
            simulated: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The current state.
    pub fn state(&self) -> BootState {
        self.machine
            .lock()
            .map(|m| m.state().clone())
            .unwrap_or(BootState::Failed {
                code: "internal".into(),
                detail: "state lock poisoned".into(),
            })
    }

    /// The decrypted model, once Ready.
    pub fn model(&self) -> Option<Arc<Model>> {
        self.model.lock().ok().and_then(|m| m.clone())
    }

    fn go(&self, next: BootState) {
        if let Ok(mut m) = self.machine.lock() {
            if let Err(e) = m.transition(next) {
                tracing::error!(error = %e, "boot state machine refused a transition");
            }
        }
    }

    fn fail(&self, e: StepError) {
        let (code, detail) = match e {
            StepError::Fatal { code, detail } => (code, detail),
            StepError::Transient(d) => ("unavailable".to_owned(), d),
        };
        self.withdraw();
        self.go(BootState::Failed { code, detail });
    }

    /// Boots to Ready (or Failed): keys, attestation, key release through the relay,
    /// hydrate, decrypt.
    pub async fn boot(self: Arc<Self>, provider: Arc<dyn AttestationProvider>) {
        let keys = match SentinelKeys::generate() {
            Ok(keys) => keys,
            Err(e) => {
                return self.fail(StepError::Fatal {
                    code: "internal".into(),
                    detail: e.to_string(),
                });
            }
        };
        self.simulated.store(provider.simulated(), Ordering::SeqCst);
        if provider.simulated() {
            tracing::warn!(
                provider = provider.name(),
                "SIMULATED TEE: this sentinel has no hardware protection"
            );
        }
        self.go(BootState::Attest);
        // A first evidence request checks that the TEE answers before talking to anyone.
        let probe_binding = binding_for(&keys, &self.config.pins, &[0; 32]);
        let p = provider.clone();
        match tokio::task::spawn_blocking(move || p.evidence(&probe_binding)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return self.fail(StepError::Fatal {
                    code: "attestation".into(),
                    detail: e.to_string(),
                });
            }
            Err(e) => {
                return self.fail(StepError::Fatal {
                    code: "internal".into(),
                    detail: e.to_string(),
                });
            }
        }
        self.go(BootState::Authorize);
        let c = &self.config;
        let released = match c
            .backoff
            .retry_async("key release", || self.release(&provider, &keys))
            .await
        {
            Ok(r) => r,
            Err(e) => return self.fail(e),
        };
        if !self.bring_up(&released).await {
            return;
        }
        if let Some(every) = c.reauthorize_every {
            self.reauthorize(provider, &keys, every).await;
        }
    }

    /// One key release through the relay's egress.
    async fn release(
        &self,
        provider: &Arc<dyn AttestationProvider>,
        keys: &SentinelKeys,
    ) -> Result<Released, StepError> {
        let c = &self.config;
        authorize(
            provider.clone(),
            keys,
            &c.egress,
            &c.kms,
            &c.pins,
            &c.egress_limits,
            &c.asset,
            &c.contract,
        )
        .await
    }

    /// Hydrate, Decrypt and Ready with a released key; false when that failed (the state
    /// is then Failed).
    async fn bring_up(&self, released: &Released) -> bool {
        let c = &self.config;
        tracing::info!(key_id = %released.key.key_id(), "data key released");
        self.go(BootState::Hydrate);
        // Hydrate verifies and decrypts every segment as it lands (see `hydrate`).
        let hydrated = match fetch_manifest(&c.bundles, released, &c.hydrate).await {
            Ok(manifest) => fetch_files(&c.bundles, released, manifest, &c.hydrate).await,
            Err(e) => Err(e),
        };
        let model = match hydrated {
            Ok(model) => model,
            Err(e) => {
                self.fail(e);
                return false;
            }
        };
        // Decrypt: every segment verified; the plaintext is pinned and published.
        self.go(BootState::Decrypt);
        let mut model = model;
        lock(&model);
        match publish(&c.output, &model.files) {
            Ok(published) => {
                if matches!(c.output, ModelOutput::Tmpfs(_)) {
                    // The runtime reads the tmpfs files; no second copy stays here.
                    model.files = Arc::default();
                }
                if let Ok(mut slot) = self.published.lock() {
                    *slot = Some(published);
                }
            }
            Err(e) => {
                self.fail(StepError::Fatal {
                    code: "model_output".into(),
                    detail: e.to_string(),
                });
                return false;
            }
        }
        if let Ok(mut slot) = self.model.lock() {
            *slot = Some(Arc::new(model));
        }
        self.go(BootState::Ready);
        true
    }

    /// Asks the broker again every `every`, with fresh evidence. A denial (the contract
    /// revoked or expired, the policy changed) suspends a Ready sentinel: the model is
    /// dropped (and zeroized) and nothing is served. A Suspended sentinel that is granted
    /// the key again hydrates anew and returns to Ready. An unreachable broker changes
    /// nothing (it is logged): the host can always cut the sentinel off, and suspending on
    /// that would only hand it an easier lever.
    async fn reauthorize(
        &self,
        provider: Arc<dyn AttestationProvider>,
        keys: &SentinelKeys,
        every: std::time::Duration,
    ) {
        loop {
            tokio::time::sleep(every).await;
            let result = self.release(&provider, keys).await;
            let suspended = matches!(self.state(), BootState::Suspended { .. });
            match (result, suspended) {
                (Ok(_), false) => tracing::debug!("re-authorized"),
                (Ok(released), true) => {
                    tracing::info!("authorized again after suspension; hydrating anew");
                    self.go(BootState::Authorize);
                    if !self.bring_up(&released).await {
                        return;
                    }
                }
                (Err(StepError::Transient(e)), _) => {
                    tracing::warn!(error = %e, "re-authorization did not reach the broker; state unchanged");
                }
                (Err(StepError::Fatal { code, detail }), false) => {
                    tracing::warn!(%code, %detail, "re-authorization denied: suspending");
                    self.withdraw();
                    self.go(BootState::Suspended { reason: code });
                }
                (Err(StepError::Fatal { code, .. }), true) => {
                    tracing::debug!(%code, "still denied");
                }
            }
        }
    }

    /// Drops the model and withdraws what the runtime was given (zeroized, wiped): on
    /// suspension, failure and shutdown.
    pub fn withdraw(&self) {
        if let Ok(mut slot) = self.published.lock() {
            *slot = None;
        }
        if let Ok(mut slot) = self.model.lock() {
            *slot = None;
        }
    }

    /// The health API.
    pub fn router(self: Arc<Self>) -> Router {
        let counted = {
            let s = self.clone();
            axum::middleware::from_fn(move |req, next: axum::middleware::Next| {
                let s = s.clone();
                async move {
                    s.requests.fetch_add(1, Ordering::Relaxed);
                    next.run(req).await
                }
            })
        };
        let (h, r, st) = (self.clone(), self.clone(), self);
        Router::new()
            .route(
                "/health",
                get(move || async move { code(h.state().healthy(), h.state().name()) }),
            )
            .route(
                "/readiness",
                get(move || async move { code(r.state().ready_for_traffic(), r.state().name()) }),
            )
            .route("/status", get(move || async move { st.status() }))
            .layer(counted)
    }

    fn status(&self) -> Response {
        let (state, uptime) = self
            .machine
            .lock()
            .map(|m| (m.state().clone(), m.uptime().as_secs()))
            .unwrap_or((BootState::Boot, 0));
        let (reason, detail) = match &state {
            BootState::Failed { code, detail } => (Some(code.clone()), Some(detail.clone())),
            BootState::Suspended { reason } => (Some(reason.clone()), None),
            _ => (None, None),
        };
        axum::Json(json!({
            "state": state.name(),
            "reason": reason,
            "detail": detail,
            "asset": self.config.asset,
            "contract": self.config.contract,
            "uptime_secs": uptime,
            "requests": self.requests.load(Ordering::Relaxed),
            "simulated": self.simulated.load(Ordering::SeqCst),
            "files": self.model().map(|m| m.manifest.manifest().files.len()),
        }))
        .into_response()
    }
}

fn code(ok: bool, state: &'static str) -> Response {
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, state).into_response()
}
