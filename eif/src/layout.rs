//! The sentinel's enclave image: what goes into which ramdisk.
//!
//! Ramdisk 0 (bootstrap, measured by PCR1 with the kernel and command line) is what AWS's
//! `init` needs: `dev/`, `init`, `nsm.ko`. Ramdisk 1 (application, PCR2) holds `cmd` and
//! `env` (the argv and environment `init` starts the sentinel with, one entry per line)
//! and `rootfs/`, the root the sentinel runs in: the static sentinel binary, its
//! configuration (which pins the broker and provider keys), and the mount points `init`
//! uses. Everything the sentinel reads at start is therefore in PCR2: its code, its
//! arguments, its environment and its configuration file. What runs beside it — kernel,
//! command line, init — is in PCR1: a policy pins both (or PCR0, which covers all).

use crate::cpio::{Archive, CpioError};
use crate::elf::{ElfError, is_kernel_for, machine, static_executable_arch};
use crate::image::{Arch, EifImage};

/// Where the sentinel is in the enclave.
pub const SENTINEL_PATH: &str = "/bin/tb-sentinel";
/// Where its configuration is in the enclave.
pub const CONFIG_PATH: &str = "/etc/trustbridge/sentinel.toml";

/// The image could not be assembled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LayoutError {
    /// The sentinel binary.
    #[error(transparent)]
    Elf(#[from] ElfError),
    /// A ramdisk.
    #[error(transparent)]
    Cpio(#[from] CpioError),
    /// An empty input.
    #[error("{0} is empty")]
    Empty(&'static str),
    /// An input built for another architecture than the sentinel (or not what it should
    /// be): the enclave would not boot.
    #[error("{what} is not {expected} for {arch:?}, the sentinel's architecture")]
    Mismatch {
        /// The input.
        what: &'static str,
        /// What it should be.
        expected: &'static str,
        /// The sentinel's architecture.
        arch: Arch,
    },
}

/// The inputs of a sentinel image.
#[derive(Clone, Copy)]
pub struct SentinelImage<'a> {
    /// The static sentinel executable.
    pub sentinel: &'a [u8],
    /// Its configuration file (TOML).
    pub config: &'a [u8],
    /// The enclave kernel.
    pub kernel: &'a [u8],
    /// AWS's `init`.
    pub init: &'a [u8],
    /// The NSM driver matching the kernel.
    pub nsm_ko: &'a [u8],
    /// The kernel command line (trimmed here); `None`: AWS's default for the architecture.
    pub cmdline: Option<&'a str>,
    /// Metadata build time (seconds since the epoch).
    pub build_time: u64,
}

impl std::fmt::Debug for SentinelImage<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelImage")
            .field("sentinel", &self.sentinel.len())
            .field("config", &self.config.len())
            .field("kernel", &self.kernel.len())
            .finish_non_exhaustive()
    }
}

impl SentinelImage<'_> {
    /// The bootstrap ramdisk.
    pub fn bootstrap_ramdisk(&self) -> Result<Vec<u8>, LayoutError> {
        let mut a = Archive::new();
        a.dir("dev", 0o755)?
            .file("init", 0o755, self.init)?
            .file("nsm.ko", 0o755, self.nsm_ko)?;
        Ok(a.to_bytes())
    }

    /// The application ramdisk.
    pub fn application_ramdisk(&self) -> Result<Vec<u8>, LayoutError> {
        let cmd = format!("{SENTINEL_PATH}\n--config\n{CONFIG_PATH}\n");
        let mut a = Archive::new();
        a.file("cmd", 0o644, cmd.as_bytes())?
            // An empty environment: `init` gives the sentinel PATH only, so no TB_* variable
            // overrides the measured configuration.
            .file("env", 0o644, b"")?;
        for d in ["dev", "proc", "run", "sys", "tmp", "var"] {
            a.dir(&format!("rootfs/{d}"), 0o755)?;
        }
        a.file(&format!("rootfs{SENTINEL_PATH}"), 0o755, self.sentinel)?
            .file(&format!("rootfs{CONFIG_PATH}"), 0o644, self.config)?;
        Ok(a.to_bytes())
    }

    /// The EIF to write.
    pub fn image(&self) -> Result<EifImage, LayoutError> {
        let arch: Arch = static_executable_arch(self.sentinel)?;
        for (what, data) in [
            ("the kernel", self.kernel),
            ("init", self.init),
            ("nsm.ko", self.nsm_ko),
            ("the configuration", self.config),
        ] {
            if data.is_empty() {
                return Err(LayoutError::Empty(what));
            }
        }
        if !is_kernel_for(arch, self.kernel) {
            return Err(LayoutError::Mismatch {
                what: "the kernel",
                expected: "a kernel image (bzImage on x86-64, Image on aarch64)",
                arch,
            });
        }
        for (what, data) in [("init", self.init), ("nsm.ko", self.nsm_ko)] {
            if machine(data) != Some(arch) {
                return Err(LayoutError::Mismatch {
                    what,
                    expected: "an ELF file",
                    arch,
                });
            }
        }
        let cmdline = self.cmdline.map_or_else(
            || arch.default_cmdline().to_owned(),
            |c| c.trim().to_owned(),
        );
        let sha = |d: &[u8]| hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, d));
        Ok(EifImage {
            arch,
            kernel: self.kernel.to_vec(),
            cmdline,
            ramdisks: vec![self.bootstrap_ramdisk()?, self.application_ramdisk()?],
            name: "trustbridge-sentinel".into(),
            build_time: self.build_time,
            custom: serde_json::json!({
                "sentinel_sha256": sha(self.sentinel),
                "config_sha256": sha(self.config),
            }),
        })
    }
}
