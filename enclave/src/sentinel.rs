//! The running sentinel: the boot task that drives the state machine, re-authorization,
//! and the health API.
//!
//! | route | |
//! |---|---|
//! | `GET /health` | 200 when Ready, 503 otherwise |
//! | `GET /readiness` | 200 from Decrypt on, 503 before |
//! | `GET /status` | JSON: state, reason and detail (Failed, Suspended), asset, contract, uptime, requests |
//!
//! and the Oblivious HTTP gateway ([`crate::gateway`]) once the boot-time keys exist.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::time::Instant;
use trustbridge_transport::Endpoint;

use crate::attestation::AttestationProvider;
use crate::authorize::{EgressLimits, KmsTarget, Pins, Released, authorize, binding_for};
use crate::boot::{Backoff, BootMachine, BootState, InvalidTransition, Serving, StepError};
use crate::failure::FailureCode;
use crate::gateway::{Gateway, GatewayConfig};
use crate::hydrate::{
    HydrateConfig, HydrateProgress, Model, fetch_files_tracked, fetch_manifest, lock,
};
use crate::keys::SentinelKeys;
use crate::output::{ModelOutput, SwapPolicy, publish};
use crate::ready_signal::ReadySignal;
pub use crate::reauthorization::Reauthorization;

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
    /// Re-authorization once Ready (the operator's bounds; the broker's lease bounds it
    /// too).
    pub reauthorize: Reauthorization,
    /// Where the decrypted model goes (runtime-proxy mode).
    pub output: ModelOutput,
    /// Whether tmpfs output may be used while swap is active.
    pub swap: SwapPolicy,
    /// A file that exists exactly while Ready (`TB_READY_SIGNAL`), for what starts an
    /// external runtime.
    pub ready_signal: Option<std::path::PathBuf>,
    /// The Oblivious HTTP gateway: runtime, limits, attestation publishing.
    pub gateway: GatewayConfig,
}

/// A sentinel: its state (which holds the model once Ready) and counters.
pub struct Sentinel {
    config: SentinelConfig,
    machine: Mutex<BootMachine>,
    requests: AtomicU64,
    simulated: AtomicBool,
    gateway: OnceLock<Arc<Gateway>>,
    /// SHA-256 of the policy the broker's latest release was decided under.
    policy: Mutex<Option<[u8; 32]>>,
    /// How far the latest hydration got.
    hydration: HydrateProgress,
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

/// A failure that ends the boot: the step's error, or a transition the machine refused.
enum Stop {
    Step(StepError),
    Refused(InvalidTransition),
}

impl Stop {
    /// The code and detail a Failed or Suspended state reports.
    fn reason(self) -> (FailureCode, String) {
        match self {
            Self::Step(StepError::Fatal { code, detail }) => (code, detail),
            Self::Step(StepError::Transient(d)) => (FailureCode::Unavailable, d),
            Self::Refused(e) => (FailureCode::Internal, e.to_string()),
        }
    }
}

impl From<StepError> for Stop {
    fn from(e: StepError) -> Self {
        Self::Step(e)
    }
}

impl From<InvalidTransition> for Stop {
    fn from(e: InvalidTransition) -> Self {
        Self::Refused(e)
    }
}

impl Sentinel {
    /// A sentinel in state Boot.
    pub fn new(config: SentinelConfig) -> Arc<Self> {
        Arc::new(Self {
            config,
            machine: Mutex::new(BootMachine::default()),
            requests: AtomicU64::new(0),
            simulated: AtomicBool::new(false),
            gateway: OnceLock::new(),
            policy: Mutex::new(None),
            hydration: HydrateProgress::default(),
        })
    }

    /// The current state.
    pub fn state(&self) -> BootState {
        self.machine
            .lock()
            .map(|m| m.state().clone())
            .unwrap_or(BootState::Failed {
                code: FailureCode::Internal,
                detail: "state lock poisoned".into(),
            })
    }

    /// The decrypted model, while Ready.
    pub fn model(&self) -> Option<Arc<Model>> {
        self.state().model().cloned()
    }

