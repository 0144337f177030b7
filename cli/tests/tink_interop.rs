//! Interop with Google's Tink, the reference implementation of AES256_GCM_HKDF streaming:
//! streams sealed by Python `tink` open with `trustbridge unseal --raw`, and streams sealed
//! by `trustbridge seal --raw` open with `tink`.
//!
//! Needs `python3` with the `tink` package. Without it the tests print a loud skip, unless
//! `TB_REQUIRE_TINK=1` (CI sets it), in which case they fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::{fails, ok, pattern, s, tb};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tink_stream.py");

fn tink_available(test: &str) -> bool {
    let probe = Command::new("python3")
        .args(["-c", "import tink, tink.streaming_aead"])
        .output();
    if matches!(&probe, Ok(o) if o.status.success()) {
        return true;
    }
    if trustbridge_testkit::env_flag("TB_REQUIRE_TINK") {
        panic!("{test}: python3 with the tink package is required (TB_REQUIRE_TINK=1): {probe:?}");
    }
    eprintln!(
        "\n!!!!!!!! SKIPPED {test}: python3 -c 'import tink' failed; pip install tink !!!!!!!!\n"
    );
    false
}

fn tink(
    op: &str,
    key: &str,
    ad: &str,
    seg: u32,
    input: &Path,
    output: &Path,
) -> std::process::Output {
    Command::new("python3")
        .args([
            SCRIPT,
            op,
            "--key-hex",
            key,
            "--ad-hex",
            ad,
            "--segment-size",
            &seg.to_string(),
            "--in",
            s(input),
            "--out",
            s(output),
        ])
        .output()
        .unwrap()
}

/// Segment sizes and plaintext lengths: empty, one segment, exact boundaries, many segments.
fn cases(seg: u32) -> Vec<usize> {
    let first = seg as usize - 40 - 16;
    let rest = seg as usize - 16;
    vec![
        0,
        1,
        first,
        first + 1,
        first + 3 * rest,
        first + 5 * rest + 777,
    ]
}

const KEY: &str = "c0ffee00112233445566778899aabbccddeeff00112233445566778899aabbcc";
const AD: &str = "7472757374627269646765"; // "trustbridge"

#[test]
fn tink_sealed_streams_open_with_trustbridge() {
    if !tink_available("tink_sealed_streams_open_with_trustbridge") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for seg in [4096u32, 1 << 20] {
        for len in cases(seg) {
            let pt = pattern(len, seg as u8);
            let (plain, sealed, opened) = (
                dir.path().join("p"),
                dir.path().join("c"),
                dir.path().join("o"),
            );
            fs::write(&plain, &pt).unwrap();
            let out = tink("encrypt", KEY, AD, seg, &plain, &sealed);
            assert!(
                out.status.success(),
                "tink encrypt: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            ok(tb([
                "unseal",
                "--raw",
                "--key-hex",
                KEY,
                "--ad-hex",
                AD,
                "--segment-size",
                &seg.to_string(),
                "--in",
                s(&sealed),
                "--out",
                s(&opened),
                "--force",
            ]));
            assert_eq!(fs::read(&opened).unwrap(), pt, "segment {seg} length {len}");
            // Tampering twins: wrong associated data and a flipped byte fail in trustbridge.
            let err = fails(tb([
                "unseal",
                "--raw",
                "--key-hex",
                KEY,
                "--ad-hex",
                "00",
                "--segment-size",
                &seg.to_string(),
                "--in",
                s(&sealed),
                "--out",
                s(&dir.path().join("never")),
            ]));
            assert!(err.contains("failed authentication"), "{err}");
            assert!(!dir.path().join("never").exists());
        }
    }
}

#[test]
fn trustbridge_sealed_streams_open_with_tink() {
    if !tink_available("trustbridge_sealed_streams_open_with_tink") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for seg in [4096u32, 1 << 20] {
        for len in cases(seg) {
            let pt = pattern(len, !(seg as u8));
            let (plain, sealed, opened) = (
                dir.path().join("p"),
                dir.path().join("c"),
                dir.path().join("o"),
            );
            fs::write(&plain, &pt).unwrap();
            ok(tb([
                "seal",
                "--raw",
                "--key-hex",
                KEY,
                "--ad-hex",
                AD,
                "--segment-size",
                &seg.to_string(),
                "--in",
                s(&plain),
                "--out",
                s(&sealed),
                "--force",
            ]));
            let out = tink("decrypt", KEY, AD, seg, &sealed, &opened);
            assert!(
                out.status.success(),
                "tink decrypt (segment {seg} length {len}): {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(fs::read(&opened).unwrap(), pt, "segment {seg} length {len}");
            // Tink must reject our stream under other associated data: proves it checks.
            let out = tink("decrypt", KEY, "00", seg, &sealed, &opened);
            assert_eq!(
                out.status.code(),
                Some(1),
                "tink accepted wrong associated data"
            );
        }
    }
}
