//! AMD SEV-SNP verification: report signature, endorsement key (VCEK or VLEK) chained
//! through ASK or ASVK to a pinned ARK, chip id and TCB against the key's extensions.
//!
//! The endorsement key comes with the evidence or from a local cache: the verifier never
//! fetches anything. AMD's KDS is reached by a separate helper in the CLI.

use std::collections::BTreeMap;
use std::time::SystemTime;

use x509_cert::der::Decode;
use x509_cert::der::asn1::{Ia5String, ObjectIdentifier, OctetString};

use crate::evidence::{BindingFields, Checks, Platform, SnpClaims, VerifiedEvidence};
use crate::roots::anchor_chain;
use crate::snp_report::{SIGNED_LEN, SigningKey, SnpReport, TcbComponents};
use crate::x509::{ParsedCertificate, verify_p384_fixed};
use crate::{TrustRoots, VerifyError};

const OID_PRODUCT_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.2");
const OID_BL_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.1");
const OID_TEE_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.2");
const OID_SNP_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.3");
const OID_UCODE_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.8");
const OID_FMC_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.9");
const OID_HW_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.4");

/// The AMD-specific extensions of a VCEK or VLEK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndorsementKeyInfo {
    /// Product name, e.g. `Milan-B0`, `Genoa`, `Turin`.
    pub product: String,
    /// The TCB the key certifies.
    pub tcb: TcbComponents,
    /// The chip's hwID (VCEK only): 64 bytes (Milan, Genoa) or 8 (Turin).
    pub hw_id: Option<Vec<u8>>,
}

impl EndorsementKeyInfo {
    /// Reads the extensions of `cert`.
    pub fn from_certificate(cert: &ParsedCertificate) -> Result<Self, VerifyError> {
        let bad = |d: &str| VerifyError::malformed("endorsement key certificate", d.to_owned());
        let product = cert
            .extension(&OID_PRODUCT_NAME)
            .and_then(|der| Ia5String::from_der(der).ok())
            .map(|s| s.to_string())
            .ok_or_else(|| bad("no productName extension"))?;
        let spl = |oid: &ObjectIdentifier, name: &str| -> Result<Option<u8>, VerifyError> {
            cert.extension(oid)
                .map(|der| {
                    u8::from_der(der).map_err(|_| bad(&format!("{name} is not a small integer")))
                })
                .transpose()
        };
        let required =
            |oid, name: &str| spl(oid, name)?.ok_or_else(|| bad(&format!("no {name} extension")));
        let tcb = TcbComponents {
            fmc: spl(&OID_FMC_SPL, "fmcSPL")?,
            bootloader: required(&OID_BL_SPL, "blSPL")?,
            tee: required(&OID_TEE_SPL, "teeSPL")?,
            snp: required(&OID_SNP_SPL, "snpSPL")?,
            microcode: required(&OID_UCODE_SPL, "ucodeSPL")?,
        };
        let hw_id = cert.extension(&OID_HW_ID).map(parse_hw_id).transpose()?;
        Ok(Self {
            product,
            tcb,
            hw_id,
        })
    }

    /// Whether the product is Turin (different TCB layout).
    pub fn is_turin(&self) -> bool {
        self.product.starts_with("Turin")
    }

    /// Whether this key endorses `r`: the chip id (for a VCEK) and every reported TCB
    /// component are the ones the key certifies. A host whose TCB changed needs a new VCEK.
    /// A `hw_id` longer than the report's chip id never matches (it cannot panic).
    ///
    /// A report whose `CHIP_ID` is all zero (the host set `MASK_CHIP_ID`) has no chip id
    /// to compare, as the SNP ABI specifies; the VCEK's signature over the report is then
    /// what ties it to the chip, since a VCEK is derived from one chip's secret.
    pub fn check_endorses(&self, r: &SnpReport) -> Result<(), VerifyError> {
        if let Some(hw_id) = &self.hw_id
            && r.signing_key == SigningKey::Vcek
            && !r.chip_id_masked()
            && r.chip_id.get(..hw_id.len()) != Some(&hw_id[..])
        {
            return Err(VerifyError::ChipIdMismatch);
        }
        let turin = self.is_turin() || r.cpuid_family == 0x1A;
        let reported = r.reported_tcb.components(turin);
        let pairs = [
            ("bootloader", reported.bootloader, self.tcb.bootloader),
            ("tee", reported.tee, self.tcb.tee),
            ("snp", reported.snp, self.tcb.snp),
            ("microcode", reported.microcode, self.tcb.microcode),
        ];
        for (component, reported, certified) in pairs {
            if reported != certified {
                return Err(VerifyError::TcbMismatch {
                    component,
                    reported,
                    certified,
                });
            }
        }
        if let (Some(reported), Some(certified)) = (reported.fmc, self.tcb.fmc)
            && reported != certified
        {
            return Err(VerifyError::TcbMismatch {
                component: "fmc",
                reported,
                certified,
            });
        }
        Ok(())
    }
}

