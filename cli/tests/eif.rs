//! `trustbridge eif build | measure` and `policy add-measurement --from-eif` through the
//! real binary, on generated stand-ins for AWS's kernel, init and nsm.ko (which are not
//! redistributable here) and a stand-in static sentinel.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{fails, ok, pattern, s, tb};
use trustbridge_kms::policy::Policy;
use trustbridge_protocol::bundle::ProviderSigningKey;
use trustbridge_testkit::enclave_image::{
    EM_X86_64, bzimage, dynamic_executable, kernel_module, static_executable,
};
use trustbridge_verifier::client_policy::ClientPolicy;

struct Inputs {
    dir: tempfile::TempDir,
}

impl Inputs {
    fn new() -> Self {
        let i = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        fs::write(i.p("bzImage"), bzimage(&pattern(300_000, 1))).unwrap();
        fs::write(
            i.p("init"),
            static_executable(EM_X86_64, &pattern(20_000, 2)),
        )
        .unwrap();
        fs::write(i.p("nsm.ko"), kernel_module(EM_X86_64, &pattern(30_000, 3))).unwrap();
        fs::write(i.p("cmdline"), "reboot=k panic=30 pci=off console=ttyS0\n").unwrap();
        fs::write(
            i.p("tb-sentinel"),
            static_executable(EM_X86_64, &pattern(100_000, 4)),
        )
        .unwrap();
        i.config("sentinel.toml", "v1");
        i
    }

    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A sentinel configuration pinning a fresh broker key (`tag` names the variant).
    fn config(&self, name: &str, tag: &str) {
        fs::write(self.p(name), config_text(tag, true)).unwrap();
    }

    fn build(&self, config: &str, out: &str, extra: &[&str]) -> std::process::Output {
        let mut args = vec![
            "eif".to_owned(),
            "build".into(),
            "--sentinel".into(),
            s(&self.p("tb-sentinel")).into(),
            "--config".into(),
            s(&self.p(config)).into(),
            "--kernel".into(),
            s(&self.p("bzImage")).into(),
            "--init".into(),
            s(&self.p("init")).into(),
            "--nsm-ko".into(),
            s(&self.p("nsm.ko")).into(),
            "--cmdline".into(),
            s(&self.p("cmdline")).into(),
            "--out".into(),
            s(&self.p(out)).into(),
        ];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        tb(args)
    }
}

/// A configuration an enclave image accepts: broker and provider pinned, the asset and
/// contract named (`tag` goes into the asset id, so two tags make two images).
fn config_text(tag: &str, provider: bool) -> String {
    let key = || ProviderSigningKey::generate().unwrap().public().to_hex();
    let provider = if provider {
        format!("provider_key = \"{}\"\n", key())
    } else {
        String::new()
    };
    format!(
        "kms_url = \"vsock://3:8001\"\nkms_key = \"{}\"\n{provider}asset_id = \"acme/llm@{tag}\"\ncontract_id = \"c\"\n",
        key()
    )
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap()
}

