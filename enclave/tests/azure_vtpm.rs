//! The Azure vTPM attester against a software TPM (`swtpm`), provisioned as an Azure
//! confidential VM's vTPM: an attestation key at `0x81000003` and an HCL report in NV index
//! `0x01400001` whose SNP report (from the simulated TEE) commits to variable data with that
//! AK and the `user-data`. The paravisor that regenerates the report on Azure is not here,
//! so each test provisions the report it needs: one with the expected `user-data`, one
//! stale. Its evidence goes through the real verifier and binding check.
//!
//! Needs `swtpm` (Debian: `swtpm`) and the `azure-vtpm` feature (libtss2). Without swtpm
//! the tests print a loud skip, or fail when `TB_REQUIRE_TPM=1` (CI).
#![cfg(feature = "azure-vtpm")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use base64::Engine;
use trustbridge_enclave::attestation::AttestationProvider;
use trustbridge_enclave::attestation::azure_vtpm::certs::{AzureCertificates, CertificateSource};
use trustbridge_enclave::attestation::azure_vtpm::tpm::{
    AK_HANDLE, HCL_REPORT_NV_INDEX, REPORT_DATA_NV_INDEX,
};
use trustbridge_enclave::attestation::azure_vtpm::{AzureVtpm, AzureVtpmConfig};
use trustbridge_protocol::binding::EvidenceBinding;
use trustbridge_verifier::simulated::{SimulatedTee, SnpSpec};
use trustbridge_verifier::x509::ParsedCertificate;
use trustbridge_verifier::{AzureEvidence, check_binding, verify_azure};
use tss_esapi::Context;
use tss_esapi::attributes::NvIndexAttributesBuilder;
use tss_esapi::handles::{NvIndexTpmHandle, PcrHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, RsaSchemeAlgorithm};
use tss_esapi::interface_types::dynamic_handles::Persistent;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::resource_handles::{Hierarchy, NvAuth, Provision};
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    DigestValues, MaxNvBuffer, NvPublicBuilder, Public, RsaExponent, RsaScheme,
};
use tss_esapi::tcti_ldr::TctiNameConf;

