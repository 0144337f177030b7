//! AMD's public SEV-SNP certificate chains, built in: for Milan, Genoa and Turin, the ARK
//! (root), the ASK (issuer of VCEKs) and the ASVK (issuer of VLEKs), as AMD's Key
//! Distribution Service publishes them (`src/amd/README.md` gives their provenance and
//! fingerprints). They are valid until 2045 to 2048.
//!
//! The ARKs are pinned by fingerprint in [`crate::TrustRoots::production`]; the ASKs and
//! ASVKs here only let a chain be completed from a VCEK or VLEK alone (as go-sev-guest,
//! virtee/sev and trustee do), so `tb-verify attestation report.bin --vcek vcek.der`
//! needs no further certificate. They are trusted only because the pinned ARK signed them.

use std::sync::OnceLock;

use crate::x509::ParsedCertificate;

/// The PEM bundles: ASK, ARK, ASVK of each product.
const BUNDLES: [(&str, &[u8]); 3] = [
    ("Milan", include_bytes!("amd/milan.pem")),
    ("Genoa", include_bytes!("amd/genoa.pem")),
    ("Turin", include_bytes!("amd/turin.pem")),
];

/// Every built-in AMD certificate (the ASK, ARK and ASVK of each product).
pub fn certificates() -> &'static [ParsedCertificate] {
    static CERTS: OnceLock<Vec<ParsedCertificate>> = OnceLock::new();
    CERTS.get_or_init(|| {
        BUNDLES
            .iter()
            .flat_map(|(product, pem)| {
                // Invariant: the bundles are fixed bytes that a unit test parses; should
                // one not parse, its certificates are simply not built in.
                ParsedCertificate::from_pem_chain(pem, product).unwrap_or_default()
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AMD_ARK_GENOA_SHA256, AMD_ARK_MILAN_SHA256, AMD_ARK_TURIN_SHA256};

    #[test]
    fn every_product_has_its_ask_ark_and_asvk_under_the_pinned_ark() {
        let certs = certificates();
        assert_eq!(certs.len(), 9);
        for (product, ark_sha256) in [
            ("Milan", AMD_ARK_MILAN_SHA256),
            ("Genoa", AMD_ARK_GENOA_SHA256),
            ("Turin", AMD_ARK_TURIN_SHA256),
        ] {
            let find = |cn: String| {
                certs
                    .iter()
                    .find(|c| c.subject().contains(&format!("CN={cn}")))
                    .unwrap_or_else(|| panic!("no {cn}"))
            };
            let ark = find(format!("ARK-{product}"));
            assert_eq!(hex::encode(ark.sha256()), ark_sha256);
            let chain = |leaf: &ParsedCertificate| vec![leaf.clone(), ark.clone()];
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_219_200);
            crate::x509::verify_chain(&chain(find(format!("SEV-{product}"))), at).unwrap();
            crate::x509::verify_chain(&chain(find(format!("SEV-VLEK-{product}"))), at).unwrap();
        }
    }
}
