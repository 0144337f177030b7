//! Every modification of a sealed stream is rejected with a typed error, by both
//! decryptors, and no plaintext comes out of a failed parallel decryption.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use trustbridge_protocol::sealed::{
    DataKey, HEADER_LEN, SegmentSize, StreamError, StreamLayout, decrypt_in_memory, decrypt_stream,
    encrypt_to_vec,
};

const AD: &[u8] = b"asset/file";

fn seg() -> SegmentSize {
    SegmentSize::new(64).unwrap()
}

/// 200 bytes at segment size 64: segments of 8, 48, 48, 48, 48 bytes of plaintext.
fn sealed() -> (Vec<u8>, Vec<u8>) {
    let pt: Vec<u8> = (0..200u32).map(|i| i as u8).collect();
    (encrypt_to_vec(&key(), AD, seg(), &pt).unwrap(), pt)
}

fn key() -> DataKey {
    DataKey::from_bytes([42; 32])
}

/// Decrypts with both APIs and checks they agree on failure; returns the streaming error.
fn open_err(ct: &[u8], key: &DataKey, ad: &[u8], seg: SegmentSize) -> StreamError {
    let mut sink = Vec::new();
    let streamed =
        decrypt_stream(key, ad, seg, ct, &mut sink).expect_err("streaming decrypt must fail");
    for threads in [1, 3] {
        assert!(
            decrypt_in_memory(key, ad, seg, ct, threads).is_err(),
            "parallel({threads}) must fail too"
        );
    }
    streamed
}

#[test]
fn every_single_bit_flip_is_rejected() {
    let (ct, _) = sealed();
    for pos in 0..ct.len() {
        for bit in [0x01u8, 0x80] {
            let mut bad = ct.clone();
            bad[pos] ^= bit;
            let err = open_err(&bad, &key(), AD, seg());
            let expected = match pos {
                0 => matches!(err, StreamError::HeaderLength { .. }),
                // A changed salt or nonce prefix breaks segment 0 first.
                1..HEADER_LEN => matches!(err, StreamError::SegmentAuthentication { segment: 0 }),
                _ => {
                    let layout = StreamLayout::for_ciphertext(seg(), ct.len() as u64).unwrap();
                    let s = (0..layout.segments())
                        .find(|&i| layout.segment(i).ciphertext.contains(&(pos as u64)))
                        .unwrap();
                    matches!(err, StreamError::SegmentAuthentication { segment } if segment == s)
                }
            };
            assert!(expected, "flip at {pos}: {err:?}");
        }
    }
}

#[test]
fn every_truncation_is_rejected_and_boundaries_are_named() {
    let (ct, _) = sealed();
    let layout = StreamLayout::for_ciphertext(seg(), ct.len() as u64).unwrap();
    let boundaries: Vec<u64> = (0..layout.segments() - 1)
        .map(|i| layout.segment(i).ciphertext.end)
        .collect();
    for len in 0..ct.len() {
        let err = open_err(&ct[..len], &key(), AD, seg());
        let ok = if len < HEADER_LEN {
            matches!(err, StreamError::HeaderTruncated { .. })
        } else if let Some(k) = boundaries.iter().position(|&b| b == len as u64) {
            // Clean cut after segment k: the dropped tail is detected as truncation.
            matches!(err, StreamError::Truncated { segments } if segments == k as u64 + 1)
        } else {
            matches!(
                err,
                StreamError::SegmentAuthentication { .. } | StreamError::SegmentTruncated { .. }
            )
        };
        assert!(ok, "truncated to {len}: {err:?}");
    }
}

#[test]
fn dropped_last_segment_is_truncation() {
    let (ct, _) = sealed();
    let layout = StreamLayout::for_ciphertext(seg(), ct.len() as u64).unwrap();
    let last = layout.segment(layout.segments() - 1);
    let err = open_err(&ct[..last.ciphertext.start as usize], &key(), AD, seg());
    assert!(
        matches!(err, StreamError::Truncated { segments } if segments == layout.segments() - 1),
        "{err:?}"
    );
}

#[test]
fn swapped_segments_are_rejected_at_the_first_moved_one() {
    let (ct, _) = sealed();
    let layout = StreamLayout::for_ciphertext(seg(), ct.len() as u64).unwrap();
    let (a, b) = (layout.segment(1).ciphertext, layout.segment(2).ciphertext);
    let mut bad = ct[..a.start as usize].to_vec();
    bad.extend_from_slice(&ct[b.start as usize..b.end as usize]);
    bad.extend_from_slice(&ct[a.start as usize..a.end as usize]);
    bad.extend_from_slice(&ct[b.end as usize..]);
    assert_eq!(bad.len(), ct.len());
    let err = open_err(&bad, &key(), AD, seg());
    assert!(
        matches!(err, StreamError::SegmentAuthentication { segment: 1 }),
        "{err:?}"
    );
}

#[test]
fn appended_data_is_rejected() {
    let (ct, _) = sealed();
    // A whole extra segment copied from the stream itself.
    let layout = StreamLayout::for_ciphertext(seg(), ct.len() as u64).unwrap();
    let mut bad = ct.clone();
    let s1 = layout.segment(1).ciphertext;
    bad.extend_from_slice(&ct[s1.start as usize..s1.end as usize]);
    let err = open_err(&bad, &key(), AD, seg());
    assert!(
        matches!(
            err,
            StreamError::TrailingData { .. } | StreamError::SegmentAuthentication { .. }
        ),
        "{err:?}"
    );
    // A single extra byte.
    let mut bad = ct.clone();
    bad.push(0);
    open_err(&bad, &key(), AD, seg());
}

#[test]
fn final_segment_opened_as_non_final_reports_extension() {
    // The final segment is full, so one appended byte makes it look non-final.
    let seg = SegmentSize::new(64).unwrap();
    let pt = vec![9u8; 8 + 48];
    let mut ct = encrypt_to_vec(&key(), AD, seg, &pt).unwrap();
    ct.extend_from_slice(&[0; 20]);
    let err = open_err(&ct, &key(), AD, seg);
    assert!(
        matches!(err, StreamError::TrailingData { segment: 1 }),
        "{err:?}"
    );
}

#[test]
fn wrong_key_associated_data_or_segment_size_are_rejected() {
    let (ct, _) = sealed();
    let err = open_err(&ct, &DataKey::from_bytes([43; 32]), AD, seg());
    assert!(
        matches!(err, StreamError::SegmentAuthentication { segment: 0 }),
        "{err:?}"
    );
    let err = open_err(&ct, &key(), b"asset/other-file", seg());
    assert!(
        matches!(err, StreamError::SegmentAuthentication { segment: 0 }),
        "{err:?}"
    );
    let err = open_err(&ct, &key(), AD, SegmentSize::new(65).unwrap());
    assert!(
        matches!(err, StreamError::SegmentAuthentication { segment: 0 }),
        "{err:?}"
    );
}

#[test]
fn a_failed_parallel_decrypt_returns_no_plaintext() {
    // Large enough that most segments verify before the bad final one is seen.
    let seg = SegmentSize::new(4096).unwrap();
    let pt = vec![0x5a; 1 << 20];
    let mut ct = encrypt_to_vec(&key(), AD, seg, &pt).unwrap();
    let n = ct.len();
    ct[n - 1] ^= 1;
    let err = decrypt_in_memory(&key(), AD, seg, &ct, 4).unwrap_err();
    assert!(
        matches!(err, StreamError::SegmentAuthentication { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("segment"), "{msg}");
}
