//! The signed manifest and per-file binding: positive paths and their tampering twins.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use ciborium::Value;
use trustbridge_protocol::bundle::{
    AssetId, BundleError, BundlePath, FileEntry, Manifest, ProviderSigningKey, SignedManifest,
    open_file, open_file_in_memory, seal_file,
};
use trustbridge_protocol::cbor;
use trustbridge_protocol::sealed::{DataKey, SegmentSize, StreamError};

struct Sealed {
    provider: ProviderSigningKey,
    key: DataKey,
    signed: SignedManifest,
    /// Ciphertext of each file, in manifest order.
    files: Vec<Vec<u8>>,
    plaintexts: Vec<Vec<u8>>,
}

fn seal(asset: &str, provider: ProviderSigningKey, key: DataKey) -> Sealed {
    let asset = AssetId::new(asset).unwrap();
    let seg = SegmentSize::new(128).unwrap();
    let inputs = [
        ("weights/model.bin", vec![1u8; 1000]),
        ("config.json", b"{\"layers\": 2}".to_vec()),
    ];
    let mut entries = Vec::new();
    let mut by_path = Vec::new();
    for (path, pt) in &inputs {
        let mut ct = Vec::new();
        let entry = seal_file(
            &key,
            &asset,
            BundlePath::new(path).unwrap(),
            seg,
            &pt[..],
            &mut ct,
        )
        .unwrap();
        assert_eq!(entry.ciphertext_len, ct.len() as u64);
        by_path.push((path.to_string(), ct, pt.clone()));
        entries.push(entry);
    }
    let manifest = Manifest::new(asset, 1_700_000_000, provider.public(), &key, entries).unwrap();
    let signed = SignedManifest::sign(manifest, &provider).unwrap();
    by_path.sort();
    Sealed {
        provider,
        key,
        signed,
        files: by_path.iter().map(|f| f.1.clone()).collect(),
        plaintexts: by_path.iter().map(|f| f.2.clone()).collect(),
    }
}

fn fresh() -> Sealed {
    seal(
        "acme/model@v1",
        ProviderSigningKey::generate().unwrap(),
        DataKey::generate().unwrap(),
    )
}

#[test]
fn sign_verify_and_open_every_file() {
    let s = fresh();
    let bytes = s.signed.as_bytes();
    assert_eq!(bytes[0], 0xd2, "tagged COSE_Sign1 (tag 18)");
    let v = SignedManifest::verify(bytes, Some(&s.provider.public())).unwrap();
    assert_eq!(v.manifest(), s.signed.manifest());
    assert_eq!(v.digest(), s.signed.digest());
    let m = v.manifest();
    assert_eq!(
        m.files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
        ["config.json", "weights/model.bin"]
    );
    for (i, entry) in m.files.iter().enumerate() {
        let mut out = Vec::new();
        open_file(&s.key, m, entry, &s.files[i][..], &mut out).unwrap();
        assert_eq!(out, s.plaintexts[i]);
        assert_eq!(
            &*open_file_in_memory(&s.key, m, entry, &s.files[i], 2).unwrap(),
            &s.plaintexts[i]
        );
    }
}

#[test]
fn flipped_signature_byte_is_rejected() {
    let s = fresh();
    let mut bytes = s.signed.as_bytes().to_vec();
    let n = bytes.len();
    bytes[n - 5] ^= 1; // inside the 64-byte signature at the end
    let err = SignedManifest::verify(&bytes, Some(&s.provider.public())).unwrap_err();
    assert!(matches!(err, BundleError::BadSignature { .. }), "{err:?}");
    let err = SignedManifest::verify(&bytes, None).unwrap_err();
    assert!(matches!(err, BundleError::BadSignature { .. }), "{err:?}");
}

