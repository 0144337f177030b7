//! The Ed25519 check that receipts are verified with ([`ReceiptVerifyingKey`]:
//! ed25519-dalek 3, on curve25519-dalek 5's AVX-512 IFMA, AVX2 or portable backend as the
//! CPU allows) is RFC 8032's as Wycheproof tests it (its 151 vectors: malleated and
//! non-canonical `S`, edge-case `R`, truncated and extended signatures), and gives the
//! same answer as aws-lc's on every vector and on random signatures and their tampered
//! twins.
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
fn a_key_of_small_order_or_no_point_verifies_nothing() {
    // The identity (y = 1) "signs" any message with R = identity, S = 0.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let mut forged = [0u8; 64];
    forged[0] = 1;
    let key = ReceiptVerifyingKey::from_bytes(&identity);
    assert!(!key.verify_signature(b"any message", &forged));
    // The first y that is no point of the curve.
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
    assert!(!ReceiptVerifyingKey::from_bytes(&none).verify_signature(b"m", &forged));
}
