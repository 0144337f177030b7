//! Sealed-weights decryption throughput over 1 GiB in memory.
//!
//! `cargo bench -p trustbridge-protocol --bench sealed`
//!
//! In the same process and on the same data size, segment size and output buffer, it runs:
//! - baseline: a raw AES-256-GCM open loop (aws-lc-rs), one call per segment, no framing;
//! - single:   `decrypt_into` on one thread (HKDF, Tink nonces, last-segment checks);
//! - parallel: `decrypt_into` on one thread per core.
//!
//! Rounds are interleaved (baseline, single, parallel, baseline, ...) and the median of each
//! is reported, ending with the line
//! `sealed: baseline_gbps=B single_gbps=S parallel_gbps=P threads=T`.
//! Environment: TB_BENCH_BYTES (default 1 GiB), TB_BENCH_ROUNDS (default 7),
//! TB_BENCH_SEGMENT (default 4194304).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // bench binary

use std::hint::black_box;
use std::time::Instant;

use trustbridge_protocol::sealed::{
    Aes256Gcm, DEFAULT_SEGMENT_SIZE, DataKey, NONCE_LEN, SegmentSize, TAG_LEN, decrypt_into,
    default_threads, encrypt_to_vec,
};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn fill(buf: &mut [u8]) {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    for chunk in buf.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; any other filter argument is ignored.
    let bytes = env_u64("TB_BENCH_BYTES", 1 << 30) as usize;
    let rounds = env_u64("TB_BENCH_ROUNDS", 7).max(1) as usize;
    let seg =
        SegmentSize::new(env_u64("TB_BENCH_SEGMENT", u64::from(DEFAULT_SEGMENT_SIZE))).unwrap();
    let threads = default_threads();
    println!(
        "sealed bench: {} MiB, segment {} bytes, {rounds} rounds, {threads} threads",
        bytes >> 20,
        seg.get()
    );

    let mut plaintext = vec![0u8; bytes];
    fill(&mut plaintext);
    let key = DataKey::from_bytes([0x11; 32]);
    let ad = b"bench-asset/weights.bin";
    let sealed = encrypt_to_vec(&key, ad, seg, &plaintext).unwrap();

    // Raw AES-256-GCM segments of the same plaintext size as the stream's full segments.
    let chunk = seg.plaintext_segment_len(1) as usize;
    let raw_key = [0x22u8; 32];
    let aead = Aes256Gcm::new(&raw_key);
    let mut raw = Vec::with_capacity(bytes + bytes.div_ceil(chunk) * TAG_LEN);
    for (i, pt) in plaintext.chunks(chunk).enumerate() {
        let start = raw.len();
        raw.extend_from_slice(pt);
        let tag = aead
            .seal_in_place(nonce(i), &[], &mut raw[start..])
            .unwrap();
        raw.extend_from_slice(&tag);
    }

    // One pre-touched output buffer shared by every run, so page faults are not timed.
    let mut out = vec![0xa5u8; bytes];
    let gbps = |secs: f64| bytes as f64 / secs / 1e9;
    let (mut base, mut single, mut par) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let t = Instant::now();
        let mut offset = 0;
        for (i, seg_ct) in raw.chunks(chunk + TAG_LEN).enumerate() {
            let (ct, tag) = seg_ct.split_at(seg_ct.len() - TAG_LEN);
            aead.open_into(nonce(i), &[], ct, tag, &mut out[offset..offset + ct.len()])
                .unwrap();
            offset += ct.len();
        }
        black_box(&out);
        base.push(gbps(t.elapsed().as_secs_f64()));
        if round == 0 {
            assert!(out == plaintext, "baseline output differs");
        }

        let t = Instant::now();
        decrypt_into(&key, ad, seg, black_box(&sealed), &mut out, 1).unwrap();
        single.push(gbps(t.elapsed().as_secs_f64()));
        if round == 0 {
            assert!(out == plaintext, "single-thread output differs");
        }

        let t = Instant::now();
        decrypt_into(&key, ad, seg, black_box(&sealed), &mut out, threads).unwrap();
        par.push(gbps(t.elapsed().as_secs_f64()));
        if round == 0 {
            assert!(out == plaintext, "parallel output differs");
        }
        println!(
            "  round {round}: baseline {:.2} GB/s, single {:.2} GB/s, parallel {:.2} GB/s",
            base[round], single[round], par[round]
        );
    }
    let (b, s, p) = (median(&mut base), median(&mut single), median(&mut par));
    let verdict = |ok: bool| if ok { "meets" } else { "MISSES" };
    println!(
        "single/baseline = {:.3} ({} the 0.8 bar)",
        s / b,
        verdict(s >= 0.8 * b)
    );
    println!(
        "parallel/single = {:.3} ({} the 1.5 bar)",
        p / s,
        verdict(p >= 1.5 * s)
    );
    println!(
        "sealed: baseline_gbps={b:.2} single_gbps={s:.2} parallel_gbps={p:.2} threads={threads}"
    );
}

fn nonce(i: usize) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[4..].copy_from_slice(&(i as u64).to_be_bytes());
    n
}
