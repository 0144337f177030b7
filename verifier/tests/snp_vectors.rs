//! Real AMD SEV-SNP reports from ../shared/vectors/sev-snp with their VCEK/VLEK and AMD
//! chains, verified at fixed times, each with its tampering twins.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use trustbridge_testkit::{hex_decode, vectors_dir};
use trustbridge_verifier::snp::{EndorsementKeyInfo, parse_hw_id};
use trustbridge_verifier::snp_report::SnpReport;
use trustbridge_verifier::x509::{ParsedCertificate, verify_chain};
use trustbridge_verifier::{
    Checks, Platform, Policy, PolicyError, TrustRoots, VerifyError, verify_snp,
};

/// 2025-02-19T00:00:00Z: inside every SNP certificate's validity window.
const FIXED: u64 = 1_739_923_200;
/// 2026-11-21T00:00:00Z.
const TODAY: u64 = 1_795_219_200;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn dir() -> Option<PathBuf> {
    vectors_dir("sev-snp").map(|d| d.join("sev-snp"))
}

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(dir().unwrap().join(rel)).unwrap()
}

fn der(rel: &str) -> ParsedCertificate {
    ParsedCertificate::from_der(&read(rel), "test").unwrap()
}

fn pem(rel: &str) -> Vec<ParsedCertificate> {
    ParsedCertificate::from_pem_chain(&read(rel), "test").unwrap()
}

fn expected() -> serde_json::Value {
    serde_json::from_slice(&read("EXPECTED.json")).unwrap()
}

/// Each set: report, endorsement key, AMD certificates.
fn sets() -> Vec<(&'static str, Vec<ParsedCertificate>)> {
    let milan = pem("amd-certs/milan_ask.pem")
        .into_iter()
        .chain(pem("amd-certs/milan_ark.pem"))
        .collect::<Vec<_>>();
    let with = |ek: &str, rest: &[ParsedCertificate]| {
        std::iter::once(der(ek))
            .chain(rest.iter().cloned())
            .collect()
    };
    vec![
        (
            "virtee-sev/report_milan.bin",
            with(
                "virtee-sev/vcek_milan.der",
                &pem("virtee-sev/cert_chain_milan"),
            ),
        ),
        (
            "trustee/test-report.bin",
            with("trustee/test-vcek.der", &milan),
        ),
        (
            "trustee/test-vlek-report.bin",
            with(
                "trustee/test-vlek.der",
                &pem("amd-certs/milan_ask_ark_asvk.pem"),
            ),
        ),
    ]
}

#[test]
fn every_report_verifies_with_expected_fields() {
    if dir().is_none() {
        return;
    }
    let exp = expected();
    for (report, certs) in sets() {
        let e = &exp[report];
        let ev = verify_snp(&read(report), &certs, &TrustRoots::production(), at(FIXED))
            .unwrap_or_else(|err| panic!("{report}: {err}"));
        assert_eq!(ev.platform, Platform::Snp);
        assert!(!ev.simulated && !ev.debug, "{report}");
        for name in ["measurement", "host_data", "report_data"] {
            assert_eq!(
                ev.measurements[name],
                hex_decode(e[name].as_str().unwrap()),
                "{report} {name}"
            );
        }
        // A zero CHIP_ID (the host's MASK_CHIP_ID; the VLEK report has one) is no
        // measurement of anything.
        let chip_id = hex_decode(e["chip_id"].as_str().unwrap());
        if chip_id.iter().all(|&b| b == 0) {
            assert!(!ev.measurements.contains_key("chip_id"), "{report}");
            assert_eq!(ev.facts["chip_id"], "masked by the host (MASK_CHIP_ID)");
        } else {
            assert_eq!(ev.measurements["chip_id"], chip_id, "{report}");
        }
        assert_eq!(ev.facts["version"], e["version"].to_string());
        assert_eq!(ev.facts["vmpl"], e["vmpl"].to_string());
        assert_eq!(ev.facts["policy"], e["policy_hex"].as_str().unwrap());
        let t = &e["reported_tcb"];
        assert_eq!(
            ev.facts["reported_tcb"],
            format!(
                "bl={} tee={} snp={} ucode={}",
                t["bootloader"], t["tee"], t["snp"], t["microcode"]
            )
        );
        assert_eq!(
            ev.binding.report_data.as_deref(),
            Some(&hex_decode(e["report_data"].as_str().unwrap())[..])
        );
        assert_eq!(
            hex::encode(ev.chain.last().unwrap().sha256),
            trustbridge_verifier::AMD_ARK_MILAN_SHA256
        );
        let claims = ev.snp.as_ref().unwrap();
        assert_eq!(claims.vmpl, e["vmpl"].as_u64().unwrap() as u32);
        assert_eq!(
            format!("{:#x}", claims.policy),
            e["policy_hex"].as_str().unwrap()
        );
        assert_eq!(
            claims.reported_tcb.microcode,
            t["microcode"].as_u64().unwrap() as u8
        );
        assert_eq!(
            claims.current_tcb.microcode,
            e["current_tcb"]["microcode"].as_u64().unwrap() as u8
        );
        assert_eq!(Policy::default().check(&ev, &mut Checks::default()), Ok(()));
    }
}

