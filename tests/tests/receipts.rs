//! Execution receipts end to end through `tb-verify receipt`: a receipt of an attested
//! sentinel verifies against its attestation bundle; forged ones (another key, a claim the
//! evidence does not back, other plaintexts, a bundle whose evidence binds another key)
//! are refused; and a third-party COSE implementation (Python `pycose`) verifies ours.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use ed25519_dalek::SigningKey;
use trustbridge_protocol::Platform;
use trustbridge_protocol::attestation_bundle::AttestationBundle;
use trustbridge_protocol::binding::EvidenceBinding;
use trustbridge_protocol::ohttp::ohttp_keys_sha256;
use trustbridge_protocol::receipt::{
    Claims, GENESIS, Receipt, Usage, receipt_key_id, salted_digest,
};
use trustbridge_tests::s;
use trustbridge_verifier::simulated::{NitroSpec, SimulatedTee};

const MODEL: [u8; 32] = [0x4d; 32];
const SALT: [u8; 32] = [0x5a; 32];

struct Sentinel {
    sim: SimulatedTee,
    bundle: AttestationBundle,
}

/// A simulated Nitro sentinel whose evidence binds `bound` as its receipt key.
fn sentinel(bound: [u8; 32]) -> Sentinel {
    let sim = SimulatedTee::new().unwrap();
    let keys = b"an application/ohttp-keys body".to_vec();
    let binding = EvidenceBinding {
        nonce: vec![9; 32],
        ohttp_keys_sha256: ohttp_keys_sha256(&keys),
        receipt_key: bound,
        release_key: [3; 32],
        broker_key: [4; 32],
        provider_key: None,
        manifest_sha256: Some(MODEL),
    };
    let doc = sim
        .nitro_document(&NitroSpec::default().bind(&binding).unwrap())
        .unwrap();
    let bundle =
        AttestationBundle::new(Platform::Nitro, doc, vec![], binding, keys, 1_795_000_000).unwrap();
    Sentinel { sim, bundle }
}

fn claims(t: &Sentinel, key: &SigningKey) -> Claims {
    Claims {
        issuer: receipt_key_id(&key.verifying_key().to_bytes()),
        issued_at: 1_795_000_100,
        id: [1; 16],
        nonce: None,
        sequence: 0,
        previous: GENESIS,
        model: MODEL,
        request_digest: salted_digest(&SALT, b"the request"),
        response_digest: salted_digest(&SALT, b"the response"),
        evidence_digest: t.bundle.evidence_digest(),
        measurements: BTreeMap::from([
            ("pcr0".to_owned(), vec![0x10; 48]),
            ("pcr1".to_owned(), vec![0x11; 48]),
            ("pcr2".to_owned(), vec![0x12; 48]),
        ]),
        policy_digest: [6; 32],
        status: 200,
        usage: Some(Usage {
            prompt_tokens: 3,
            completion_tokens: 5,
        }),
    }
}

/// Writes the files and runs `tb-verify receipt ... --json`.
fn verify(
    dir: &Path,
    t: &Sentinel,
    receipt: &[u8],
    extra: &[&str],
) -> (Option<i32>, serde_json::Value) {
    let (r, b, root) = (
        dir.join("receipt.cose"),
        dir.join("bundle.json"),
        dir.join("root.der"),
    );
    std::fs::write(&r, receipt).unwrap();
    std::fs::write(&b, t.bundle.to_json().unwrap()).unwrap();
    std::fs::write(&root, t.sim.nitro_root().der()).unwrap();
    let (r, b, root) = (s(&r), s(&b), s(&root));
    let mut args = vec![
        "receipt",
        &r,
        "--attestation",
        &b,
        "--simulation-root",
        &root,
        "--allow-simulated",
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = trustbridge_tests::run("tb-verify", &args);
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code(), json)
}

