//! The sentinel's boot state machine and its retry policy.
//!
//! ```text
//! Boot -> Attest -> Authorize -> Hydrate -> Decrypt -> Ready(model)
//!                                                      Ready -> Suspended   (a denial at re-authorization, or none succeeded within the grace period)
//!                                                  Suspended -> Authorize   (re-authorization granted again)
//!                         Authorize | Hydrate | Decrypt -> Suspended        (resuming failed; it keeps asking)
//! any state but Failed -> Failed(code)               (terminal: restart the sentinel)
//! any state -> Stopped                               (shutdown)
//! ```
//!
//! Each state carries its own data: `Ready` holds the model being served (and what the
//! runtime was given), so leaving `Ready` drops (and zeroizes, and withdraws) it; a
//! `Failed` or `Suspended` state holds its typed [`FailureCode`]. A transition the machine
//! does not allow is an [`InvalidTransition`] error for the caller, never a log line.
//! Transient failures (the broker or relay unreachable, a 5xx) are retried with capped
//! exponential back-off and jitter; denials and tampering are fatal at once, with their
//! reason. Every transition is logged.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::failure::FailureCode;
pub use crate::failure::StepError;
use crate::hydrate::Model;
use crate::output::Published;

/// What a Ready sentinel serves: the model, the engine that answers with it, and what the
/// runtime was given (withdrawn, wiped, when this is dropped).
pub struct Serving {
    /// The ready signal, if one is configured (first: removed before the files go).
    pub signal: Option<crate::ready_signal::ReadySignal>,
    /// The decrypted model (its files are empty once handed to a tmpfs runtime).
    pub model: Arc<Model>,
    /// What answers the API requests.
    pub engine: Arc<dyn crate::engine::Engine>,
    /// What the runtime was given.
    pub published: Published,
}

impl fmt::Debug for Serving {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Serving({:?})", self.model)
    }
}

/// A boot state, with the data that only exists in it.
#[derive(Clone, Debug)]
pub enum BootState {
    /// Generating keys.
    Boot,
    /// Obtaining evidence.
    Attest,
    /// Releasing the data key from the broker.
    Authorize,
    /// Fetching the sealed bundle.
    Hydrate,
    /// Decrypting the weights into memory.
    Decrypt,
    /// Serving this model.
    Ready(Arc<Serving>),
    /// Not serving (a denial at re-authorization, or none succeeded within the grace
    /// period); a later grant resumes it.
    Suspended {
        /// Why.
        code: FailureCode,
        /// What happened.
        detail: String,
    },
    /// Stopped for good.
    Failed {
        /// Why.
        code: FailureCode,
        /// What happened.
        detail: String,
    },
    /// Shut down.
    Stopped,
}

impl PartialEq for BootState {
    /// States are equal when they are the same state with the same reason (Ready: the
    /// same model).
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Ready(a), Self::Ready(b)) => Arc::ptr_eq(a, b),
            (Self::Suspended { code: a, .. }, Self::Suspended { code: b, .. })
            | (Self::Failed { code: a, .. }, Self::Failed { code: b, .. }) => a == b,
            _ => std::mem::discriminant(self) == std::mem::discriminant(other),
        }
    }
}

