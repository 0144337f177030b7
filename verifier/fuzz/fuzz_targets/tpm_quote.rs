//! Fuzzes the TPM 2.0 quote (TPMS_ATTEST) parser and the PCR digest check.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustbridge_verifier::tpm_quote::TpmQuote;

fuzz_target!(|data: &[u8]| {
    if let Ok(quote) = TpmQuote::parse(data) {
        let _ = quote.covered_pcrs(&[[0u8; 32]; 24]);
    }
});
