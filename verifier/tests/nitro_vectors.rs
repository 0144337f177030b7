//! Real AWS Nitro attestation documents from ../shared/vectors/nitro, verified at their
//! fixed times, each with its tampering twins.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ciborium::Value;
use coset::{CborSerializable, CoseSign1};
use proptest::prelude::*;
use trustbridge_testkit::{hex_decode, read_vector, vectors_dir};
use trustbridge_verifier::{
    Checks, Policy, PolicyError, TrustRoots, VerifyError, verify_nitro, verify_nitro_logged,
};

const DOCS: [&str; 4] = [
    "anjuna_attestdoc_sample_prod_doc.bin",
    "anjuna_attestdoc_sample_prod_doc_with_publickey.bin",
    "anjuna_attester_sample_attestation_doc_full.bin",
    "evervault_debug-mode-attestation-doc.cbor",
];
const PROD: &str = "anjuna_attestdoc_sample_prod_doc.bin";
/// The day these tests were written: every document's chain has long expired.
const TODAY: u64 = 1_795_219_200; // 2026-11-21T00:00:00Z

fn expected() -> Option<serde_json::Value> {
    let bytes = read_vector("nitro", "nitro/EXPECTED.json")?;
    Some(serde_json::from_slice(&bytes).unwrap())
}

fn doc(name: &str) -> Vec<u8> {
    read_vector("nitro", &format!("nitro/{name}")).unwrap()
}

fn at_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn doc_time(exp: &serde_json::Value, name: &str) -> SystemTime {
    at_ms(exp[name]["timestamp_ms"].as_u64().unwrap())
}

fn roots() -> TrustRoots {
    TrustRoots::production()
}

#[test]
fn every_document_verifies_at_its_time_with_expected_measurements() {
    let Some(exp) = expected() else { return };
    for name in DOCS {
        let e = &exp[name];
        let ev = verify_nitro(&doc(name), &roots(), doc_time(&exp, name))
            .unwrap_or_else(|err| panic!("{name}: {err}"));
        assert!(!ev.simulated, "{name}");
        assert_eq!(
            ev.debug,
            e["debug_mode_pcr0_all_zero"].as_bool().unwrap(),
            "{name}"
        );
        assert_eq!(ev.facts["module_id"], e["module_id"].as_str().unwrap());
        assert_eq!(
            ev.measurements["pcr0"],
            hex_decode(e["pcr0"].as_str().unwrap()),
            "{name}"
        );
        for (i, value) in e["pcrs_nonzero"].as_object().unwrap() {
            assert_eq!(
                ev.measurements[&format!("pcr{i}")],
                hex_decode(value.as_str().unwrap()),
                "{name} pcr{i}"
            );
        }
        let zero_pcrs = ev
            .measurements
            .values()
            .filter(|v| v.iter().all(|&b| b == 0))
            .count();
        assert_eq!(
            zero_pcrs + e["pcrs_nonzero"].as_object().unwrap().len(),
            ev.measurements.len(),
            "{name}"
        );
        for (field, got) in [
            ("user_data_hex", &ev.binding.user_data),
            ("nonce_hex", &ev.binding.nonce),
            ("public_key_hex", &ev.binding.public_key),
        ] {
            let want = e[field].as_str().map(hex_decode);
            assert_eq!(got, &want, "{name} {field}");
        }
        assert_eq!(
            ev.chain.len(),
            1 + e["cabundle_len"].as_u64().unwrap() as usize
        );
        assert_eq!(
            hex::encode(ev.chain.last().unwrap().sha256),
            trustbridge_verifier::AWS_NITRO_ROOT_G1_SHA256
        );
    }
}

#[test]
fn pcr4_is_the_parent_instance_id_extend() {
    // SOURCES.md: PCR4 = SHA-384(48 zero bytes || parent instance id).
    let Some(exp) = expected() else { return };
    for name in [PROD, "anjuna_attestdoc_sample_prod_doc_with_publickey.bin"] {
        let ev = verify_nitro(&doc(name), &roots(), doc_time(&exp, name)).unwrap();
        let parent = exp[name]["parent_instance_id"].as_str().unwrap();
        let mut input = vec![0u8; 48];
        input.extend_from_slice(parent.as_bytes());
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA384, &input);
        assert_eq!(ev.measurements["pcr4"], d.as_ref(), "{name}");
    }
}

#[test]
fn every_document_is_expired_today() {
    let Some(_) = expected() else { return };
    let today = UNIX_EPOCH + Duration::from_secs(TODAY);
    for name in DOCS {
        let err = verify_nitro(&doc(name), &roots(), today).unwrap_err();
        assert!(
            matches!(err, VerifyError::CertificateExpired { .. }),
            "{name}: {err}"
        );
    }
}

