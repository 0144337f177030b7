//! The Azure attester's VCEK follows the host's TCB: the certificates are kept between
//! attestations while their VCEK endorses the host's SNP report (chip id and reported TCB),
//! and loaded again when it no longer does, as after a host firmware update. Checked on
//! Azure's real evidence (trustee's captured HCL report and its VCEK, and a VCEK of
//! another host) and on simulated hosts whose TCB changes under a certificate file.
#![cfg(feature = "azure-vtpm")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

#[path = "support/vtpm.rs"]
mod vtpm;

use trustbridge_enclave::attestation::azure_vtpm::certs::{
    AzureCertificates, CertificateCache, CertificateSource,
};
use trustbridge_testkit::read_vector;
use trustbridge_verifier::hcl_report::HclReport;
use trustbridge_verifier::simulated::{SIM_CHIP_ID, SIM_TCB, SimulatedTee, SnpSpec};
use trustbridge_verifier::snp_report::{SnpReport, TcbComponents};

const TEST: &str = "azure_certificates";

/// The SNP report inside a real HCL report.
fn real_snp_report(hcl: &[u8]) -> Vec<u8> {
    HclReport::parse(hcl).unwrap().snp_report
}

/// The VCEK of a saved IMDS answer or PEM file.
fn certificates(bytes: &[u8]) -> AzureCertificates {
    AzureCertificates::parse(bytes).unwrap()
}

#[test]
fn a_real_vcek_endorses_its_hosts_report_and_not_anothers() {
    let (Some(hcl), Some(vcek), Some(other)) = (
        read_vector(TEST, "azure-snp-vtpm/trustee/hcl-report.bin"),
        read_vector(TEST, "azure-snp-vtpm/trustee/vcek.pem"),
        read_vector(TEST, "azure-snp-vtpm/kinvolk/certs.pem"),
    ) else {
        return;
    };
    let report = SnpReport::parse(&real_snp_report(&hcl)).unwrap();
    certificates(&vcek).check_endorses(&report).unwrap();
    // Another Azure host's VCEK (another chip).
    let err = certificates(&other).check_endorses(&report).unwrap_err();
    assert!(err.contains("chip id"), "{err}");
    // The same host after a microcode update: its report's TCB moved past the VCEK's.
    let mut updated = report.clone();
    updated.reported_tcb.0[7] += 1;
    let err = certificates(&vcek).check_endorses(&updated).unwrap_err();
    assert!(err.contains("microcode"), "{err}");
}

/// A simulated host whose VCEK certifies `tcb`.
struct Host {
    tee: SimulatedTee,
    tcb: TcbComponents,
}

impl Host {
    fn at(snp: u8) -> Self {
        let tcb = TcbComponents { snp, ..SIM_TCB };
        Self {
            tee: SimulatedTee::with_vcek_hw_id(&SIM_CHIP_ID, tcb).unwrap(),
            tcb,
        }
    }

    /// A report from this host as it now reports its TCB.
    fn report(&self) -> Vec<u8> {
        self.report_at(self.tcb)
    }

    fn report_at(&self, reported_tcb: TcbComponents) -> Vec<u8> {
        self.tee
            .snp_report(&SnpSpec {
                reported_tcb,
                ..SnpSpec::default()
            })
            .unwrap()
    }

    fn vcek(&self) -> Vec<u8> {
        self.tee.snp_certificates()[0].der().to_vec()
    }
}

#[test]
fn the_kept_vcek_is_loaded_again_when_the_hosts_tcb_changes() {
    let dir = tempfile::tempdir().unwrap();
    let before = Host::at(24);
    let after = Host::at(25);
    // The operator's certificate file, as saved from the IMDS before the update.
    let file = vtpm::pem_file(&before.tee, dir.path());
    let cache = CertificateCache::new(CertificateSource::File(file.clone()));
    let used = |report: &[u8]| cache.for_report(report).unwrap().vcek;
    assert!(used(&before.report()) == before.vcek(), "the first load");

    // The file now holds the updated host's VCEK; the kept one still endorses the old
    // report, so it is used without reading the file again.
    let staged = dir.path().join("staged");
    std::fs::create_dir(&staged).unwrap();
    std::fs::rename(vtpm::pem_file(&after.tee, &staged), &file).unwrap();
    assert!(
        used(&before.report()) == before.vcek(),
        "the kept VCEK, without a reload"
    );

    // The host reports its new TCB: the kept VCEK no longer endorses it, so the file is
    // read again and its VCEK (which does) is used from now on.
    assert!(used(&after.report()) == after.vcek(), "the reloaded VCEK");

    // A report that no VCEK from the source endorses is an error naming the mismatch,
    // never evidence with the wrong certificate.
    let err = cache
        .for_report(&after.report_at(TcbComponents { snp: 26, ..SIM_TCB }))
        .unwrap_err();
    assert!(
        err.contains("does not endorse")
            && err.contains("snp")
            && err.contains(&file.display().to_string()),
        "{err}"
    );
    // A source that cannot be read is named too.
    std::fs::remove_file(&file).unwrap();
    let err = cache
        .for_report(&after.report_at(TcbComponents { snp: 27, ..SIM_TCB }))
        .unwrap_err();
    assert!(err.contains(&file.display().to_string()), "{err}");
    // And a report that is not one at all.
    assert!(
        cache
            .for_report(b"not a report")
            .unwrap_err()
            .contains("SNP report")
    );
}
