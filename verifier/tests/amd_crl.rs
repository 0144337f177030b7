//! AMD's certificate revocation lists, as the KDS serves them (two real ones, in
//! `tests/data/amd`, see its README), applied to real reports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use trustbridge_verifier::crl::RevocationList;
use trustbridge_verifier::x509::ParsedCertificate;
use trustbridge_verifier::{Checks, Platform, TrustRoots, VerifyError, verify_snp_logged};

fn data(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/data/amd/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

#[test]
fn amd_lists_parse_and_name_what_they_revoke() {
    let genoa = RevocationList::from_der(&data("genoa_crl.der")).unwrap();
    assert!(
        genoa.issuer().contains("CN=ARK-Genoa"),
        "{}",
        genoa.issuer()
    );
    assert!(genoa.revokes(&[0x02, 0x00, 0x01]), "the earlier Genoa ASK");
    assert!(!genoa.revokes(&[0x02, 0x00, 0x02]), "the current Genoa ASK");
    assert!(
        genoa.stale_at(at(1_795_219_200)),
        "its next update was in 2023"
    );
    let milan = RevocationList::from_der(&data("milan_crl.der")).unwrap();
    assert!(!milan.revokes(&[0x01, 0x00, 0x01]));
    assert!(RevocationList::from_der(b"not a crl").is_err());
    assert!(RevocationList::from_der(&vec![0x30; 2 << 20]).is_err());
}

/// A real Milan report with AMD's real Milan CRL: the list verifies under the pinned ARK,
/// does not revoke the chain, and is reported; flipped, it cannot be used and the report
/// is refused.
#[test]
fn a_real_report_is_checked_against_amds_list() {
    let Some(d) = trustbridge_testkit::vectors_dir("amd_crl") else {
        return;
    };
    let report = std::fs::read(d.join("sev-snp/trustee/test-report.bin")).unwrap();
    let vcek = ParsedCertificate::from_der(
        &std::fs::read(d.join("sev-snp/trustee/test-vcek.der")).unwrap(),
        "VCEK",
    )
    .unwrap();
    let now = at(1_739_923_200); // 2025-02-19
    let verify = |lists: &[Vec<u8>]| {
        let mut roots = TrustRoots::production();
        for der in lists {
            roots.add_revocation_list(RevocationList::from_der(der).unwrap());
        }
        let mut checks = Checks::default();
        let r = verify_snp_logged(
            &report,
            std::slice::from_ref(&vcek),
            &roots,
            now,
            Platform::Snp,
            &mut checks,
        );
        (r, checks)
    };
    let (r, checks) = verify(&[data("milan_crl.der"), data("genoa_crl.der")]);
    r.unwrap();
    let revocation = checks
        .as_slice()
        .iter()
        .find(|c| c.name == "revocation")
        .unwrap();
    assert!(revocation.passed);
    assert!(
        revocation.detail.contains("1 revocation list") && revocation.detail.contains("past"),
        "only the Milan list applies, and it is stale: {}",
        revocation.detail
    );
    let mut tampered = data("milan_crl.der");
    let n = tampered.len();
    tampered[n - 10] ^= 1; // in the signature
    let (r, _) = verify(&[tampered]);
    assert!(
        matches!(r, Err(VerifyError::RevocationListInvalid { .. })),
        "{r:?}"
    );
}
