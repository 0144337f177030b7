//! Reference values as policy files write them: accepted measurement sets per platform
//! (Nitro PCRs, SEV-SNP launch measurement and TCB rules, Azure vTPM PCRs), in TOML.
//!
//! The key broker's policy (`trustbridge-kms`) and the client policy of `trustbridge
//! proxy` ([`crate::client_policy`]) both accept evidence through these sets, so one file
//! format and one check serve both sides of the wire. Parsing is strict (unknown fields
//! are errors) and [`MeasurementSets::validate`] refuses sets that would silently accept
//! or deny everything; [`MeasurementSets::references`] turns them into the appraisal
//! engine's reference values. Fail closed: a platform without a set accepts nothing.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::{Platform, ReferenceSet, References, TrustRoots};

/// Measurement sets that are not usable as written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReferenceValueError {
    /// A Nitro set names no PCR (it would accept any enclave).
    #[error("a Nitro measurement set lists no PCR")]
    NitroSetEmpty,
    /// A Nitro set of PCR3/PCR4 only: they name the parent instance, not the code.
    #[error(
        "a Nitro measurement set must pin the whole image: PCR0, or PCR1 with PCR2, or the signing certificate (PCR8); PCR1 alone leaves the application free, PCR2 alone the kernel and init, and PCR3 and PCR4 measure no code"
    )]
    NitroSetIncomplete,
    /// A Nitro PCR value of another length than SHA-384's.
    #[error("Nitro PCR values are 48 bytes")]
    NitroPcrLength,
    /// An SNP launch measurement of another length than 48 bytes.
    #[error("SNP measurement must be 48 bytes")]
    SnpMeasurementLength,
    /// SNP host data of another length than 32 bytes.
    #[error("host_data must be 32 bytes")]
    HostDataLength,
    /// Guest policy bits both required set and required clear.
    #[error("guest policy bits {0:#x} are both required set and clear")]
    PolicyBitsConflict(u64),
    /// An Azure set without TPM PCRs: the launch measurement alone is Azure's paravisor.
    #[error(
        "an Azure measurement set lists no tpm_pcrs; the launch measurement alone is Azure's \
         paravisor, the same for every Azure confidential VM"
    )]
    AzureWithoutTpmPcrs,
    /// A TPM PCR index not written plainly as 0-23, or a value not 32 bytes.
    #[error(
        "tpm_pcrs keys are 0-23 written plainly (\"7\", not \"07\") and values 32 bytes; got {0:?}"
    )]
    TpmPcr(String),
    /// A simulation root fingerprint that is not a SHA-256.
    #[error("simulation root fingerprints are 32 bytes")]
    SimulationFingerprint,
}

/// Simulation roots: evidence chaining to them is accepted (and marked simulated). Present
/// only where simulated evidence is acceptable (development).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Simulation {
    /// SHA-256 of simulated Nitro roots' DER.
    #[serde(default)]
    pub nitro_root_sha256: Vec<HexValue>,
    /// SHA-256 of simulated SNP roots' (ARK) DER.
    #[serde(default)]
    pub snp_root_sha256: Vec<HexValue>,
}

impl Simulation {
    /// Adds the roots to `roots` as simulation roots.
    pub fn trust(&self, roots: &mut TrustRoots) -> Result<(), ReferenceValueError> {
        for (platform, list) in [
            (Platform::Nitro, &self.nitro_root_sha256),
            (Platform::Snp, &self.snp_root_sha256),
        ] {
            for fp in list {
                let fp: [u8; 32] =
                    fp.0.as_slice()
                        .try_into()
                        .map_err(|_| ReferenceValueError::SimulationFingerprint)?;
                roots.add_simulation_fingerprint(platform, fp, "policy simulation root");
            }
        }
        Ok(())
    }
}

/// A guest-policy bit mask written as hex in the policy (`"0x80000"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct BitMask(pub u64);

impl TryFrom<String> for BitMask {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        parse_bits(&s).map(Self)
    }
}

/// A 48- or 32-byte (etc.) value written as hex in the policy.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct HexValue(pub Vec<u8>);

impl TryFrom<String> for HexValue {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        hex::decode(s.trim())
            .map(Self)
            .map_err(|e| format!("{s:?} is not hex: {e}"))
    }
}

/// Nitro PCR values; the PCRs listed must all match.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NitroSet {
    /// PCR0: enclave image.
    pub pcr0: Option<HexValue>,
    /// PCR1: kernel and bootstrap.
    pub pcr1: Option<HexValue>,
    /// PCR2: application.
    pub pcr2: Option<HexValue>,
    /// PCR3: parent instance IAM role.
    pub pcr3: Option<HexValue>,
    /// PCR4: parent instance id.
    pub pcr4: Option<HexValue>,
    /// PCR8: enclave image signing certificate.
    pub pcr8: Option<HexValue>,
}

