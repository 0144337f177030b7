//! `tb-sentinel --tee azure` as a process, booting to Ready on a software TPM.
//!
//! swtpm stands in for the vTPM, provisioned with the AK and an HCL report over a simulated
//! SNP report (`support/vtpm.rs`). A TPM-command proxy plays the paravisor that regenerates
//! the HCL report when the guest writes its report data (`support/paravisor.rs`). The broker,
//! the relay's egress and its bundle server run in this process (`support/world.rs`). The
//! sentinel binary is unmodified: its evidence goes through the broker's real Azure
//! verification against an `[[asset.azure]]` policy set.
//!
//! Needs `swtpm` and the `azure-vtpm` feature; without swtpm the test prints a loud skip,
//! or fails when `TB_REQUIRE_TPM=1` (CI).
#![cfg(feature = "azure-vtpm")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

#[path = "support/paravisor.rs"]
mod paravisor;
#[path = "support/vtpm.rs"]
mod vtpm;
#[path = "support/world.rs"]
mod world;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use paravisor::Paravisor;
use vtpm::{Swtpm, hcl_report, pem_file};
use world::{ASSET, CONTRACT, World, world};

/// A sentinel process, killed on drop.
struct Sentinel {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sentinel {
    fn start(w: &World, name: &str, tcti: &str, certs: &Path) -> Self {
        let socket = w.path(&format!("{name}.sock"));
        let log = w.path(&format!("{name}.log"));
        let endpoint = |e: &trustbridge_transport::Endpoint| e.to_string();
        let child = Command::new(env!("CARGO_BIN_EXE_tb-sentinel"))
            .args(["--listen", &format!("unix://{}", socket.display())])
            .args(["--relay-egress", &endpoint(&w.egress)])
            .args(["--relay-bundles", &endpoint(&w.bundles)])
            .args(["--kms-url", &format!("http://127.0.0.1:{}", w.kms.port)])
            .args(["--kms-key", &w.pins.broker.to_string()])
            .args(["--asset-id", ASSET, "--contract-id", CONTRACT])
            .args(["--tee", "azure", "--tpm-tcti", tcti])
            .arg("--azure-certs")
            .arg(certs)
            .args(["--retry-initial-ms", "50", "--reauth-interval-secs", "0"])
            // The model is synthetic: no engine loads it.
            .args(["--engine", "runtime"])
            .env("RUST_LOG", "info")
            .env("TSS2_LOG", "all+none")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self { child, socket, log }
    }

    /// `/status`, read over the sentinel's socket.
    fn status(&self) -> Option<serde_json::Value> {
        let mut s = UnixStream::connect(&self.socket).ok()?;
        s.write_all(b"GET /status HTTP/1.1\r\nHost: sentinel\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut answer = String::new();
        s.read_to_string(&mut answer).ok()?;
        let (_, body) = answer.split_once("\r\n\r\n")?;
        serde_json::from_str(body).ok()
    }

    /// Waits (off the runtime) until the state is one of `states`; returns the status.
    async fn wait_for(&mut self, states: &'static [&'static str]) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = self.status()
                && states.contains(&st["state"].as_str().unwrap_or_default())
            {
                return st;
            }
            if let Some(exit) = self.child.try_wait().unwrap() {
                panic!(
                    "the sentinel exited ({exit}):\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the sentinel never reached {states:?}: {:?}\n{}",
                self.status(),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tb_sentinel_boots_to_ready_on_azure_vtpm_evidence_and_fails_when_pcrs_move() {
    let Some(tpm) = Swtpm::start() else { return };
    let w = world(true).await;
    let tee = w.tee();
    let ak = tpm.provision_ak();
    // The report the vTPM holds before the guest asks: other user-data, so only a report
    // regenerated for this boot's binding can pass.
    tpm.provision_hcl_report(&hcl_report(&tee, &ak, &[0; 64]));
    let paravisor = Paravisor::start(&tpm, w.tee(), ak);
    let certs = pem_file(&tee, w.dir.path());

    let mut sentinel = Sentinel::start(&w, "sentinel", &paravisor.tcti(), &certs);
    let status = sentinel.wait_for(&["Ready", "Failed"]).await;
    let log = std::fs::read_to_string(&sentinel.log).unwrap();
    assert_eq!(status["state"], "Ready", "{status}\n{log}");
    assert_eq!(status["simulated"], false, "{status}");
    assert_eq!(status["files"], 1, "{status}");
    assert!(paravisor.errors().is_empty(), "{:?}", paravisor.errors());
    // Two attestations: the Attest step's probe, then the key release's with the broker's
    // nonce; each got a report for its own binding.
    let regenerated = paravisor.regenerated();
    assert_eq!(regenerated.len(), 2, "one report per attestation");
    assert_ne!(regenerated[0], regenerated[1]);
    assert!(regenerated.iter().all(|d| d.len() == 64 && d != &[0; 64]));
    drop(sentinel);

    // Another boot component is measured into PCR 7: the broker's Azure set no longer
    // matches, and the sentinel process fails with the broker's reason.
    {
        use tss_esapi::interface_types::algorithm::HashingAlgorithm;
        let mut values = tss_esapi::structures::DigestValues::new();
        values.set(HashingAlgorithm::Sha256, vec![8u8; 32].try_into().unwrap());
        tpm.context()
            .pcr_extend(tss_esapi::handles::PcrHandle::Pcr7, values)
            .unwrap();
    }
    let mut sentinel = Sentinel::start(&w, "sentinel-2", &paravisor.tcti(), &certs);
    let status = sentinel.wait_for(&["Ready", "Failed"]).await;
    assert_eq!(status["state"], "Failed", "{status}");
    assert_eq!(status["reason"], "measurement_mismatch", "{status}");
    assert_eq!(paravisor.regenerated().len(), 4);
    assert!(paravisor.errors().is_empty(), "{:?}", paravisor.errors());
}