#[test]
fn vcek_reports_are_still_valid_today_but_the_vlek_has_expired() {
    if dir().is_none() {
        return;
    }
    for (report, certs) in sets() {
        let result = verify_snp(&read(report), &certs, &TrustRoots::production(), at(TODAY));
        if report.contains("vlek") {
            assert!(
                matches!(result, Err(VerifyError::CertificateExpired { .. })),
                "{report}: {result:?}"
            );
        } else {
            assert!(result.is_ok(), "{report}: {result:?}");
        }
    }
}

#[test]
fn validity_window_edges_of_the_vcek() {
    if dir().is_none() {
        return;
    }
    let (report, certs) = sets().remove(0);
    // VCEK valid 2023-04-03T19:23:43Z .. 2030-04-03T19:23:43Z.
    let (start, end) = (1_680_549_823u64, 1_901_474_623u64);
    let roots = TrustRoots::production();
    assert!(verify_snp(&read(report), &certs, &roots, at(start)).is_ok());
    assert!(verify_snp(&read(report), &certs, &roots, at(end)).is_ok());
    assert!(matches!(
        verify_snp(&read(report), &certs, &roots, at(start - 1)),
        Err(VerifyError::CertificateNotYetValid { .. })
    ));
    assert!(matches!(
        verify_snp(&read(report), &certs, &roots, at(end + 1)),
        Err(VerifyError::CertificateExpired { .. })
    ));
}

#[test]
fn flipped_signature_and_report_bytes_are_rejected() {
    if dir().is_none() {
        return;
    }
    for (report, certs) in sets() {
        let original = read(report);
        // r, s, the measurement, the report data and the guest SVN.
        for pos in [0x2A0usize, 0x2E8, 0x90, 0x50, 0x04] {
            let mut bad = original.clone();
            bad[pos] ^= 0x01;
            let err = verify_snp(&bad, &certs, &TrustRoots::production(), at(FIXED)).unwrap_err();
            assert_eq!(
                err,
                VerifyError::Signature { what: "SNP report" },
                "{report} byte {pos:#x}"
            );
        }
    }
}

