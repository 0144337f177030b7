//! The TEE platforms TrustBridge attests, by the names every message and tool uses.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A TEE platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Platform {
    /// AWS Nitro Enclaves.
    #[serde(rename = "nitro")]
    Nitro,
    /// AMD SEV-SNP (bare).
    #[serde(rename = "snp")]
    Snp,
    /// Azure confidential VM: SEV-SNP reached through a vTPM.
    #[serde(rename = "azure-snp-vtpm")]
    AzureSnpVtpm,
}

impl Platform {
    /// Every platform.
    pub const ALL: [Self; 3] = [Self::Nitro, Self::Snp, Self::AzureSnpVtpm];

    /// The name used on the command line, in JSON and in key-release messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Nitro => "nitro",
            Self::Snp => "snp",
            Self::AzureSnpVtpm => "azure-snp-vtpm",
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A platform name that is none of [`Platform::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown platform {0:?}: nitro, snp or azure-snp-vtpm")]
pub struct UnknownPlatform(pub String);

impl FromStr for Platform {
    type Err = UnknownPlatform;
    /// `nitro`, `snp` (or `sev-snp`), `azure-snp-vtpm`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "nitro" => Ok(Self::Nitro),
            "snp" | "sev-snp" => Ok(Self::Snp),
            "azure-snp-vtpm" => Ok(Self::AzureSnpVtpm),
            other => Err(UnknownPlatform(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in Platform::ALL {
            assert_eq!(p.name().parse::<Platform>(), Ok(p));
            assert_eq!(
                serde_json::to_string(&p).unwrap(),
                format!("\"{}\"", p.name())
            );
        }
        assert!("sgx".parse::<Platform>().is_err());
    }
}
