//! A local cache of AMD endorsement keys, filled by `trustbridge kds fetch` and read here
//! without any network access.
//!
//! ```text
//! <cache>/<Product>/vcek_<hwid hex>_<bl>_<tee>_<snp>_<ucode>[_<fmc>].der
//! <cache>/<Product>/cert_chain.pem          (ASK then ARK, as AMD's KDS serves it)
//! <cache>/<Product>/crl.der                 (the ARK's list of revoked ASKs: /vcek/v1/<Product>/crl)
//! <cache>/<Product>/vlek_crl.der            (the ARK's list of revoked ASVKs: /vlek/v1/<Product>/crl)
//! ```
//!
//! Revocation lists found in the cache are applied to every chain ([`revocation_lists`]);
//! a list is believed only once it verifies under its issuer's key.
//!
//! The VCEK a report needs is fully determined by the product, the chip id and the reported
//! TCB, so the file name is the cache key.

use std::path::{Path, PathBuf};

use crate::VerifyError;
use crate::crl::RevocationList;
use crate::snp_report::{SnpReport, TcbComponents};
use crate::x509::ParsedCertificate;

/// The AMD product lines with KDS endpoints.
pub const PRODUCTS: [&str; 3] = ["Milan", "Genoa", "Turin"];

/// The product a report names through its CPUID fields (report version 3 and later).
pub fn product_from_report(report: &SnpReport) -> Option<&'static str> {
    match (report.cpuid_family, report.cpuid_model) {
        (0x19, 0x00..=0x0F) => Some("Milan"),
        (0x19, 0x10..=0x1F | 0xA0..=0xAF) => Some("Genoa"),
        (0x1A, _) => Some("Turin"),
        _ => None,
    }
}

/// The hwID KDS expects for `product`: 8 bytes of the chip id on Turin, 64 elsewhere.
pub fn hw_id(product: &str, report: &SnpReport) -> Vec<u8> {
    if product == "Turin" {
        report.chip_id[..8].to_vec()
    } else {
        report.chip_id.to_vec()
    }
}

/// The reported TCB decoded for `product`.
pub fn reported_tcb(product: &str, report: &SnpReport) -> TcbComponents {
    report.reported_tcb.components(product == "Turin")
}

/// The cache file of the VCEK for `report` on `product`.
pub fn vcek_path(cache: &Path, product: &str, report: &SnpReport) -> PathBuf {
    let t = reported_tcb(product, report);
    let fmc = t.fmc.map(|f| format!("_{f}")).unwrap_or_default();
    cache.join(product).join(format!(
        "vcek_{}_{}_{}_{}_{}{fmc}.der",
        hex::encode(hw_id(product, report)),
        t.bootloader,
        t.tee,
        t.snp,
        t.microcode
    ))
}

/// The cache file of the ASK/ARK chain of `product`.
pub fn chain_path(cache: &Path, product: &str) -> PathBuf {
    cache.join(product).join("cert_chain.pem")
}

/// The cache file of the ARK's revocation list of `product`'s ASKs.
pub fn crl_path(cache: &Path, product: &str) -> PathBuf {
    cache.join(product).join("crl.der")
}

/// The cache file of the ARK's revocation list of `product`'s ASVKs (VLEK issuers).
pub fn vlek_crl_path(cache: &Path, product: &str) -> PathBuf {
    cache.join(product).join("vlek_crl.der")
}

/// Every revocation list the cache holds, for every product.
pub fn revocation_lists(cache: &Path) -> Result<Vec<RevocationList>, VerifyError> {
    let mut lists = Vec::new();
    for product in PRODUCTS {
        for path in [crl_path(cache, product), vlek_crl_path(cache, product)] {
            // Read at most one byte more than a list may have: the parser refuses it.
            let read = std::fs::File::open(&path).and_then(|f| {
                let mut der = Vec::new();
                std::io::Read::read_to_end(
                    &mut std::io::Read::take(f, crate::crl::MAX_CRL_LEN as u64 + 1),
                    &mut der,
                )
                .map(|_| der)
            });
            match read {
                Ok(der) => lists.push(RevocationList::from_der(&der)?),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(VerifyError::malformed(
                        "KDS cache",
                        format!("{}: {e}", path.display()),
                    ));
                }
            }
        }
    }
    Ok(lists)
}

/// The VCEK and the AMD chain for `report` from `cache`, trying the report's product or,
/// for version 2 reports that do not name it, every product. `Ok(None)` when not cached.
pub fn load(
    cache: &Path,
    report: &SnpReport,
) -> Result<Option<Vec<ParsedCertificate>>, VerifyError> {
    if report.chip_id_masked() && report.signing_key == crate::snp_report::SigningKey::Vcek {
        return Err(VerifyError::ChipIdMasked);
    }
    let products: Vec<&str> = match product_from_report(report) {
        Some(p) => vec![p],
        None => PRODUCTS.to_vec(),
    };
    for product in products {
        let vcek = vcek_path(cache, product, report);
        let Ok(der) = std::fs::read(&vcek) else {
            continue;
        };
        let mut certs = vec![ParsedCertificate::from_der(&der, "cached VCEK")?];
        if let Ok(pem) = std::fs::read(chain_path(cache, product)) {
            certs.extend(ParsedCertificate::from_pem_chain(&pem, "cached AMD chain")?);
        }
        return Ok(Some(certs));
    }
    Ok(None)
}