#[test]
fn wrong_root_and_missing_or_wrong_certificates_are_rejected() {
    if dir().is_none() {
        return;
    }
    let (report, certs) = sets().remove(0);
    let report = read(report);
    let err = verify_snp(&report, &certs, &TrustRoots::empty(), at(FIXED)).unwrap_err();
    assert!(matches!(err, VerifyError::UntrustedRoot { .. }), "{err}");
    // Without the ASK, or with the VCEK alone, AMD's built-in chain completes it.
    let no_ask = vec![certs[0].clone(), certs[2].clone()];
    verify_snp(&report, &no_ask, &TrustRoots::production(), at(FIXED)).unwrap();
    verify_snp(&report, &certs[..1], &TrustRoots::production(), at(FIXED)).unwrap();
    // The built-in certificates complete chains; they do not make roots trusted.
    let err = verify_snp(
        &read(sets().remove(2).0),
        &[der("trustee/test-vlek.der")],
        &TrustRoots::empty(),
        at(FIXED),
    )
    .unwrap_err();
    assert!(
        matches!(err, VerifyError::UntrustedRoot { .. }),
        "built-in issuers anchor only to pinned roots: {err}"
    );
    let err = verify_snp(&report, &[], &TrustRoots::production(), at(FIXED)).unwrap_err();
    assert_eq!(err, VerifyError::MissingEndorsementKey);
    // Another chip's VCEK (trustee's) does not sign this report.
    let mut other = certs.clone();
    other[0] = der("trustee/test-vcek.der");
    let err = verify_snp(&report, &other, &TrustRoots::production(), at(FIXED)).unwrap_err();
    assert_eq!(err, VerifyError::Signature { what: "SNP report" });
    // A VLEK-signed report presented with a VCEK.
    let (vlek_report, _) = sets().remove(2);
    let err = verify_snp(
        &read(vlek_report),
        &certs,
        &TrustRoots::production(),
        at(FIXED),
    )
    .unwrap_err();
    assert!(matches!(err, VerifyError::LeafUsage { .. }), "{err}");
}

#[test]
fn the_two_invalid_vceks_parse_but_do_not_chain() {
    if dir().is_none() {
        return;
    }
    let (report, certs) = sets().remove(1);
    let expected_hw_id: Vec<u8> = (0u8..64).collect();
    for name in [
        "trustee/test-vcek-invalid-legacy.der",
        "trustee/test-vcek-invalid-new.der",
    ] {
        let cert = der(name);
        let info = EndorsementKeyInfo::from_certificate(&cert).unwrap();
        assert_eq!(info.hw_id.as_deref(), Some(&expected_hw_id[..]), "{name}");
        let mut bad = certs.clone();
        bad[0] = cert;
        let err =
            verify_snp(&read(report), &bad, &TrustRoots::production(), at(FIXED)).unwrap_err();
        assert!(
            matches!(err, VerifyError::CertificateSignature { .. }),
            "{name}: {err}"
        );
    }
    assert!(parse_hw_id(&[1, 2, 3]).is_err());
}

#[test]
fn endorsement_key_extensions_match_expected() {
    if dir().is_none() {
        return;
    }
    let exp = expected();
    let info = EndorsementKeyInfo::from_certificate(&der("virtee-sev/vcek_milan.der")).unwrap();
    assert_eq!(info.product, "Milan-B0");
    assert_eq!(
        (
            info.tcb.bootloader,
            info.tcb.tee,
            info.tcb.snp,
            info.tcb.microcode
        ),
        (3, 0, 8, 115)
    );
    assert_eq!(
        info.hw_id.unwrap(),
        hex_decode(
            exp["virtee-sev/report_milan.bin"]["chip_id"]
                .as_str()
                .unwrap()
        )
    );
    let vlek = EndorsementKeyInfo::from_certificate(&der("trustee/test-vlek.der")).unwrap();
    assert_eq!(
        (vlek.tcb.bootloader, vlek.tcb.snp, vlek.tcb.microcode),
        (4, 24, 217)
    );
    assert_eq!(vlek.hw_id, None);
}

#[test]
fn turin_and_genoa_chains_verify() {
    if dir().is_none() {
        return;
    }
    let mut chain = vec![der("virtee-sev/vcek_turin.der")];
    chain.extend(pem("virtee-sev/cert_chain_turin"));
    verify_chain(&chain, at(FIXED)).unwrap();
    assert_eq!(
        hex::encode(chain.last().unwrap().sha256()),
        trustbridge_verifier::AMD_ARK_TURIN_SHA256
    );
    let info = EndorsementKeyInfo::from_certificate(&chain[0]).unwrap();
    assert!(info.is_turin(), "{}", info.product);
    assert_eq!(info.hw_id.map(|h| h.len()), Some(8));
    let mut genoa = pem("amd-certs/genoa_ask.pem");
    genoa.extend(pem("amd-certs/genoa_ark.pem"));
    verify_chain(&genoa, at(FIXED)).unwrap();
    assert_eq!(
        hex::encode(genoa[1].sha256()),
        trustbridge_verifier::AMD_ARK_GENOA_SHA256
    );
    // Turin's ASK does not chain to Milan's ARK.
    let mixed = vec![
        pem("amd-certs/turin_ask.pem").remove(0),
        pem("amd-certs/milan_ark.pem").remove(0),
    ];
    assert!(verify_chain(&mixed, at(FIXED)).is_err());
}

