//! AIR v1 receipts (EphemeralML's format) through `tb-verify receipt --public-key`: every
//! published conformance vector gives its expected outcome and failure code, and the
//! golden receipt's tampering twins fail where AIR says they must.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::path::Path;
use std::process::Command;

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/air-v1");

fn tb_verify(receipt: &[u8], args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("receipt.cose");
    std::fs::write(&file, receipt).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tb-verify"))
        .arg("receipt")
        .arg(&file)
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| serde_json::json!({"stderr": String::from_utf8_lossy(&out.stderr)}));
    (out.status.code(), json)
}

fn load(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The `tb-verify` options for a vector's key and policy.
fn options(v: &serde_json::Value) -> Vec<String> {
    let key = v["public_key_hex"]
        .as_str()
        .or(v["wrong_public_key_hex"].as_str())
        .unwrap();
    let mut args = vec!["--public-key".to_owned(), key.to_owned()];
    let p = &v["verify_policy"];
    for (field, flag) in [
        ("expected_nonce_hex", "--expect-nonce"),
        ("expected_model_hash_hex", "--expect-model-hash"),
        ("expected_platform", "--expect-platform"),
    ] {
        if let Some(value) = p[field].as_str() {
            args.extend([flag.to_owned(), value.to_owned()]);
        }
    }
    if let Some(age) = p["max_age_secs"].as_u64() {
        args.extend(["--max-age".to_owned(), age.to_string()]);
    }
    args
}

#[test]
fn every_published_vector_gives_its_outcome_and_code() {
    let mut seen = 0;
    for kind in ["valid", "invalid"] {
        for entry in std::fs::read_dir(Path::new(VECTORS).join(kind)).unwrap() {
            let path = entry.unwrap().path();
            let v = load(&path);
            let receipt = hex::decode(v["receipt_hex"].as_str().unwrap()).unwrap();
            let args = options(&v);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let (code, json) = tb_verify(&receipt, &args);
            match v["expected_failure"]["code"].as_str() {
                None => {
                    assert_eq!(code, Some(0), "{}: {json}", path.display());
                    assert_eq!(json["claims"]["model_hash"], v["claims"]["model_hash_hex"]);
                }
                Some(expected) => {
                    assert_eq!(code, Some(1), "{}: {json}", path.display());
                    assert_eq!(json["code"], expected, "{}: {json}", path.display());
                    assert_eq!(
                        json["check"],
                        v["expected_failure"]["check"],
                        "{}",
                        path.display()
                    );
                }
            }
            seen += 1;
        }
    }
    assert_eq!(seen, 10, "the published v1 vector set");
}

#[test]
fn the_golden_receipts_tampering_twins_fail_where_air_says() {
    let golden = load(&Path::new(VECTORS).join("valid/v1-nitro-no-nonce.json"));
    let receipt = hex::decode(golden["receipt_hex"].as_str().unwrap()).unwrap();
    let key = golden["public_key_hex"].as_str().unwrap();
    let check = |bytes: &[u8], extra: &[&str], expected: &str| {
        let mut args = vec!["--public-key", key];
        args.extend_from_slice(extra);
        let (code, json) = tb_verify(bytes, &args);
        assert_eq!(code, Some(1), "{expected}: {json}");
        assert_eq!(json["code"], expected, "{json}");
    };
    let n = receipt.len();
    // A flipped signature byte, and a flipped payload byte (the signature is checked
    // before any claim is read).
    let mut b = receipt.clone();
    b[n - 10] ^= 1;
    check(&b, &[], "SIG_FAILED");
    let mut b = receipt.clone();
    let at = b.windows(12).position(|w| w == b"minilm-l6-v2").unwrap();
    b[at] ^= 1;
    check(&b, &[], "SIG_FAILED");
    // Untagged, trailing bytes, oversized.
    check(&receipt[1..], &[], "COSE_DECODE_FAILED");
    let mut b = receipt.clone();
    b.push(0);
    check(&b, &[], "COSE_DECODE_FAILED");
    // A nonce required but absent; a stale receipt when freshness is asked for.
    check(
        &receipt,
        &["--expect-nonce", "0011223344556677"],
        "NONCE_MISSING",
    );
    check(&receipt, &["--max-age", "60"], "TIMESTAMP_STALE");
    // The TDX vector passes the policy it was made for.
    let tdx = load(&Path::new(VECTORS).join("valid/v1-tdx-with-nonce.json"));
    let receipt = hex::decode(tdx["receipt_hex"].as_str().unwrap()).unwrap();
    let model = "55".repeat(32);
    let (code, json) = tb_verify(
        &receipt,
        &[
            "--public-key",
            key,
            "--expect-nonce",
            "deadbeefcafebabe",
            "--expect-platform",
            "tdx-mrtd-rtmr",
            "--expect-model-hash",
            &model,
        ],
    );
    assert_eq!(code, Some(0), "{json}");
    assert_eq!(json["claims"]["eat_nonce"], "deadbeefcafebabe");
}

#[test]
fn an_air_receipt_needs_its_key_and_a_key_is_not_enough_for_ours() {
    let golden = load(&Path::new(VECTORS).join("valid/v1-nitro-no-nonce.json"));
    let receipt = hex::decode(golden["receipt_hex"].as_str().unwrap()).unwrap();
    let (code, _) = tb_verify(&receipt, &[]);
    assert_eq!(code, Some(2), "no key: a usage error, not a verdict");
}
