//! Re-authorization under a hostile relay: whatever the relay does with the sentinel's
//! egress (answer 502, hold the tunnel), a sentinel that no broker has re-authorized
//! within the grace period stops serving; it serves again once the broker grants the key.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

#[path = "support/flaky_egress.rs"]
mod flaky_egress;
#[path = "support/world.rs"]
mod world;

use std::sync::Arc;
use std::time::{Duration, Instant};

use flaky_egress::{FlakyEgress, Mode};
use trustbridge_enclave::attestation::{AttestationProvider, SimulatedPlatform, SimulatedProvider};
use trustbridge_enclave::authorize::EgressLimits;
use trustbridge_enclave::boot::{Backoff, BootState};
use trustbridge_enclave::hydrate::HydrateConfig;
use trustbridge_enclave::sentinel::{Reauthorization, Sentinel, SentinelConfig};
use trustbridge_transport::Endpoint;
use world::{ASSET, CONTRACT, World, world};

const EVERY: Duration = Duration::from_millis(300);
const GRACE: Duration = Duration::from_millis(1500);

/// A sentinel booted to Ready through a stand-in egress the test controls.
async fn ready_sentinel(w: &World) -> (Arc<Sentinel>, FlakyEgress) {
    ready_sentinel_with(
        w,
        Reauthorization {
            every: Some(EVERY),
            grace: Some(GRACE),
        },
    )
    .await
}

/// [`ready_sentinel`] with the operator's re-authorization bounds `reauthorize`.
async fn ready_sentinel_with(
    w: &World,
    reauthorize: Reauthorization,
) -> (Arc<Sentinel>, FlakyEgress) {
    let (sentinel, egress) =
        start_sentinel(w, reauthorize, EgressLimits::default(), Mode::Pass).await;
    wait_for(&sentinel, "Ready", Duration::from_secs(20)).await;
    (sentinel, egress)
}

/// A sentinel booting through a stand-in egress in `mode`, with `limits`.
async fn start_sentinel(
    w: &World,
    reauthorize: Reauthorization,
    limits: EgressLimits,
    mode: Mode,
) -> (Arc<Sentinel>, FlakyEgress) {
    let egress = FlakyEgress::start(
        Endpoint::Unix(w.dir.path().join("flaky-egress.sock")),
        w.egress.clone(),
    )
    .await;
    egress.set(mode);
    let backoff = Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(200),
        attempts: 5,
    };
    let sentinel = Sentinel::new(SentinelConfig {
        asset: ASSET.into(),
        contract: CONTRACT.into(),
        kms: w.kms.clone(),
        pins: w.pins,
        egress_limits: limits,
        egress: egress.endpoint.clone(),
        bundles: w.bundles.clone(),
        hydrate: HydrateConfig {
            backoff,
            ..HydrateConfig::default()
        },
        backoff,
        reauthorize,
        output: Default::default(),
        swap: Default::default(),
        ready_signal: None,
        // The model is synthetic: runtime-proxy mode (no engine loads it).
        gateway: trustbridge_enclave::gateway::GatewayConfig {
            engine: trustbridge_enclave::engine::EngineChoice::Runtime(Default::default()),
            ..Default::default()
        },
    });
    let provider: Arc<dyn AttestationProvider> =
        Arc::new(SimulatedProvider::new(w.tee(), SimulatedPlatform::Nitro));
    tokio::spawn(sentinel.clone().boot(provider));
    (sentinel, egress)
}

/// Waits until the sentinel is in state `name`; returns how long that took.
async fn wait_for(sentinel: &Sentinel, name: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let state = sentinel.state();
        if state.name() == name {
            return started.elapsed();
        }
        assert!(
            !matches!(state, BootState::Failed { .. }),
            "failed while waiting for {name}: {state}"
        );
        assert!(
            started.elapsed() < limit,
            "not {name} after {limit:?}: {state}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn reason(sentinel: &Sentinel) -> String {
    sentinel
        .state()
        .reason()
        .map(|(code, _)| code.as_str().to_owned())
        .unwrap_or_default()
}

/// The contract is revoked, and the relay hides the broker's denial behind 502s: the
/// sentinel suspends itself within the grace period (it used to stay Ready for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_hidden_behind_502s_suspends_within_the_grace() {
    let w = world(true).await;
    let (sentinel, egress) = ready_sentinel(&w).await;
    egress.set(Mode::BadGateway);
    w.broker.revoke_contract(CONTRACT).unwrap();
    let took = wait_for(&sentinel, "Suspended", GRACE * 3).await;
    assert!(took <= GRACE + EVERY, "suspended after {took:?}");
    assert_eq!(reason(&sentinel), "reauthorization_overdue");
    assert!(sentinel.model().is_none(), "the model is dropped");
}

