//! Fuzzes the Azure HCL report parser (header, embedded SNP report, variable data JSON).
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustbridge_verifier::hcl_report::HclReport;

fuzz_target!(|data: &[u8]| {
    if let Ok(hcl) = HclReport::parse(data) {
        let _ = hcl.var_data_digest();
    }
});
