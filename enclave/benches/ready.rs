//! Time to Ready for a sealed bundle, against `cat` of the same bundle in the same run.
//!
//! `cargo bench -p trustbridge-enclave --bench ready`
//!
//! One process, Unix sockets, simulated TEE, page-cached bundle: a key broker, the relay's
//! egress and bundle server, and a sentinel that boots (attest, key release through the
//! egress tunnel, parallel ranged download, verification, parallel decryption) to Ready.
//! Baseline: `cat` of every sealed file to /dev/null. Ends with
//! `ready: bundle_gib=G cat_s=X ready_s=Y ratio=Z`. TB_BENCH_GIB sets the size (default 1).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)] // bench binary

#[path = "../tests/support/world.rs"]
mod world;

use std::io::Read;
use std::time::Instant;

use trustbridge_enclave::attestation::{SimulatedPlatform, SimulatedProvider};
use trustbridge_enclave::boot::Backoff;
use trustbridge_enclave::hydrate::HydrateConfig;
use trustbridge_enclave::sentinel::{Sentinel, SentinelConfig};
use trustbridge_protocol::bundle::{
    AssetId, BundlePath, MANIFEST_FILE, Manifest, SignedManifest, seal_file,
};
use trustbridge_protocol::sealed::SegmentSize;
use world::{ASSET, CONTRACT, world_with};

/// An endless pseudo-random reader (incompressible weights).
struct Weights(u64, u64);

impl Read for Weights {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.1 as usize) / 8 * 8;
        for c in buf[..n].chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            c.copy_from_slice(&self.0.to_le_bytes());
        }
        self.1 -= n as u64;
        Ok(n)
    }
}

/// Measured runs of each (after one unscored cold boot); the medians are reported.
const RUNS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let gib: u64 = std::env::var("TB_BENCH_GIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (cat_s, ready_s) = rt.block_on(async {
        // A broker holding the key, the relay's egress and bundle server, and the bundle:
        // one file of `gib` GiB of incompressible weights, sealed as it is generated.
        let w = world_with(true, move |bundle, key, provider| {
            let asset = AssetId::new(ASSET).unwrap();
            let mut out = std::io::BufWriter::new(
                std::fs::File::create(bundle.join("weights.bin.sealed")).unwrap(),
            );
            let entry = seal_file(
                key,
                &asset,
                BundlePath::new("weights.bin").unwrap(),
                SegmentSize::default(),
                Weights(0x9e37_79b9, gib << 30),
                &mut out,
            )
            .unwrap();
            drop(out);
            let signed = SignedManifest::sign(
                Manifest::new(asset, 0, provider.public(), key, vec![entry]).unwrap(),
                provider,
            )
            .unwrap();
            std::fs::write(bundle.join(MANIFEST_FILE), signed.as_bytes()).unwrap();
            signed
        })
        .await;
        let bundle = w.path("bundle");
        let cat = || {
            let t = Instant::now();
            let status = std::process::Command::new("cat")
                .arg(bundle.join("weights.bin.sealed"))
                .arg(bundle.join(MANIFEST_FILE))
                .stdout(std::process::Stdio::null())
                .status()
                .unwrap();
            assert!(status.success());
            t.elapsed().as_secs_f64()
        };
        cat(); // warm the page cache

        let provider =
            std::sync::Arc::new(SimulatedProvider::new(w.tee(), SimulatedPlatform::Nitro));
        let boot = || {
            let config = SentinelConfig {
                asset: ASSET.into(),
                contract: CONTRACT.into(),
                kms: w.kms.clone(),
                pins: w.pins,
                egress_limits: Default::default(),
                egress: w.egress.clone(),
                bundles: w.bundles.clone(),
                hydrate: HydrateConfig::default(),
                backoff: Backoff::default(),
                reauthorize: Default::default(),
                output: Default::default(),
                swap: Default::default(),
                ready_signal: None,
                // The model is synthetic: runtime-proxy mode (no engine loads it).
                gateway: trustbridge_enclave::gateway::GatewayConfig {
                    engine: trustbridge_enclave::engine::EngineChoice::Runtime(Default::default()),
                    ..Default::default()
                },
            };
            let provider = provider.clone();
            async move {
                let sentinel = Sentinel::new(config);
                let t = Instant::now();
                sentinel.clone().boot(provider).await;
                let ready_s = t.elapsed().as_secs_f64();
                assert!(sentinel.state().healthy(), "{}", sentinel.state());
                ready_s
            }
        };
        // The first boot runs on memory the VM has never touched; on this machine's
        // hypervisor that first touch dominates, so it is reported apart and not scored.
        let cold_s = boot().await;
        let mut cats = Vec::new();
        let mut readies = Vec::new();
        for _ in 0..RUNS {
            cats.push(tokio::task::block_in_place(cat));
            readies.push(boot().await);
        }
        println!("cold first boot: {cold_s:.3} s (not scored)");
        println!("cat runs: {cats:.3?}");
        println!("boot runs: {readies:.3?}");
        (median(cats), median(readies))
    });
    println!("median of {RUNS}: cat of the bundle {cat_s:.3} s; boot to Ready {ready_s:.3} s");
    println!(
        "bar: ratio <= 3 ({})",
        if ready_s / cat_s <= 3.0 {
            "meets"
        } else {
            "MISSES"
        }
    );
    println!(
        "ready: bundle_gib={gib} cat_s={cat_s:.3} ready_s={ready_s:.3} ratio={:.2}",
        ready_s / cat_s
    );
}
