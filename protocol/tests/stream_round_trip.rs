//! Round trips of the sealed stream format at every size that matters, through every API.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::io::Write;

use proptest::prelude::*;
use trustbridge_protocol::sealed::{
    DataKey, SegmentSize, StreamEncryptor, StreamLayout, decrypt_in_memory, decrypt_stream,
    encrypt_stream, encrypt_to_vec,
};

/// Tink 1.16.1 (Python) sealed this: key 00..1f, AD "kat-ad", segment size 64.
const KAT_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const KAT_PLAINTEXT: &[u8] =
    b"TrustBridge known-answer test: three segments at 64 bytes, Tink reference.";
const KAT_CIPHERTEXT: &str = "28e38f290dedb4b33e0f15722eb2497eac3a54eec2d52588b2c244ac9fbecf136c4d2e5749e843f1e5d713c408173c772f512a922e63af5b88c10ec7fa2a39789e59d101869abc4d556d3ef64ddeca0825d667bc26871643c92b2f1805ce3e1c832870158030c671eecf9b7681884fdf8de98a5f3bd6930434d2b72961f3c10c794a5f19a76ddc65381bbdda06b0df81d7bb4f63633749178644af6c5ca9ebc62397";

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + i / 251) as u8).collect()
}

fn key() -> DataKey {
    DataKey::from_bytes([7; 32])
}

#[test]
fn decrypts_a_stream_sealed_by_tink() {
    let key = DataKey::from_hex(KAT_KEY).unwrap();
    let ct = hex::decode(KAT_CIPHERTEXT).unwrap();
    let seg = SegmentSize::new(64).unwrap();
    assert_eq!(
        StreamLayout::for_ciphertext(seg, ct.len() as u64)
            .unwrap()
            .segments(),
        3
    );
    let mut out = Vec::new();
    decrypt_stream(&key, b"kat-ad", seg, &ct[..], &mut out).unwrap();
    assert_eq!(out, KAT_PLAINTEXT);
    for threads in 1..=4 {
        assert_eq!(
            &*decrypt_in_memory(&key, b"kat-ad", seg, &ct, threads).unwrap(),
            KAT_PLAINTEXT
        );
    }
}

/// Every size class for several segment sizes, through the streaming and the parallel
/// decryptor, with the layout predicted exactly.
#[test]
fn round_trips_at_boundary_sizes() {
    for size in [57u64, 64, 100, 4096, 65_536] {
        let seg = SegmentSize::new(size).unwrap();
        let first = seg.plaintext_segment_len(0) as usize;
        let rest = seg.plaintext_segment_len(1) as usize;
        let mut sizes = vec![
            0,
            1,
            first - 1,
            first,
            first + 1,
            first + rest - 1,
            first + rest,
            first + rest + 1,
        ];
        sizes.push(first + 7 * rest + 3); // many segments
        sizes.push(first + 9 * rest); // many segments, full final segment
        for len in sizes {
            let pt = pattern(len);
            let ad = format!("ad-{size}-{len}");
            let ct = encrypt_to_vec(&key(), ad.as_bytes(), seg, &pt).unwrap();
            let layout = StreamLayout::for_plaintext(seg, len as u64).unwrap();
            assert_eq!(
                ct.len() as u64,
                layout.ciphertext_len(),
                "size {size} len {len}"
            );

            let mut streamed = Vec::new();
            let n = decrypt_stream(&key(), ad.as_bytes(), seg, &ct[..], &mut streamed).unwrap();
            assert_eq!(
                (n as usize, &streamed),
                (len, &pt),
                "stream: size {size} len {len}"
            );
            for threads in [1, 2, 3, 16] {
                let par = decrypt_in_memory(&key(), ad.as_bytes(), seg, &ct, threads).unwrap();
                assert_eq!(&*par, &pt, "parallel({threads}): size {size} len {len}");
            }
        }
    }
}