impl NitroSet {
    /// The listed PCRs as (index, value).
    pub fn pcrs(&self) -> Vec<(u8, &[u8])> {
        [
            (0, &self.pcr0),
            (1, &self.pcr1),
            (2, &self.pcr2),
            (3, &self.pcr3),
            (4, &self.pcr4),
            (8, &self.pcr8),
        ]
        .into_iter()
        .filter_map(|(i, v)| v.as_ref().map(|v| (i, v.0.as_slice())))
        .collect()
    }
}

/// A minimum TCB: every listed component must be at least this.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MinTcb {
    /// FMC SPL (Turin only).
    #[serde(default)]
    pub fmc: Option<u8>,
    /// Bootloader SPL.
    #[serde(default)]
    pub bootloader: u8,
    /// TEE SPL.
    #[serde(default)]
    pub tee: u8,
    /// SNP firmware SPL.
    #[serde(default)]
    pub snp: u8,
    /// Microcode SPL.
    #[serde(default)]
    pub microcode: u8,
}

/// SEV-SNP reference values.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SnpSet {
    /// Launch measurement (48 bytes).
    pub measurement: HexValue,
    /// Host data (32 bytes), when the deployment sets it.
    pub host_data: Option<HexValue>,
    /// Minimum reported TCB (none when absent).
    #[serde(default)]
    pub min_tcb: Option<MinTcb>,
    /// Highest acceptable VMPL (default 0).
    #[serde(default)]
    pub max_vmpl: u32,
    /// Guest policy bits that must be set (hex, e.g. "0x0").
    #[serde(default)]
    pub policy_bits_set: Option<BitMask>,
    /// Guest policy bits that must be clear (hex).
    #[serde(default)]
    pub policy_bits_clear: Option<BitMask>,
}

impl MinTcb {
    /// The verifier's minimum TCB.
    pub fn reference(&self) -> crate::MinTcb {
        crate::MinTcb {
            bootloader: self.bootloader,
            tee: self.tee,
            snp: self.snp,
            microcode: self.microcode,
            fmc: self.fmc,
        }
    }
}

impl SnpSet {
    /// The set as the appraisal engine's reference values (the SNP measurements; the Azure
    /// TPM PCRs are added by [`AzureSet::reference`]).
    pub fn reference(&self) -> ReferenceSet {
        let mut measurements = BTreeMap::new();
        measurements.insert("measurement".to_owned(), self.measurement.0.clone());
        if let Some(h) = &self.host_data {
            measurements.insert("host_data".to_owned(), h.0.clone());
        }
        ReferenceSet {
            measurements,
            min_tcb: self.min_tcb.as_ref().map(MinTcb::reference),
            max_vmpl: Some(self.max_vmpl),
            policy_bits_set: self.policy_bits_set.map_or(0, |b| b.0),
            policy_bits_clear: self.policy_bits_clear.map_or(0, |b| b.0),
        }
    }
}

impl NitroSet {
    /// The set as the appraisal engine's reference values.
    pub fn reference(&self) -> ReferenceSet {
        ReferenceSet {
            measurements: self
                .pcrs()
                .into_iter()
                .map(|(i, v)| (format!("pcr{i}"), v.to_vec()))
                .collect(),
            ..ReferenceSet::default()
        }
    }
}

impl AzureSet {
    /// The set as the appraisal engine's reference values: the SNP ones and the TPM PCRs.
    pub fn reference(&self) -> ReferenceSet {
        let mut set = self.snp.reference();
        for (i, v) in &self.tpm_pcrs {
            set.measurements.insert(format!("tpm_pcr{i}"), v.0.clone());
        }
        set
    }
}

/// Azure vTPM SNP reference values: the SNP ones plus TPM PCRs.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AzureSet {
    /// The SNP part.
    #[serde(flatten)]
    pub snp: SnpSet,
    /// TPM PCR values (sha256 bank) by index.
    #[serde(default)]
    pub tpm_pcrs: BTreeMap<String, HexValue>,
}

/// Parses a hex bit mask such as `0x80000`.
pub fn parse_bits(s: &str) -> Result<u64, String> {
    u64::from_str_radix(s.trim().trim_start_matches("0x"), 16)
        .map_err(|_| format!("{s:?} is not a hex bit mask"))
}

/// Accepted measurement sets for each platform: any one set of the evidence's platform
/// suffices; a platform without sets accepts nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MeasurementSets<'a> {
    /// Nitro sets.
    pub nitro: &'a [NitroSet],
    /// SEV-SNP sets.
    pub snp: &'a [SnpSet],
    /// Azure vTPM SNP sets.
    pub azure: &'a [AzureSet],
}