/// The relay accepts the tunnel and never answers: the attempt hangs, and the grace
/// period still ends in Suspended, not in a hung re-authorization.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_tunnel_suspends_within_the_grace() {
    let w = world(true).await;
    let (sentinel, egress) = ready_sentinel(&w).await;
    egress.set(Mode::Hang);
    let took = wait_for(&sentinel, "Suspended", GRACE * 3).await;
    assert!(took <= GRACE + EVERY, "suspended after {took:?}");
    assert_eq!(reason(&sentinel), "reauthorization_overdue");
    assert!(sentinel.model().is_none());
}

/// Suspended because the broker was out of reach, then the broker is back: Ready again.
/// Suspended by the broker's (signed) word, the contract dropped from the policy, then
/// the contract restored: Ready again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_back_and_a_contract_restored_make_it_ready_again() {
    let w = world(true).await;
    let (sentinel, egress) = ready_sentinel(&w).await;
    egress.set(Mode::BadGateway);
    wait_for(&sentinel, "Suspended", GRACE * 3).await;
    assert_eq!(reason(&sentinel), "reauthorization_overdue");
    egress.set(Mode::Pass);
    wait_for(&sentinel, "Ready", Duration::from_secs(20)).await;
    assert!(sentinel.model().is_some(), "hydrated anew");

    let without = w
        .policy
        .replace(&format!("id = \"{CONTRACT}\""), "id = \"c-other\"");
    w.broker.replace_policy(&without).unwrap();
    wait_for(&sentinel, "Suspended", Duration::from_secs(10)).await;
    assert_eq!(reason(&sentinel), "unknown_contract");
    w.broker.replace_policy(&w.policy).unwrap();
    wait_for(&sentinel, "Ready", Duration::from_secs(20)).await;
    assert!(sentinel.model().is_some());
}

/// The broker's lease bounds how long a sentinel serves without it, whatever the host
/// configured: here the sentinel is told nothing (interval 0, no grace), the policy
/// leases releases for 2 s. With the broker reachable it keeps serving, asking every
/// second; with its answers hidden, it stops within the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_brokers_lease_bounds_serving_whatever_the_configuration() {
    let w = world(true).await;
    let leased = w
        .policy
        .replacen("provider_key = ", "lease_secs = 2\nprovider_key = ", 1);
    w.broker.replace_policy(&leased).unwrap();
    let (sentinel, egress) = ready_sentinel_with(&w, Reauthorization::default()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        sentinel.state().name(),
        "Ready",
        "re-authorized within the lease"
    );
    egress.set(Mode::BadGateway);
    let took = wait_for(&sentinel, "Suspended", Duration::from_secs(10)).await;
    assert!(
        took <= Duration::from_millis(2500),
        "suspended after {took:?}"
    );
    assert_eq!(reason(&sentinel), "reauthorization_overdue");
}

/// A re-authorization that releases another model (the provider's new version, under a
/// new key) replaces the one served: the sentinel does not keep serving retired weights.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_model_version_replaces_the_one_served() {
    let w = world(true).await;
    let (sentinel, _egress) = ready_sentinel(&w).await;
    let first = sentinel.model().unwrap().manifest.digest();
    let second = w.replace_model(b"model weights, version two").await;
    assert_ne!(first, second);
    let started = Instant::now();
    loop {
        if let Some(model) = sentinel.model()
            && model.manifest.digest() == second
        {
            let files = model.files.clone();
            assert_eq!(&files["weights.bin"][..], b"model weights, version two");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "still serving the old model: {}",
            sentinel.state()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every egress operation has a time limit: a relay that never answers the `CONNECT`, or
/// opens a tunnel and then never answers the request, costs an attempt, not the
/// sentinel. Once the relay passes traffic again, the sentinel boots to Ready (without
/// the limits the first attempt would wait for ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_that_never_answers_costs_an_attempt_not_the_sentinel() {
    let limits = EgressLimits {
        connect: Duration::from_millis(200),
        exchange: Duration::from_millis(400),
        ..EgressLimits::default()
    };
    for mode in [Mode::Hang, Mode::HangAfterConnect] {
        let w = world(true).await;
        let (sentinel, egress) = start_sentinel(&w, Reauthorization::default(), limits, mode).await;
        // Long enough for an attempt to time out, well short of the five attempts'
        // back-off (about 1.5 s) after which the boot would fail `unavailable`.
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(sentinel.state().name(), "Authorize", "{mode:?}");
        egress.set(Mode::Pass);
        wait_for(&sentinel, "Ready", Duration::from_secs(10)).await;
    }
}
