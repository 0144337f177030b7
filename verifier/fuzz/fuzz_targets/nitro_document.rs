//! Fuzzes the Nitro attestation document parser and the full verification path.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use trustbridge_verifier::{TrustRoots, nitro::parse_nitro, verify_nitro};

fuzz_target!(|data: &[u8]| {
    let _ = parse_nitro(data);
    let at = UNIX_EPOCH + Duration::from_secs(1_616_018_516);
    let _ = verify_nitro(data, &TrustRoots::production(), at);
});
