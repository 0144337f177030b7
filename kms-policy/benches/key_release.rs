//! Key-release round trip on loopback with simulated evidence.
//!
//! `cargo bench -p trustbridge-kms --bench key_release`
//!
//! A broker (SQLite on disk, WAL, synchronous=FULL) serves on 127.0.0.1; a client performs
//! complete releases as a sentinel does (challenge, Nitro-format evidence binding the nonce
//! and a fresh HPKE key, release, open). Baseline in the same run: a bare HTTP round trip
//! (`GET /health`) to the same server. Prints p50 and p99 of each, ending with
//! `key_release: baseline_p50_ms=B p50_ms=P p99_ms=Q n=N`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)] // bench binary

use std::sync::Arc;
use std::time::Instant;
use trustbridge_protocol::Platform;

use trustbridge_kms::broker::Broker;
use trustbridge_kms::broker::kek::Kek;
use trustbridge_kms::broker::service::LoopbackBroker;
use trustbridge_kms::broker::store::{SqliteStore, Store};
use trustbridge_kms::client::{AdminSigner, Evidence, KmsClient};
use trustbridge_protocol::bundle::{
    AssetId, BundlePath, Manifest, ProviderSigningKey, SignedManifest, seal_file,
};
use trustbridge_protocol::sealed::{DataKey, SegmentSize};
use trustbridge_verifier::simulated::{NitroSpec, SimulatedTee};

const ASSET: &str = "bench/model@v1";

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let n: usize = std::env::var("TB_BENCH_RELEASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let dir = tempfile::tempdir().unwrap();
    let sim = SimulatedTee::new().unwrap();
    let provider = ProviderSigningKey::generate().unwrap();
    let admin = ProviderSigningKey::generate().unwrap();
    let key = DataKey::generate().unwrap();
    let asset = AssetId::new(ASSET).unwrap();
    let entry = seal_file(
        &key,
        &asset,
        BundlePath::new("w").unwrap(),
        SegmentSize::default(),
        &b"w"[..],
        std::io::sink(),
    )
    .unwrap();
    let manifest = SignedManifest::sign(
        Manifest::new(asset, 0, provider.public(), &key, vec![entry]).unwrap(),
        &provider,
    )
    .unwrap();
    let policy = format!(
        "[admin]\nkeys = [\"{}\"]\n[simulation]\nnitro_root_sha256 = [\"{}\"]\n[[asset]]\nid = \"{ASSET}\"\nprovider_key = \"{}\"\n[[asset.nitro]]\npcr0 = \"{}\"\n[[contract]]\nid = \"c\"\nasset = \"{ASSET}\"\nnot_before = \"2020-01-01T00:00:00Z\"\nnot_after = \"2099-01-01T00:00:00Z\"\n",
        admin.public().to_hex(),
        hex::encode(sim.nitro_root().sha256()),
        provider.public().to_hex(),
        "10".repeat(48)
    );
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("kms.db")).unwrap());
    let broker = Arc::new(Broker::open(store, Kek::generate().unwrap(), Some(&policy)).unwrap());
    let identity = broker.identity_key();
    let server = LoopbackBroker::start(broker).unwrap();
    let base = server.url().to_owned();
    let client = KmsClient::new(&base, identity);
    let pem = admin.to_pkcs8_pem().unwrap();
    let signing = ProviderSigningKey::from_pkcs8_pem(&pem).unwrap();
    let signer = AdminSigner {
        public_key: admin.public().to_bytes(),
        sign: Box::new(move |m| signing.sign(m)),
    };
    client
        .register_asset(ASSET, manifest.as_bytes(), &key, &signer)
        .unwrap();

    let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
    let health = format!("{base}/health");
    let release = || {
        client
            .release_with_evidence(ASSET, "c", [0; 32], |b| {
                let doc = sim
                    .nitro_document(&NitroSpec::default().bind(b).map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
                Ok(Evidence {
                    platform: Platform::Nitro,
                    bytes: doc,
                    certificates: vec![],
                })
            })
            .unwrap()
    };
    // Warm up both paths.
    for _ in 0..20 {
        agent.get(&health).call().unwrap();
        release();
    }
    let (mut baseline, mut releases) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let t = Instant::now();
        agent.get(&health).call().unwrap();
        baseline.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let released = release();
        releases.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(released.key.key_id(), key.key_id());
    }
    baseline.sort_by(f64::total_cmp);
    releases.sort_by(f64::total_cmp);
    let (b50, b99) = (percentile(&baseline, 0.5), percentile(&baseline, 0.99));
    let (r50, r99) = (percentile(&releases, 0.5), percentile(&releases, 0.99));
    println!("baseline GET /health: p50 {b50:.3} ms, p99 {b99:.3} ms");
    println!(
        "key release (challenge + evidence + release + open): p50 {r50:.3} ms, p99 {r99:.3} ms"
    );
    println!(
        "bar: p50 <= 10 ms ({})",
        if r50 <= 10.0 { "meets" } else { "MISSES" }
    );
    println!("key_release: baseline_p50_ms={b50:.3} p50_ms={r50:.3} p99_ms={r99:.3} n={n}");
}
