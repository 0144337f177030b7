//! Receipts: the one encoding, and every forgery refused (another key, an edited claim,
//! non-canonical CBOR, an unknown claim, an untagged envelope, other headers).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;
use trustbridge_protocol::cbor::CborError;
use trustbridge_protocol::receipt::{
    Claims, GENESIS, Receipt, ReceiptError, ReceiptSigningKey, UnverifiedReceipt, Usage,
    receipt_key_id, salted_digest,
};

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn claims(key: &SigningKey) -> Claims {
    Claims {
        issuer: receipt_key_id(&key.verifying_key().to_bytes()),
        issued_at: 1_790_000_000,
        id: [7; 16],
        nonce: Some(vec![1; 16]),
        sequence: 0,
        previous: GENESIS,
        model: [2; 32],
        request_digest: salted_digest(&[9; 32], b"request"),
        response_digest: salted_digest(&[9; 32], b"response"),
        evidence_digest: [3; 32],
        measurements: BTreeMap::from([
            ("pcr0".to_owned(), vec![0xaa; 48]),
            ("pcr1".to_owned(), vec![0xbb; 48]),
            ("measurement".to_owned(), vec![0xcc; 48]),
        ]),
        policy_digest: [4; 32],
        status: 200,
        usage: Some(Usage {
            prompt_tokens: 12,
            completion_tokens: 30,
        }),
    }
}

fn verify(bytes: &[u8], key: &SigningKey) -> Result<Receipt, ReceiptError> {
    UnverifiedReceipt::parse(bytes)?.verify(&key.verifying_key())
}

#[test]
fn a_signed_receipt_verifies_and_round_trips() {
    let k = key(1);
    let receipt = Receipt::sign(claims(&k), &k).unwrap();
    let verified = verify(receipt.as_bytes(), &k).unwrap();
    assert_eq!(verified, receipt);
    assert_eq!(verified.claims(), &claims(&k));
    // Tag 18, then the 4-item array and the exact protected header.
    assert_eq!(&receipt.as_bytes()[..3], &[0xd2, 0x84, 0x54]);
    // Optional claims absent: still one encoding, still verifies.
    let mut c = claims(&k);
    c.nonce = None;
    c.usage = None;
    c.measurements.clear();
    let r = Receipt::sign(c.clone(), &k).unwrap();
    assert_eq!(verify(r.as_bytes(), &k).unwrap().claims(), &c);
    assert_ne!(r.digest(), receipt.digest());
}

#[test]
fn the_signature_is_one_ed25519_dalek_verifies_on_the_envelope_it_would_make() {
    // Receipts are signed with nonces made ahead (not RFC 8032's deterministic ones), so
    // two signatures of one claims set differ; each is an Ed25519 signature that an
    // independent implementation (ed25519-dalek, strictly) verifies, in exactly the
    // envelope `sign_payload` builds, and a key signs with its own id only.
    for seed in [1, 2, 0xff] {
        let k = key(seed);
        let signer = ReceiptSigningKey::new(&k).unwrap();
        assert_eq!(signer.public_key(), k.verifying_key().to_bytes());
        let receipt = Receipt::sign_with(claims(&k), &signer).unwrap();
        let again = Receipt::sign_with(claims(&k), &signer).unwrap();
        assert_ne!(receipt.as_bytes(), again.as_bytes());
        let payload = claims(&k).encode().unwrap();
        let reference = sign_payload(&payload, &k);
        let body = reference.len() - 64;
        for r in [&receipt, &again] {
            assert_eq!(r.as_bytes().len(), reference.len());
            assert_eq!(r.as_bytes()[..body], reference[..body]);
            let parsed = UnverifiedReceipt::parse(r.as_bytes()).unwrap();
            k.verifying_key()
                .verify_strict(parsed.signed_message(), parsed.signature())
                .unwrap();
        }
        assert!(matches!(
            Receipt::sign_with(claims(&key(seed ^ 1)), &signer),
            Err(ReceiptError::Issuer { .. })
        ));
        // A nonce made ahead signs too, for its own key only.
        let nonce = signer.nonce().unwrap();
        let ahead = Receipt::sign_with_nonce(claims(&k), &signer, nonce).unwrap();
        assert_eq!(verify(ahead.as_bytes(), &k).unwrap(), ahead);
        let other = ReceiptSigningKey::new(&key(seed ^ 1)).unwrap();
        assert_eq!(
            Receipt::sign_with_nonce(claims(&k), &signer, other.nonce().unwrap()),
            Err(ReceiptError::NonceKey)
        );
    }
}

