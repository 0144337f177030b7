//! The Azure vTPM attester against a software TPM (`swtpm`), provisioned as an Azure
//! confidential VM's vTPM: an attestation key at `0x81000003` and an HCL report in NV index
//! `0x01400001` whose SNP report (from the simulated TEE) commits to variable data with that
//! AK and the `user-data`. The paravisor that regenerates the report on Azure is not played
//! here (`azure_boot.rs` and `authorize.rs` play it), so each test provisions the report it
//! needs: one with the expected `user-data`, one stale. Its evidence goes through the real verifier and binding check.
//!
//! Needs `swtpm` (Debian: `swtpm`) and the `azure-vtpm` feature (libtss2). Without swtpm
//! the tests print a loud skip, or fail when `TB_REQUIRE_TPM=1` (CI).
#![cfg(feature = "azure-vtpm")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

#[path = "support/vtpm.rs"]
mod vtpm;

use std::time::{Duration, SystemTime};

use trustbridge_enclave::attestation::AttestationProvider;
use trustbridge_enclave::attestation::azure_vtpm::certs::{AzureCertificates, CertificateSource};
use trustbridge_enclave::attestation::azure_vtpm::{AzureVtpm, AzureVtpmConfig};
use trustbridge_protocol::binding::EvidenceBinding;
use trustbridge_verifier::simulated::SimulatedTee;
use trustbridge_verifier::x509::ParsedCertificate;
use trustbridge_verifier::{AzureEvidence, check_binding, verify_azure};
use vtpm::{Swtpm, hcl_report, pem_file};

fn binding(nonce: u8) -> EvidenceBinding {
    EvidenceBinding {
        nonce: vec![nonce; 32],
        ohttp_keys_sha256: [1; 32],
        receipt_key: [2; 32],
        release_key: [3; 32],
        broker_key: [4; 32],
        provider_key: None,
        manifest_sha256: None,
    }
}

fn now() -> SystemTime {
    SystemTime::now()
}

fn provider(tpm: &Swtpm, certs: CertificateSource) -> AzureVtpm {
    AzureVtpm::new(AzureVtpmConfig {
        tcti: tpm.tcti(),
        refresh_timeout: Duration::from_millis(300),
        certificates: certs,
    })
}

#[test]
fn evidence_from_the_vtpm_verifies_and_carries_the_binding() {
    let Some(tpm) = Swtpm::start() else { return };
    let tee = SimulatedTee::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ak = tpm.provision_ak();
    let b = binding(9);
    let digest = b.digest().unwrap();
    tpm.provision_hcl_report(&hcl_report(&tee, &ak, &digest));
    assert!(AzureVtpm::present(&tpm.tcti()));
    // A report-data index of another size (left by other software) is replaced.
    tpm.define_report_data_index(32);

    let p = provider(&tpm, CertificateSource::File(pem_file(&tee, dir.path())));
    assert_eq!(p.name(), "azure-vtpm");
    assert!(!p.simulated());
    let ev = p.evidence(&b).unwrap();
    assert_eq!(ev.platform, trustbridge_protocol::Platform::AzureSnpVtpm);
    // The guest's report data went where the paravisor reads it.
    assert_eq!(tpm.read_report_data(), digest.to_vec());

    let parsed = AzureEvidence::from_json(&ev.bytes).unwrap();
    assert_eq!(parsed.pcrs.len(), 24);
    assert_ne!(parsed.pcrs[7], [0; 32], "PCR 7 was extended");
    let extra: Vec<_> = ev
        .certificates
        .iter()
        .map(|d| ParsedCertificate::from_der(d, "chain").unwrap())
        .collect();
    let verified = verify_azure(&parsed, &extra, &tee.trust_roots(), now()).unwrap();
    assert_eq!(check_binding(&verified, &b), Ok(()));

    // Tampering twins: another nonce, a flipped quote byte, another simulation root.
    assert!(check_binding(&verified, &binding(8)).is_err());
    let mut flipped = parsed.clone();
    flipped.quote_message[40] ^= 1;
    assert!(verify_azure(&flipped, &extra, &tee.trust_roots(), now()).is_err());
    let other = SimulatedTee::new().unwrap();
    assert!(verify_azure(&parsed, &extra, &other.trust_roots(), now()).is_err());
}

#[test]
fn a_report_the_paravisor_did_not_regenerate_is_refused() {
    let Some(tpm) = Swtpm::start() else { return };
    let tee = SimulatedTee::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ak = tpm.provision_ak();
    // The report still carries the previous request's user-data.
    let stale = binding(1).digest().unwrap();
    tpm.provision_hcl_report(&hcl_report(&tee, &ak, &stale));
    let p = provider(&tpm, CertificateSource::File(pem_file(&tee, dir.path())));
    let err = p.evidence(&binding(2)).unwrap_err().to_string();
    assert!(
        err.contains("azure-vtpm") && err.contains("did not regenerate"),
        "{err}"
    );
}