    /// The model and the engine answering with it, while Ready.
    pub fn serving(&self) -> Option<Arc<Serving>> {
        self.state().serving().cloned()
    }

    /// SHA-256 of the key-release policy of the broker's latest release (signed by the
    /// broker; the receipts' `policy_digest`), once a release was granted.
    pub fn policy_digest(&self) -> Option<[u8; 32]> {
        self.policy.lock().ok().and_then(|p| *p)
    }

    /// The Oblivious HTTP gateway, once the boot-time keys exist.
    pub fn gateway(&self) -> Option<&Arc<Gateway>> {
        self.gateway.get()
    }

    /// Moves the machine to `next`; a refused transition is an error. The state left is
    /// dropped (leaving Ready wipes the model and what the runtime was given) after the
    /// lock is released, so `/health` and `/status` answer meanwhile (not Ready).
    fn go(&self, next: BootState) -> Result<(), InvalidTransition> {
        let left = {
            let mut machine = self.machine.lock().map_err(|_| InvalidTransition {
                from: "(poisoned)".into(),
                to: next.name().into(),
            })?;
            machine.transition(next)?
        };
        if let BootState::Ready(serving) = &left {
            // Requests in flight hold the engine: they stop now, not when they end.
            serving.engine.stop();
        }
        drop(left);
        Ok(())
    }

    /// Ends in Failed with the reason of `stop`.
    fn fail(&self, stop: Stop) {
        let (code, detail) = stop.reason();
        if let Err(e) = self.go(BootState::Failed { code, detail }) {
            // Only Stopped and Failed refuse Failed: nothing is served either way.
            tracing::warn!(error = %e, "not marked Failed");
        }
    }

    /// Boots to Ready (or Failed): keys, attestation, key release through the relay,
    /// hydrate, decrypt; then re-authorizes as configured.
    pub async fn boot(self: Arc<Self>, provider: Arc<dyn AttestationProvider>) {
        // Key release, re-authorization and the gateway's bundles ask for evidence
        // concurrently; the TEE's interfaces serve one request at a time.
        let provider: Arc<dyn AttestationProvider> =
            Arc::new(crate::attestation::Serialized::new(provider));
        self.simulated.store(provider.simulated(), Ordering::SeqCst);
        if provider.simulated() {
            tracing::warn!(
                provider = provider.name(),
                "SIMULATED TEE: this sentinel has no hardware protection"
            );
        }
        let (keys, lease) = match self.first_boot(&provider).await {
            Ok(booted) => booted,
            Err(stop) => return self.fail(stop),
        };
        self.reauthorize(provider, &keys, lease).await;
    }

    /// Boot to Ready; the keys, for re-authorization, and the release's lease.
    async fn first_boot(
        &self,
        provider: &Arc<dyn AttestationProvider>,
    ) -> Result<(Arc<SentinelKeys>, Lease), Stop> {
        let keys = Arc::new(SentinelKeys::generate().map_err(|e| StepError::Fatal {
            code: FailureCode::Internal,
            detail: e.to_string(),
        })?);
        self.go(BootState::Attest)?;
        // A first evidence request checks that the TEE answers before talking to anyone.
        let probe_binding = binding_for(&keys, &self.config.pins, &[0; 32]);
        let p = provider.clone();
        tokio::task::spawn_blocking(move || p.evidence(&probe_binding))
            .await
            .map_err(|e| StepError::Fatal {
                code: FailureCode::Internal,
                detail: e.to_string(),
            })?
            .map_err(|e| StepError::Fatal {
                code: FailureCode::Attestation,
                detail: e.to_string(),
            })?;
        // The gateway serves its keys and attestation from now on, requests once Ready.
        let gateway = Gateway::new(
            keys.clone(),
            self.config.pins,
            provider.clone(),
            self.config.gateway.clone(),
        );
        if self.gateway.set(Arc::new(gateway)).is_err() {
            return Err(StepError::Fatal {
                code: FailureCode::Internal,
                detail: "booted twice".into(),
            }
            .into());
        }
        self.go(BootState::Authorize)?;
        let (released, lease) = self.release_with_retries(provider, &keys).await?;
        let lease = self.bring_up(provider, &keys, &released, lease).await?;
        Ok((keys, lease))
    }

