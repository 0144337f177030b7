//! Fuzzes the Azure vTPM evidence JSON parser (versions 0 to 2).
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustbridge_verifier::AzureEvidence;

fuzz_target!(|data: &[u8]| {
    let _ = AzureEvidence::from_json(data);
});