/// Both hwID encodings: the raw bytes (legacy) or a DER OCTET STRING around them.
pub fn parse_hw_id(der: &[u8]) -> Result<Vec<u8>, VerifyError> {
    if der.len() == 64 || der.len() == 8 {
        return Ok(der.to_vec());
    }
    OctetString::from_der(der)
        .map(|o| o.as_bytes().to_vec())
        .ok()
        .filter(|v| v.len() == 64 || v.len() == 8)
        .ok_or_else(|| {
            VerifyError::malformed(
                "endorsement key certificate",
                "hwID is neither 64 raw bytes nor an OCTET STRING",
            )
        })
}

/// Most certificates accepted beside a report (a VCEK or VLEK, its ASK or ASVK, the ARK,
/// and some slack).
pub const MAX_SUPPLIED_CERTIFICATES: usize = 8;

/// Verifies an SNP report with the certificates that came with it (the VCEK or VLEK
/// first, then any of ASK, ASVK, ARK), against `roots` at `now`. AMD's own ASKs, ASVKs and
/// ARKs are built in ([`crate::amd`]), so the VCEK or VLEK alone suffices.
pub fn verify_snp(
    report: &[u8],
    certs: &[ParsedCertificate],
    roots: &TrustRoots,
    now: SystemTime,
) -> Result<VerifiedEvidence, VerifyError> {
    verify_snp_logged(
        report,
        certs,
        roots,
        now,
        Platform::Snp,
        &mut Checks::default(),
    )
}

/// Like [`verify_snp`], recording each check; `platform` is `Snp` or `AzureSnpVtpm`.
pub fn verify_snp_logged(
    report: &[u8],
    certs: &[ParsedCertificate],
    roots: &TrustRoots,
    now: SystemTime,
    platform: Platform,
    checks: &mut Checks,
) -> Result<VerifiedEvidence, VerifyError> {
    let r = SnpReport::parse(report).map_err(|e| checks.failed(e))?;
    checks.pass(
        "format",
        format!(
            "SNP report version {}, signed by {:?}",
            r.version, r.signing_key
        ),
    );

    if certs.len() > MAX_SUPPLIED_CERTIFICATES {
        return Err(checks.failed(VerifyError::malformed(
            "certificates",
            format!(
                "{} certificates came with the report, at most {MAX_SUPPLIED_CERTIFICATES} are accepted",
                certs.len()
            ),
        )));
    }
    let ek = certs
        .first()
        .ok_or_else(|| checks.failed(VerifyError::MissingEndorsementKey))?;
    let expected_cn = match r.signing_key {
        SigningKey::Vcek => "CN=SEV-VCEK",
        SigningKey::Vlek => "CN=SEV-VLEK",
    };
    // The subject's CN exactly (RFC 4514 rendering: one attribute per comma-separated part).
    if !ek
        .subject()
        .split(',')
        .any(|part| part.trim() == expected_cn)
    {
        return Err(checks.failed(VerifyError::LeafUsage {
            subject: ek.subject().to_owned(),
            reason: "not the endorsement key type the report names",
        }));
    }
    // AMD's own certificates first, then the supplied ones (an ASK AMD issued after this
    // build). Whichever is used, the chain must end at a pinned AMD root: a certificate
    // the host supplies can only add a path, never a trust anchor.
    let mut pool: Vec<&ParsedCertificate> = crate::amd::certificates().iter().collect();
    pool.extend(&certs[1..]);
    let chain = build_chain(ek, &pool).map_err(|e| checks.failed(e))?;
    let trusted = anchor_chain(
        &chain,
        roots,
        platform,
        now,
        "endorsement key -> ASK/ASVK -> ARK signatures (RSASSA-PSS) and CA flags",
        checks,
    )?;
    let simulated = trusted.simulated;
    checks.pass(
        "trusted root",
        format!(
            "{}{}",
            trusted.label,
            if simulated { " (SIMULATION)" } else { "" }
        ),
    );

    verify_p384_fixed(ek, &report[..SIGNED_LEN], &r.signature, "SNP report")
        .map_err(|e| checks.failed(e))?;
    checks.pass(
        "evidence signature",
        format!("ECDSA P-384 by {}", ek.subject()),
    );

    let info = EndorsementKeyInfo::from_certificate(ek).map_err(|e| checks.failed(e))?;
    info.check_endorses(&r).map_err(|e| checks.failed(e))?;
    let chip = match (&info.hw_id, r.chip_id_masked()) {
        (Some(_), false) => " and chip id",
        (Some(_), true) => {
            "; the report's CHIP_ID is zero (the host set MASK_CHIP_ID), so the chip is the one whose VCEK signed it"
        }
        (None, _) => "",
    };
    checks.pass(
        "endorsement key",
        format!("{} certifies the reported TCB{chip}", info.product),
    );

    Ok(evidence(&r, &info, platform, simulated, &chain))
}

