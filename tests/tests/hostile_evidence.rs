//! Evidence built to make the verifier work: every such input is refused after a bounded,
//! small number of signature checks (counted, not timed).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::{Duration, UNIX_EPOCH};

use trustbridge_verifier::simulated::{NitroSpec, SimulatedTee};
use trustbridge_verifier::x509::{ParsedCertificate, signature_checks};
use trustbridge_verifier::{TrustRoots, VerifyError, verify_nitro};

/// Signature checks `f` causes on this thread.
fn counted<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let before = signature_checks();
    let out = f();
    (out, signature_checks() - before)
}

/// The document: the AWS root first (so a root-pinning check alone would pass it),
/// then thousands of self-made CA certificates, each a valid issuer of the next, signed by
/// the attacker's own leaf. Before the limits, tb-verify checked every link (2.3 s of CPU
/// for 1.1 MB); now the size limit refuses it before parsing.
#[test]
fn a_nitro_document_with_a_forged_bundle_costs_a_bounded_number_of_signature_checks() {
    let Some(root_pem) =
        trustbridge_testkit::read_vector("hostile_evidence", "nitro/aws_nitro_root_g1.pem")
    else {
        return;
    };
    let aws_root = ParsedCertificate::from_pem_chain(&root_pem, "AWS root").unwrap()[0]
        .der()
        .to_vec();
    let sim = SimulatedTee::new().unwrap();
    let roots = TrustRoots::production();
    let now = UNIX_EPOCH + Duration::from_secs(1_795_219_200); // 2026-11-21
    let [_, intermediate, self_made_root] = sim.nitro_chain() else {
        panic!("three certificates")
    };
    let bundle = |copies: usize| {
        let mut b = vec![aws_root.clone()];
        b.extend(std::iter::repeat_n(self_made_root.der().to_vec(), copies));
        b.push(intermediate.der().to_vec());
        sim.nitro_document_with_cabundle(&NitroSpec::default(), b)
            .unwrap()
    };

    let huge = bundle(2400);
    assert!(huge.len() > 1_000_000, "{} bytes", huge.len());
    let (err, work) = counted(|| verify_nitro(&huge, &roots, now).unwrap_err());
    assert!(matches!(err, VerifyError::Malformed { .. }), "{err}");
    assert_eq!(work, 0, "refused before any signature check: {err}");

    // Small enough, but more certificates than any AWS chain has.
    let long = bundle(12);
    assert!(long.len() < 16 * 1024, "{} bytes", long.len());
    let (err, work) = counted(|| verify_nitro(&long, &roots, now).unwrap_err());
    assert!(err.to_string().contains("cabundle has"), "{err}");
    assert_eq!(work, 0);

    // A chain the pinned root did not issue: refused at the first link below the root
    // (here by name; a forged issuer name would fail that link's signature instead).
    let short = bundle(2);
    let (err, work) = counted(|| verify_nitro(&short, &roots, now).unwrap_err());
    assert!(
        matches!(
            err,
            VerifyError::IssuerMismatch { .. } | VerifyError::CertificateSignature { .. }
        ),
        "{err}"
    );
    assert!(work <= 2, "{work} signature checks for {err}");

    // The attacker's own root first: not pinned, so no signature is checked at all.
    let (err, work) = counted(|| {
        verify_nitro(
            &sim.nitro_document(&NitroSpec::default()).unwrap(),
            &roots,
            now,
        )
        .unwrap_err()
    });
    assert!(matches!(err, VerifyError::UntrustedRoot { .. }), "{err}");
    assert_eq!(work, 0);
}

/// A genuine document costs what its chain does: the root's self-signature, three
/// intermediates, the leaf and the COSE signature.
#[test]
fn a_genuine_nitro_document_costs_six_signature_checks() {
    let Some(doc) = trustbridge_testkit::read_vector(
        "hostile_evidence",
        "nitro/anjuna_attestdoc_sample_prod_doc.bin",
    ) else {
        return;
    };
    let at = UNIX_EPOCH + Duration::from_millis(1_616_018_515_685);
    let (ev, work) = counted(|| verify_nitro(&doc, &TrustRoots::production(), at).unwrap());
    assert!(!ev.simulated);
    assert_eq!(work, 6);
}
