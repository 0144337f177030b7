//! `tb-verify attestation` on real evidence: exit codes, text and JSON output, input
//! encodings, policy flags.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine;
use trustbridge_testkit::vectors_dir;

fn tb_verify(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tb-verify"))
        .args(args)
        .output()
        .unwrap()
}

fn v() -> Option<PathBuf> {
    vectors_dir("tb-verify")
}

fn p(dir: &Path, rel: &str) -> String {
    dir.join(rel).to_str().unwrap().to_owned()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

const PROD: &str = "nitro/anjuna_attestdoc_sample_prod_doc.bin";
const PROD_TIME: &str = "2021-03-17T22:01:56Z";

#[test]
fn nitro_document_verifies_at_its_time_and_not_today() {
    let Some(d) = v() else { return };
    let out = tb_verify(&["attestation", &p(&d, PROD), "--at", PROD_TIME, "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let j = json(&out);
    assert_eq!(j["verified"], true);
    assert_eq!(j["platform"], "nitro");
    assert_eq!(
        j["measurements"]["pcr0"],
        "2d151586641b790f3b1b92b8f89678c3aa86e73dd97969c892124be9d2b7fdc62b58a55cd9ee8216f6f5689cebf590ad"
    );
    assert!(
        j["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["passed"] == true)
    );

    let out = tb_verify(&["attestation", &p(&d, PROD)]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("[FAIL] certificate validity") && text.contains("expired"),
        "{text}"
    );
    assert!(text.contains("verdict: NOT VERIFIED (nitro)"), "{text}");
    // Unix seconds work for --at too.
    assert_eq!(
        tb_verify(&["attestation", &p(&d, PROD), "--at", "1616018516"])
            .status
            .code(),
        Some(0)
    );
}

#[test]
fn base64_input_is_detected() {
    let Some(d) = v() else { return };
    let raw = std::fs::read(d.join(PROD)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("doc.b64");
    std::fs::write(&file, base64::engine::general_purpose::STANDARD.encode(raw)).unwrap();
    let out = tb_verify(&["attestation", file.to_str().unwrap(), "--at", PROD_TIME]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn expectations_nonce_and_debug_flags() {
    let Some(d) = v() else { return };
    let good = "pcr0=2d151586641b790f3b1b92b8f89678c3aa86e73dd97969c892124be9d2b7fdc62b58a55cd9ee8216f6f5689cebf590ad";
    assert_eq!(
        tb_verify(&[
            "attestation",
            &p(&d, PROD),
            "--at",
            PROD_TIME,
            "--expect",
            good
        ])
        .status
        .code(),
        Some(0)
    );
    let bad = good.replace("=2d", "=3d");
    let out = tb_verify(&[
        "attestation",
        &p(&d, PROD),
        "--at",
        PROD_TIME,
        "--expect",
        &bad,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("[FAIL] measurements"));

    let debug_doc = p(&d, "nitro/anjuna_attester_sample_attestation_doc_full.bin");
    let at = "2024-01-24T18:14:26Z";
    let out = tb_verify(&["attestation", &debug_doc, "--at", at]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("[FAIL] debug mode"));
    let nonce = hex::encode(b"Nonce\n");
    assert_eq!(
        tb_verify(&[
            "attestation",
            &debug_doc,
            "--at",
            at,
            "--allow-debug",
            "--nonce",
            &nonce
        ])
        .status
        .code(),
        Some(0)
    );
    let out = tb_verify(&[
        "attestation",
        &debug_doc,
        "--at",
        at,
        "--allow-debug",
        "--nonce",
        "00",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("[FAIL] nonce"));
}

#[test]
fn snp_report_with_vcek_and_amd_chain() {
    let Some(d) = v() else { return };
    let report = p(&d, "sev-snp/virtee-sev/report_milan.hex");
    let vcek = p(&d, "sev-snp/virtee-sev/vcek_milan.der");
    let chain = p(&d, "sev-snp/virtee-sev/cert_chain_milan");
    let out = tb_verify(&[
        "attestation",
        &report,
        "--vcek",
        &vcek,
        "--trust-root",
        &chain,
        "--at",
        "2025-02-19T00:00:00Z",
        "--json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let j = json(&out);
    assert_eq!(j["platform"], "snp");
    assert_eq!(
        j["measurements"]["measurement"],
        "7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d3e1a0dc39b2c60bd95b9c480cd81841f"
    );
    for name in ["host_data", "report_data", "chip_id"] {
        assert!(j["measurements"][name].is_string(), "{name}");
    }
    // The VLEK set has expired today.
    let out = tb_verify(&[
        "attestation",
        &p(&d, "sev-snp/trustee/test-vlek-report.bin"),
        "--vcek",
        &p(&d, "sev-snp/trustee/test-vlek.der"),
        "--trust-root",
        &p(&d, "sev-snp/amd-certs/milan_ask_ark_asvk.pem"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("expired"));
    // No VCEK: a clear failure, not a crash.
    let out = tb_verify(&["attestation", &report, "--at", "2025-02-19T00:00:00Z"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("--vcek"));
}

#[test]
fn another_trust_root_rejects_the_nitro_document() {
    let Some(d) = v() else { return };
    let out = tb_verify(&[
        "attestation",
        &p(&d, PROD),
        "--at",
        PROD_TIME,
        "--trust-root",
        &p(&d, "sev-snp/amd-certs/milan_ark.pem"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("[FAIL] trusted root"));
}

#[test]
fn usage_and_io_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk");
    std::fs::write(&junk, b"not evidence").unwrap();
    for args in [
        vec!["attestation", "/nonexistent/file"],
        vec!["attestation", junk.to_str().unwrap()],
        vec!["attestation", junk.to_str().unwrap(), "--at", "yesterday"],
        vec!["attestation", junk.to_str().unwrap(), "--platform", "sgx"],
        vec!["nonsense"],
    ] {
        let out = tb_verify(&args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn azure_evidence_json_is_detected_and_verified() {
    let Some(d) = v() else { return };
    let ev = p(&d, "azure-snp-vtpm/trustee/evidence-v1.json");
    let ask = p(&d, "sev-snp/amd-certs/milan_ask.pem");
    let ark = p(&d, "sev-snp/amd-certs/milan_ark.pem");
    let at = "2025-02-19T00:00:00Z";
    let nonce = hex::encode(b"challenge");
    let out = tb_verify(&[
        "attestation",
        &ev,
        "--trust-root",
        &ask,
        "--trust-root",
        &ark,
        "--at",
        at,
        "--nonce",
        &nonce,
        "--json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let j = json(&out);
    assert_eq!(j["platform"], "azure-snp-vtpm");
    assert_eq!(
        j["measurements"]["tpm_pcr0"],
        "e15c44796beabf46abcec7c57e590942041e47497e4ec27571c8b7664f48dced"
    );
    assert_eq!(j["binding"]["quote_nonce"], nonce);
    // --trust-root replaces the pinned roots: with the ASK alone, nothing is trusted.
    let out = tb_verify(&["attestation", &ev, "--trust-root", &ask, "--at", at]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("is not a trusted root"));
    // With no flag at all, AMD's built-in chain and pinned ARK verify it.
    let out = tb_verify(&["attestation", &ev, "--at", at]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Wrong nonce.
    let out = tb_verify(&[
        "attestation",
        &ev,
        "--trust-root",
        &ask,
        "--trust-root",
        &ark,
        "--at",
        at,
        "--nonce",
        "00",
    ]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn snp_vcek_from_the_local_cache() {
    let Some(d) = v() else { return };
    let report_path = d.join("sev-snp/trustee/test-report.bin");
    let report =
        trustbridge_verifier::snp_report::SnpReport::parse(&std::fs::read(&report_path).unwrap())
            .unwrap();
    let cache = tempfile::tempdir().unwrap();
    // Lay the cache out as `trustbridge kds fetch` does.
    let vcek = trustbridge_verifier::vcek_cache::vcek_path(cache.path(), "Milan", &report);
    std::fs::create_dir_all(vcek.parent().unwrap()).unwrap();
    std::fs::copy(d.join("sev-snp/trustee/test-vcek.der"), &vcek).unwrap();
    let mut chain = std::fs::read(d.join("sev-snp/amd-certs/milan_ask.pem")).unwrap();
    chain.extend(std::fs::read(d.join("sev-snp/amd-certs/milan_ark.pem")).unwrap());
    std::fs::write(
        trustbridge_verifier::vcek_cache::chain_path(cache.path(), "Milan"),
        chain,
    )
    .unwrap();
    let args = [
        "attestation",
        report_path.to_str().unwrap(),
        "--vcek-cache",
        cache.path().to_str().unwrap(),
        "--at",
        "2025-02-19T00:00:00Z",
    ];
    let out = tb_verify(&args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // An empty cache: not verified, and the message asks for the key.
    let empty = tempfile::tempdir().unwrap();
    let out = tb_verify(&[
        "attestation",
        report_path.to_str().unwrap(),
        "--vcek-cache",
        empty.path().to_str().unwrap(),
        "--at",
        "2025-02-19T00:00:00Z",
    ]);
    assert_eq!(out.status.code(), Some(1));
}

/// AMD's ASKs, ASVKs and ARKs are built in: a report verifies with its VCEK (or VLEK)
/// alone, as with go-sev-guest, virtee and trustee.
#[test]
fn snp_reports_verify_with_the_endorsement_key_alone() {
    let Some(d) = v() else { return };
    for (report, key) in [
        (
            "sev-snp/virtee-sev/report_milan.hex",
            "sev-snp/virtee-sev/vcek_milan.der",
        ),
        (
            "sev-snp/trustee/test-report.bin",
            "sev-snp/trustee/test-vcek.der",
        ),
        (
            "sev-snp/trustee/test-vlek-report.bin",
            "sev-snp/trustee/test-vlek.der",
        ),
    ] {
        let out = tb_verify(&[
            "attestation",
            &p(&d, report),
            "--vcek",
            &p(&d, key),
            "--at",
            "2025-02-19T00:00:00Z",
        ]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{report}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("AMD ARK-Milan"));
    }
}

/// Inputs are capped before they are parsed: a file over 1 MiB is refused unread, and
/// Azure evidence over 256 KiB before its JSON is parsed.
#[test]
fn oversized_inputs_are_refused_before_parsing() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.json");
    std::fs::write(&big, vec![b' '; (1 << 20) + 1]).unwrap();
    let out = tb_verify(&["attestation", big.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("larger than"));
    let mut json = b"{\"version\": 1, \"pad\": \"".to_vec();
    json.extend(vec![b'a'; 300 << 10]);
    json.extend(b"\"}");
    assert!(matches!(
        trustbridge_verifier::AzureEvidence::from_json(&json),
        Err(trustbridge_verifier::VerifyError::Malformed { .. })
    ));
}
