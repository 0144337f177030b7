//! Fuzzes the SEV-SNP report parser and the verification path without certificates.
#![no_main]

use std::time::UNIX_EPOCH;

use libfuzzer_sys::fuzz_target;
use trustbridge_verifier::{TrustRoots, snp_report::SnpReport, verify_snp};

fuzz_target!(|data: &[u8]| {
    if let Ok(report) = SnpReport::parse(data) {
        let _ = report.debug();
        let _ = report.reported_tcb.components(false);
        let _ = report.reported_tcb.components(true);
    }
    let _ = verify_snp(data, &[], &TrustRoots::production(), UNIX_EPOCH);
});
