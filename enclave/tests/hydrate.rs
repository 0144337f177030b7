//! Hydrate and Decrypt through the relay's bundle server on a Unix socket: the model
//! decrypts in memory; a tampered blob, another manifest or another provider fail with
//! their reason and no plaintext; a relay restart during the download only delays it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use trustbridge_enclave::authorize::Released;
use trustbridge_enclave::boot::{Backoff, StepError};
use trustbridge_enclave::hydrate::{HydrateConfig, hydrate};
use trustbridge_enclave::output::SwapPolicy;
use trustbridge_protocol::bundle::{AssetId, ProviderSigningKey, seal_bundle_in_memory};
use trustbridge_protocol::sealed::{DataKey, SegmentSize};
use trustbridge_relay::bundles::BundleServer;
use trustbridge_transport::{Endpoint, Listener};

struct Bundle {
    dir: tempfile::TempDir,
    key: DataKey,
    provider: ProviderSigningKey,
    digest: [u8; 32],
    weights: Vec<u8>,
}

fn weights(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[2])
        .collect()
}

fn bundle() -> Bundle {
    let dir = tempfile::tempdir().unwrap();
    let key = DataKey::generate().unwrap();
    let provider = ProviderSigningKey::generate().unwrap();
    let asset = AssetId::new("acme/llm@v1").unwrap();
    let seg = SegmentSize::new(64 * 1024).unwrap();
    let weights = weights(3 * 1024 * 1024 + 123);
    let signed = seal_bundle_in_memory(
        dir.path(),
        &key,
        &provider,
        &asset,
        seg,
        &[
            ("weights/model bin.gguf", &weights),
            ("config.json", b"{}"),
            ("empty.bin", b""),
        ],
    )
    .unwrap();
    Bundle {
        dir,
        key,
        provider,
        digest: signed.digest(),
        weights,
    }
}

fn released(b: &Bundle) -> Released {
    Released {
        key: b.key.clone(),
        manifest_sha256: b.digest,
        provider_key: b.provider.public().to_bytes(),
        lease: std::time::Duration::from_secs(600),
        policy_sha256: [0x70; 32],
    }
}

/// Serves the bundle on `endpoint`; returns the server (for its request count) and task.
async fn relay(
    dir: &Path,
    endpoint: &Endpoint,
) -> (Arc<BundleServer>, tokio::task::JoinHandle<()>) {
    let server = BundleServer::new(dir).unwrap();
    let listener = Listener::bind(endpoint).await.unwrap();
    let task = tokio::spawn({
        let server = server.clone();
        async move { server.serve(listener).await.unwrap() }
    });
    (server, task)
}

/// Swap allowed: these tests are not about swap, and must not depend on the machine's.
fn swap() -> SwapPolicy {
    SwapPolicy {
        allow: true,
        ..SwapPolicy::default()
    }
}