#[test]
fn the_claims_encoding_matches_a_generic_deterministic_encoder() {
    // The hand-written encoder and ciborium + our canonical check agree byte for byte.
    let k = key(1);
    let payload = claims(&k).encode().unwrap();
    let value = trustbridge_protocol::cbor::from_canonical_slice(&payload).unwrap();
    assert_eq!(
        trustbridge_protocol::cbor::to_canonical_vec(&value).unwrap(),
        payload
    );
}

#[test]
fn another_key_is_refused() {
    let k = key(1);
    let receipt = Receipt::sign(claims(&k), &k).unwrap();
    // Another key: its id is not the issuer.
    assert!(matches!(
        verify(receipt.as_bytes(), &key(2)),
        Err(ReceiptError::Issuer { .. })
    ));
    // Another key that claims the first one's id: the signature does not verify.
    let forger = key(2);
    let forged = Receipt::sign(
        Claims {
            issuer: receipt_key_id(&forger.verifying_key().to_bytes()),
            ..claims(&k)
        },
        &forger,
    )
    .unwrap();
    let mut bytes = forged.as_bytes().to_vec();
    let at = bytes
        .windows(8)
        .position(|w| {
            w == &receipt_key_id(&forger.verifying_key().to_bytes())
                .to_string()
                .as_bytes()[..8]
        })
        .unwrap();
    let own = receipt_key_id(&k.verifying_key().to_bytes()).to_string();
    bytes[at..at + 16].copy_from_slice(own.as_bytes());
    assert!(matches!(
        verify(&bytes, &k),
        Err(ReceiptError::BadSignature(_))
    ));
    // Signing with a key that is not the issuer is refused up front.
    assert!(matches!(
        Receipt::sign(claims(&k), &key(3)),
        Err(ReceiptError::Issuer { .. })
    ));
}

#[test]
fn every_flipped_byte_is_refused() {
    let k = key(1);
    let receipt = Receipt::sign(claims(&k), &k).unwrap();
    let bytes = receipt.as_bytes();
    for i in 0..bytes.len() {
        let mut b = bytes.to_vec();
        b[i] ^= 0x01;
        assert!(verify(&b, &k).is_err(), "byte {i} flipped still verifies");
    }
    // Truncated, and with a trailing byte.
    assert!(verify(&bytes[..bytes.len() - 1], &k).is_err());
    let mut longer = bytes.to_vec();
    longer.push(0);
    assert!(matches!(
        verify(&longer, &k),
        Err(ReceiptError::Cbor(CborError::TrailingBytes(1)))
    ));
}

/// Re-signs `payload` exactly as the sentinel would, to show that a validly signed
/// payload is still refused when it breaks the profile.
fn sign_payload(payload: &[u8], k: &SigningKey) -> Vec<u8> {
    use ed25519_dalek::Signer;
    use trustbridge_protocol::cbor::strict::Writer;
    let protected = b"\xa2\x01\x27\x03\x6fapplication/cwt";
    let mut tbs = Writer::default();
    tbs.array(4)
        .text("Signature1")
        .bytes(protected)
        .bytes(&[])
        .bytes(payload);
    let sig = k.sign(&tbs.into_vec());
    let mut w = Writer::default();
    w.tag(18)
        .array(4)
        .bytes(protected)
        .map(0)
        .bytes(payload)
        .bytes(&sig.to_bytes());
    w.into_vec()
}

fn reencode(
    k: &SigningKey,
    edit: impl FnOnce(&mut Vec<(ciborium::Value, ciborium::Value)>),
) -> Vec<u8> {
    let payload = claims(k).encode().unwrap();
    let ciborium::Value::Map(mut entries) = ciborium::from_reader(&payload[..]).unwrap() else {
        panic!()
    };
    edit(&mut entries);
    let mut out = Vec::new();
    ciborium::into_writer(&ciborium::Value::Map(entries), &mut out).unwrap();
    out
}

