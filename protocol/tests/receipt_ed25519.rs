//! The Ed25519 check that receipts are verified with ([`ReceiptVerifyingKey`]:
//! ed25519-dalek 3, on curve25519-dalek 5's AVX-512 IFMA, AVX2 or portable backend as the
//! CPU allows) is RFC 8032's as Wycheproof tests it (its 151 vectors: malleated and
//! non-canonical `S`, edge-case `R`, truncated and extended signatures), gives the same
//! answer as aws-lc's on every vector and on random signatures and their tampered twins,
//! and refuses the keys plain Ed25519 lets forge: the eight points of small order, and
//! encodings that are not canonical.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::Deserialize;
use trustbridge_protocol::receipt::ReceiptVerifyingKey;
use trustbridge_testkit::{hex_decode, read_vector};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct File {
    test_groups: Vec<Group>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Group {
    public_key: PublicKey,
    tests: Vec<Case>,
}

#[derive(Deserialize)]
struct PublicKey {
    pk: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Case {
    tc_id: u32,
    msg: String,
    sig: String,
    result: String,
}

/// Our check, for a signature of any length (only 64 bytes can be one).
fn ours(key: &ReceiptVerifyingKey, msg: &[u8], sig: &[u8]) -> bool {
    <&[u8; 64]>::try_from(sig).is_ok_and(|s| key.verify_signature(msg, s))
}

fn aws_lc(public: &[u8; 32], msg: &[u8], sig: &[u8]) -> bool {
    UnparsedPublicKey::new(&ED25519, public)
        .verify(msg, sig)
        .is_ok()
}

#[test]
fn wycheproof_ed25519() {
    let Some(bytes) = read_vector("wycheproof_ed25519", "wycheproof/ed25519_test.json") else {
        return;
    };
    #[cfg(target_arch = "x86_64")]
    eprintln!(
        "curve25519-dalek backend on this CPU: {}",
        if std::arch::is_x86_feature_detected!("avx512ifma") {
            "AVX-512 IFMA"
        } else if std::arch::is_x86_feature_detected!("avx2") {
            "AVX2"
        } else {
            "portable"
        }
    );
    let file: File = serde_json::from_slice(&bytes).unwrap();
    let (mut valid, mut invalid) = (0, 0);
    for group in &file.test_groups {
        let public: [u8; 32] = hex_decode(&group.public_key.pk).try_into().unwrap();
        let key = ReceiptVerifyingKey::from_bytes(&public);
        for t in &group.tests {
            let (msg, sig) = (hex_decode(&t.msg), hex_decode(&t.sig));
            let expected = match t.result.as_str() {
                "valid" => true,
                "invalid" => false,
                other => panic!("tcId {}: result {other}", t.tc_id),
            };
            assert_eq!(ours(&key, &msg, &sig), expected, "tcId {}", t.tc_id);
            assert_eq!(
                aws_lc(&public, &msg, &sig),
                expected,
                "aws-lc, tcId {}",
                t.tc_id
            );
            if expected {
                valid += 1;
            } else {
                invalid += 1;
            }
        }
    }
    assert_eq!((valid, invalid), (88, 63));
}

#[test]
fn agrees_with_aws_lc_on_random_signatures_and_their_tampered_twins() {
    let mut seed = [0u8; 32];
    for i in 0..64u8 {
        aws_lc_rs::rand::fill(&mut seed).unwrap();
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed).unwrap();
        let public: [u8; 32] = pair.public_key().as_ref().try_into().unwrap();
        let key = ReceiptVerifyingKey::from_bytes(&public);
        let msg: Vec<u8> = (0..usize::from(i) * 13).map(|j| (j as u8) ^ i).collect();
        let sig = pair.sign(&msg);
        let sig = sig.as_ref();
        assert!(ours(&key, &msg, sig));
        assert!(aws_lc(&public, &msg, sig));
        // A flipped bit anywhere in the signature, the message or the key.
        for bit in [0, 7, 255, 256, 300, 511] {
            let mut bad = sig.to_vec();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(!ours(&key, &msg, &bad), "signature bit {bit}");
            assert!(!aws_lc(&public, &msg, &bad), "aws-lc, signature bit {bit}");
        }
        let mut other = msg.clone();
        other.push(1);
        assert!(!ours(&key, &other, sig));
        let mut wrong = public;
        wrong[3] ^= 0x10;
        assert!(!ours(&ReceiptVerifyingKey::from_bytes(&wrong), &msg, sig));
    }
}

#[test]
fn keys_of_small_order_are_refused_though_plain_ed25519_accepts_their_forgeries() {
    use curve25519_dalek_5::constants::EIGHT_TORSION;
    use ed25519_dalek_3::Verifier;
    // R = the identity, S = 0: [S]B = R + [k]A holds whenever [k]A is the identity,
    // for one message in at most eight under a key A of small order.
    let mut forged = [0u8; 64];
    forged[..32].copy_from_slice(EIGHT_TORSION[0].compress().as_bytes());
    let signature = ed25519_dalek_3::Signature::from_bytes(&forged);
    for (i, point) in EIGHT_TORSION.iter().enumerate() {
        let public = point.compress().to_bytes();
        let ours = ReceiptVerifyingKey::from_bytes(&public);
        assert!(!ours.is_usable(), "torsion point {i}");
        let plain = ed25519_dalek_3::VerifyingKey::from_bytes(&public).unwrap();
        let message = (0u32..1000)
            .map(u32::to_le_bytes)
            .find(|m| plain.verify(m, &signature).is_ok())
            .unwrap_or_else(|| panic!("no forgery found for torsion point {i}"));
        assert!(
            !ours.verify_signature(&message, &forged),
            "torsion point {i}"
        );
    }
}

#[test]
fn keys_not_canonically_encoded_are_refused() {
    // y = p + r (p = 2^255 - 19): points that decoders reducing y accept, and RFC 8032's
    // decoding (aws-lc's) refuses.
    let mut refused = 0;
    for r in 0u8..19 {
        let mut bytes = [0xff; 32];
        bytes[0] = 0xed + r;
        for sign in [0, 0x80] {
            let mut encoding = bytes;
            encoding[31] = 0x7f | sign;
            let lenient = ed25519_dalek_3::VerifyingKey::from_bytes(&encoding);
            if lenient.is_ok_and(|k| !k.is_weak()) {
                assert!(!ReceiptVerifyingKey::from_bytes(&encoding).is_usable());
                assert!(
                    UnparsedPublicKey::new(&ED25519, encoding)
                        .verify(b"m", &[0; 64])
                        .is_err()
                );
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "no such encoding found");
    // The other non-canonical encodings, a sign bit on x = 0, are of y = ±1: points of
    // small order, refused as such. An honest key is usable.
    let pair = Ed25519KeyPair::from_seed_unchecked(&[5; 32]).unwrap();
    let public: [u8; 32] = pair.public_key().as_ref().try_into().unwrap();
    assert!(ReceiptVerifyingKey::from_bytes(&public).is_usable());
}

#[test]
fn a_string_that_is_no_point_verifies_nothing() {
    let none = (2u8..)
        .map(|y| {
            let mut b = [0u8; 32];
            b[0] = y;
            b
        })
        .find(|b| {
            curve25519_dalek_5::edwards::CompressedEdwardsY(*b)
                .decompress()
                .is_none()
        })
        .unwrap();
    assert!(!ReceiptVerifyingKey::from_bytes(&none).is_usable());
}