#[test]
fn validity_window_edges() {
    let Some(exp) = expected() else { return };
    let window = exp[PROD]["chain_valid_window"].as_array().unwrap();
    let parse = |s: &serde_json::Value| humantime_secs(s.as_str().unwrap());
    let (start, end) = (parse(&window[0]), parse(&window[1]));
    let t = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
    assert!(verify_nitro(&doc(PROD), &roots(), t(start)).is_ok());
    assert!(verify_nitro(&doc(PROD), &roots(), t(end)).is_ok());
    assert!(matches!(
        verify_nitro(&doc(PROD), &roots(), t(start - 1)),
        Err(VerifyError::CertificateNotYetValid { .. })
    ));
    assert!(matches!(
        verify_nitro(&doc(PROD), &roots(), t(end + 1)),
        Err(VerifyError::CertificateExpired { .. })
    ));
}

/// "2021-03-17T22:01:55+00:00" -> Unix seconds.
fn humantime_secs(s: &str) -> u64 {
    let (date, time) = s.split_once('T').unwrap();
    let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let t: Vec<i64> = time[..8].split(':').map(|x| x.parse().unwrap()).collect();
    // Days from civil (Howard Hinnant).
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    (days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2]) as u64
}

#[test]
fn flipped_signature_byte_is_rejected() {
    let Some(exp) = expected() else { return };
    let mut d = doc(PROD);
    let n = d.len();
    d[n - 10] ^= 0x01;
    let err = verify_nitro(&d, &roots(), doc_time(&exp, PROD)).unwrap_err();
    assert_eq!(err, VerifyError::Signature { what: "COSE_Sign1" });
}

#[test]
fn flipped_payload_byte_is_rejected() {
    let Some(exp) = expected() else { return };
    let mut d = doc(PROD);
    let pcr0 = hex_decode(exp[PROD]["pcr0"].as_str().unwrap());
    let pos = d.windows(48).position(|w| w == pcr0.as_slice()).unwrap();
    d[pos + 5] ^= 0x80;
    let err = verify_nitro(&d, &roots(), doc_time(&exp, PROD)).unwrap_err();
    assert_eq!(err, VerifyError::Signature { what: "COSE_Sign1" });
}

#[test]
fn wrong_root_is_rejected() {
    let Some(exp) = expected() else { return };
    for roots in [TrustRoots::empty(), snp_only_roots()] {
        let err = verify_nitro(&doc(PROD), &roots, doc_time(&exp, PROD)).unwrap_err();
        assert!(matches!(err, VerifyError::UntrustedRoot { .. }), "{err}");
    }
}

fn snp_only_roots() -> TrustRoots {
    let mut r = TrustRoots::empty();
    let dir = vectors_dir("nitro").unwrap();
    let ark = std::fs::read(dir.join("sev-snp/amd-certs/milan_ark.pem")).unwrap();
    let ark = trustbridge_verifier::x509::ParsedCertificate::from_pem_chain(&ark, "ark").unwrap();
    r.add_root(trustbridge_verifier::Platform::Snp, &ark[0]);
    r
}

/// Re-encodes the document with its payload's `cabundle` changed by `edit`. The COSE
/// signature no longer matches, but the chain is checked first, so the chain error shows.
fn with_cabundle(d: &[u8], edit: impl FnOnce(&mut Vec<Value>)) -> Vec<u8> {
    let mut sign1 = CoseSign1::from_slice(d).unwrap();
    let mut payload: Value = ciborium::from_reader(sign1.payload.as_deref().unwrap()).unwrap();
    let Value::Map(entries) = &mut payload else {
        panic!()
    };
    let bundle = entries
        .iter_mut()
        .find(|(k, _)| k.as_text() == Some("cabundle"))
        .unwrap();
    let Value::Array(certs) = &mut bundle.1 else {
        panic!()
    };
    edit(certs);
    let mut out = Vec::new();
    ciborium::into_writer(&payload, &mut out).unwrap();
    sign1.payload = Some(out);
    sign1.to_vec().unwrap()
}

#[test]
fn truncated_cabundle_is_rejected() {
    let Some(exp) = expected() else { return };
    let t = doc_time(&exp, PROD);
    // Drop an intermediate: the leaf's issuer is then not the next certificate.
    let d = with_cabundle(&doc(PROD), |c| {
        c.remove(2);
    });
    let err = verify_nitro(&d, &roots(), t).unwrap_err();
    assert!(matches!(err, VerifyError::IssuerMismatch { .. }), "{err}");
    // Drop the root: the chain then ends in an intermediate that is not self-signed.
    let d = with_cabundle(&doc(PROD), |c| {
        c.remove(0);
    });
    let err = verify_nitro(&d, &roots(), t).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::IssuerMismatch { .. } | VerifyError::UntrustedRoot { .. }
        ),
        "{err}"
    );
}