    /// A key release, transient failures retried; with its lease, counted from when it
    /// was asked for (the relay may delay the answer, not stretch the lease).
    async fn release_with_retries(
        &self,
        provider: &Arc<dyn AttestationProvider>,
        keys: &SentinelKeys,
    ) -> Result<(Released, Lease), StepError> {
        self.config
            .backoff
            .retry_async("key release", || async {
                let asked = Instant::now();
                let released = self.release(provider, keys).await?;
                let lease = Lease::new(asked, &released);
                Ok((released, lease))
            })
            .await
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
        .inspect(|released| {
            // The policy the broker decided under now, for the receipts that follow
            // (a re-authorization under a replaced policy names the new one).
            if let Ok(mut p) = self.policy.lock() {
                *p = Some(released.policy_sha256);
            }
        })
    }

    /// Hydrate, Decrypt and Ready with a released key; returns the lease in force.
    ///
    /// Nothing is published on a lease that has run out: when hydrating took longer than
    /// the release's lease (a large model, or a relay that trickles it), the broker is
    /// asked again before the plaintext is handed to anyone, and must release the same
    /// model.
    async fn bring_up(
        &self,
        provider: &Arc<dyn AttestationProvider>,
        keys: &SentinelKeys,
        released: &Released,
        lease: Lease,
    ) -> Result<Lease, Stop> {
        let c = &self.config;
        tracing::info!(key_id = %released.key.key_id(), "data key released");
        self.go(BootState::Hydrate)?;
        // Hydrate verifies and decrypts every segment as it lands (see `hydrate`).
        let manifest = fetch_manifest(&c.bundles, released, &c.hydrate).await?;
        let mut model =
            fetch_files_tracked(&c.bundles, released, manifest, &c.hydrate, &self.hydration)
                .await?;
        // Decrypt: every segment verified; the plaintext is pinned and published.
        self.go(BootState::Decrypt)?;
        let lease = if lease.expired() {
            tracing::info!(
                "the release's lease ran out while hydrating: asking the broker again before publishing"
            );
            let (again, lease) = self.release_with_retries(provider, keys).await?;
            if serving_other_than(&model, &again) {
                return Err(StepError::Fatal {
                    code: FailureCode::AssetChanged,
                    detail: "the broker released another model while this one was hydrating".into(),
                }
                .into());
            }
            lease
        } else {
            lease
        };
        lock(&model, &c.swap).map_err(|e| StepError::Fatal {
            code: FailureCode::ModelOutput,
            detail: e.to_string(),
        })?;
        // The engine, from the plaintext in memory (the built-in engine's models load
        // here, before anything is served).
        let (choice, id, files) = (
            c.gateway.engine.clone(),
            c.asset.clone(),
            model.files.clone(),
        );
        let engine = tokio::task::spawn_blocking(move || choice.start(&id, &files))
            .await
            .map_err(|e| StepError::Fatal {
                code: FailureCode::Internal,
                detail: e.to_string(),
            })?
            .map_err(|e| StepError::Fatal {
                code: FailureCode::ModelLoad,
                detail: e.to_string(),
            })?;
        if matches!(c.gateway.engine, crate::engine::EngineChoice::BuiltIn(_)) {
            // The engine holds its own copy: the decrypted buffers are zeroized now rather
            // than kept beside it.
            model.files = Arc::default();
        }
        let published =
            publish(&c.output, &model.files, &c.swap).map_err(|e| StepError::Fatal {
                code: FailureCode::ModelOutput,
                detail: e.to_string(),
            })?;
        if matches!(c.output, ModelOutput::Tmpfs(_)) {
            // The runtime reads the tmpfs files; no second copy stays here.
            model.files = Arc::default();
        }
        let signal = match &c.ready_signal {
            None => None,
            Some(path) => {
                let contents = json!({
                    "state": "Ready",
                    "asset": c.asset,
                    "manifest_sha256": hex::encode(model.manifest.digest()),
                    "model_output": c.output.to_string(),
                    "files": model.manifest.manifest().files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
                });
                Some(
                    ReadySignal::raise(path, &contents).map_err(|e| StepError::Fatal {
                        code: FailureCode::ModelOutput,
                        detail: format!("cannot write the ready signal {}: {e}", path.display()),
                    })?,
                )
            }
        };
        self.go(BootState::Ready(Arc::new(Serving {
            signal,
            model: Arc::new(model),
            engine,
            published,
        })))?;
        Ok(lease)
    }

