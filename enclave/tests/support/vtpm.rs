//! A software TPM (`swtpm`) provisioned as an Azure confidential VM's vTPM, for the tests of
//! the Azure vTPM attester: an attestation key at `0x81000003` and an HCL report in NV index
//! `0x01400001` over a simulated SNP report. Shared by `azure_vtpm.rs`,
//! `azure_certificates.rs`, `azure_boot.rs` and `authorize.rs`.
#![allow(dead_code, unreachable_pub)] // each test file uses a different part

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use trustbridge_enclave::attestation::azure_vtpm::tpm::{
    AK_HANDLE, HCL_REPORT_NV_INDEX, REPORT_DATA_NV_INDEX,
};
use trustbridge_verifier::simulated::{SimulatedTee, SnpSpec};
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

/// Port pairs [`free_port_pair`] handed out in this test process. The tests of a file run
/// in parallel threads, and a port free a moment ago may by now be another test's P + 1
/// (seen in CI: "swtpm: Could not open TCP socket: Address already in use", and a TPM
/// that never answered).
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A loopback port P, free a moment ago, with P + 1 free too, neither handed out before
/// in this process: the swtpm TCTI talks to P (TPM commands) and P + 1 (control).
pub fn free_port_pair() -> u16 {
    (0..50)
        .find_map(|_| {
            let a = TcpListener::bind("127.0.0.1:0").ok()?;
            let p = a.local_addr().ok()?.port();
            let next = p.checked_add(1)?;
            TcpListener::bind(("127.0.0.1", next)).ok()?;
            let mut taken = HANDED_OUT.lock().unwrap();
            if taken.contains(&p) || taken.contains(&next) {
                return None;
            }
            taken.extend([p, next]);
            Some(p)
        })
        .unwrap()
}

/// A running swtpm, killed on drop.
pub struct Swtpm {
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
    pub fn start() -> Option<Self> {
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
        // Another process may take the pair between the check and swtpm's bind: swtpm
        // then exits, and it starts again on another pair.
        for _ in 0..5 {
            let state = tempfile::tempdir().unwrap();
            let port = free_port_pair();
            let mut child = Command::new("swtpm")
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
            for _ in 0..200 {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                let listening = |p: u16| std::net::TcpStream::connect(("127.0.0.1", p)).is_ok();
                // Both ports answer, and not for some other process that beat this swtpm
                // to its bind (it would have exited).
                if listening(port) && listening(port + 1) && child.try_wait().unwrap().is_none() {
                    return Some(Self {
                        child,
                        port,
                        _state: state,
                    });
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("swtpm did not start on any of five port pairs");
    }

    /// The TPM command port (`port() + 1` is the control port).
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    pub fn context(&self) -> Context {
        let mut c = Context::new(TctiNameConf::from_str(&self.tcti()).unwrap()).unwrap();
        c.set_sessions((Some(AuthSession::Password), None, None));
        c
    }

    /// Creates an RSA-2048 signing key, persists it at the AK handle; returns (n, e).
    pub fn provision_ak(&self) -> (Vec<u8>, Vec<u8>) {
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

    /// (Re)defines the HCL report index with `report`, as the paravisor regenerates it.
    pub fn provision_hcl_report(&self, report: &[u8]) {
        self.define_nv(HCL_REPORT_NV_INDEX, report);
    }

    /// Defines the report-data index with `len` zero bytes.
    pub fn define_report_data_index(&self, len: usize) {
        self.define_nv(REPORT_DATA_NV_INDEX, &vec![0u8; len]);
    }

    /// (Re)defines the owner-readable, owner-writable NV index `index` to hold `data`,
    /// written in 1 KiB pieces (the TPM's NV buffer).
    fn define_nv(&self, index: u32, data: &[u8]) {
        let mut c = self.context();
        let handle = NvIndexTpmHandle::new(index).unwrap();
        if let Ok(old) = c.execute_without_session(|c| c.tr_from_tpm_public(handle.into())) {
            c.nv_undefine_space(Provision::Owner, old.into()).unwrap();
        }
        let attributes = NvIndexAttributesBuilder::new()
            .with_owner_write(true)
            .with_owner_read(true)
            .build()
            .unwrap();
        let public = NvPublicBuilder::new()
            .with_nv_index(handle)
            .with_index_name_algorithm(HashingAlgorithm::Sha256)
            .with_index_attributes(attributes)
            .with_data_area_size(data.len())
            .build()
            .unwrap();
        let nv = c.nv_define_space(Provision::Owner, None, public).unwrap();
        for (i, chunk) in data.chunks(1024).enumerate() {
            let buf = MaxNvBuffer::try_from(chunk.to_vec()).unwrap();
            c.nv_write(NvAuth::Owner, nv, buf, (i * 1024) as u16)
                .unwrap();
        }
    }

    pub fn read_report_data(&self) -> Vec<u8> {
        let mut c = self.context();
        tss_esapi::abstraction::nv::read_full(
            &mut c,
            NvAuth::Owner,
            NvIndexTpmHandle::new(REPORT_DATA_NV_INDEX).unwrap(),
        )
        .unwrap()
    }
}

/// An HCL report as the paravisor builds it, over the simulator's default SNP guest.
pub fn hcl_report(tee: &SimulatedTee, ak: &(Vec<u8>, Vec<u8>), user_data: &[u8]) -> Vec<u8> {
    tee.hcl_report(&SnpSpec::default(), ak, user_data).unwrap()
}

/// The simulated VCEK and chain as a PEM file (what an operator saves from the IMDS).
pub fn pem_file(tee: &SimulatedTee, dir: &Path) -> std::path::PathBuf {
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