#[test]
fn every_flipped_byte_is_rejected() {
    let s = fresh();
    let bytes = s.signed.as_bytes();
    for pos in 0..bytes.len() {
        let mut bad = bytes.to_vec();
        bad[pos] ^= 0x20;
        assert!(
            SignedManifest::verify(&bad, Some(&s.provider.public())).is_err(),
            "flip at {pos} accepted"
        );
    }
}

#[test]
fn manifest_signed_by_another_provider_is_rejected_when_pinned() {
    let s = fresh();
    let attacker = ProviderSigningKey::generate().unwrap();
    // The attacker re-signs the same content under their own key.
    let mut m = s.signed.manifest().clone();
    m.provider_key = attacker.public();
    let forged = SignedManifest::sign(m, &attacker).unwrap();
    let err = SignedManifest::verify(forged.as_bytes(), Some(&s.provider.public())).unwrap_err();
    assert!(
        matches!(err, BundleError::ProviderMismatch { expected, found } if expected == s.provider.public().key_id() && found == attacker.public().key_id()),
        "{err:?}"
    );
    // Unpinned, it verifies, and the caller sees who signed.
    let v = SignedManifest::verify(forged.as_bytes(), None).unwrap();
    assert_eq!(v.manifest().provider_key, attacker.public());
    // Signing with a key that is not the manifest's provider key is refused.
    let err = SignedManifest::sign(s.signed.manifest().clone(), &attacker).unwrap_err();
    assert!(matches!(err, BundleError::ProviderMismatch { .. }));
}

#[test]
fn wrong_data_key_is_named_before_any_segment() {
    let s = fresh();
    let other = DataKey::generate().unwrap();
    let m = s.signed.manifest();
    let err = open_file(&other, m, &m.files[0], &s.files[0][..], &mut Vec::new()).unwrap_err();
    assert!(
        matches!(err, BundleError::WrongKey { expected, found } if expected == s.key.key_id() && found == other.key_id()),
        "{err:?}"
    );
    let err = open_file_in_memory(&other, m, &m.files[0], &s.files[0], 1).unwrap_err();
    assert!(matches!(err, BundleError::WrongKey { .. }), "{err:?}");
}

#[test]
fn file_moved_to_another_path_is_rejected() {
    let s = fresh();
    let m = s.signed.manifest();
    // config.json's ciphertext presented as weights/model.bin, with a manifest entry that
    // claims the lengths fit, so only the path binding can catch it.
    let moved = FileEntry {
        path: m.files[1].path.clone(),
        ..m.files[0].clone()
    };
    let err = open_file(&s.key, m, &moved, &s.files[0][..], &mut Vec::new()).unwrap_err();
    assert!(
        matches!(&err, BundleError::File { path, source: StreamError::SegmentAuthentication { segment: 0 } } if path.as_str() == "weights/model.bin"),
        "{err:?}"
    );
}