/// A running swtpm, killed on drop.
struct Swtpm {
    child: Child,
    port: u16,
    _state: tempfile::TempDir,
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Swtpm {
    /// Starts swtpm, or returns None (after a loud skip) when it is not installed.
    fn start() -> Option<Self> {
        if Command::new("swtpm").arg("--version").output().is_err() {
            assert!(
                std::env::var("TB_REQUIRE_TPM").as_deref() != Ok("1"),
                "TB_REQUIRE_TPM=1 but swtpm is not installed (apt-get install swtpm)"
            );
            eprintln!(
                "\n\n*** SKIPPED: swtpm is not installed; the Azure vTPM attester is untested ***\n\n"
            );
            return None;
        }
        let state = tempfile::tempdir().unwrap();
        // The swtpm TCTI talks to `port` and to `port + 1` (control).
        let port = (0..50)
            .find_map(|_| {
                let a = TcpListener::bind("127.0.0.1:0").ok()?;
                let p = a.local_addr().ok()?.port();
                TcpListener::bind(("127.0.0.1", p.checked_add(1)?)).ok()?;
                Some(p)
            })
            .unwrap();
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", state.path().display()))
            .arg("--server")
            .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
            .arg("--ctrl")
            .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
            .args(["--flags", "not-need-init,startup-clear"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let tpm = Self {
            child,
            port,
            _state: state,
        };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(tpm);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("swtpm did not listen on {port}");
    }

    fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    fn context(&self) -> Context {
        let mut c = Context::new(TctiNameConf::from_str(&self.tcti()).unwrap()).unwrap();
        c.set_sessions((Some(AuthSession::Password), None, None));
        c
    }

    /// Creates an RSA-2048 signing key, persists it at the AK handle; returns (n, e).
    fn provision_ak(&self) -> (Vec<u8>, Vec<u8>) {
        let mut c = self.context();
        let template = tss_esapi::utils::create_unrestricted_signing_rsa_public(
            RsaScheme::create(RsaSchemeAlgorithm::RsaSsa, Some(HashingAlgorithm::Sha256)).unwrap(),
            RsaKeyBits::Rsa2048,
            RsaExponent::default(),
        )
        .unwrap();
        let key = c
            .create_primary(Hierarchy::Owner, template, None, None, None, None)
            .unwrap();
        let persistent = Persistent::Persistent(
            tss_esapi::handles::PersistentTpmHandle::new(AK_HANDLE).unwrap(),
        );
        c.evict_control(Provision::Owner, key.key_handle.into(), persistent)
            .unwrap();
        // Something in the PCRs, so the quote covers more than zeros.
        let mut values = DigestValues::new();
        values.set(HashingAlgorithm::Sha256, vec![7u8; 32].try_into().unwrap());
        c.pcr_extend(PcrHandle::Pcr7, values).unwrap();
        let Public::Rsa { unique, .. } = key.out_public else {
            panic!("not RSA")
        };
        // RsaExponent::default() is 0, which means 65537.
        (unique.value().to_vec(), vec![1, 0, 1])
    }

    /// Defines the HCL report index with `report` (in 1 KiB writes, the TPM's NV buffer).
    fn provision_hcl_report(&self, report: &[u8]) {
        let mut c = self.context();
        let handle = NvIndexTpmHandle::new(HCL_REPORT_NV_INDEX).unwrap();
        let attributes = NvIndexAttributesBuilder::new()
            .with_owner_write(true)
            .with_owner_read(true)
            .build()
            .unwrap();
        let public = NvPublicBuilder::new()
            .with_nv_index(handle)
            .with_index_name_algorithm(HashingAlgorithm::Sha256)
            .with_index_attributes(attributes)
            .with_data_area_size(report.len())
            .build()
            .unwrap();
        let index = c.nv_define_space(Provision::Owner, None, public).unwrap();
        for (i, chunk) in report.chunks(1024).enumerate() {
            let buf = MaxNvBuffer::try_from(chunk.to_vec()).unwrap();
            c.nv_write(NvAuth::Owner, index, buf, (i * 1024) as u16)
                .unwrap();
        }
    }

    fn read_report_data(&self) -> Vec<u8> {
        let mut c = self.context();
        tss_esapi::abstraction::nv::read_full(
            &mut c,
            NvAuth::Owner,
            NvIndexTpmHandle::new(REPORT_DATA_NV_INDEX).unwrap(),
        )
        .unwrap()
    }
}

/// An HCL report as the paravisor builds it: header, SNP report (REPORT_DATA[..32] =
/// SHA-256 of the variable data), IGVM request data, variable data.
fn hcl_report(tee: &SimulatedTee, ak: &(Vec<u8>, Vec<u8>), user_data: &[u8]) -> Vec<u8> {
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let var_data = serde_json::to_vec(&serde_json::json!({
        "keys": [{"kid": "HCLAkPub", "key_ops": ["sign"], "kty": "RSA",
                  "e": b64(&ak.1), "n": b64(&ak.0)}],
        "user-data": hex::encode_upper(user_data),
    }))
    .unwrap();
    let mut spec = SnpSpec::default();
    spec.report_data[..32]
        .copy_from_slice(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &var_data).as_ref());
    let snp = tee.snp_report(&spec).unwrap();
    let mut r = Vec::new();
    r.extend_from_slice(b"HCLA");
    let total = 32 + snp.len() + 20 + var_data.len();
    for word in [2u32, total as u32, 2, 0] {
        r.extend_from_slice(&word.to_le_bytes());
    }
    r.resize(32, 0);
    r.extend_from_slice(&snp);
    for word in [20 + var_data.len() as u32, 1, 2, 1, var_data.len() as u32] {
        r.extend_from_slice(&word.to_le_bytes());
    }
    r.extend_from_slice(&var_data);
    r
}

fn binding(nonce: u8) -> EvidenceBinding {
    EvidenceBinding {
        nonce: vec![nonce; 32],
        ohttp_keys_sha256: [1; 32],
        receipt_key: [2; 32],
        release_key: [3; 32],
    }
}

fn now() -> SystemTime {
    SystemTime::now()
}

/// The simulated VCEK and chain as a PEM file (what an operator saves from the IMDS).
fn pem_file(tee: &SimulatedTee, dir: &Path) -> std::path::PathBuf {
    let path = dir.join("certs.pem");
    let mut pem = String::new();
    for c in tee.snp_certificates() {
        let b = base64::engine::general_purpose::STANDARD.encode(c.der());
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in b.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap());
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    std::fs::write(&path, pem).unwrap();
    path
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

    let p = provider(&tpm, CertificateSource::File(pem_file(&tee, dir.path())));
    assert_eq!(p.name(), "azure-vtpm");
    assert!(!p.simulated());
    let ev = p.evidence(&b).unwrap();
    assert_eq!(ev.platform, "azure-snp-vtpm");
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
