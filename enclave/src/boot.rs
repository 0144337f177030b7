//! The sentinel's boot state machine and its retry policy.
//!
//! ```text
//! Boot -> Attest -> Authorize -> Hydrate -> Decrypt -> Ready
//!                                                      Ready -> Suspended   (contract revoked, found by re-authorization)
//!                                                  Suspended -> Authorize   (re-authorization retried)
//! any state but Failed -> Failed(reason)             (terminal: restart the sentinel)
//! ```
//!
//! Transient failures (the broker or relay unreachable, a 5xx) are retried with capped
//! exponential back-off and jitter; denials and tampering are fatal at once, with their
//! reason. Every transition is logged.

use std::fmt;
use std::time::{Duration, Instant};

/// A boot state.
#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// Serving.
    Ready,
    /// The contract was revoked: not serving; re-authorization may resume.
    Suspended {
        /// Why.
        reason: String,
    },
    /// Stopped for good.
    Failed {
        /// A reason code (`measurement_mismatch`, `tampered_bundle`, ...).
        code: String,
        /// What happened.
        detail: String,
    },
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
            Self::Ready => "Ready",
            Self::Suspended { .. } => "Suspended",
            Self::Failed { .. } => "Failed",
        }
    }

    /// `/health`: 200 only when Ready.
    pub fn healthy(&self) -> bool {
        matches!(self, Self::Ready)
    }

    /// `/readiness`: 200 from Decrypt on (the weights are being loaded or served).
    pub fn ready_for_traffic(&self) -> bool {
        matches!(self, Self::Decrypt | Self::Ready)
    }

    fn may_become(&self, next: &BootState) -> bool {
        use BootState::*;
        match (self, next) {
            (Failed { .. }, _) => false,
            (_, Failed { .. }) => true,
            (Boot, Attest)
            | (Attest, Authorize)
            | (Authorize, Hydrate)
            | (Hydrate, Decrypt)
            | (Decrypt, Ready) => true,
            (Ready, Suspended { .. }) | (Suspended { .. }, Authorize) => true,
            _ => false,
        }
    }
}

impl fmt::Display for BootState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Suspended { reason } => write!(f, "Suspended ({reason})"),
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
    history: Vec<(BootState, Duration)>,
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

    /// Past states and how long each lasted.
    pub fn history(&self) -> &[(BootState, Duration)] {
        &self.history
    }

    /// Moves to `next` if the machine allows it; logs the transition.
    pub fn transition(&mut self, next: BootState) -> Result<(), InvalidTransition> {
        if !self.state.may_become(&next) {
            return Err(InvalidTransition {
                from: self.state.to_string(),
                to: next.to_string(),
            });
        }
        let spent = self.since.elapsed();
        match &next {
            BootState::Failed { code, detail } => {
                tracing::error!(from = %self.state, code, detail, "sentinel failed")
            }
            BootState::Suspended { reason } => {
                tracing::warn!(from = %self.state, reason, "sentinel suspended")
            }
            other => {
                tracing::info!(from = %self.state, to = %other, spent_ms = spent.as_millis() as u64, "boot transition")
            }
        }
        let previous = std::mem::replace(&mut self.state, next);
        self.history.push((previous, spent));
        self.since = Instant::now();
        Ok(())
    }
}

/// Why a boot step failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// Worth retrying (unreachable peer, 5xx, timeout).
    #[error("transient: {0}")]
    Transient(String),
    /// Not worth retrying (a denial, tampering): fail with this code.
    #[error("{code}: {detail}")]
    Fatal {
        /// Reason code.
        code: String,
        /// Detail.
        detail: String,
    },
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
                code: "unavailable".into(),
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
    use super::*;

    #[test]
    fn boot_sequence_and_invalid_transitions() {
        let mut m = BootMachine::default();
        for s in [
            BootState::Attest,
            BootState::Authorize,
            BootState::Hydrate,
            BootState::Decrypt,
            BootState::Ready,
        ] {
            assert!(!m.state().ready_for_traffic() || matches!(m.state(), BootState::Decrypt));
            m.transition(s).unwrap();
        }
        assert!(m.state().healthy() && m.state().ready_for_traffic());
        assert_eq!(m.history().len(), 5);
        m.transition(BootState::Suspended {
            reason: "contract_revoked".into(),
        })
        .unwrap();
        assert!(!m.state().healthy());
        m.transition(BootState::Authorize).unwrap();
        assert!(
            m.transition(BootState::Ready).is_err(),
            "Authorize cannot skip to Ready"
        );
        m.transition(BootState::Failed {
            code: "x".into(),
            detail: "y".into(),
        })
        .unwrap();
        assert!(m.transition(BootState::Boot).is_err(), "Failed is terminal");
        assert!(
            m.transition(BootState::Failed {
                code: "a".into(),
                detail: "b".into()
            })
            .is_err()
        );
        let mut fresh = BootMachine::default();
        assert!(
            fresh.transition(BootState::Hydrate).is_err(),
            "no skipping attestation"
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
                    code: "measurement_mismatch".into(),
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