/// Follows issuer names from `leaf` through `pool` to a self-signed certificate. Where
/// several certificates of the pool carry the issuer's name (a supplied ASK beside the
/// built-in one, or an ASK AMD has since replaced), the one whose subject key identifier
/// is the certificate's authority key identifier is taken, else the first by name (the
/// built-in one); the chain's signatures are then checked, root first, by the caller.
fn build_chain(
    leaf: &ParsedCertificate,
    pool: &[&ParsedCertificate],
) -> Result<Vec<ParsedCertificate>, VerifyError> {
    let mut chain = vec![leaf.clone()];
    for _ in 0..4 {
        let Some(current) = chain.last() else { break };
        let tbs = &current.certificate().tbs_certificate;
        if tbs.issuer == tbs.subject {
            return Ok(chain);
        }
        let named: Vec<&ParsedCertificate> = pool
            .iter()
            .copied()
            .filter(|c| c.certificate().tbs_certificate.subject == tbs.issuer)
            .collect();
        let issuer = named
            .iter()
            .find(|c| {
                current.authority_key_id().is_some()
                    && current.authority_key_id() == c.subject_key_id()
            })
            .or_else(|| named.first())
            .ok_or_else(|| VerifyError::IssuerNotFound {
                subject: current.subject().to_owned(),
                issuer: tbs.issuer.to_string(),
            })?;
        chain.push((*issuer).clone());
    }
    Err(VerifyError::malformed(
        "certificate chain",
        "longer than 4 certificates or circular",
    ))
}

fn evidence(
    r: &SnpReport,
    info: &EndorsementKeyInfo,
    platform: Platform,
    simulated: bool,
    chain: &[ParsedCertificate],
) -> VerifiedEvidence {
    let mut measurements = BTreeMap::new();
    measurements.insert("measurement".to_owned(), r.measurement.to_vec());
    measurements.insert("host_data".to_owned(), r.host_data.to_vec());
    measurements.insert("report_data".to_owned(), r.report_data.to_vec());
    // A masked chip id (all zero) says nothing about the chip: not a measurement.
    if !r.chip_id_masked() {
        measurements.insert("chip_id".to_owned(), r.chip_id.to_vec());
    }
    measurements.insert("id_key_digest".to_owned(), r.id_key_digest.to_vec());
    let tcb = r
        .reported_tcb
        .components(info.is_turin() || r.cpuid_family == 0x1A);
    let mut facts = BTreeMap::new();
    for (k, v) in [
        ("version", r.version.to_string()),
        ("guest_svn", r.guest_svn.to_string()),
        ("policy", format!("0x{:x}", r.policy)),
        ("vmpl", r.vmpl.to_string()),
        ("signing_key", format!("{:?}", r.signing_key)),
        (
            "chip_id",
            if r.chip_id_masked() {
                "masked by the host (MASK_CHIP_ID)".to_owned()
            } else {
                "reported".to_owned()
            },
        ),
        ("product", info.product.clone()),
        (
            "reported_tcb",
            format!(
                "bl={} tee={} snp={} ucode={}{}",
                tcb.bootloader,
                tcb.tee,
                tcb.snp,
                tcb.microcode,
                tcb.fmc.map(|f| format!(" fmc={f}")).unwrap_or_default()
            ),
        ),
        (
            "firmware",
            format!(
                "{}.{} build {}",
                r.current_version.0, r.current_version.1, r.current_version.2
            ),
        ),
    ] {
        facts.insert(k.to_owned(), v);
    }
    let turin = info.is_turin() || r.cpuid_family == 0x1A;
    let claims = SnpClaims {
        version: r.version,
        guest_svn: r.guest_svn,
        policy: r.policy,
        vmpl: r.vmpl,
        signing_key: r.signing_key,
        product: info.product.clone(),
        reported_tcb: r.reported_tcb.components(turin),
        current_tcb: r.current_tcb.components(turin),
        committed_tcb: r.committed_tcb.components(turin),
        launch_tcb: r.launch_tcb.components(turin),
        platform_info: r.platform_info,
    };
    VerifiedEvidence {
        snp: Some(claims),
        platform,
        simulated,
        debug: r.debug(),
        measurements,
        binding: BindingFields {
            report_data: Some(r.report_data.to_vec()),
            ..BindingFields::default()
        },
        timestamp: None,
        chain: chain.iter().map(ParsedCertificate::info).collect(),
        facts,
    }
}