impl BootState {
    /// The state's name as `/status` reports it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Boot => "Boot",
            Self::Attest => "Attest",
            Self::Authorize => "Authorize",
            Self::Hydrate => "Hydrate",
            Self::Decrypt => "Decrypt",
            Self::Ready(_) => "Ready",
            Self::Suspended { .. } => "Suspended",
            Self::Failed { .. } => "Failed",
            Self::Stopped => "Stopped",
        }
    }

    /// `/health`: 200 only when Ready.
    pub fn healthy(&self) -> bool {
        matches!(self, Self::Ready(_))
    }

    /// `/readiness`: 200 from Decrypt on (the weights are being loaded or served).
    pub fn ready_for_traffic(&self) -> bool {
        matches!(self, Self::Decrypt | Self::Ready(_))
    }

    /// The model being served, when Ready.
    pub fn model(&self) -> Option<&Arc<Model>> {
        self.serving().map(|s| &s.model)
    }

    /// What a Ready state serves.
    pub fn serving(&self) -> Option<&Arc<Serving>> {
        match self {
            Self::Ready(serving) => Some(serving),
            _ => None,
        }
    }

    /// The reason of a Failed or Suspended state.
    pub fn reason(&self) -> Option<(FailureCode, &str)> {
        match self {
            Self::Suspended { code, detail } | Self::Failed { code, detail } => {
                Some((*code, detail))
            }
            _ => None,
        }
    }

    fn may_become(&self, next: &BootState) -> bool {
        use BootState::*;
        match (self, next) {
            (Stopped, _) => false,
            (_, Stopped) => true,
            (Failed { .. }, _) => false,
            (_, Failed { .. }) => true,
            (Boot, Attest)
            | (Attest, Authorize)
            | (Authorize, Hydrate)
            | (Hydrate, Decrypt)
            | (Decrypt, Ready(_)) => true,
            (Ready(_) | Authorize | Hydrate | Decrypt, Suspended { .. })
            | (Suspended { .. }, Authorize) => true,
            _ => false,
        }
    }
}

impl fmt::Display for BootState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Suspended { code, detail } => write!(f, "Suspended ({code}: {detail})"),
            Self::Failed { code, detail } => write!(f, "Failed ({code}: {detail})"),
            other => f.write_str(other.name()),
        }
    }
}

/// A transition the state machine does not allow.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid boot transition {from} -> {to}")]
pub struct InvalidTransition {
    /// The current state.
    pub from: String,
    /// The refused state.
    pub to: String,
}

/// The state and its history.
#[derive(Debug)]
pub struct BootMachine {
    state: BootState,
    since: Instant,
    started: Instant,
    history: Vec<(&'static str, Duration)>,
}

impl Default for BootMachine {
    fn default() -> Self {
        let now = Instant::now();
        Self {
            state: BootState::Boot,
            since: now,
            started: now,
            history: Vec::new(),
        }
    }
}

impl BootMachine {
    /// The current state.
    pub fn state(&self) -> &BootState {
        &self.state
    }

    /// Time since boot.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Past states (by name) and how long each lasted.
    pub fn history(&self) -> &[(&'static str, Duration)] {
        &self.history
    }

    /// Moves to `next` if the machine allows it; logs the transition. Returns the state
    /// left, for the caller to drop with its data (leaving Ready withdraws and wipes the
    /// model), outside any lock it holds.
    #[must_use = "dropping the state left wipes what it held"]
    pub fn transition(&mut self, next: BootState) -> Result<BootState, InvalidTransition> {
        if !self.state.may_become(&next) {
            return Err(InvalidTransition {
                from: self.state.to_string(),
                to: next.to_string(),
            });
        }
        let spent = self.since.elapsed();
        match &next {
            BootState::Failed { code, detail } => {
                tracing::error!(from = %self.state, %code, detail, "sentinel failed")
            }
            BootState::Suspended { code, detail } => {
                tracing::warn!(from = %self.state, %code, detail, "sentinel suspended")
            }
            other => {
                tracing::info!(from = %self.state, to = %other, spent_ms = spent.as_millis() as u64, "boot transition")
            }
        }
        let previous = std::mem::replace(&mut self.state, next);
        self.history.push((previous.name(), spent));
        self.since = Instant::now();
        Ok(previous)
    }
}

/// Capped exponential back-off with jitter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// First delay.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
    /// Attempts before giving up (the first included).
    pub attempts: u32,
}

impl Default for Backoff {
    /// 500 ms doubling to at most 30 s, 10 attempts.
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            attempts: 10,
        }
    }
}