#[test]
fn signed_but_outside_the_profile_is_refused() {
    let k = key(1);
    // The honest payload, re-signed by hand: verifies (the harness is right).
    let honest = sign_payload(&claims(&k).encode().unwrap(), &k);
    verify(&honest, &k).unwrap();

    // An unknown claim, in its deterministic place.
    let extra = reencode(&k, |e| e.push(("zzz".into(), 1.into())));
    let extra = trustbridge_protocol::cbor::to_canonical_vec(
        &ciborium::from_reader::<ciborium::Value, _>(&extra[..]).unwrap(),
    )
    .unwrap();
    assert!(matches!(
        verify(&sign_payload(&extra, &k), &k),
        Err(ReceiptError::UnknownClaim(_))
    ));
    // Keys out of deterministic order (ciborium keeps the order it was given).
    let shuffled = reencode(&k, |e| e.reverse());
    assert!(matches!(
        verify(&sign_payload(&shuffled, &k), &k),
        Err(ReceiptError::Cbor(CborError::NotCanonical))
    ));
    // A duplicated claim.
    let twice = reencode(&k, |e| {
        let last = e.last().unwrap().clone();
        e.push(last);
    });
    assert!(verify(&sign_payload(&twice, &k), &k).is_err());
    // A missing claim.
    let missing = reencode(&k, |e| {
        e.retain(|(key, _)| key != &ciborium::Value::from("model"))
    });
    assert!(matches!(
        verify(&sign_payload(&missing, &k), &k),
        Err(ReceiptError::MissingClaim("model"))
    ));
    // Another profile.
    let other = reencode(&k, |e| {
        for (key, v) in e.iter_mut() {
            if key == &ciborium::Value::from(265) {
                *v = "tag:example.com,2026:other".into();
            }
        }
    });
    assert!(matches!(
        verify(&sign_payload(&other, &k), &k),
        Err(ReceiptError::Profile(_))
    ));
    // A digest of the wrong size.
    let short = reencode(&k, |e| {
        for (key, v) in e.iter_mut() {
            if key == &ciborium::Value::from("model") {
                *v = ciborium::Value::Bytes(vec![2; 31]);
            }
        }
    });
    assert!(matches!(
        verify(&sign_payload(&short, &k), &k),
        Err(ReceiptError::ClaimType { claim: "model", .. })
    ));
    // A non-shortest integer: sequence 0 written as 0x18 0x00.
    let mut payload = claims(&k).encode().unwrap();
    let at = payload
        .windows(9)
        .position(|w| w == b"\x68sequence")
        .unwrap()
        + 9;
    assert_eq!(payload[at], 0x00);
    payload.splice(at..=at, [0x18, 0x00]);
    assert!(matches!(
        verify(&sign_payload(&payload, &k), &k),
        Err(ReceiptError::Cbor(CborError::NotCanonical))
    ));
}

#[test]
fn envelopes_other_than_the_one_encoding_are_refused() {
    let k = key(1);
    let receipt = Receipt::sign(claims(&k), &k).unwrap();
    let bytes = receipt.as_bytes();
    // Untagged.
    assert_eq!(verify(&bytes[1..], &k), Err(ReceiptError::Untagged));
    // Another tag (COSE_Sign, 98).
    let mut other = vec![0xd8, 98];
    other.extend_from_slice(&bytes[1..]);
    assert_eq!(verify(&other, &k), Err(ReceiptError::Untagged));
    // A non-empty unprotected header.
    let mut b = bytes.to_vec();
    let at = 3 + 20;
    assert_eq!(b[at], 0xa0);
    b.splice(at..=at, [0xa1, 0x04, 0x41, 0x00]);
    assert_eq!(verify(&b, &k), Err(ReceiptError::UnprotectedHeader));
    // Another algorithm in the protected header (ES256, -7 = 0x26).
    let mut b = bytes.to_vec();
    assert_eq!(b[5], 0x27);
    b[5] = 0x26;
    assert_eq!(verify(&b, &k), Err(ReceiptError::ProtectedHeader));
    // Oversized input is refused before parsing.
    assert_eq!(
        UnverifiedReceipt::parse(&vec![0; 9000]).map(|_| ()),
        Err(ReceiptError::TooLarge(9000))
    );
}

#[test]
fn claims_outside_their_ranges_are_not_signed() {
    let k = key(1);
    let mut c = claims(&k);
    c.status = 99;
    assert!(Receipt::sign(c, &k).is_err());
    let mut c = claims(&k);
    c.nonce = Some(vec![1; 4]);
    assert!(Receipt::sign(c, &k).is_err());
}

#[test]
fn batch_verification_accepts_a_good_log_and_names_the_bad_receipt() {
    let k = key(1);
    let vk = k.verifying_key();
    let mut previous = GENESIS;
    let mut bytes = Vec::new();
    for i in 0..100u64 {
        let r = Receipt::sign(
            Claims {
                sequence: i,
                previous,
                ..claims(&k)
            },
            &k,
        )
        .unwrap();
        previous = r.digest();
        bytes.push(r.as_bytes().to_vec());
    }
    let parse = |bytes: &[Vec<u8>]| {
        bytes
            .iter()
            .map(|b| (UnverifiedReceipt::parse(b).unwrap(), vk))
            .collect::<Vec<_>>()
    };
    let ok = trustbridge_protocol::receipt::verify_batch(parse(&bytes)).unwrap();
    assert_eq!(ok.len(), 100);
    assert_eq!(ok[99].claims().sequence, 99);
    // A signature byte flipped in receipt 70 (in the second batch of 64).
    let n = bytes[70].len();
    bytes[70][n - 5] ^= 1;
    match trustbridge_protocol::receipt::verify_batch(parse(&bytes)) {
        Err((70, ReceiptError::BadSignature(_))) => {}
        other => panic!("{:?}", other.map(|v| v.len())),
    }
}
