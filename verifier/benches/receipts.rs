//! Receipt verification throughput.
//!
//! `cargo bench -p trustbridge-verifier --bench receipts`
//!
//! In the same process, over the same receipts (a chain signed by one sentinel key, every
//! claim present), it runs:
//! - baseline: a bare Ed25519 `verify_strict` of each receipt's signed message: the floor
//!   any receipt verifier pays;
//! - single:   parse (size cap, envelope, deterministic CBOR, closed claims set) and verify,
//!   one receipt at a time, under the key prepared once (`ReceiptVerifyingKey`, as a
//!   client checking every answer's receipt holds it);
//! - batch:    parse each, then verify them together (Ed25519 batch verification,
//!   256 a batch), on one core and, as `tb-verify log` does, on every core.
//!
//! Rounds are interleaved and the median of each is reported, ending with the line
//! `receipts: verify_per_s=N batch_verify_per_s=M`.
//! Environment: TB_BENCH_RECEIPTS (default 4096), TB_BENCH_ROUNDS (default 5).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // bench binary

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use ed25519_dalek::SigningKey;
use trustbridge_protocol::receipt::{
    Claims, GENESIS, Receipt, ReceiptVerifyingKey, UnverifiedReceipt, Usage, receipt_key_id,
    verify_batch,
};
use trustbridge_verifier::receipt::verify_all;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn chain(key: &SigningKey, n: usize) -> Vec<Vec<u8>> {
    let mut previous = GENESIS;
    (0..n)
        .map(|i| {
            let claims = Claims {
                issuer: receipt_key_id(&key.verifying_key().to_bytes()),
                issued_at: 1_790_000_000 + i as u64,
                id: [(i % 251) as u8; 16],
                nonce: Some(vec![7; 32]),
                sequence: i as u64,
                previous,
                model: [2; 32],
                request_digest: [3; 32],
                response_digest: [4; 32],
                evidence_digest: [5; 32],
                measurements: (0..3)
                    .map(|p| (format!("pcr{p}"), vec![p as u8; 48]))
                    .collect::<BTreeMap<_, _>>(),
                policy_digest: [6; 32],
                status: 200,
                usage: Some(Usage {
                    prompt_tokens: 20,
                    completion_tokens: 100,
                }),
            };
            let r = Receipt::sign(claims, key).unwrap();
            previous = r.digest();
            r.as_bytes().to_vec()
        })
        .collect()
}

fn main() {
    let n = env_usize("TB_BENCH_RECEIPTS", 4096).max(1);
    let rounds = env_usize("TB_BENCH_ROUNDS", 5).max(1);
    let key = SigningKey::from_bytes(&[42; 32]);
    let vk = key.verifying_key();
    // A verifier of many receipts prepares the key once (decoded, checked, its id).
    let prepared = ReceiptVerifyingKey::new(&vk);
    let receipts = chain(&key, n);
    println!(
        "receipts bench: {n} receipts of {} bytes, {rounds} rounds",
        receipts[0].len()
    );
    let parsed: Vec<UnverifiedReceipt> = receipts
        .iter()
        .map(|b| UnverifiedReceipt::parse(b).unwrap())
        .collect();

    let (mut base, mut single, mut batch) = (Vec::new(), Vec::new(), Vec::new());
    let mut batch_all = Vec::new();
    let mut awslc = Vec::new();
    let pk =
        aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ED25519, vk.to_bytes());
    for _ in 0..rounds {
        let t = Instant::now();
        for p in &parsed {
            pk.verify(black_box(p.signed_message()), &p.signature().to_bytes())
                .unwrap();
        }
        awslc.push(n as f64 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        for p in &parsed {
            vk.verify_strict(black_box(p.signed_message()), p.signature())
                .unwrap();
        }
        base.push(n as f64 / t.elapsed().as_secs_f64());

        let t = Instant::now();
        for b in &receipts {
            black_box(
                UnverifiedReceipt::parse(black_box(b))
                    .unwrap()
                    .verify_with(&prepared)
                    .unwrap(),
            );
        }
        single.push(n as f64 / t.elapsed().as_secs_f64());

        let t = Instant::now();
        let all = receipts
            .iter()
            .map(|b| (UnverifiedReceipt::parse(black_box(b)).unwrap(), vk))
            .collect();
        black_box(verify_batch(all).unwrap());
        batch.push(n as f64 / t.elapsed().as_secs_f64());

        let t = Instant::now();
        let all = receipts
            .iter()
            .map(|b| (UnverifiedReceipt::parse(black_box(b)).unwrap(), vk))
            .collect();
        black_box(verify_all(all).unwrap());
        batch_all.push(n as f64 / t.elapsed().as_secs_f64());
    }
    let (base, single, batch) = (median(&mut base), median(&mut single), median(&mut batch));
    let batch_all = median(&mut batch_all);
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    println!(
        "receipts baseline: ed25519_verify_strict_per_s={base:.0} aws_lc_ed25519_verify_per_s={:.0}",
        median(&mut awslc)
    );
    println!(
        "receipts per core: verify_per_s={single:.0} batch_verify_per_s={batch:.0}; on {cores} cores: batch_verify_per_s={batch_all:.0}"
    );
    println!("receipts: verify_per_s={single:.0} batch_verify_per_s={batch_all:.0}");
}
