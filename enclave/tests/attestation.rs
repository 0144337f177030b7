//! Attestation providers: configfs-tsm against a fake configfs directory, the simulated
//! TEE end to end with the verifier, and detection with its error message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::{Duration, SystemTime};

use trustbridge_enclave::attestation::{
    AttestationProvider, ConfigfsTsm, Probe, SimulatedPlatform, SimulatedProvider, TeeChoice,
    detect,
};
use trustbridge_protocol::binding::EvidenceBinding;
use trustbridge_verifier::simulated::{SimulatedTee, SnpSpec};
use trustbridge_verifier::{check_binding, verify_nitro, verify_snp};

fn binding() -> EvidenceBinding {
    EvidenceBinding {
        nonce: vec![5; 32],
        ohttp_keys_sha256: [1; 32],
        receipt_key: [2; 32],
        release_key: [3; 32],
        broker_key: [4; 32],
        provider_key: None,
        manifest_sha256: None,
    }
}

/// A second handle on the same simulation CA (saved and loaded).
fn same_ca(tee: &SimulatedTee) -> SimulatedTee {
    let dir = tempfile::tempdir().unwrap();
    tee.save(dir.path()).unwrap();
    SimulatedTee::load(dir.path()).unwrap()
}

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_219_200)
}

#[test]
fn simulated_provider_evidence_verifies_and_binds() {
    let tee = SimulatedTee::new().unwrap();
    let roots = tee.trust_roots();
    let b = binding();
    let nitro = SimulatedProvider::new(same_ca(&tee), SimulatedPlatform::Nitro);
    assert!(nitro.simulated());
    let ev = nitro.evidence(&b).unwrap();
    let v = verify_nitro(&ev.bytes, &roots, now()).unwrap();
    assert_eq!(check_binding(&v, &b), Ok(()));
    let snp = SimulatedProvider::new(same_ca(&tee), SimulatedPlatform::Snp);
    let ev = snp.evidence(&b).unwrap();
    let certs: Vec<_> = ev
        .certificates
        .iter()
        .map(|d| trustbridge_verifier::x509::ParsedCertificate::from_der(d, "c").unwrap())
        .collect();
    let v = verify_snp(&ev.bytes, &certs, &roots, now()).unwrap();
    assert_eq!(check_binding(&v, &b), Ok(()));
}

/// Plays the kernel for one request directory: `outblob` is a FIFO, so the provider's read
/// blocks until this thread has seen `inblob`, bumped `generation` and written a report
/// carrying the report data (flipped when `tamper`), as the real configfs-tsm does on read.
fn fake_kernel(
    entry: std::path::PathBuf,
    tee: SimulatedTee,
    tamper: bool,
) -> std::thread::JoinHandle<()> {
    std::fs::create_dir_all(&entry).unwrap();
    std::fs::write(entry.join("generation"), "0\n").unwrap();
    let status = std::process::Command::new("mkfifo")
        .arg(entry.join("outblob"))
        .status()
        .unwrap();
    assert!(status.success());
    std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let inblob = loop {
            match std::fs::read(entry.join("inblob")) {
                Ok(b) if b.len() == 64 => break b,
                _ if std::time::Instant::now() > deadline => panic!("no inblob written"),
                _ => std::thread::sleep(Duration::from_millis(1)),
            }
        };
        let mut report_data = [0u8; 64];
        report_data.copy_from_slice(&inblob);
        if tamper {
            report_data[0] ^= 1;
        }
        let report = tee
            .snp_report(&SnpSpec {
                report_data,
                ..SnpSpec::default()
            })
            .unwrap();
        std::fs::write(entry.join("generation"), "1\n").unwrap();
        std::fs::write(entry.join("outblob"), report).unwrap();
    })
}

#[test]
fn configfs_tsm_request_carries_the_binding() {
    let dir = tempfile::tempdir().unwrap();
    let tee = SimulatedTee::new().unwrap();
    let root = dir.path().join("report");
    let entry = root.join(format!("trustbridge-{}", std::process::id()));
    let kernel = fake_kernel(entry.clone(), same_ca(&tee), false);
    let b = binding();
    let ev = ConfigfsTsm::new(&root).evidence(&b).unwrap();
    kernel.join().unwrap();
    assert_eq!(ev.platform, trustbridge_protocol::Platform::Snp);
    let v = verify_snp(&ev.bytes, tee.snp_certificates(), &tee.trust_roots(), now()).unwrap();
    assert_eq!(check_binding(&v, &b), Ok(()));

    // A report that does not carry the requested report data is refused.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("report");
    let kernel = fake_kernel(
        root.join(format!("trustbridge-{}", std::process::id())),
        same_ca(&tee),
        true,
    );
    let err = ConfigfsTsm::new(&root)
        .evidence(&b)
        .unwrap_err()
        .to_string();
    kernel.join().unwrap();
    assert!(
        err.contains("does not carry the requested report data"),
        "{err}"
    );
}

#[test]
fn detection_picks_the_present_tee_and_names_what_it_probed() {
    let dir = tempfile::tempdir().unwrap();
    let probe = Probe {
        nsm_device: dir.path().join("nsm"),
        configfs_tsm: dir.path().join("tsm/report"),
        sev_guest: dir.path().join("sev-guest"),
    };
    let err = detect(&TeeChoice::Auto, &probe).err().unwrap().to_string();
    assert!(
        err.contains("nsm (absent)")
            && err.contains("tsm/report (absent)")
            && err.contains("--tee simulated"),
        "{err}"
    );
    assert!(err.contains("sev-guest (absent)"), "{err}");
    // An older kernel: only the legacy device, which is used.
    std::fs::write(dir.path().join("sev-guest"), b"").unwrap();
    assert_eq!(
        detect(&TeeChoice::Auto, &probe).unwrap().name(),
        "snp-sev-guest"
    );
    assert_eq!(
        detect(&TeeChoice::Snp, &probe).unwrap().name(),
        "snp-sev-guest"
    );
    // The device is not an SEV guest device: the request fails and names it.
    let err = detect(&TeeChoice::Snp, &probe)
        .unwrap()
        .evidence(&binding())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("snp-sev-guest") && err.contains("SNP_GET_REPORT"),
        "{err}"
    );
    // configfs-tsm wins when both are present.
    std::fs::create_dir_all(dir.path().join("tsm/report")).unwrap();
    assert_eq!(
        detect(&TeeChoice::Auto, &probe).unwrap().name(),
        "snp-configfs-tsm"
    );
    assert!(detect(&TeeChoice::Nitro, &probe).is_err());
    std::fs::write(dir.path().join("nsm"), b"").unwrap();
    assert_eq!(
        detect(&TeeChoice::Auto, &probe).unwrap().name(),
        "nitro-nsm"
    );
    assert_eq!(
        detect(&TeeChoice::Snp, &probe).unwrap().name(),
        "snp-configfs-tsm"
    );
}