impl Backoff {
    /// The delay before retry number `retry` (0-based): doubling, capped, plus up to 25 %
    /// jitter (still capped).
    pub fn delay(&self, retry: u32) -> Duration {
        let base = self
            .initial
            .saturating_mul(1u32 << retry.min(20))
            .min(self.max);
        // Jitter only spreads retries out; it protects no secret. Should the generator
        // fail, the retry waits the base delay, and the failure is logged.
        let mut r = [0u8; 2];
        if aws_lc_rs::rand::fill(&mut r).is_err() {
            tracing::warn!("random number generator failed: retrying without jitter");
            return base;
        }
        let jitter = base.mul_f64(f64::from(u16::from_le_bytes(r)) / f64::from(u16::MAX) * 0.25);
        (base + jitter).min(self.max)
    }

    /// The retry state of one operation named `what`.
    pub fn retrier<'a>(&self, what: &'a str) -> Retrier<'a> {
        Retrier {
            backoff: *self,
            what,
            failures: 0,
        }
    }

    /// Runs `step` until it succeeds, fails fatally, or the attempts run out; `sleep`
    /// waits between attempts.
    pub fn retry<T>(
        &self,
        what: &str,
        mut step: impl FnMut() -> Result<T, StepError>,
        mut sleep: impl FnMut(Duration),
    ) -> Result<T, StepError> {
        let mut retry = self.retrier(what);
        loop {
            match step() {
                Err(StepError::Transient(e)) => sleep(retry.next_wait(&e)?),
                other => return other,
            }
        }
    }

    /// [`Self::retry`] for async steps, sleeping on the tokio timer.
    pub async fn retry_async<T, F, Fut>(&self, what: &str, mut step: F) -> Result<T, StepError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StepError>>,
    {
        let mut retry = self.retrier(what);
        loop {
            match step().await {
                Err(StepError::Transient(e)) => tokio::time::sleep(retry.next_wait(&e)?).await,
                other => return other,
            }
        }
    }
}

/// The retry decision of one operation, shared by every retry loop (sync and async):
/// after each transient failure, [`Retrier::next_wait`] says how long to wait, or gives up
/// with a fatal `unavailable` error once the attempts are spent.
#[derive(Debug)]
pub struct Retrier<'a> {
    backoff: Backoff,
    what: &'a str,
    failures: u32,
}