    /// Asks the broker again, with fresh evidence, at the interval in force
    /// ([`Reauthorization::under`] the last release's lease).
    ///
    /// - A denial, or any answer the pinned broker did not sign, suspends a Ready
    ///   sentinel: the model is dropped (and zeroized) and what the runtime was given is
    ///   wiped.
    /// - Anything else that fails (no answer, a 502, a held tunnel; each attempt bounded
    ///   by the egress time limits) is retried sooner; once no re-authorization has
    ///   succeeded for the grace period in force, a Ready sentinel is suspended
    ///   (`reauthorization_overdue`), even while it waits or an attempt hangs. The relay
    ///   can therefore not keep a revoked sentinel serving by hiding the broker's answer,
    ///   nor the host by configuring it not to ask: the broker's lease bounds both.
    /// - A release of another model (a new manifest or key) replaces the one served.
    /// - A Suspended sentinel keeps asking; granted the key again, it hydrates anew and
    ///   returns to Ready.
    async fn reauthorize(
        &self,
        provider: Arc<dyn AttestationProvider>,
        keys: &SentinelKeys,
        mut lease: Lease,
    ) {
        let mut retry = self.config.backoff.retrier("re-authorization");
        let (mut every, mut grace) = self.config.reauthorize.under(lease.length);
        let mut wait = every;
        loop {
            // A grace too long to represent is no grace at all (fail closed).
            let deadline = lease.granted.checked_add(grace).unwrap_or(lease.granted);
            let overdue = |sentinel: &Self| {
                sentinel.suspend(
                    FailureCode::ReauthorizationOverdue,
                    format!(
                        "no re-authorization succeeded for {} ms (the grace period in force)",
                        grace.as_millis()
                    ),
                );
            };
            // Wait for the next attempt, but not past the deadline while serving.
            let wake = Instant::now().checked_add(wait).unwrap_or(deadline);
            if deadline < wake && self.state().healthy() {
                tokio::time::sleep_until(deadline).await;
                overdue(self);
            }
            tokio::time::sleep_until(wake).await;
            let asked = Instant::now();
            let attempt = self.release(&provider, keys);
            tokio::pin!(attempt);
            let result = if self.state().healthy() {
                tokio::select! {
                    result = &mut attempt => result,
                    () = tokio::time::sleep_until(deadline) => {
                        overdue(self);
                        attempt.await
                    }
                }
            } else {
                attempt.await
            };
            match result {
                Ok(released) => {
                    lease = Lease::new(asked, &released);
                    (every, grace) = self.config.reauthorize.under(lease.length);
                    retry = self.config.backoff.retrier("re-authorization");
                    wait = every;
                    if let Some(serving) = self.state().model().cloned() {
                        if serving_other_than(&serving, &released) {
                            self.suspend(
                                FailureCode::AssetChanged,
                                "the broker released another manifest or key: loading it".into(),
                            );
                        } else {
                            tracing::debug!("re-authorized");
                            continue;
                        }
                    }
                    match self.resume(&provider, keys, &released, lease).await {
                        Ok(resumed) => lease = resumed,
                        // Not serving, and it keeps asking: a model the relay has not
                        // mirrored yet, or a hydrate that failed, may succeed next time.
                        Err(stop) => self.suspend_after(stop),
                    }
                }
                Err(StepError::Fatal { code, detail }) => {
                    self.suspend(code, detail);
                    wait = every;
                }
                Err(StepError::Transient(e)) => {
                    if Instant::now() >= deadline {
                        overdue(self);
                    } else {
                        tracing::warn!(error = %e, "re-authorization failed; retrying within the grace period");
                    }
                    // Sooner than the interval, so that several attempts fit in the grace.
                    wait = match retry.next_wait(&e) {
                        Ok(w) => w.min(every),
                        Err(_) => {
                            retry = self.config.backoff.retrier("re-authorization");
                            every
                        }
                    };
                }
            }
        }
    }