fn config() -> HydrateConfig {
    HydrateConfig {
        concurrency: 4,
        chunk_bytes: 256 * 1024,
        backoff: Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
            attempts: 40,
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hydrates_and_decrypts_in_memory() {
    let b = bundle();
    let sock = tempfile::tempdir().unwrap();
    let endpoint = Endpoint::Unix(sock.path().join("bundles.sock"));
    let (server, _relay) = relay(b.dir.path(), &endpoint).await;
    let model = hydrate(&endpoint, &released(&b), &config(), &swap())
        .await
        .unwrap();
    assert_eq!(*model.files["weights/model bin.gguf"], b.weights);
    assert_eq!(model.files["config.json"].as_slice(), b"{}");
    assert!(model.files["empty.bin"].is_empty());
    // Ranged, parallel downloads: manifest + header + at least 13 chunks for the weights.
    assert!(server.requests() >= 15, "{}", server.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_and_substitution_fail_with_their_reason() {
    let b = bundle();
    let sock = tempfile::tempdir().unwrap();
    let endpoint = Endpoint::Unix(sock.path().join("bundles.sock"));
    let _relay = relay(b.dir.path(), &endpoint).await;
    let code = |r: Result<_, StepError>| match r {
        Err(StepError::Fatal { code, .. }) => code,
        other => panic!(
            "expected a fatal error, got {:?}",
            other.map(|_: trustbridge_enclave::hydrate::Model| ())
        ),
    };
    // The broker named another manifest.
    let mut other = released(&b);
    other.manifest_sha256[0] ^= 1;
    assert_eq!(
        code(hydrate(&endpoint, &other, &config(), &swap()).await),
        "manifest_mismatch"
    );
    // The broker named another provider.
    let mut other = released(&b);
    other.provider_key = ProviderSigningKey::generate().unwrap().public().to_bytes();
    assert_eq!(
        code(hydrate(&endpoint, &other, &config(), &swap()).await),
        "manifest_invalid"
    );
    // A flipped byte in the sealed weights.
    let file = b.dir.path().join("weights/model bin.gguf.sealed");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[2_000_000] ^= 1;
    std::fs::write(&file, bytes).unwrap();
    assert_eq!(
        code(hydrate(&endpoint, &released(&b), &config(), &swap()).await),
        "tampered_bundle"
    );
    // A missing file.
    std::fs::remove_file(&file).unwrap();
    assert_eq!(
        code(hydrate(&endpoint, &released(&b), &config(), &swap()).await),
        "bundle_missing"
    );
}

/// A relay in front of the bundle server at `backend` that dies on its own when its
/// `fatal`-th connection arrives: it drops that connection and its listener and cuts every
/// transfer still in flight. The crash point is fixed, so no test timing can let the
/// download finish before it.
async fn relay_dying_at(
    endpoint: &Endpoint,
    backend: Endpoint,
    fatal: usize,
) -> tokio::task::JoinHandle<()> {
    let listener = Listener::bind(endpoint).await.unwrap();
    tokio::spawn(async move {
        let mut in_flight = tokio::task::JoinSet::new();
        for _ in 1..fatal {
            let (mut client, _) = listener.accept_stream().await.unwrap();
            let backend = backend.clone();
            in_flight.spawn(async move {
                let mut server = trustbridge_transport::connect(&backend).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
        let _fatal = listener.accept_stream().await.unwrap();
        in_flight.abort_all();
        // Returning drops the listener (its socket file goes) and every connection.
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_restart_during_hydrate_only_delays_it() {
    let b = bundle();
    let sock = tempfile::tempdir().unwrap();
    let backend = Endpoint::Unix(sock.path().join("backend.sock"));
    let (_backend_server, _backend) = relay(b.dir.path(), &backend).await;
    let endpoint = Endpoint::Unix(sock.path().join("bundles.sock"));
    // The download needs the manifest, the header and 49 chunks of 64 KiB; the relay dies
    // at its 8th connection, mid-download.
    let first = relay_dying_at(&endpoint, backend, 8).await;
    let config = HydrateConfig {
        chunk_bytes: 64 * 1024,
        concurrency: 2,
        ..config()
    };
    let rel = released(&b);
    let (ep, cfg) = (endpoint.clone(), config);
    let hydration = tokio::spawn(async move { hydrate(&ep, &rel, &cfg, &swap()).await });
    first.await.unwrap();

    // With no relay, hydration keeps retrying (its back-off allows ~7 s) rather than fail.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !hydration.is_finished(),
        "hydration must wait for the relay: {:?}",
        hydration.await.unwrap().map(|_| ())
    );
    let (second_server, _second) = relay(b.dir.path(), &endpoint).await;
    let model = hydration.await.unwrap().unwrap();
    assert_eq!(*model.files["weights/model bin.gguf"], b.weights);
    assert!(
        second_server.requests() > 0,
        "the download resumed on the restarted relay"
    );
}
