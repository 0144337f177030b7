//! Trusted roots, pinned by the SHA-256 of their DER encoding.

use std::time::SystemTime;

use crate::crl::{self, RevocationList};
use crate::evidence::Checks;
use crate::x509::{ParsedCertificate, unix_secs, verify_chain};
use crate::{Platform, VerifyError};

/// SHA-256 of the DER of the AWS Nitro Enclaves root G1 (as published by AWS).
pub const AWS_NITRO_ROOT_G1_SHA256: &str =
    "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b";
/// SHA-256 of AMD's ARK-Milan.
pub const AMD_ARK_MILAN_SHA256: &str =
    "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd";
/// SHA-256 of AMD's ARK-Genoa.
pub const AMD_ARK_GENOA_SHA256: &str =
    "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1";
/// SHA-256 of AMD's ARK-Turin.
pub const AMD_ARK_TURIN_SHA256: &str =
    "1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a";

/// One trusted root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedRoot {
    /// The platform whose evidence may chain to it.
    pub platform: Platform,
    /// SHA-256 of the root's DER.
    pub sha256: [u8; 32],
    /// Whether it is a simulation root: evidence chaining to it is marked simulated.
    pub simulated: bool,
    /// A human-readable name.
    pub label: String,
}

/// The set of roots a verification accepts.
///
/// [`TrustRoots::production`] pins the AWS Nitro root G1 and AMD's Milan, Genoa and Turin
/// ARKs. It never contains a simulation root: those are added only explicitly, with
/// [`TrustRoots::add_simulation_root`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustRoots {
    roots: Vec<TrustedRoot>,
    revocations: Vec<RevocationList>,
}

impl TrustRoots {
    /// No roots at all.
    pub fn empty() -> Self {
        Self::default()
    }

    /// The published production roots.
    pub fn production() -> Self {
        let mut r = Self::empty();
        for (platform, hex, label) in [
            (
                Platform::Nitro,
                AWS_NITRO_ROOT_G1_SHA256,
                "AWS Nitro Enclaves root G1",
            ),
            (Platform::Snp, AMD_ARK_MILAN_SHA256, "AMD ARK-Milan"),
            (Platform::Snp, AMD_ARK_GENOA_SHA256, "AMD ARK-Genoa"),
            (Platform::Snp, AMD_ARK_TURIN_SHA256, "AMD ARK-Turin"),
        ] {
            let mut sha256 = [0u8; 32];
            // Invariant: the constants above are 64 hex characters.
            let _ = hex::decode_to_slice(hex, &mut sha256);
            r.roots.push(TrustedRoot {
                platform,
                sha256,
                simulated: false,
                label: label.to_owned(),
            });
        }
        r
    }

    /// Trusts `cert` as a production root for `platform`.
    pub fn add_root(&mut self, platform: Platform, cert: &ParsedCertificate) {
        self.roots.push(TrustedRoot {
            platform,
            sha256: cert.sha256(),
            simulated: false,
            label: cert.subject().to_owned(),
        });
    }

    /// Trusts `cert` as a *simulation* root for `platform`: evidence chaining to it verifies
    /// and is marked simulated, which the default policy rejects.
    pub fn add_simulation_root(&mut self, platform: Platform, cert: &ParsedCertificate) {
        self.roots.push(TrustedRoot {
            platform,
            sha256: cert.sha256(),
            simulated: true,
            label: cert.subject().to_owned(),
        });
    }

    /// Trusts the root whose DER has SHA-256 `sha256` as a *simulation* root for `platform`
    /// (the key broker's `[simulation]` policy section names roots this way).
    pub fn add_simulation_fingerprint(
        &mut self,
        platform: Platform,
        sha256: [u8; 32],
        label: &str,
    ) {
        self.roots.push(TrustedRoot {
            platform,
            sha256,
            simulated: true,
            label: label.to_owned(),
        });
    }

    /// The trusted root matching `cert` for `platform`.
    pub fn find(&self, platform: Platform, cert: &ParsedCertificate) -> Option<&TrustedRoot> {
        let fp = cert.sha256();
        // The SNP roots also anchor Azure's vTPM SNP evidence.
        let accepts = |p: Platform| {
            p == platform || (platform == Platform::AzureSnpVtpm && p == Platform::Snp)
        };
        self.roots
            .iter()
            .find(|r| accepts(r.platform) && r.sha256 == fp)
    }

    /// All roots.
    pub fn roots(&self) -> &[TrustedRoot] {
        &self.roots
    }

    /// Checks chains against `list` too (for example AMD's CRL of a product, from a KDS
    /// cache). The list is believed only if it verifies under the key of the chain's
    /// certificate it names as issuer, when a chain is anchored.
    pub fn add_revocation_list(&mut self, list: RevocationList) {
        self.revocations.push(list);
    }

    /// The revocation lists.
    pub fn revocation_lists(&self) -> &[RevocationList] {
        &self.revocations
    }
}

/// Finds the root of `chain` (leaf first) among `roots` for `platform`, then validates the
/// chain at `now`, recording the "trusted root" (on failure), "certificate validity" and
/// "certificate chain" checks. The root is looked up by fingerprint *before* any signature
/// is checked, so evidence under an unknown root costs no signature work. Every platform's
/// verifier anchors its chain through this one function.
pub(crate) fn anchor_chain<'r>(
    chain: &[ParsedCertificate],
    roots: &'r TrustRoots,
    platform: Platform,
    now: SystemTime,
    chain_detail: &str,
    checks: &mut Checks,
) -> Result<&'r TrustedRoot, VerifyError> {
    let root = chain
        .last()
        .ok_or_else(|| checks.failed(VerifyError::malformed("certificate chain", "empty")))?;
    let trusted = roots.find(platform, root).ok_or_else(|| {
        checks.failed(VerifyError::UntrustedRoot {
            sha256: hex::encode(root.sha256()),
        })
    })?;
    for cert in chain {
        cert.check_validity(now).map_err(|e| checks.failed(e))?;
    }
    checks.pass(
        "certificate validity",
        format!("{} certificates valid at {}", chain.len(), unix_secs(now)),
    );
    verify_chain(chain, now).map_err(|e| checks.failed(e))?;
    checks.pass("certificate chain", chain_detail);
    let (applied, stale) =
        crl::check_chain(chain, &roots.revocations, now).map_err(|e| checks.failed(e))?;
    if applied > 0 {
        checks.pass(
            "revocation",
            format!(
                "not revoked by {applied} revocation list(s){}",
                if stale > 0 {
                    format!("; {stale} past its next update (fetch a fresh one)")
                } else {
                    String::new()
                }
            ),
        );
    }
    Ok(trusted)
}