impl MeasurementSets<'_> {
    /// Refuses sets that cannot be meant: an empty Nitro set, values of the wrong length,
    /// contradictory guest policy bits, an Azure set without TPM PCRs.
    pub fn validate(&self) -> Result<(), ReferenceValueError> {
        for set in self.nitro {
            let pcrs = set.pcrs();
            if pcrs.is_empty() {
                return Err(ReferenceValueError::NitroSetEmpty);
            }
            if pcrs.iter().any(|(_, v)| v.len() != 48) {
                return Err(ReferenceValueError::NitroPcrLength);
            }
            // The image is pinned by PCR0 (kernel, command line, every ramdisk), by PCR1 and
            // PCR2 together (the same content in two parts), or by its signer (PCR8). A
            // set that pins only the application (PCR2) admits any kernel and init beside
            // it, which can read the released key.
            let has = |n: u8| pcrs.iter().any(|(i, _)| *i == n);
            if !(has(0) || has(1) && has(2) || has(8)) {
                return Err(ReferenceValueError::NitroSetIncomplete);
            }
        }
        for set in self.snp.iter().chain(self.azure.iter().map(|z| &z.snp)) {
            set.validate()?;
        }
        for z in self.azure {
            if z.tpm_pcrs.is_empty() {
                return Err(ReferenceValueError::AzureWithoutTpmPcrs);
            }
            for (i, v) in &z.tpm_pcrs {
                // Canonical decimal only: "07" would name `tpm_pcr07`, which no evidence
                // reports, and deny everything without a word.
                let canonical = i
                    .parse::<u8>()
                    .ok()
                    .filter(|&n| n < 24 && n.to_string() == *i);
                if canonical.is_none() || v.0.len() != 32 {
                    return Err(ReferenceValueError::TpmPcr(i.clone()));
                }
            }
        }
        Ok(())
    }

    /// The sets as the appraisal engine's reference values.
    pub fn references(&self) -> References {
        References::OneOf(
            [
                (
                    Platform::Nitro,
                    self.nitro.iter().map(NitroSet::reference).collect(),
                ),
                (
                    Platform::Snp,
                    self.snp.iter().map(SnpSet::reference).collect(),
                ),
                (
                    Platform::AzureSnpVtpm,
                    self.azure.iter().map(AzureSet::reference).collect(),
                ),
            ]
            .into_iter()
            .collect(),
        )
    }

    /// Whether any set accepts evidence of `platform`.
    pub fn accepts(&self, platform: Platform) -> bool {
        match platform {
            Platform::Nitro => !self.nitro.is_empty(),
            Platform::Snp => !self.snp.is_empty(),
            Platform::AzureSnpVtpm => !self.azure.is_empty(),
        }
    }
}

impl SnpSet {
    fn validate(&self) -> Result<(), ReferenceValueError> {
        if self.measurement.0.len() != 48 {
            return Err(ReferenceValueError::SnpMeasurementLength);
        }
        if self.host_data.as_ref().is_some_and(|h| h.0.len() != 32) {
            return Err(ReferenceValueError::HostDataLength);
        }
        if let (Some(set_bits), Some(clear)) = (self.policy_bits_set, self.policy_bits_clear)
            && set_bits.0 & clear.0 != 0
        {
            return Err(ReferenceValueError::PolicyBitsConflict(
                set_bits.0 & clear.0,
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn nitro(pcrs: &[u8]) -> NitroSet {
        let v = || Some(HexValue(vec![7; 48]));
        NitroSet {
            pcr0: pcrs.contains(&0).then(v).flatten(),
            pcr1: pcrs.contains(&1).then(v).flatten(),
            pcr2: pcrs.contains(&2).then(v).flatten(),
            pcr3: pcrs.contains(&3).then(v).flatten(),
            pcr4: pcrs.contains(&4).then(v).flatten(),
            pcr8: pcrs.contains(&8).then(v).flatten(),
        }
    }

    fn check(pcrs: &[u8]) -> Result<(), ReferenceValueError> {
        let set = [nitro(pcrs)];
        MeasurementSets {
            nitro: &set,
            snp: &[],
            azure: &[],
        }
        .validate()
    }

    #[test]
    fn a_nitro_set_pins_the_whole_image() {
        for ok in [
            &[0][..],
            &[0, 1, 2],
            &[1, 2],
            &[1, 2, 3],
            &[8],
            &[0, 8],
            &[2, 8],
        ] {
            assert!(check(ok).is_ok(), "{ok:?}");
        }
        for partial in [&[1][..], &[2], &[2, 3], &[1, 4], &[3, 4]] {
            assert!(
                matches!(check(partial), Err(ReferenceValueError::NitroSetIncomplete)),
                "{partial:?}"
            );
        }
        assert!(matches!(
            check(&[]),
            Err(ReferenceValueError::NitroSetEmpty)
        ));
    }
}
