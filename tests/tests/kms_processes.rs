//! The provider and sentinel workflow against a real `tb-kms` process, through the real
//! `trustbridge` CLI: keygen, sim-ca init, seal, register, contract add, key-release
//! (released, release_limit, measurement_mismatch), contract revoke, audit verify.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use trustbridge_protocol::bundle::ProviderPublicKey;
use trustbridge_tests::{binary, free_port, ok, run};

/// A path as `&str`, for borrowed argument lists.
fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_broker(dir: &Path, port: u16) -> Broker {
    let log = std::fs::File::create(dir.join("tb-kms.log")).unwrap();
    let child = Command::new(binary("tb-kms"))
        .args([
            "serve",
            "--db",
            s(&dir.join("kms.db")),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--kek-file",
            s(&dir.join("kek")),
            "--policy",
            s(&dir.join("policy.toml")),
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let broker = Broker(child);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(1)))
        .build()
        .into();
    let deadline = Instant::now() + Duration::from_secs(20);
    while agent
        .get(&format!("http://127.0.0.1:{port}/health"))
        .call()
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "tb-kms did not start: {}",
            std::fs::read_to_string(dir.join("tb-kms.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    broker
}

#[test]
fn provider_and_sentinel_workflow_against_a_broker_process() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = |name: &str| d.join(name);
    ok(run("tb-kms", &["kek", "generate", "--out", s(&p("kek"))]));
    ok(run(
        "trustbridge",
        &["keygen", "--out", s(&p("provider.key"))],
    ));
    ok(run("trustbridge", &["keygen", "--out", s(&p("admin.key"))]));
    let sim = ok(run(
        "trustbridge",
        &["sim-ca", "init", "--out", s(&p("sim-ca"))],
    ));
    let simulation = &sim[sim.find("[simulation]").unwrap()..];
    std::fs::create_dir(p("model")).unwrap();
    std::fs::write(p("model/weights.bin"), vec![7u8; 100_000]).unwrap();
    ok(run(
        "trustbridge",
        &[
            "--quiet",
            "seal",
            "--in",
            s(&p("model")),
            "--out",
            s(&p("bundle")),
            "--asset-id",
            "acme/llm@v1",
            "--signing-key",
            s(&p("provider.key")),
            "--key-out",
            s(&p("dek.key")),
        ],
    ));
    let public_hex = |file: &str| {
        ProviderPublicKey::parse(&std::fs::read_to_string(p(file)).unwrap())
            .unwrap()
            .to_hex()
    };
    let (provider_pub, admin_pub) = (public_hex("provider.key.pub"), public_hex("admin.key.pub"));
    let policy = format!(
        "[admin]\nkeys = [\"{admin_pub}\"]\n{simulation}\n[[asset]]\nid = \"acme/llm@v1\"\nprovider_key = \"{}\"\n  [[asset.nitro]]\n  pcr0 = \"{}\"\n  pcr1 = \"{}\"\n",
        provider_pub,
        "10".repeat(48),
        "11".repeat(48)
    );
    std::fs::write(p("policy.toml"), &policy).unwrap();
    let aws = ok(run(
        "trustbridge",
        &[
            "policy",
            "compile",
            "--policy",
            s(&p("policy.toml")),
            "--target",
            "aws-kms",
            "--enclave-role-arn",
            "arn:aws:iam::1:role/e",
            "--key-admin-arn",
            "arn:aws:iam::1:role/a",
        ],
    ));
    let aws: serde_json::Value = serde_json::from_str(&aws).unwrap();
    let decrypt = aws["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Sid"] == "AttestedEnclaveDecrypt1")
        .unwrap();
    assert_eq!(
        decrypt["Condition"]["StringEqualsIgnoreCase"]["kms:RecipientAttestation:ImageSha384"],
        "10".repeat(48)
    );

    let port = free_port();
    let broker = start_broker(d, port);
    let kms = format!("http://127.0.0.1:{port}");
    // The broker's identity key, as an operator reads it off the KEK.
    let kms_key = ok(run("tb-kms", &["identity", "--kek-file", s(&p("kek"))]))
        .trim()
        .to_owned();
    let info: serde_json::Value = serde_json::from_str(&ok(run(
        "tb-kms",
        &["identity", "--kek-file", s(&p("kek")), "--json"],
    )))
    .unwrap();
    assert_eq!(info["identity_key"], kms_key.as_str());
    ok(run(
        "trustbridge",
        &[
            "register",
            "--kms",
            &kms,
            "--kms-key",
            &kms_key,
            "--bundle",
            s(&p("bundle")),
            "--key",
            s(&p("dek.key")),
            "--admin-key",
            s(&p("admin.key")),
        ],
    ));
    ok(run(
        "trustbridge",
        &[
            "contract",
            "add",
            "--kms",
            &kms,
            "--kms-key",
            &kms_key,
            "--admin-key",
            s(&p("admin.key")),
            "--id",
            "c-1",
            "--asset",
            "acme/llm@v1",
            "--not-before",
            "2026-01-01T00:00:00Z",
            "--not-after",
            "2030-01-01T00:00:00Z",
            "--max-releases",
            "1",
        ],
    ));
    let sim_ca = p("sim-ca");
    let release = |extra: &[&str]| {
        let mut args = vec![
            "key-release",
            "--kms",
            kms.as_str(),
            "--kms-key",
            kms_key.as_str(),
            "--asset",
            "acme/llm@v1",
            "--contract",
            "c-1",
            "--tee",
            "simulated",
            "--sim-ca",
            s(&sim_ca),
        ];
        args.extend_from_slice(extra);
        run("trustbridge", &args)
    };
    // A measurement outside the policy is denied (and does not use up the contract).
    let denied = release(&["--measurement", &format!("pcr1={}", "22".repeat(48))]);
    assert_eq!(denied.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&denied.stdout).trim(),
        "measurement_mismatch"
    );
    let released = ok(release(&[]));
    assert!(released.starts_with("released"), "{released}");
    let dek_id = ok(run("trustbridge", &["inspect", s(&p("bundle"))]));
    let key_id = released
        .lines()
        .find(|l| l.starts_with("data key id"))
        .unwrap()
        .split_whitespace()
        .last()
        .unwrap()
        .to_owned();
    assert!(
        dek_id.contains(&key_id),
        "released key id {key_id} is the bundle's"
    );
    let limited = release(&[]);
    assert_eq!(limited.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&limited.stdout).trim(),
        "release_limit"
    );
    ok(run(
        "trustbridge",
        &[
            "contract",
            "revoke",
            "--kms",
            &kms,
            "--kms-key",
            &kms_key,
            "--admin-key",
            s(&p("admin.key")),
            "--id",
            "c-1",
        ],
    ));
    assert_eq!(
        String::from_utf8_lossy(&release(&[]).stdout).trim(),
        "contract_revoked"
    );
    drop(broker);

    let audit = ok(run(
        "tb-kms",
        &[
            "audit",
            "verify",
            "--db",
            s(&p("kms.db")),
            "--kek-file",
            s(&p("kek")),
        ],
    ));
    assert!(audit.contains("intact: 4 record(s)"), "{audit}");
    // The broker's log names the simulation mode loudly.
    assert!(
        std::fs::read_to_string(p("tb-kms.log"))
            .unwrap()
            .contains("SIMULATION MODE")
    );
}