#[test]
fn reordered_cabundle_is_rejected() {
    let Some(exp) = expected() else { return };
    let d = with_cabundle(&doc(PROD), |c| c.swap(1, 2));
    let err = verify_nitro(&d, &roots(), doc_time(&exp, PROD)).unwrap_err();
    assert!(matches!(err, VerifyError::IssuerMismatch { .. }), "{err}");
}

#[test]
fn debug_document_is_rejected_by_the_default_policy() {
    let Some(exp) = expected() else { return };
    for name in [
        "evervault_debug-mode-attestation-doc.cbor",
        "anjuna_attester_sample_attestation_doc_full.bin",
    ] {
        let ev = verify_nitro(&doc(name), &roots(), doc_time(&exp, name)).unwrap();
        assert!(ev.debug);
        assert_eq!(
            Policy::default().check(&ev, &mut Checks::default()),
            Err(PolicyError::Debug),
            "{name}"
        );
        let lenient = Policy {
            allow_debug: true,
            ..Policy::default()
        };
        assert_eq!(lenient.check(&ev, &mut Checks::default()), Ok(()));
    }
    let ev = verify_nitro(&doc(PROD), &roots(), doc_time(&exp, PROD)).unwrap();
    assert_eq!(Policy::default().check(&ev, &mut Checks::default()), Ok(()));
}

#[test]
fn nonce_and_measurement_policy() {
    let Some(exp) = expected() else { return };
    let name = "anjuna_attester_sample_attestation_doc_full.bin";
    let ev = verify_nitro(&doc(name), &roots(), doc_time(&exp, name)).unwrap();
    let base = Policy {
        allow_debug: true,
        ..Policy::default()
    };
    let right = Policy {
        nonce: Some(b"Nonce\n".to_vec()),
        ..base.clone()
    };
    assert_eq!(right.check(&ev, &mut Checks::default()), Ok(()));
    let wrong = Policy {
        nonce: Some(b"Nonce?".to_vec()),
        ..base.clone()
    };
    assert!(matches!(
        wrong.check(&ev, &mut Checks::default()),
        Err(PolicyError::NonceMismatch { .. })
    ));
    // A document without a nonce never matches a nonce.
    let prod = verify_nitro(&doc(PROD), &roots(), doc_time(&exp, PROD)).unwrap();
    assert!(matches!(
        right.check(&prod, &mut Checks::default()),
        Err(PolicyError::NonceMismatch { .. })
    ));

    let pcr3 = hex_decode(exp[name]["pcrs_nonzero"]["3"].as_str().unwrap());
    let mut p = base.clone();
    p.expected.insert("pcr3".into(), pcr3.clone());
    assert_eq!(p.check(&ev, &mut Checks::default()), Ok(()));
    let mut flipped = pcr3;
    flipped[0] ^= 1;
    p.expected.insert("pcr3".into(), flipped);
    assert!(matches!(
        p.check(&ev, &mut Checks::default()),
        Err(PolicyError::MeasurementMismatch { .. })
    ));
    let mut missing = base;
    missing.expected.insert("pcr31".into(), vec![0; 48]);
    assert!(matches!(
        missing.check(&ev, &mut Checks::default()),
        Err(PolicyError::MissingMeasurement(_))
    ));
}

#[test]
fn checks_are_logged_in_order() {
    let Some(exp) = expected() else { return };
    let mut checks = Checks::default();
    verify_nitro_logged(&doc(PROD), &roots(), doc_time(&exp, PROD), &mut checks).unwrap();
    let names: Vec<_> = checks.as_slice().iter().map(|c| c.name).collect();
    assert_eq!(
        names,
        [
            "format",
            "certificate validity",
            "certificate chain",
            "trusted root",
            "evidence signature"
        ]
    );
    let mut checks = Checks::default();
    let today = UNIX_EPOCH + Duration::from_secs(TODAY);
    verify_nitro_logged(&doc(PROD), &roots(), today, &mut checks).unwrap_err();
    let last = checks.as_slice().last().unwrap();
    assert!(
        !last.passed && last.name == "certificate validity",
        "{last:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Random mutations of a valid document never verify.
    #[test]
    fn random_mutations_never_verify(edits in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4)) {
        let Some(exp) = expected() else { return Ok(()) };
        let mut d = doc(PROD);
        for (index, xor) in edits {
            let i = index.index(d.len());
            d[i] ^= xor;
        }
        prop_assert!(verify_nitro(&d, &roots(), doc_time(&exp, PROD)).is_err());
    }
}