#[test]
fn nonce_policy_compares_report_data() {
    if dir().is_none() {
        return;
    }
    let exp = expected();
    let (report, certs) = sets().remove(1);
    let ev = verify_snp(&read(report), &certs, &TrustRoots::production(), at(FIXED)).unwrap();
    // trustee's report carries a 32-byte nonce zero-padded to 64 bytes.
    let report_data = hex_decode(exp[report]["report_data"].as_str().unwrap());
    let nonce = report_data[..32].to_vec();
    let ok = Policy {
        nonce: Some(nonce.clone()),
        ..Policy::default()
    };
    assert_eq!(ok.check(&ev, &mut Checks::default()), Ok(()));
    let mut wrong = nonce;
    wrong[0] ^= 1;
    let bad = Policy {
        nonce: Some(wrong),
        ..Policy::default()
    };
    assert!(matches!(
        bad.check(&ev, &mut Checks::default()),
        Err(PolicyError::NonceMismatch { .. })
    ));
    let mut m = Policy::default();
    m.expected.insert("measurement".into(), vec![0; 48]);
    assert!(matches!(
        m.check(&ev, &mut Checks::default()),
        Err(PolicyError::MeasurementMismatch { .. })
    ));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..Default::default() })]

    /// Random mutations of a valid report never verify (the unsigned tail must be zero).
    #[test]
    fn random_mutations_never_verify(edits in proptest::collection::vec((proptest::prelude::any::<proptest::sample::Index>(), 1u8..=255), 1..4)) {
        if dir().is_none() {
            return Ok(());
        }
        let (report, certs) = sets().remove(1);
        let mut r = read(report);
        for (index, xor) in edits {
            let i = index.index(r.len());
            r[i] ^= xor;
        }
        proptest::prop_assert!(verify_snp(&r, &certs, &TrustRoots::production(), at(FIXED)).is_err());
    }
}

#[test]
fn unsigned_reserved_tail_must_be_zero() {
    if dir().is_none() {
        return;
    }
    let (report, certs) = sets().remove(0);
    let mut r = read(report);
    r[0x400] = 1;
    let err = verify_snp(&r, &certs, &TrustRoots::production(), at(FIXED)).unwrap_err();
    assert!(matches!(err, VerifyError::Malformed { .. }), "{err}");
}

/// The VCEK endorses its own report; a hwID one byte off, or longer than a chip id (only a
/// caller-built `EndorsementKeyInfo` can hold one), is a chip-id mismatch, never a panic.
#[test]
fn endorsement_checks_the_chip_id_whatever_its_length() {
    if dir().is_none() {
        return;
    }
    let report = SnpReport::parse(&read("virtee-sev/report_milan.bin")).unwrap();
    let info = EndorsementKeyInfo::from_certificate(&der("virtee-sev/vcek_milan.der")).unwrap();
    info.check_endorses(&report).unwrap();
    let hw_id = info.hw_id.clone().unwrap();
    let mut flipped = hw_id.clone();
    flipped[63] ^= 1;
    let mut overlong = hw_id;
    overlong.push(0);
    for bad in [flipped, overlong] {
        let twin = EndorsementKeyInfo {
            hw_id: Some(bad),
            ..info.clone()
        };
        assert!(
            matches!(
                twin.check_endorses(&report),
                Err(VerifyError::ChipIdMismatch)
            ),
            "{:?}",
            twin.check_endorses(&report)
        );
    }
}
