//! Verification cost of one real Nitro document and one real SNP report.
//!
//! `cargo bench -p trustbridge-verifier --bench verify`
//!
//! Baseline in the same run: one bare ECDSA P-384 verification. A Nitro document needs six
//! (the COSE signature, four chain signatures and the root's self-signature), so six times
//! the baseline is the floor for the whole document. Needs ../shared/vectors; without it the
//! benchmark prints a skip and exits.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)] // bench binary

use std::hint::black_box;
use std::time::{Duration, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use criterion::{Criterion, criterion_group, criterion_main};
use trustbridge_verifier::x509::ParsedCertificate;
use trustbridge_verifier::{TrustRoots, verify_nitro, verify_snp};

fn bench(c: &mut Criterion) {
    let Some(dir) = trustbridge_testkit::vectors_dir("verify bench") else {
        return;
    };
    let roots = TrustRoots::production();

    // Baseline: one ECDSA P-384 verification.
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng).unwrap();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let msg = [7u8; 512];
    let sig = key.sign(&rng, &msg).unwrap();
    let public = signature::UnparsedPublicKey::new(
        &signature::ECDSA_P384_SHA384_FIXED,
        key.public_key().as_ref().to_vec(),
    );
    c.bench_function("baseline: one ECDSA P-384 verify", |b| {
        b.iter(|| {
            public
                .verify(black_box(&msg), black_box(sig.as_ref()))
                .unwrap()
        })
    });

    // The Nitro document: COSE ES384 + 4 chain signatures + root self-signature + parsing.
    let doc = std::fs::read(dir.join("nitro/anjuna_attestdoc_sample_prod_doc.bin")).unwrap();
    let at = UNIX_EPOCH + Duration::from_millis(1_616_018_515_685);
    c.bench_function("nitro: verify real attestation document", |b| {
        b.iter(|| verify_nitro(black_box(&doc), &roots, at).unwrap())
    });

    // The SNP report: P-384 report signature + RSASSA-PSS-4096 ASK and ARK signatures.
    let report = std::fs::read(dir.join("sev-snp/virtee-sev/report_milan.bin")).unwrap();
    let mut certs = vec![
        ParsedCertificate::from_der(
            &std::fs::read(dir.join("sev-snp/virtee-sev/vcek_milan.der")).unwrap(),
            "vcek",
        )
        .unwrap(),
    ];
    certs.extend(
        ParsedCertificate::from_pem_chain(
            &std::fs::read(dir.join("sev-snp/virtee-sev/cert_chain_milan")).unwrap(),
            "chain",
        )
        .unwrap(),
    );
    let at = UNIX_EPOCH + Duration::from_secs(1_739_923_200);
    c.bench_function("snp: verify real report with VCEK chain", |b| {
        b.iter(|| verify_snp(black_box(&report), &certs, &roots, at).unwrap())
    });
    println!("bar: nitro document verification <= 2 ms on this machine");
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(Duration::from_secs(4));
    targets = bench
}
criterion_main!(benches);
