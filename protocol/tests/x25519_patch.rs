//! The X25519 that Oblivious HTTP uses (ohttp's hpke 0.14 over x25519-dalek 3, patched to
//! compute with aws-lc: `vendor/README.md`) is RFC 7748's function: Wycheproof's 518
//! vectors (twists, small-order and non-canonical public keys, edge-case scalars), RFC
//! 7748's own, and the same products as curve25519-dalek's Montgomery ladder on random
//! inputs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use curve25519_dalek_5::montgomery::MontgomeryPoint;
use serde::Deserialize;
use trustbridge_testkit::{hex_decode, read_vector};
use x25519_dalek::{PublicKey, StaticSecret, X25519_BASEPOINT_BYTES, x25519};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct File {
    test_groups: Vec<Group>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Group {
    curve: String,
    tests: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Case {
    tc_id: u32,
    public: String,
    private: String,
    shared: String,
    result: String,
    flags: Vec<String>,
}

fn array(hex: &str) -> [u8; 32] {
    hex_decode(hex).try_into().unwrap()
}

#[test]
fn wycheproof_x25519() {
    let Some(bytes) = read_vector("wycheproof_x25519", "wycheproof/x25519_test.json") else {
        return;
    };
    let file: File = serde_json::from_slice(&bytes).unwrap();
    let (mut checked, mut zero) = (0, 0);
    for group in file.test_groups.iter().filter(|g| g.curve == "curve25519") {
        for t in &group.tests {
            // Every Wycheproof X25519 case has a defined result ("acceptable" marks the
            // public keys a protocol may refuse); the function must produce it.
            assert!(
                matches!(t.result.as_str(), "valid" | "acceptable"),
                "{}",
                t.tc_id
            );
            let (k, u, shared) = (array(&t.private), array(&t.public), array(&t.shared));
            assert_eq!(x25519(k, u), shared, "tcId {}", t.tc_id);
            let dh = StaticSecret::from(k).diffie_hellman(&PublicKey::from(u));
            assert_eq!(*dh.as_bytes(), shared, "tcId {}", t.tc_id);
            // A small-order public key gives the all-zero secret, which HPKE refuses.
            assert_eq!(dh.was_contributory(), shared != [0; 32], "tcId {}", t.tc_id);
            if t.flags.iter().any(|f| f == "ZeroSharedSecret") {
                assert_eq!(shared, [0; 32]);
                zero += 1;
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 518);
    assert!(zero > 0);
}

#[test]
fn rfc7748_vectors() {
    // Section 5.2, the two single products.
    let cases = [
        (
            "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
            "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
            "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552",
        ),
        (
            "4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
            "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
            "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957",
        ),
    ];
    for (k, u, out) in cases {
        assert_eq!(x25519(array(k), array(u)), array(out));
    }
    // Section 5.2, iterated: k ← X25519(k, u), u ← old k, from k = u = 9.
    let (mut k, mut u) = (X25519_BASEPOINT_BYTES, X25519_BASEPOINT_BYTES);
    for i in 1..=1000 {
        let next = x25519(k, u);
        u = k;
        k = next;
        if i == 1 {
            assert_eq!(
                k,
                array("422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079")
            );
        }
    }
    assert_eq!(
        k,
        array("684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51")
    );
    // Section 6.1: both public keys from their secrets (the base-point product), and the
    // shared secret from either side.
    let alice = StaticSecret::from(array(
        "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
    ));
    let bob = StaticSecret::from(array(
        "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
    ));
    let (alice_pk, bob_pk) = (PublicKey::from(&alice), PublicKey::from(&bob));
    assert_eq!(
        alice_pk.to_bytes(),
        array("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    );
    assert_eq!(
        bob_pk.to_bytes(),
        array("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
    );
    let shared = array("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
    assert_eq!(*alice.diffie_hellman(&bob_pk).as_bytes(), shared);
    assert_eq!(*bob.diffie_hellman(&alice_pk).as_bytes(), shared);
}

#[test]
fn same_products_as_curve25519_dalek() {
    // A deterministic stream of inputs (SHA-256 in counter mode): unclamped scalars and
    // arbitrary u-coordinates, high bit and non-canonical values included.
    let stream = |label: &str, i: u32| -> [u8; 32] {
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, format!("{label}{i}").as_bytes())
            .as_ref()
            .try_into()
            .unwrap()
    };
    for i in 0..500 {
        let (k, u) = (stream("k", i), stream("u", i));
        assert_eq!(
            x25519(k, u),
            MontgomeryPoint(u).mul_clamped(k).to_bytes(),
            "case {i}"
        );
        assert_eq!(
            PublicKey::from(&StaticSecret::from(k)).to_bytes(),
            curve25519_dalek_5::EdwardsPoint::mul_base_clamped(k)
                .to_montgomery()
                .to_bytes(),
            "base point, case {i}"
        );
    }
}