impl Retrier<'_> {
    /// Records a transient failure `error`: the wait before the next attempt, or the fatal
    /// error when no attempt is left.
    pub fn next_wait(&mut self, error: &str) -> Result<Duration, StepError> {
        self.failures += 1;
        let attempts = self.backoff.attempts.max(1);
        if self.failures >= attempts {
            return Err(StepError::Fatal {
                code: FailureCode::Unavailable,
                detail: format!("{}: gave up after {attempts} attempts: {error}", self.what),
            });
        }
        let wait = self.backoff.delay(self.failures - 1);
        tracing::warn!(
            what = self.what,
            attempt = self.failures,
            wait_ms = wait.as_millis() as u64,
            error,
            "transient failure; retrying"
        );
        Ok(wait)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code
    use super::*;
    use trustbridge_protocol::key_release::DenialCode;

    fn serving() -> BootState {
        use trustbridge_protocol::bundle::{
            AssetId, BundlePath, Manifest, ProviderSigningKey, SignedManifest, seal_file,
        };
        use trustbridge_protocol::sealed::{DataKey, SegmentSize};
        let provider = ProviderSigningKey::generate().unwrap();
        let key = DataKey::generate().unwrap();
        let asset = AssetId::new("a/b@v1").unwrap();
        let entry = seal_file(
            &key,
            &asset,
            BundlePath::new("w.bin").unwrap(),
            SegmentSize::default(),
            &b"w"[..],
            &mut Vec::new(),
        )
        .unwrap();
        let manifest = Manifest::new(asset, 0, provider.public(), &key, vec![entry]).unwrap();
        BootState::Ready(Arc::new(Serving {
            signal: None,
            model: Arc::new(Model {
                manifest: SignedManifest::sign(manifest, &provider).unwrap(),
                files: Arc::default(),
            }),
            engine: Arc::new(crate::engine::RuntimeEngine::new(Default::default())),
            published: Published::default(),
        }))
    }

    fn failed(code: FailureCode) -> BootState {
        BootState::Failed {
            code,
            detail: "y".into(),
        }
    }

    #[test]
    fn boot_sequence_and_invalid_transitions() {
        let mut m = BootMachine::default();
        for s in [
            BootState::Attest,
            BootState::Authorize,
            BootState::Hydrate,
            BootState::Decrypt,
            serving(),
        ] {
            assert!(!m.state().ready_for_traffic() || matches!(m.state(), BootState::Decrypt));
            drop(m.transition(s).unwrap());
        }
        assert!(m.state().healthy() && m.state().ready_for_traffic());
        assert!(m.state().model().is_some(), "Ready holds the model");
        assert_eq!(m.history().len(), 5);
        let left = m
            .transition(BootState::Suspended {
                code: FailureCode::Denied(DenialCode::ContractRevoked),
                detail: "revoked".into(),
            })
            .unwrap();
        assert!(
            left.model().is_some(),
            "the state left holds the model, to drop"
        );
        drop(left);
        assert!(!m.state().healthy() && m.state().model().is_none());
        assert_eq!(
            m.state().reason().map(|r| r.0.as_str()),
            Some("contract_revoked")
        );
        drop(m.transition(BootState::Authorize).unwrap());
        let err = m.transition(serving()).unwrap_err();
        assert_eq!(err.from, "Authorize", "Authorize cannot skip to Ready");
        // Resuming can fail on the way back (a model the relay has not mirrored yet):
        // the sentinel stays Suspended and keeps asking.
        drop(m.transition(BootState::Hydrate).unwrap());
        drop(
            m.transition(BootState::Suspended {
                code: FailureCode::ManifestMismatch,
                detail: "not mirrored yet".into(),
            })
            .unwrap(),
        );
        drop(m.transition(BootState::Authorize).unwrap());
        drop(m.transition(failed(FailureCode::Internal)).unwrap());
        assert!(m.transition(BootState::Boot).is_err(), "Failed is terminal");
        assert!(m.transition(failed(FailureCode::Attestation)).is_err());
        drop(m.transition(BootState::Stopped).unwrap());
        assert!(
            m.transition(failed(FailureCode::Internal)).is_err(),
            "Stopped is final"
        );
        let mut fresh = BootMachine::default();
        assert!(
            fresh.transition(BootState::Hydrate).is_err(),
            "no skipping attestation"
        );
        assert!(
            fresh.transition(serving()).is_err(),
            "no model without the boot sequence"
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            attempts: 5,
        };
        for i in 0..10 {
            let d = b.delay(i);
            let base = Duration::from_millis(100)
                .saturating_mul(1 << i)
                .min(Duration::from_secs(1));
            assert!(
                d >= base && d <= Duration::from_secs(1) && d <= base.mul_f64(1.25),
                "retry {i}: {d:?}"
            );
        }
    }

    #[test]
    fn retry_distinguishes_transient_from_fatal() {
        let b = Backoff {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(10),
            attempts: 4,
        };
        let mut calls = 0;
        let mut slept = Vec::new();
        let r = b.retry(
            "broker",
            || {
                calls += 1;
                if calls < 3 {
                    Err(StepError::Transient("connection refused".into()))
                } else {
                    Ok(calls)
                }
            },
            |d| slept.push(d),
        );
        assert_eq!((r, slept.len()), (Ok(3), 2));
        let mut calls = 0;
        let r: Result<(), _> = b.retry(
            "broker",
            || {
                calls += 1;
                Err(StepError::Fatal {
                    code: FailureCode::Denied(DenialCode::MeasurementMismatch),
                    detail: "pcr0".into(),
                })
            },
            |_| {},
        );
        assert_eq!(calls, 1, "a denial is not retried");
        assert!(matches!(r, Err(StepError::Fatal { code, .. }) if code == "measurement_mismatch"));
        let mut calls = 0;
        let r: Result<(), _> = b.retry(
            "broker",
            || {
                calls += 1;
                Err(StepError::Transient("down".into()))
            },
            |_| {},
        );
        assert_eq!(calls, 4);
        assert!(matches!(r, Err(StepError::Fatal { code, .. }) if code == "unavailable"));
    }
}