#[test]
fn each_stream_has_fresh_salt_and_nonce_prefix() {
    let seg = SegmentSize::new(4096).unwrap();
    let a = encrypt_to_vec(&key(), b"", seg, b"same").unwrap();
    let b = encrypt_to_vec(&key(), b"", seg, b"same").unwrap();
    assert_ne!(a[1..40], b[1..40]);
    assert_ne!(a[40..], b[40..]);
}

#[test]
fn encrypt_stream_from_reader_matches_layout() {
    let seg = SegmentSize::new(1000).unwrap();
    let pt = pattern(300_000);
    let mut ct = Vec::new();
    let n = encrypt_stream(&key(), b"r", seg, &pt[..], &mut ct).unwrap();
    assert_eq!(n, 300_000);
    assert_eq!(
        ct.len() as u64,
        StreamLayout::for_plaintext(seg, n)
            .unwrap()
            .ciphertext_len()
    );
    assert_eq!(&*decrypt_in_memory(&key(), b"r", seg, &ct, 2).unwrap(), &pt);
}

#[test]
fn default_segment_size_round_trip_through_write_trait() {
    let seg = SegmentSize::default();
    let pt = pattern(9 * 1024 * 1024 + 5);
    let mut enc = StreamEncryptor::new(&key(), b"w", seg, Vec::new()).unwrap();
    for chunk in pt.chunks(1_000_003) {
        enc.write_all(chunk).unwrap();
    }
    let ct = enc.finish().unwrap();
    assert_eq!(
        StreamLayout::for_ciphertext(seg, ct.len() as u64)
            .unwrap()
            .segments(),
        3
    );
    assert_eq!(&*decrypt_in_memory(&key(), b"w", seg, &ct, 2).unwrap(), &pt);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// However the plaintext is split into writes, the stream decrypts to it.
    #[test]
    fn chunking_never_changes_the_plaintext(
        len in 0usize..2000,
        size in 57u64..300,
        cuts in proptest::collection::vec(0usize..2000, 0..8),
    ) {
        let seg = SegmentSize::new(size).unwrap();
        let pt = pattern(len);
        let mut enc = StreamEncryptor::new(&key(), b"p", seg, Vec::new()).unwrap();
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(len)).collect();
        cuts.sort_unstable();
        let mut prev = 0;
        for c in cuts.into_iter().chain([len]) {
            enc.write_plaintext(&pt[prev..c]).unwrap();
            prev = c;
        }
        let ct = enc.finish().unwrap();
        prop_assert_eq!(ct.len() as u64, StreamLayout::for_plaintext(seg, len as u64).unwrap().ciphertext_len());
        let mut out = Vec::new();
        decrypt_stream(&key(), b"p", seg, &ct[..], &mut out).unwrap();
        prop_assert_eq!(out, pt);
    }
}

#[test]
fn in_place_decryption_matches_and_rejects_tampering() {
    use trustbridge_protocol::sealed::decrypt_owned;
    for size in [57u64, 100, 4096] {
        let seg = SegmentSize::new(size).unwrap();
        let first = seg.plaintext_segment_len(0) as usize;
        let rest = seg.plaintext_segment_len(1) as usize;
        for len in [
            0,
            1,
            first,
            first + 1,
            first + 5 * rest,
            first + 7 * rest + 3,
        ] {
            let pt = pattern(len);
            let ct = encrypt_to_vec(&key(), b"own", seg, &pt).unwrap();
            for threads in [1, 2, 5] {
                assert_eq!(
                    &*decrypt_owned(&key(), b"own", seg, ct.clone(), threads).unwrap(),
                    &pt,
                    "size {size} len {len} threads {threads}"
                );
            }
            let mut bad = ct.clone();
            let n = bad.len();
            bad[n - 1] ^= 1;
            assert!(decrypt_owned(&key(), b"own", seg, bad, 2).is_err());
            assert!(decrypt_owned(&key(), b"other", seg, ct, 2).is_err());
        }
    }
}