    /// Suspends a Ready sentinel with `code` (a Suspended one stays as it is).
    fn suspend(&self, code: FailureCode, detail: String) {
        if !self.state().healthy() {
            tracing::debug!(%code, "still not authorized");
            return;
        }
        if let Err(e) = self.go(BootState::Suspended { code, detail }) {
            tracing::error!(error = %e, "suspension refused");
        }
    }

    /// A resumption that failed on its way back to Ready: Suspended with its reason.
    fn suspend_after(&self, stop: Stop) {
        let (code, detail) = stop.reason();
        if let Err(e) = self.go(BootState::Suspended { code, detail }) {
            tracing::error!(error = %e, "suspension refused");
        }
    }

    /// From Suspended back to Ready with a fresh release; the lease in force.
    async fn resume(
        &self,
        provider: &Arc<dyn AttestationProvider>,
        keys: &SentinelKeys,
        released: &Released,
        lease: Lease,
    ) -> Result<Lease, Stop> {
        tracing::info!("authorized again after suspension; hydrating anew");
        self.go(BootState::Authorize)?;
        self.bring_up(provider, keys, released, lease).await
    }

    /// Stops serving for good (shutdown): the model is dropped and what the runtime was
    /// given is wiped.
    pub fn shut_down(&self) {
        if self.state() == BootState::Stopped {
            return;
        }
        if let Err(e) = self.go(BootState::Stopped) {
            tracing::warn!(error = %e, "not stopped");
        }
    }

    /// The health API.
    pub fn router(self: Arc<Self>) -> Router {
        // Counts every request as it comes in (a plain wrapper around each route: no boxed
        // future and no clone of the route's service per request, as
        // `axum::middleware::from_fn` has).
        let counted = {
            let s = self.clone();
            tower::util::MapRequestLayer::new(move |req: axum::extract::Request| {
                s.requests.fetch_add(1, Ordering::Relaxed);
                req
            })
        };
        let (h, r, gw, st) = (self.clone(), self.clone(), self.clone(), self);
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
            .merge(crate::gateway::routes::routes(gw))
            .layer(counted)
    }

    fn status(&self) -> Response {
        let (state, uptime) = self
            .machine
            .lock()
            .map(|m| (m.state().clone(), m.uptime().as_secs()))
            .unwrap_or((BootState::Boot, 0));
        let (reason, detail) = state
            .reason()
            .map_or((None, None), |(code, detail)| (Some(code), Some(detail)));
        axum::Json(json!({
            "state": state.name(),
            "reason": reason,
            "detail": detail,
            "asset": self.config.asset,
            "contract": self.config.contract,
            "uptime_secs": uptime,
            "requests": self.requests.load(Ordering::Relaxed),
            "simulated": self.simulated.load(Ordering::SeqCst),
            "files": state.model().map(|m| m.manifest.manifest().files.len()),
            "hydrated_bytes": self.hydration.get().0,
            "model_bytes": self.hydration.get().1,
        }))
        .into_response()
    }
}

/// When a release was granted, and for how long.
#[derive(Clone, Copy, Debug)]
struct Lease {
    granted: Instant,
    length: Duration,
}

impl Lease {
    /// The lease of `released`, asked for at `asked`.
    fn new(asked: Instant, released: &Released) -> Self {
        Self {
            granted: asked,
            length: released.lease,
        }
    }

    /// Whether it has run out.
    fn expired(&self) -> bool {
        self.granted
            .checked_add(self.length)
            .is_none_or(|end| Instant::now() >= end)
    }
}

/// Whether `released` names another model than the one being served.
fn serving_other_than(model: &Model, released: &Released) -> bool {
    model.manifest.digest() != released.manifest_sha256
        || model.manifest.manifest().key_id != released.key.key_id()
}

fn code(ok: bool, state: &'static str) -> Response {
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, state).into_response()
}