fn error(json: &serde_json::Value) -> String {
    json["error"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn a_receipt_of_the_attested_sentinel_verifies_and_forgeries_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::from_bytes(&[0x21; 32]);
    let t = sentinel(key.verifying_key().to_bytes());
    let receipt = Receipt::sign(claims(&t, &key), &key).unwrap();
    let (code, json) = verify(dir.path(), &t, receipt.as_bytes(), &[]);
    assert_eq!(code, Some(0), "{json}");
    assert_eq!(json["claims"]["sequence"], 0);
    assert_eq!(json["claims"]["model"], hex::encode(MODEL));
    assert_eq!(
        json["claims"]["evidence_digest"],
        hex::encode(t.bundle.evidence_digest())
    );
    assert_eq!(json["claims"]["usage"]["completion_tokens"], 5);

    // The header form (base64url, no padding) is read too, and the plaintexts check out.
    let header = base64url(receipt.as_bytes());
    let (q, r) = (dir.path().join("q"), dir.path().join("r"));
    std::fs::write(&q, b"the request").unwrap();
    std::fs::write(&r, b"the response").unwrap();
    let (qs, rs, salt) = (s(&q), s(&r), hex::encode(SALT));
    let digests = ["--request", &qs, "--response", &rs, "--salt", &salt];
    let (code, json) = verify(dir.path(), &t, header.as_bytes(), &digests);
    assert_eq!(code, Some(0), "{json}");
    // And the hex form the help promises.
    let (code, json) = verify(
        dir.path(),
        &t,
        hex::encode(receipt.as_bytes()).as_bytes(),
        &[],
    );
    assert_eq!(code, Some(0), "{json}");
    // Another response than the one the receipt covers.
    std::fs::write(&r, b"another response").unwrap();
    let (code, json) = verify(dir.path(), &t, receipt.as_bytes(), &digests);
    assert_eq!(code, Some(1), "{json}");
    assert!(error(&json).contains("response digest"), "{json}");

    // Another key, signing as itself: not the key the evidence binds.
    let other = SigningKey::from_bytes(&[0x22; 32]);
    let forged = Receipt::sign(claims(&t, &other), &other).unwrap();
    let (code, json) = verify(dir.path(), &t, forged.as_bytes(), &[]);
    assert_eq!(code, Some(1), "{json}");
    assert!(error(&json).contains("issuer"), "{json}");

    // The bound key, but a measurement the evidence does not report.
    let mut c = claims(&t, &key);
    c.measurements.insert("pcr0".into(), vec![0x99; 48]);
    let edited = Receipt::sign(c, &key).unwrap();
    let (code, json) = verify(dir.path(), &t, edited.as_bytes(), &[]);
    assert_eq!(code, Some(1), "{json}");
    assert!(error(&json).contains("measurement pcr0"), "{json}");

    // Another model than the one the evidence binds.
    let mut c = claims(&t, &key);
    c.model = [0x4e; 32];
    let (code, json) = verify(
        dir.path(),
        &t,
        Receipt::sign(c, &key).unwrap().as_bytes(),
        &[],
    );
    assert_eq!(code, Some(1), "{json}");
    assert!(error(&json).contains("model"), "{json}");

    // A bundle that offers the signer's key while its evidence binds another key: the
    // evidence binding check refuses it and the receipt signature is never trusted.
    let mut lying = sentinel([0x33; 32]);
    lying.bundle.binding.receipt_key = key.verifying_key().to_bytes();
    lying.bundle.receipt_key = key.verifying_key().to_bytes();
    lying.bundle.binding_bytes = lying.bundle.binding.encode().unwrap();
    let receipt = Receipt::sign(claims(&lying, &key), &key).unwrap();
    let (code, json) = verify(dir.path(), &lying, receipt.as_bytes(), &[]);
    assert_eq!(code, Some(1), "{json}");
    assert!(error(&json).contains("binding"), "{json}");

    // Simulated evidence without --allow-simulated: the evidence is refused, so the
    // receipt is not checked at all.
    let receipt = Receipt::sign(claims(&t, &key), &key).unwrap();
    let (r, b) = (
        dir.path().join("receipt.cose"),
        dir.path().join("bundle.json"),
    );
    std::fs::write(&r, receipt.as_bytes()).unwrap();
    let out = trustbridge_tests::run("tb-verify", &["receipt", &s(&r), "--attestation", &s(&b)]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("[FAIL] receipt signature: not checked"),
        "{text}"
    );
    assert!(text.contains("verdict: NOT VERIFIED"), "{text}");

    // A client nonce that spells AIR's profile does not make ours look like AIR's.
    let mut c = claims(&t, &key);
    c.nonce = Some(b"https://spec.cyntrisec.com/air/v1".to_vec());
    let (code, json) = verify(
        dir.path(),
        &t,
        Receipt::sign(c, &key).unwrap().as_bytes(),
        &[],
    );
    assert_eq!(code, Some(0), "{json}");
    // The client's nonce: required, present; required, other.
    let nonce = hex::encode(b"https://spec.cyntrisec.com/air/v1");
    let mut c = claims(&t, &key);
    c.nonce = Some(b"https://spec.cyntrisec.com/air/v1".to_vec());
    let with_nonce = Receipt::sign(c, &key).unwrap();
    let (code, json) = verify(
        dir.path(),
        &t,
        with_nonce.as_bytes(),
        &["--expect-nonce", &nonce],
    );
    assert_eq!(code, Some(0), "{json}");
    let (code, json) = verify(
        dir.path(),
        &t,
        with_nonce.as_bytes(),
        &["--expect-nonce", "0011223344556677"],
    );
    assert_eq!(code, Some(1), "{json}");
    assert!(error(&json).contains("nonce"), "{json}");

    // Our receipt's key is the one evidence binds: a key on the command line is refused.
    let vk = hex::encode(key.verifying_key().to_bytes());
    let out = trustbridge_tests::run("tb-verify", &["receipt", &s(&r), "--public-key", &vk]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--attestation"));
}

fn base64url(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn pycose_available() -> bool {
    let probe = Command::new("python3")
        .args(["-c", "import pycose, cbor2"])
        .output();
    if matches!(&probe, Ok(o) if o.status.success()) {
        return true;
    }
    if trustbridge_testkit::env_flag("TB_REQUIRE_PYCOSE") {
        panic!("python3 with pycose is required (TB_REQUIRE_PYCOSE=1): {probe:?}");
    }
    eprintln!(
        "\n!!!!!!!! SKIPPED: python3 -c 'import pycose' failed; pip install -r tests/requirements.txt !!!!!!!!\n"
    );
    false
}

/// pycose, knowing nothing of TrustBridge, verifies the signature and reads the claims;
/// a flipped signature byte makes it refuse.
#[test]
fn pycose_verifies_our_receipts() {
    if !pycose_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::from_bytes(&[0x21; 32]);
    let t = sentinel(key.verifying_key().to_bytes());
    let receipt = Receipt::sign(claims(&t, &key), &key).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pycose_receipt.py");
    let run = |bytes: &[u8]| {
        let path = dir.path().join("r.cose");
        std::fs::write(&path, bytes).unwrap();
        Command::new("python3")
            .args([
                script,
                &s(&path),
                &hex::encode(key.verifying_key().to_bytes()),
            ])
            .output()
            .unwrap()
    };
    let out = run(receipt.as_bytes());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["protected"]["Algorithm"], "EdDSA", "{json}");
    assert_eq!(
        json["protected"]["ContentType"], "application/cwt",
        "{json}"
    );
    assert_eq!(json["unprotected"], 0);
    assert_eq!(json["claims"]["sequence"], 0);
    assert_eq!(json["claims"]["1"], receipt.claims().issuer.to_string());
    assert_eq!(
        json["claims"]["265"],
        trustbridge_protocol::receipt::EAT_PROFILE
    );
    assert_eq!(json["claims"]["model"], hex::encode(MODEL));

    let mut bad = receipt.as_bytes().to_vec();
    let n = bad.len();
    bad[n - 1] ^= 1;
    assert_eq!(run(&bad).status.code(), Some(1));
}

/// `tb-verify log` over a relay log: a chain of the attested sentinel verifies; a dropped
/// entry, a receipt of a key no bundle binds, and a fork are refused.
#[test]
fn tb_verify_log_checks_the_chains_and_the_keys() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::from_bytes(&[0x21; 32]);
    let t = sentinel(key.verifying_key().to_bytes());
    let mut previous = GENESIS;
    let chain: Vec<Receipt> = (0..5)
        .map(|i| {
            let r = Receipt::sign(
                Claims {
                    sequence: i,
                    previous,
                    ..claims(&t, &key)
                },
                &key,
            )
            .unwrap();
            previous = r.digest();
            r
        })
        .collect();
    let (b, root) = (dir.path().join("bundle.json"), dir.path().join("root.der"));
    std::fs::write(&b, t.bundle.to_json().unwrap()).unwrap();
    std::fs::write(&root, t.sim.nitro_root().der()).unwrap();
    let run_with = |receipts: &[&Receipt], extra: &[&str]| {
        let log = dir.path().join("receipts.log");
        let text: String = receipts
            .iter()
            .enumerate()
            .map(|(seq, r)| {
                format!(
                    "{}\n",
                    serde_json::json!({"seq": seq, "receipt": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r.as_bytes())})
                )
            })
            .collect();
        std::fs::write(&log, text).unwrap();
        let (log, b, root) = (s(&log), s(&b), s(&root));
        let mut args = vec![
            "log",
            &log,
            "--attestation",
            &b,
            "--simulation-root",
            &root,
            "--allow-simulated",
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = trustbridge_tests::run("tb-verify", &args);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (out.status.code(), json)
    };
    let run = |receipts: &[&Receipt]| run_with(receipts, &[]);
    let all: Vec<&Receipt> = chain.iter().collect();
    let (code, json) = run(&all);
    assert_eq!(code, Some(0), "{json}");
    assert_eq!(json["boots"][0]["count"], 5);

    // Answers that finished out of order are logged out of order: still one chain.
    let (code, json) = run(&[&chain[0], &chain[2], &chain[1], &chain[4], &chain[3]]);
    assert_eq!(code, Some(0), "{json}");

    // A boot whose first receipts were dropped, unless the log is known to be partial.
    let (code, json) = run(&[&chain[2], &chain[3], &chain[4]]);
    assert_eq!(code, Some(1), "{json}");
    assert!(error(&json).contains("receipts 0..2 are missing"), "{json}");
    let (code, json) = run_with(&[&chain[2], &chain[3], &chain[4]], &["--partial"]);
    assert_eq!(code, Some(0), "{json}");

    // A dropped receipt: the chain has a gap.
    let (code, json) = run(&[&chain[0], &chain[1], &chain[3], &chain[4]]);
    assert_eq!(code, Some(1), "{json}");
    assert!(
        error(&json).contains("jumps from sequence 1 to 3"),
        "{json}"
    );

    // A receipt by a key no bundle binds.
    let other = SigningKey::from_bytes(&[0x22; 32]);
    let stranger = Receipt::sign(claims(&t, &other), &other).unwrap();
    let (code, json) = run(&[&chain[0], &stranger]);
    assert_eq!(code, Some(1), "{json}");
    assert!(
        error(&json).contains("no verified attestation bundle binds"),
        "{json}"
    );

    // A fork: a second receipt 1 that the sentinel never chained.
    let fork = Receipt::sign(
        Claims {
            sequence: 1,
            previous: chain[0].digest(),
            status: 500,
            ..claims(&t, &key)
        },
        &key,
    )
    .unwrap();
    let (code, json) = run(&[&chain[0], &chain[1], &fork]);
    assert_eq!(code, Some(1), "{json}");
    assert!(error(&json).contains("fork"), "{json}");
}
