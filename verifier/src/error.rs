//! Why evidence failed verification.

/// Evidence failed verification. Each variant names one check; [`VerifyError::check`]
/// gives the short name used in `tb-verify` output.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyError {
    /// The evidence is not well-formed for its platform.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// What was being parsed.
        what: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// An algorithm the platform does not use, or this verifier does not accept.
    #[error("unsupported algorithm: {0}")]
    UnsupportedAlgorithm(String),
    /// The evidence signature (COSE, SNP report, TPM quote) does not verify.
    #[error("{what} signature does not verify")]
    Signature {
        /// Which signature.
        what: &'static str,
    },
    /// A certificate is not valid yet at `now`.
    #[error("certificate {subject} is not valid before {not_before} (now {now})")]
    CertificateNotYetValid {
        /// Certificate subject.
        subject: String,
        /// Start of validity, Unix seconds.
        not_before: u64,
        /// The verification time, Unix seconds.
        now: u64,
    },
    /// A certificate has expired at `now`.
    #[error("certificate {subject} expired at {not_after} (now {now})")]
    CertificateExpired {
        /// Certificate subject.
        subject: String,
        /// End of validity, Unix seconds.
        not_after: u64,
        /// The verification time, Unix seconds.
        now: u64,
    },
    /// A certificate's issuer is not the next certificate's subject.
    #[error("certificate {subject} was not issued by {issuer}")]
    IssuerMismatch {
        /// Certificate subject.
        subject: String,
        /// The certificate presented as its issuer.
        issuer: String,
    },
    /// A certificate's issuer is not among the certificates supplied.
    #[error(
        "the issuer of {subject} ({issuer}) is not among the supplied certificates: pass the chain (e.g. AMD's ASK and ARK with --trust-root)"
    )]
    IssuerNotFound {
        /// Certificate subject.
        subject: String,
        /// The missing issuer's name.
        issuer: String,
    },
    /// A certificate's signature does not verify with its issuer's key.
    #[error("certificate {subject}: signature by its issuer does not verify")]
    CertificateSignature {
        /// Certificate subject.
        subject: String,
    },
    /// An issuing certificate is not a CA, exceeds its path length, or may not sign certificates.
    #[error("certificate {subject} may not issue certificates here: {reason}")]
    NotAnIssuer {
        /// Certificate subject.
        subject: String,
        /// basicConstraints, pathLen or keyUsage.
        reason: &'static str,
    },
    /// The leaf certificate may not sign evidence.
    #[error("certificate {subject} is not allowed to sign evidence: {reason}")]
    LeafUsage {
        /// Certificate subject.
        subject: String,
        /// What is missing.
        reason: &'static str,
    },
    /// The chain ends in a root that is not trusted.
    #[error("root certificate (SHA-256 {sha256}) is not a trusted root")]
    UntrustedRoot {
        /// Fingerprint of the presented root.
        sha256: String,
    },
    /// The SNP report's chip id is not the VCEK's hwID.
    #[error("VCEK hwID does not match the report's chip id")]
    ChipIdMismatch,
    /// A TCB component of the report differs from the VCEK's.
    #[error("reported TCB {component} = {reported} does not match the VCEK's {certified}")]
    TcbMismatch {
        /// bootloader, tee, snp, microcode or fmc.
        component: &'static str,
        /// Value in the report.
        reported: u8,
        /// Value in the VCEK.
        certified: u8,
    },
    /// A value that must be bound by the platform is not (e.g. HCL variable data digest).
    #[error("binding check failed: {0}")]
    Binding(String),
    /// The SNP report is not signed at all (`MASK_CHIP_KEY`, or no signing key).
    #[error("SNP report is not signed: {0}")]
    UnsignedReport(&'static str),
    /// The report's chip id is masked, so its VCEK cannot be looked up by chip id.
    #[error(
        "the report's CHIP_ID is zero (the host set MASK_CHIP_ID), so its VCEK cannot be looked up by chip id: pass the VCEK with --vcek (the host's certificate table has it)"
    )]
    ChipIdMasked,
    /// A certificate of the chain is on its issuer's revocation list.
    #[error("certificate {subject} (serial {serial}) is revoked by {issuer}'s revocation list")]
    Revoked {
        /// The revoked certificate.
        subject: String,
        /// Its serial number (hex).
        serial: String,
        /// The list's issuer.
        issuer: String,
    },
    /// A revocation list for an issuer of the chain does not verify under its key.
    #[error(
        "the revocation list of {issuer} is not signed by {issuer}: it cannot be used, and without it the chain cannot be checked"
    )]
    RevocationListInvalid {
        /// The issuer the list names.
        issuer: String,
    },
    /// No VCEK/VLEK given for an SNP report.
    #[error(
        "no endorsement key (VCEK or VLEK) for the report: pass --vcek or include it in the evidence"
    )]
    MissingEndorsementKey,
}

impl VerifyError {
    /// The short name of the check that failed.
    pub fn check(&self) -> &'static str {
        match self {
            Self::Malformed { .. } | Self::UnsupportedAlgorithm(_) => "format",
            Self::Signature { what: "TPM quote" } => "quote signature",
            Self::Signature { .. } | Self::UnsignedReport(_) => "evidence signature",
            Self::CertificateNotYetValid { .. } | Self::CertificateExpired { .. } => {
                "certificate validity"
            }
            Self::IssuerMismatch { .. }
            | Self::IssuerNotFound { .. }
            | Self::CertificateSignature { .. }
            | Self::NotAnIssuer { .. } => "certificate chain",
            Self::LeafUsage { .. } => "signing certificate",
            Self::UntrustedRoot { .. } => "trusted root",
            Self::ChipIdMismatch
            | Self::TcbMismatch { .. }
            | Self::MissingEndorsementKey
            | Self::ChipIdMasked => "endorsement key",
            Self::Binding(_) => "platform binding",
            Self::Revoked { .. } | Self::RevocationListInvalid { .. } => "revocation",
        }
    }

    pub(crate) fn malformed(what: &'static str, detail: impl Into<String>) -> Self {
        Self::Malformed {
            what,
            detail: detail.into(),
        }
    }
}