#[test]
fn a_vtpm_without_the_azure_indices_is_named_in_the_error() {
    let Some(tpm) = Swtpm::start() else { return };
    let tee = SimulatedTee::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A plain TPM: no HCL report, no AK.
    assert!(!AzureVtpm::present(&tpm.tcti()));
    let p = provider(&tpm, CertificateSource::File(pem_file(&tee, dir.path())));
    let err = p.evidence(&binding(3)).unwrap_err().to_string();
    assert!(err.contains("0x01400001"), "{err}");
    // An HCL report but no attestation key.
    let ak = (vec![0xc5; 256], vec![1, 0, 1]);
    let b = binding(3);
    tpm.provision_hcl_report(&hcl_report(&tee, &ak, &b.digest().unwrap()));
    let err = p.evidence(&b).unwrap_err().to_string();
    assert!(err.contains("0x81000003"), "{err}");
}

#[test]
fn no_tpm_and_a_bad_tcti_are_clear_errors() {
    assert!(!AzureVtpm::present("swtpm:host=127.0.0.1,port=1"));
    let dir = tempfile::tempdir().unwrap();
    let tee = SimulatedTee::new().unwrap();
    let mut config = AzureVtpmConfig {
        tcti: "swtpm:host=127.0.0.1,port=1".into(),
        refresh_timeout: Duration::from_millis(100),
        certificates: CertificateSource::File(pem_file(&tee, dir.path())),
    };
    let err = AzureVtpm::new(config.clone())
        .evidence(&binding(1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("connecting to the TPM"), "{err}");
    config.tcti = "carrier-pigeon:/dev/null".into();
    let err = AzureVtpm::new(config)
        .evidence(&binding(1))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("TCTI") && err.contains("carrier-pigeon"),
        "{err}"
    );
}

#[test]
fn certificates_come_from_the_imds_answer_or_pem() {
    let tee = SimulatedTee::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pem = std::fs::read_to_string(pem_file(&tee, dir.path())).unwrap();
    let ders: Vec<_> = tee
        .snp_certificates()
        .iter()
        .map(|c| c.der().to_vec())
        .collect();

    let from_pem = AzureCertificates::parse(pem.as_bytes()).unwrap();
    assert_eq!(from_pem.vcek, ders[0]);
    assert_eq!(from_pem.chain, ders[1..].to_vec());

    // The IMDS THIM answer: the VCEK and the chain as separate PEM strings.
    let split = pem.find("-----BEGIN CERTIFICATE-----\n").unwrap();
    let second = pem[split + 1..].find("-----BEGIN").unwrap() + split + 1;
    let imds = serde_json::json!({
        "vcekCert": &pem[..second],
        "certificateChain": &pem[second..],
        "tcbm": "DB18000000000004",
    });
    let from_imds = AzureCertificates::parse(imds.to_string().as_bytes()).unwrap();
    assert_eq!(from_imds, from_pem);

    let err = AzureCertificates::parse(br#"{"certificateChain": ""}"#).unwrap_err();
    assert!(err.contains("vcekCert"), "{err}");
    assert!(AzureCertificates::parse(b"not a certificate").is_err());
    let missing =
        AzureCertificates::load(&CertificateSource::File(dir.path().join("none"))).unwrap_err();
    assert!(missing.contains("none"), "{missing}");
}

/// The IMDS request goes through the relay's egress as `CONNECT 169.254.169.254:80`, then
/// `GET /metadata/THIM/amd/certification` with `Metadata: true`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_fetched_from_the_imds_through_the_egress() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tee = SimulatedTee::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pem = std::fs::read_to_string(pem_file(&tee, dir.path())).unwrap();
    let answer = serde_json::json!({"vcekCert": pem, "certificateChain": ""}).to_string();
    let egress = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = egress.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = egress.accept().await.unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        // CONNECT head, then the GET head.
        let mut heads = 0;
        while heads < 2 {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&seen);
            let now = text.matches("\r\n\r\n").count();
            if now > heads && heads == 0 {
                s.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await
                    .unwrap();
            }
            heads = now;
        }
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        s.write_all(reply.as_bytes()).await.unwrap();
        String::from_utf8_lossy(&seen).into_owned()
    });
    let endpoint: trustbridge_transport::Endpoint = format!("tcp://{addr}").parse().unwrap();
    let certs = tokio::task::spawn_blocking(move || {
        AzureCertificates::load(&CertificateSource::Imds(endpoint))
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(certs.vcek, tee.snp_certificates()[0].der());
    let seen = server.await.unwrap();
    assert!(
        seen.starts_with("CONNECT 169.254.169.254:80 HTTP/1.1\r\n"),
        "{seen}"
    );
    assert!(
        seen.contains("GET /metadata/THIM/amd/certification HTTP/1.1\r\n"),
        "{seen}"
    );
    assert!(
        seen.to_ascii_lowercase().contains("metadata: true"),
        "{seen}"
    );
}
