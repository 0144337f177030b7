//! Choosing the attestation provider: an explicit override, or auto-detection.

use std::path::{Path, PathBuf};

use super::{
    AttestError, AttestationProvider, CONFIGFS_TSM_REPORT_DIR, ConfigfsTsm, NSM_DEVICE, NitroNsm,
    SEV_GUEST_DEVICE, SevGuest,
};

/// What the operator asked for (`--tee` / `TB_TEE`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TeeChoice {
    /// Probe the machine.
    Auto,
    /// AWS Nitro (NSM).
    Nitro,
    /// AMD SEV-SNP (configfs-tsm, else `/dev/sev-guest`).
    Snp,
}

/// Where detection looks; [`Probe::system`] is the real machine, tests point elsewhere.
#[derive(Clone, Debug)]
pub struct Probe {
    /// The NSM device.
    pub nsm_device: PathBuf,
    /// The configfs-tsm report directory.
    pub configfs_tsm: PathBuf,
    /// The legacy SEV guest device.
    pub sev_guest: PathBuf,
}

impl Probe {
    /// The real paths.
    pub fn system() -> Self {
        Self {
            nsm_device: NSM_DEVICE.into(),
            configfs_tsm: CONFIGFS_TSM_REPORT_DIR.into(),
            sev_guest: SEV_GUEST_DEVICE.into(),
        }
    }
}

/// The hardware provider for `choice`; the simulated TEE is never chosen here (it is only
/// used when `--tee simulated` is given, by the caller). The error names every path probed.
pub fn detect(
    choice: &TeeChoice,
    probe: &Probe,
) -> Result<Box<dyn AttestationProvider>, AttestError> {
    let exists = |p: &Path| p.exists();
    let nitro = || -> Box<dyn AttestationProvider> { Box::new(NitroNsm) };
    let snp =
        || -> Box<dyn AttestationProvider> { Box::new(ConfigfsTsm::new(&probe.configfs_tsm)) };
    let probed = || {
        format!(
            "{} ({}), {} ({}), {} ({})",
            probe.nsm_device.display(),
            state(exists(&probe.nsm_device)),
            probe.configfs_tsm.display(),
            state(exists(&probe.configfs_tsm)),
            probe.sev_guest.display(),
            state(exists(&probe.sev_guest)),
        )
    };
    let sev_guest =
        || -> Box<dyn AttestationProvider> { Box::new(SevGuest::new(&probe.sev_guest)) };
    match choice {
        TeeChoice::Nitro if exists(&probe.nsm_device) => Ok(nitro()),
        TeeChoice::Auto if exists(&probe.nsm_device) => Ok(nitro()),
        // configfs-tsm first (Linux 6.7+), the legacy device on older kernels.
        TeeChoice::Snp | TeeChoice::Auto if exists(&probe.configfs_tsm) => Ok(snp()),
        TeeChoice::Snp | TeeChoice::Auto if exists(&probe.sev_guest) => Ok(sev_guest()),
        _ => Err(AttestError::NoTee(format!(
            "{}; use --tee simulated for development",
            probed()
        ))),
    }
}

fn state(present: bool) -> &'static str {
    if present { "present" } else { "absent" }
}