fn pcr(v: &serde_json::Value, i: u8) -> String {
    v["Measurements"][format!("PCR{i}")]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn build_is_reproducible_and_measure_recomputes_what_build_printed() {
    let i = Inputs::new();
    let built = json(&ok(i.build("sentinel.toml", "a.eif", &["--json"])));
    let again = json(&ok(i.build("sentinel.toml", "b.eif", &["--json"])));
    assert_eq!(built, again);
    assert_eq!(
        fs::read(i.p("a.eif")).unwrap(),
        fs::read(i.p("b.eif")).unwrap(),
        "two builds from the same inputs differ"
    );
    let measured = json(&ok(tb(["eif", "measure", s(&i.p("a.eif")), "--json"])));
    assert_eq!(measured, built);
    assert!(measured["Measurements"].get("PCR8").is_none());
    for n in [0, 1, 2] {
        assert_eq!(pcr(&measured, n).len(), 96);
    }
    // Text output: one line per PCR.
    let text = ok(tb(["eif", "measure", s(&i.p("a.eif"))]));
    assert!(
        text.starts_with(&format!("PCR0 {}\n", pcr(&built, 0))),
        "{text}"
    );
    // An existing output is not replaced without --force.
    let err = fails(i.build("sentinel.toml", "a.eif", &[]));
    assert!(err.contains("--force"), "{err}");
    ok(i.build("sentinel.toml", "a.eif", &["--force"]));
    // A flipped byte: the measurement refuses the file.
    let mut eif = fs::read(i.p("a.eif")).unwrap();
    let n = eif.len() - 700;
    eif[n] ^= 0x40;
    fs::write(i.p("bad.eif"), &eif).unwrap();
    let err = fails(tb(["eif", "measure", s(&i.p("bad.eif"))]));
    assert!(err.contains("CRC"), "{err}");
}

#[test]
fn signed_build_adds_pcr8_and_measure_verifies_it() {
    let i = Inputs::new();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["signer.example".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    fs::write(i.p("cert.pem"), cert.pem()).unwrap();
    // As `openssl ecparam -genkey` writes it: the curve's parameters first.
    fs::write(
        i.p("key.pem"),
        format!(
            "-----BEGIN EC PARAMETERS-----\nBgUrgQQAIg==\n-----END EC PARAMETERS-----\n{}",
            key.serialize_pem()
        ),
    )
    .unwrap();
    let built = json(&ok(i.build(
        "sentinel.toml",
        "signed.eif",
        &[
            "--signing-cert",
            s(&i.p("cert.pem")),
            "--signing-key",
            s(&i.p("key.pem")),
            "--json",
        ],
    )));
    let unsigned = json(&ok(i.build("sentinel.toml", "plain.eif", &["--json"])));
    assert_eq!(pcr(&built, 0), pcr(&unsigned, 0));
    assert_eq!(pcr(&built, 8).len(), 96);
    let measured = json(&ok(tb(["eif", "measure", s(&i.p("signed.eif")), "--json"])));
    assert_eq!(measured, built);
    // The key without its certificate is a usage error.
    let out = i.build(
        "sentinel.toml",
        "x.eif",
        &["--signing-key", s(&i.p("key.pem"))],
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn unusable_inputs_are_refused_with_what_to_do() {
    let i = Inputs::new();
    // A dynamically linked sentinel.
    fs::write(i.p("tb-sentinel"), dynamic_executable(EM_X86_64, b"")).unwrap();
    let err = fails(i.build("sentinel.toml", "x.eif", &[]));
    assert!(err.contains("x86_64-unknown-linux-musl"), "{err}");
    let i = Inputs::new();
    // Configurations an enclave could not use safely, or not at all.
    let good = config_text("v1", true);
    let without = |key: &str| {
        good.lines()
            .filter(|l| !l.starts_with(key))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    };
    for (name, text, says) in [
        ("no broker", without("kms_key"), "kms_key"),
        ("no provider", config_text("v1", false), "provider_key"),
        ("no contract", without("contract_id"), "contract_id"),
        (
            "bad broker key",
            good.replace("kms_key = \"", "kms_key = \"zz"),
            "kms_key",
        ),
        ("simulated", format!("{good}tee = \"simulated\"\n"), "NSM"),
        ("snp", format!("{good}tee = \"snp\"\n"), "NSM"),
        (
            "sim ca",
            format!("{good}sim_ca = \"/tmp/ca\"\n"),
            "simulated",
        ),
    ] {
        fs::write(i.p("c.toml"), &text).unwrap();
        let err = fails(i.build("c.toml", "x.eif", &[]));
        assert!(err.contains(says), "{name}: {err}");
    }
    // Kernel and module given without init (or any other partial set): they belong together.
    let err = fails(tb([
        "eif",
        "build",
        "--sentinel",
        s(&i.p("tb-sentinel")),
        "--config",
        s(&i.p("sentinel.toml")),
        "--kernel",
        s(&i.p("bzImage")),
        "--nsm-ko",
        s(&i.p("nsm.ko")),
        "--out",
        s(&i.p("x.eif")),
    ]));
    assert!(err.contains("together"), "{err}");
    // No kernel given and no nitro-cli blobs: the message names the flag and the source.
    if !Path::new("/usr/share/nitro_enclaves/blobs/bzImage").exists() {
        let err = fails(tb([
            "eif",
            "build",
            "--sentinel",
            s(&i.p("tb-sentinel")),
            "--config",
            s(&i.p("sentinel.toml")),
            "--out",
            s(&i.p("x.eif")),
        ]));
        assert!(
            err.contains("--kernel") && err.contains("aws-nitro-enclaves"),
            "{err}"
        );
    }
    assert!(!i.p("x.eif").exists());
}

#[test]
fn add_measurement_accepts_the_image_beside_the_sets_already_accepted() {
    let i = Inputs::new();
    let one = json(&ok(i.build("sentinel.toml", "one.eif", &["--json"])));
    i.config("next.toml", "v2");
    let two = json(&ok(i.build("next.toml", "two.eif", &["--json"])));
    assert_ne!(pcr(&one, 2), pcr(&two, 2));
    assert_eq!(pcr(&one, 1), pcr(&two, 1));

    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/policy.toml");
    // Reached through a symbolic link, which stays one.
    let target = i.p("policy-target.toml");
    fs::copy(&example, &target).unwrap();
    let policy = i.p("policy.toml");
    std::os::unix::fs::symlink(&target, &policy).unwrap();
    let before = Policy::from_toml(&fs::read_to_string(&policy).unwrap()).unwrap();
    let sets_before = before.assets[0].nitro.len();
    for eif in ["one.eif", "two.eif", "one.eif"] {
        ok(tb([
            "policy",
            "add-measurement",
            "--policy",
            s(&policy),
            "--from-eif",
            s(&i.p(eif)),
        ]));
    }
    let text = fs::read_to_string(&policy).unwrap();
    let after = Policy::from_toml(&text).unwrap();
    let sets = &after.assets[0].nitro;
    assert_eq!(
        sets.len(),
        sets_before + 2,
        "adding one.eif twice adds it once"
    );
    for m in [&one, &two] {
        assert!(
            sets.iter().any(|set| set.pcrs()
                == vec![
                    (0, hex::decode(pcr(m, 0)).unwrap().as_slice()),
                    (1, hex::decode(pcr(m, 1)).unwrap().as_slice()),
                    (2, hex::decode(pcr(m, 2)).unwrap().as_slice()),
                ]),
            "{text}"
        );
    }
    assert!(
        fs::symlink_metadata(&policy)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    // The file keeps its comments and the contract after the asset.
    assert!(text.contains("# Rolling deploy"));
    assert_eq!(after.contracts.len(), before.contracts.len());
    // The edited policy still compiles for AWS KMS, with the new sets as conditions.
    let compiled = ok(tb([
        "policy",
        "compile",
        "--policy",
        s(&policy),
        "--target",
        "aws-kms",
        "--enclave-role-arn",
        "arn:aws:iam::111122223333:role/enclave",
        "--key-admin-arn",
        "arn:aws:iam::111122223333:role/admin",
    ]));
    assert!(compiled.contains(&pcr(&two, 2)), "{compiled}");

    // A client policy gets a [[nitro]] set: to one that has none yet (as docs/DEPLOY-AWS.md
    // writes it), then beside another.
    let fresh = i.p("fresh.toml");
    fs::write(&fresh, format!("broker_key = \"{}\"\n", "00".repeat(32))).unwrap();
    ok(tb([
        "policy",
        "add-measurement",
        "--policy",
        s(&fresh),
        "--from-eif",
        s(&i.p("one.eif")),
    ]));
    let parsed = ClientPolicy::from_toml(&fs::read_to_string(&fresh).unwrap()).unwrap();
    assert_eq!(parsed.nitro.len(), 1);
    let client = i.p("client.toml");
    fs::write(
        &client,
        format!(
            "# the proxy's policy\nbroker_key = \"{}\"\n\n[[nitro]]\npcr0 = \"{}\"\npcr1 = \"{}\"\npcr2 = \"{}\"\n",
            "00".repeat(32),
            "aa".repeat(48),
            "bb".repeat(48),
            "cc".repeat(48)
        ),
    )
    .unwrap();
    ok(tb([
        "policy",
        "add-measurement",
        "--policy",
        s(&client),
        "--from-eif",
        s(&i.p("two.eif")),
    ]));
    let parsed = ClientPolicy::from_toml(&fs::read_to_string(&client).unwrap()).unwrap();
    assert_eq!(parsed.nitro.len(), 2);
    assert_eq!(
        parsed.nitro[1].pcr2.as_ref().unwrap().0,
        hex::decode(pcr(&two, 2)).unwrap()
    );
    // A file that is no policy is left alone.
    fs::write(i.p("junk.toml"), "hello = 1\n").unwrap();
    let err = fails(tb([
        "policy",
        "add-measurement",
        "--policy",
        s(&i.p("junk.toml")),
        "--from-eif",
        s(&i.p("two.eif")),
    ]));
    assert!(err.contains("neither"), "{err}");
    assert_eq!(fs::read_to_string(i.p("junk.toml")).unwrap(), "hello = 1\n");
}