#[test]
fn file_moved_from_another_bundle_is_rejected() {
    let s = fresh();
    // Same provider, same data key, another asset: its streams must not open here.
    let other = seal(
        "acme/other@v1",
        ProviderSigningKey::from_pkcs8_pem(&s.provider.to_pkcs8_pem().unwrap()).unwrap(),
        s.key.clone(),
    );
    let m = s.signed.manifest();
    let err = open_file(&s.key, m, &m.files[0], &other.files[0][..], &mut Vec::new()).unwrap_err();
    assert!(
        matches!(
            err,
            BundleError::File {
                source: StreamError::SegmentAuthentication { segment: 0 },
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn length_mismatches_are_reported() {
    let s = fresh();
    let m = s.signed.manifest();
    let entry = &m.files[1];
    let mut longer = s.files[1].clone();
    longer.push(0);
    let err = open_file(&s.key, m, entry, &longer[..], &mut Vec::new()).unwrap_err();
    assert!(
        matches!(err, BundleError::LengthMismatch { expected, found, .. } if found == expected + 1),
        "{err:?}"
    );
    let shorter = &s.files[1][..s.files[1].len() - 1];
    let err = open_file(&s.key, m, entry, shorter, &mut Vec::new()).unwrap_err();
    assert!(matches!(err, BundleError::LengthMismatch { .. }), "{err:?}");
    let err = open_file_in_memory(&s.key, m, entry, shorter, 1).unwrap_err();
    assert!(matches!(err, BundleError::LengthMismatch { .. }), "{err:?}");
}

fn payload_map(s: &Sealed) -> Vec<(Value, Value)> {
    match cbor::from_canonical_slice(&s.signed.manifest().to_cbor().unwrap()).unwrap() {
        Value::Map(m) => m,
        _ => unreachable!(),
    }
}

/// Sets `field` of the first entry of the payload's `files` array.
fn set_first_file_field(map: &mut [(Value, Value)], field: &str, value: Value) {
    let files = map
        .iter_mut()
        .find(|(k, _)| k.as_text() == Some("files"))
        .unwrap();
    let Value::Array(entries) = &mut files.1 else {
        panic!("files is not an array")
    };
    let Value::Map(entry) = &mut entries[0] else {
        panic!("file entry is not a map")
    };
    entry
        .iter_mut()
        .find(|(k, _)| k.as_text() == Some(field))
        .unwrap()
        .1 = value;
}

fn reparse(map: Vec<(Value, Value)>) -> Result<Manifest, BundleError> {
    Manifest::from_cbor(&cbor::to_canonical_vec(&Value::Map(map)).unwrap())
}

#[test]
fn malformed_manifest_payloads_are_rejected() {
    let s = fresh();
    let set = |map: &mut Vec<(Value, Value)>, key: &str, v: Value| {
        map.iter_mut()
            .find(|(k, _)| k.as_text() == Some(key))
            .unwrap()
            .1 = v;
    };
    assert!(reparse(payload_map(&s)).is_ok());

    let mut m = payload_map(&s);
    set(
        &mut m,
        "format",
        Value::Text("trustbridge-sealed-weights/v2".into()),
    );
    assert!(matches!(reparse(m), Err(BundleError::UnsupportedFormat(_))));

    let mut m = payload_map(&s);
    m.push((Value::Text("extra".into()), Value::Null));
    assert!(matches!(reparse(m), Err(BundleError::ManifestCbor(_))));

    let mut m = payload_map(&s);
    let files = m
        .iter_mut()
        .find(|(k, _)| k.as_text() == Some("files"))
        .unwrap();
    if let Value::Array(f) = &mut files.1 {
        f.reverse();
    }
    assert!(
        matches!(reparse(m), Err(BundleError::ManifestMalformed(_))),
        "unsorted files"
    );

    let mut m = payload_map(&s);
    set_first_file_field(&mut m, "ciphertext_len", Value::from(1u64));
    assert!(
        matches!(reparse(m), Err(BundleError::ManifestMalformed(_))),
        "inconsistent lengths"
    );

    let mut m = payload_map(&s);
    set_first_file_field(&mut m, "path", Value::Text("../etc/passwd".into()));
    assert!(
        matches!(reparse(m), Err(BundleError::InvalidPath(_))),
        "escaping path"
    );

    let mut m = payload_map(&s);
    set(&mut m, "files", Value::Array(vec![]));
    assert!(
        matches!(reparse(m), Err(BundleError::ManifestMalformed(_))),
        "no files"
    );
}

#[test]
fn conflicting_paths_are_rejected() {
    let key = DataKey::generate().unwrap();
    let p = ProviderSigningKey::generate().unwrap();
    let seg = SegmentSize::default();
    let entry = |path: &str| FileEntry::new(BundlePath::new(path).unwrap(), 1, seg).unwrap();
    for files in [
        vec![entry("a"), entry("a")],
        vec![entry("a"), entry("a-b"), entry("a/c")],
    ] {
        let err =
            Manifest::new(AssetId::new("x").unwrap(), 0, p.public(), &key, files).unwrap_err();
        assert!(matches!(err, BundleError::PathConflict(_)), "{err:?}");
    }
}
