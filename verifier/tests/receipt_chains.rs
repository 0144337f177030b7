//! A receipt log read as one hash chain per boot: gaps, forks, broken links and a chain that
//! does not start from the genesis digest are refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use ed25519_dalek::SigningKey;
use trustbridge_protocol::receipt::{Claims, GENESIS, Receipt, receipt_key_id};
use trustbridge_verifier::receipt::{Boot, LogError, check_chains};

fn chain(key: &SigningKey, n: u64) -> Vec<Receipt> {
    let mut previous = GENESIS;
    (0..n)
        .map(|sequence| {
            let r = Receipt::sign(
                Claims {
                    issuer: receipt_key_id(&key.verifying_key().to_bytes()),
                    issued_at: 1_795_000_000 + sequence,
                    id: [sequence as u8; 16],
                    nonce: None,
                    sequence,
                    previous,
                    model: [1; 32],
                    request_digest: [2; 32],
                    response_digest: [3; 32],
                    evidence_digest: [4; 32],
                    measurements: Default::default(),
                    policy_digest: [5; 32],
                    status: 200,
                    usage: None,
                },
                key,
            )
            .unwrap();
            previous = r.digest();
            r
        })
        .collect()
}

#[test]
fn interleaved_boots_are_separate_chains() {
    let (a, b) = (
        SigningKey::from_bytes(&[1; 32]),
        SigningKey::from_bytes(&[2; 32]),
    );
    let (ca, cb) = (chain(&a, 4), chain(&b, 3));
    let log = vec![
        ca[0].clone(),
        ca[1].clone(),
        cb[0].clone(),
        ca[2].clone(),
        cb[1].clone(),
        cb[2].clone(),
        ca[3].clone(),
    ];
    let boots = check_chains(&log).unwrap();
    assert_eq!(
        boots,
        vec![
            Boot {
                issuer: ca[0].claims().issuer,
                first: 0,
                last: 3,
                count: 4
            },
            Boot {
                issuer: cb[0].claims().issuer,
                first: 0,
                last: 2,
                count: 3
            },
        ]
    );
    // A log read from the middle (after=SEQ) starts mid-chain, visibly.
    let boots = check_chains(&ca[2..]).unwrap();
    assert_eq!(boots[0].first, 2);
}

#[test]
fn gaps_forks_broken_links_and_false_starts_are_refused() {
    let a = SigningKey::from_bytes(&[1; 32]);
    let c = chain(&a, 4);
    let issuer = c[0].claims().issuer;
    // A dropped receipt.
    let log = vec![c[0].clone(), c[1].clone(), c[3].clone()];
    assert_eq!(
        check_chains(&log),
        Err(LogError::Gap {
            index: 2,
            issuer,
            last: 1,
            found: 3
        })
    );
    // A replayed receipt: the same sequence twice.
    let log = vec![c[0].clone(), c[1].clone(), c[1].clone()];
    assert!(matches!(
        check_chains(&log),
        Err(LogError::Fork {
            index: 2,
            sequence: 1,
            ..
        })
    ));
    // Reordered by concurrent answers (an honest relay logs them as they finish): fine.
    let log = vec![c[0].clone(), c[2].clone(), c[1].clone(), c[3].clone()];
    assert_eq!(check_chains(&log).unwrap()[0].count, 4);
    // A fork: another receipt 1 that does not chain to receipt 0.
    // The same claims signed again are another receipt (each signature has a fresh
    // nonce), so a copy of one that names the same previous receipt is a fork too:
    let other = chain(&a, 2);
    assert_ne!(other[1].digest(), c[1].digest());
    let log = vec![c[0].clone(), c[1].clone(), other[1].clone()];
    assert!(matches!(
        check_chains(&log),
        Err(LogError::Fork {
            index: 2,
            sequence: 1,
            ..
        })
    ));
    // A second branch that differs in its claims:
    let mut forked = Vec::new();
    let mut previous = c[0].digest();
    for r in &c[1..3] {
        let mut claims = r.claims().clone();
        claims.previous = previous;
        claims.status = 500;
        let r = Receipt::sign(claims, &a).unwrap();
        previous = r.digest();
        forked.push(r);
    }
    let log = vec![c[0].clone(), c[1].clone(), forked[1].clone()];
    assert!(matches!(
        check_chains(&log),
        Err(LogError::Chain {
            index: 2,
            sequence: 2,
            ..
        })
    ));
    // A sequence 0 that does not start from zeros.
    let mut claims = c[0].claims().clone();
    claims.previous = [9; 32];
    let false_start = Receipt::sign(claims, &a).unwrap();
    assert!(matches!(
        check_chains(&[false_start]),
        Err(LogError::Genesis { index: 0, .. })
    ));
}
