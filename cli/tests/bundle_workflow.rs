//! The provider workflow through the real binary: keygen, seal, inspect, unseal, and every
//! way a bundle can be wrong.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{fails, ok, pattern, s, tb};

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    /// A provider key, a two-file model (one file spans many 4 KiB segments) and its bundle.
    fn new() -> Self {
        let f = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        fs::create_dir_all(f.p("model/weights")).unwrap();
        fs::write(f.p("model/weights/model.bin"), pattern(200_000, 1)).unwrap();
        fs::write(f.p("model/config.json"), b"{\"layers\": 2}").unwrap();
        ok(tb(["keygen", "--out", s(&f.p("provider.key"))]));
        ok(f.seal(
            "model",
            "bundle",
            "acme/model@v1",
            "provider.key",
            ("--key-out", "dek.key"),
        ));
        f
    }

    /// `trustbridge seal` of `model` into `out` (paths relative to the fixture) with the
    /// key option `key` = (`--key` or `--key-out`, file) and 4 KiB segments.
    fn seal(
        &self,
        model: &str,
        out: &str,
        asset: &str,
        signer: &str,
        key: (&str, &str),
    ) -> std::process::Output {
        tb([
            "seal",
            "--in",
            s(&self.p(model)),
            "--out",
            s(&self.p(out)),
            "--asset-id",
            asset,
            "--signing-key",
            s(&self.p(signer)),
            key.0,
            s(&self.p(key.1)),
            "--segment-size",
            "4KiB",
        ])
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn unseal(&self, bundle: &str, out: &str) -> std::process::Output {
        tb([
            "unseal",
            "--bundle",
            s(&self.p(bundle)),
            "--key",
            s(&self.p("dek.key")),
            "--out",
            s(&self.p(out)),
            "--provider-pubkey",
            s(&self.p("provider.key.pub")),
        ])
    }

    fn copy_bundle(&self, to: &str) {
        copy_dir(&self.p("bundle"), &self.p(to));
    }
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn flip(path: &Path, pos: usize) {
    let mut b = fs::read(path).unwrap();
    let pos = pos.min(b.len() - 1);
    b[pos] ^= 0x01;
    fs::write(path, b).unwrap();
}

#[test]
fn seal_inspect_unseal_round_trip() {
    let f = Fixture::new();
    let mode = |p: &str| fs::metadata(f.p(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("provider.key"), 0o600);
    assert_eq!(mode("dek.key"), 0o600);
    let key_file = fs::read_to_string(f.p("dek.key")).unwrap();
    assert_eq!(key_file.len(), 65);
    assert!(key_file.trim_end().chars().all(|c| c.is_ascii_hexdigit()));
    assert!(f.p("bundle/manifest.cose").is_file());
    assert!(f.p("bundle/weights/model.bin.sealed").is_file());

    let text = ok(tb(["inspect", s(&f.p("bundle"))]));
    assert!(text.contains("signature        valid"), "{text}");
    assert!(text.contains("weights/model.bin"), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(tb(["inspect", s(&f.p("bundle")), "--json"]))).unwrap();
    assert_eq!(json["asset_id"], "acme/model@v1");
    assert_eq!(json["files"].as_array().unwrap().len(), 2);
    assert_eq!(json["files"][1]["path"], "weights/model.bin");
    assert_eq!(json["files"][1]["plaintext_len"], 200_000);
    assert_eq!(json["files"][1]["segment_size"], 4096);
    assert_eq!(json["files"][1]["status"], "ok");
    assert_eq!(json["provider_key_pinned"], false);

    ok(f.unseal("bundle", "out"));
    assert_eq!(
        fs::read(f.p("out/weights/model.bin")).unwrap(),
        pattern(200_000, 1)
    );
    assert_eq!(
        fs::read(f.p("out/config.json")).unwrap(),
        b"{\"layers\": 2}"
    );
    assert_eq!(mode("out/weights/model.bin"), 0o600);
}

#[test]
fn the_data_key_is_never_printed() {
    let f = Fixture::new();
    let key = fs::read_to_string(f.p("dek.key"))
        .unwrap()
        .trim_end()
        .to_owned();
    for out in [
        tb(["inspect", s(&f.p("bundle")), "--json"]),
        f.unseal("bundle", "out"),
        tb([
            "-vv",
            "seal",
            "--in",
            s(&f.p("model")),
            "--out",
            s(&f.p("b2")),
            "--asset-id",
            "x",
            "--signing-key",
            s(&f.p("provider.key")),
            "--key",
            s(&f.p("dek.key")),
        ]),
    ] {
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!all.contains(&key), "data key printed:\n{all}");
        assert!(out.status.success(), "{all}");
    }
}

#[test]
fn existing_outputs_are_not_overwritten_without_force() {
    let f = Fixture::new();
    let seal_to = |out: &str, force: bool, key_flag: &str, key_path: &str| {
        let mut args = vec![
            "seal".to_owned(),
            "--in".into(),
            s(&f.p("model")).into(),
            "--out".into(),
            s(&f.p(out)).into(),
            "--asset-id".into(),
            "acme/model@v1".into(),
            "--signing-key".into(),
            s(&f.p("provider.key")).into(),
            key_flag.into(),
            s(&f.p(key_path)).into(),
        ];
        if force {
            args.push("--force".into());
        }
        tb(args)
    };
    let seal =
        |force: bool, key_flag: &str, key_path: &str| seal_to("bundle", force, key_flag, key_path);
    let before = fs::read(f.p("bundle/manifest.cose")).unwrap();
    let err = fails(seal(false, "--key", "dek.key"));
    assert!(
        err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        fs::read(f.p("bundle/manifest.cose")).unwrap(),
        before,
        "bundle was touched"
    );
    // A new key must not clobber the old one either.
    let old_key = fs::read(f.p("dek.key")).unwrap();
    let err = fails(seal_to("bundle2", false, "--key-out", "dek.key"));
    assert!(err.contains("dek.key already exists"), "{err}");
    assert_eq!(fs::read(f.p("dek.key")).unwrap(), old_key);
    assert!(!f.p("bundle2").exists());
    // With --force the bundle is replaced.
    ok(seal(true, "--key", "dek.key"));
    assert_ne!(fs::read(f.p("bundle/manifest.cose")).unwrap(), before);
    ok(f.unseal("bundle", "out"));
    let err = fails(f.unseal("bundle", "out"));
    assert!(err.contains("already exists"), "{err}");
    let err = fails(tb(["keygen", "--out", s(&f.p("provider.key"))]));
    assert!(err.contains("already exists"), "{err}");
}

#[test]
fn wrong_key_is_reported_as_such() {
    let f = Fixture::new();
    fs::write(f.p("other.key"), format!("{}\n", "ab".repeat(32))).unwrap();
    fs::set_permissions(f.p("other.key"), fs::Permissions::from_mode(0o600)).unwrap();
    let err = fails(tb([
        "unseal",
        "--bundle",
        s(&f.p("bundle")),
        "--key",
        s(&f.p("other.key")),
        "--out",
        s(&f.p("out")),
    ]));
    assert!(err.contains("wrong data key"), "{err}");
    assert!(!f.p("out").exists());
    fs::write(f.p("bad.key"), "not a key\n").unwrap();
    let err = fails(tb([
        "unseal",
        "--bundle",
        s(&f.p("bundle")),
        "--key",
        s(&f.p("bad.key")),
        "--out",
        s(&f.p("out")),
    ]));
    assert!(err.contains("not a data key file"), "{err}");
}

#[test]
fn flipped_manifest_signature_is_rejected() {
    let f = Fixture::new();
    let len = fs::metadata(f.p("bundle/manifest.cose")).unwrap().len() as usize;
    flip(&f.p("bundle/manifest.cose"), len - 3);
    let err = fails(tb(["inspect", s(&f.p("bundle"))]));
    assert!(err.contains("manifest signature is invalid"), "{err}");
    let err = fails(f.unseal("bundle", "out"));
    assert!(err.contains("manifest signature is invalid"), "{err}");
    assert!(!f.p("out").exists());
}

#[test]
fn manifest_signed_by_another_provider_is_rejected() {
    let f = Fixture::new();
    ok(tb(["keygen", "--out", s(&f.p("attacker.key"))]));
    // The attacker re-seals the same model under their own key with the same data key.
    ok(f.seal(
        "model",
        "forged",
        "acme/model@v1",
        "attacker.key",
        ("--key", "dek.key"),
    ));
    let err = fails(f.unseal("forged", "out"));
    assert!(
        err.contains("signed by provider key") && err.contains("expected"),
        "{err}"
    );
    let err = fails(tb([
        "inspect",
        s(&f.p("forged")),
        "--provider-pubkey",
        s(&f.p("provider.key.pub")),
    ]));
    assert!(err.contains("signed by provider key"), "{err}");
    // Swapping only the manifest into the genuine bundle fails the same way.
    f.copy_bundle("mixed");
    fs::copy(f.p("forged/manifest.cose"), f.p("mixed/manifest.cose")).unwrap();
    fails(f.unseal("mixed", "out"));
}

#[test]
fn corrupted_sealed_file_is_rejected_and_nothing_is_written() {
    let f = Fixture::new();
    flip(&f.p("bundle/weights/model.bin.sealed"), 100_000);
    let err = fails(f.unseal("bundle", "out"));
    assert!(
        err.contains("weights/model.bin") && err.contains("failed authentication"),
        "{err}"
    );
    assert!(!f.p("out").exists(), "partial output left behind");
    let leftovers: Vec<_> = fs::read_dir(f.dir.path())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tb-"))
        .collect();
    assert!(leftovers.is_empty(), "staging directory left behind");
}

#[test]
fn truncated_or_missing_files_are_rejected() {
    let f = Fixture::new();
    let sealed = f.p("bundle/weights/model.bin.sealed");
    let bytes = fs::read(&sealed).unwrap();
    fs::write(&sealed, &bytes[..bytes.len() - 4096]).unwrap();
    let err = fails(tb(["inspect", s(&f.p("bundle"))]));
    assert!(err.contains("missing or have the wrong length"), "{err}");
    let err = fails(f.unseal("bundle", "out"));
    assert!(err.contains("manifest says"), "{err}");
    fs::remove_file(&sealed).unwrap();
    let err = fails(f.unseal("bundle", "out"));
    assert!(err.contains("missing"), "{err}");
}

#[test]
fn file_moved_to_another_path_is_rejected() {
    let f = Fixture::new();
    // Give both files the same length so only the path binding can tell them apart.
    fs::write(f.p("model/config.json"), pattern(200_000, 2)).unwrap();
    ok(f.seal(
        "model",
        "b",
        "acme/model@v1",
        "provider.key",
        ("--key", "dek.key"),
    ));
    fs::rename(f.p("b/config.json.sealed"), f.p("tmp.sealed")).unwrap();
    fs::rename(
        f.p("b/weights/model.bin.sealed"),
        f.p("b/config.json.sealed"),
    )
    .unwrap();
    fs::rename(f.p("tmp.sealed"), f.p("b/weights/model.bin.sealed")).unwrap();
    ok(tb(["inspect", s(&f.p("b"))])); // lengths still match
    let err = fails(f.unseal("b", "out"));
    assert!(
        err.contains("config.json") && err.contains("segment 0 failed authentication"),
        "{err}"
    );
}

#[test]
fn file_moved_from_another_bundle_is_rejected() {
    let f = Fixture::new();
    ok(f.seal(
        "model",
        "other",
        "acme/other@v1",
        "provider.key",
        ("--key", "dek.key"),
    ));
    fs::copy(
        f.p("other/weights/model.bin.sealed"),
        f.p("bundle/weights/model.bin.sealed"),
    )
    .unwrap();
    let err = fails(f.unseal("bundle", "out"));
    assert!(
        err.contains("weights/model.bin") && err.contains("failed authentication"),
        "{err}"
    );
}

#[test]
fn clear_messages_for_bad_invocations() {
    let f = Fixture::new();
    let err = fails(tb(["inspect", s(&f.p("nowhere"))]));
    assert!(err.contains("is not a bundle"), "{err}");
    let err = fails(f.seal("missing", "x", "a", "provider.key", ("--key", "dek.key")));
    assert!(err.contains("cannot read input"), "{err}");
    let err = fails(f.seal("model", "x", "bad id", "provider.key", ("--key", "dek.key")));
    assert!(err.contains("invalid asset id"), "{err}");
    let err = fails(tb([
        "seal",
        "--in",
        s(&f.p("model")),
        "--out",
        s(&f.p("x")),
        "--asset-id",
        "a",
        "--signing-key",
        s(&f.p("provider.key")),
    ]));
    assert!(err.contains("--key-out"), "{err}");
    let usage = tb([
        "seal",
        "--in",
        "a",
        "--out",
        "b",
        "--asset-id",
        "a",
        "--signing-key",
        "k",
        "--segment-size",
        "10",
    ]);
    assert_eq!(usage.status.code(), Some(2));
}
