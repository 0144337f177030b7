//! The EIF writer and the measurements of what it writes.
//!
//! Layout (all integers big-endian): a 548-byte header — magic `.eif`, version 4, flags
//! (bit 0: aarch64), default memory and CPUs, the section count, 32 section offsets (of
//! each section's 12-byte header), 32 section data sizes, 4 reserved bytes, and a CRC-32
//! over everything else — then the sections, contiguous: kernel, command line, metadata,
//! the ramdisks, and the signature when signed.

use serde::Serialize;

use crate::crc32::Crc32;
use crate::signature::{SignatureError, Signer};
use crate::{PCR_LEN, PcrHasher};

/// `.eif`
pub const MAGIC: [u8; 4] = *b".eif";
/// The format version written (v4: the metadata section is mandatory).
pub const VERSION: u16 = 4;
/// Header length.
pub const HEADER_LEN: usize = 548;
/// Section header length.
pub const SECTION_HEADER_LEN: usize = 12;
/// Most sections an EIF has.
pub const MAX_SECTIONS: usize = 32;
/// The offset of the CRC in the header.
pub const CRC_OFFSET: usize = 544;
/// Longest kernel command line accepted (the x86 kernel's own limit is 2048).
pub const MAX_CMDLINE_LEN: usize = 2048;

/// Section types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum SectionKind {
    /// The kernel (bzImage on x86-64, Image on aarch64).
    Kernel = 1,
    /// The kernel command line.
    Cmdline = 2,
    /// A cpio ramdisk.
    Ramdisk = 3,
    /// The signature over PCR0 and the signing certificate.
    Signature = 4,
    /// Build metadata (JSON).
    Metadata = 5,
}

impl SectionKind {
    /// The type of a section header's code.
    pub fn from_code(code: u16) -> Option<Self> {
        Some(match code {
            1 => Self::Kernel,
            2 => Self::Cmdline,
            3 => Self::Ramdisk,
            4 => Self::Signature,
            5 => Self::Metadata,
            _ => return None,
        })
    }
}

/// The enclave's CPU architecture (the header's flag bit 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// x86-64.
    X86_64,
    /// aarch64 (Graviton).
    Aarch64,
}

impl Arch {
    /// The header flags.
    pub fn flags(self) -> u16 {
        match self {
            Self::X86_64 => 0,
            Self::Aarch64 => 1,
        }
    }

    /// AWS's kernel command line for the architecture (`blobs/<arch>/cmdline`).
    pub fn default_cmdline(self) -> &'static str {
        match self {
            Self::X86_64 => {
                "reboot=k panic=30 pci=off nomodules console=ttyS0 i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd random.trust_cpu=on"
            }
            Self::Aarch64 => {
                "reboot=k panic=30 pci=off nomodules console=ttyS0 random.trust_cpu=on root=/dev/ram0"
            }
        }
    }
}

/// An image's measurements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Measurements {
    /// The whole image: kernel, command line, every ramdisk.
    pub pcr0: [u8; PCR_LEN],
    /// The kernel, command line and bootstrap ramdisk.
    pub pcr1: [u8; PCR_LEN],
    /// The application ramdisks.
    pub pcr2: [u8; PCR_LEN],
    /// The signing certificate, for a signed image.
    pub pcr8: Option<[u8; PCR_LEN]>,
}

impl Measurements {
    /// The PCRs in `nitro-cli describe-eif`'s shape:
    /// `{"Measurements": {"HashAlgorithm": "Sha384", "PCR0": hex, ...}}`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("HashAlgorithm".into(), "Sha384".into());
        m.insert("PCR0".into(), hex::encode(self.pcr0).into());
        m.insert("PCR1".into(), hex::encode(self.pcr1).into());
        m.insert("PCR2".into(), hex::encode(self.pcr2).into());
        if let Some(p) = self.pcr8 {
            m.insert("PCR8".into(), hex::encode(p).into());
        }
        serde_json::json!({ "Measurements": m })
    }

    /// One `PCRn <hex>` line per register.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "PCR0 {}\nPCR1 {}\nPCR2 {}\n",
            hex::encode(self.pcr0),
            hex::encode(self.pcr1),
            hex::encode(self.pcr2)
        );
        if let Some(p) = self.pcr8 {
            s.push_str(&format!("PCR8 {}\n", hex::encode(p)));
        }
        s
    }

    /// Computes PCR0-2 from the measured sections' contents.
    pub(crate) fn compute(
        kernel: &[u8],
        cmdline: &[u8],
        ramdisks: &[&[u8]],
        certificate_der: Option<&[u8]>,
    ) -> Self {
        let mut image = PcrHasher::new();
        let mut boot = PcrHasher::new();
        let mut app = PcrHasher::new();
        for part in [kernel, cmdline] {
            image.update(part);
            boot.update(part);
        }
        for (i, r) in ramdisks.iter().enumerate() {
            image.update(r);
            if i == 0 {
                boot.update(r);
            } else {
                app.update(r);
            }
        }
        Self {
            pcr0: image.finish(),
            pcr1: boot.finish(),
            pcr2: app.finish(),
            pcr8: certificate_der.map(|der| {
                let mut h = PcrHasher::new();
                h.update(der);
                h.finish()
            }),
        }
    }
}

/// The metadata section: `nitro-cli describe-eif` reads every one of these keys.
#[derive(Serialize)]
struct Metadata<'a> {
    #[serde(rename = "ImageName")]
    image_name: &'a str,
    #[serde(rename = "ImageVersion")]
    image_version: &'a str,
    #[serde(rename = "BuildMetadata")]
    build: BuildMetadata<'a>,
    #[serde(rename = "DockerInfo")]
    docker: serde_json::Value,
    #[serde(rename = "CustomMetadata")]
    custom: serde_json::Value,
}

#[derive(Serialize)]
struct BuildMetadata<'a> {
    #[serde(rename = "BuildTime")]
    time: String,
    #[serde(rename = "BuildTool")]
    tool: &'a str,
    #[serde(rename = "BuildToolVersion")]
    tool_version: &'a str,
    #[serde(rename = "OperatingSystem")]
    os: &'a str,
    #[serde(rename = "KernelVersion")]
    kernel: &'a str,
}

/// An image to write.
#[derive(Clone)]
pub struct EifImage {
    /// The enclave architecture.
    pub arch: Arch,
    /// The kernel.
    pub kernel: Vec<u8>,
    /// The kernel command line (measured exactly as given: no trailing newline or NUL).
    pub cmdline: String,
    /// The ramdisks, bootstrap first.
    pub ramdisks: Vec<Vec<u8>>,
    /// The image name in the metadata.
    pub name: String,
    /// The build time in the metadata, seconds since the epoch (`SOURCE_DATE_EPOCH` for
    /// reproducible builds; not measured, but part of the file's bytes).
    pub build_time: u64,
    /// Free-form metadata (not measured).
    pub custom: serde_json::Value,
}

impl std::fmt::Debug for EifImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EifImage")
            .field("arch", &self.arch)
            .field("kernel", &self.kernel.len())
            .field("cmdline", &self.cmdline)
            .field(
                "ramdisks",
                &self.ramdisks.iter().map(Vec::len).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// The image could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The command line has a NUL, a line break, or is too long.
    #[error(
        "the kernel command line must be one line of at most {MAX_CMDLINE_LEN} bytes without NUL"
    )]
    Cmdline,
    /// An image needs a kernel and at least the bootstrap ramdisk.
    #[error("an EIF needs a kernel and at least one ramdisk")]
    Incomplete,
    /// Signing.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// The metadata could not be encoded.
    #[error("the metadata could not be encoded: {0}")]
    Metadata(#[from] serde_json::Error),
}

impl EifImage {
    /// What the image measures to, without writing it (unsigned; [`Self::write`] adds
    /// PCR8 when signing).
    pub fn measurements(&self) -> Measurements {
        let ramdisks: Vec<&[u8]> = self.ramdisks.iter().map(Vec::as_slice).collect();
        Measurements::compute(&self.kernel, self.cmdline.as_bytes(), &ramdisks, None)
    }

    /// The EIF's bytes and measurements, signed by `signer` when given.
    pub fn write(&self, signer: Option<&Signer>) -> Result<(Vec<u8>, Measurements), WriteError> {
        if self.cmdline.len() > MAX_CMDLINE_LEN || self.cmdline.contains(['\0', '\n', '\r']) {
            return Err(WriteError::Cmdline);
        }
        if self.kernel.is_empty() || self.ramdisks.is_empty() {
            return Err(WriteError::Incomplete);
        }
        let mut measurements = self.measurements();
        let metadata = serde_json::to_vec(&Metadata {
            image_name: &self.name,
            image_version: env!("CARGO_PKG_VERSION"),
            build: BuildMetadata {
                time: rfc3339(self.build_time),
                tool: "trustbridge eif build",
                tool_version: env!("CARGO_PKG_VERSION"),
                os: "linux",
                kernel: "unknown",
            },
            docker: serde_json::Value::Null,
            custom: self.custom.clone(),
        })?;
        let signature = match signer {
            Some(s) => {
                measurements.pcr8 = Some(s.pcr8());
                Some(s.section(&measurements.pcr0)?)
            }
            None => None,
        };
        let mut sections: Vec<(SectionKind, &[u8])> = vec![
            (SectionKind::Kernel, &self.kernel),
            (SectionKind::Cmdline, self.cmdline.as_bytes()),
            (SectionKind::Metadata, &metadata),
        ];
        for r in &self.ramdisks {
            sections.push((SectionKind::Ramdisk, r));
        }
        if let Some(sig) = &signature {
            sections.push((SectionKind::Signature, sig));
        }
        if sections.len() > MAX_SECTIONS {
            return Err(WriteError::Incomplete);
        }
        let total = HEADER_LEN
            + sections
                .iter()
                .map(|(_, d)| SECTION_HEADER_LEN + d.len())
                .sum::<usize>();
        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&self.arch.flags().to_be_bytes());
        out.extend_from_slice(&(1u64 << 30).to_be_bytes()); // default memory (unused)
        out.extend_from_slice(&2u64.to_be_bytes()); // default CPUs (unused)
        out.extend_from_slice(&0u16.to_be_bytes()); // reserved
        out.extend_from_slice(&(sections.len() as u16).to_be_bytes());
        let mut offsets = [0u64; MAX_SECTIONS];
        let mut sizes = [0u64; MAX_SECTIONS];
        let mut at = HEADER_LEN as u64;
        for (i, (_, data)) in sections.iter().enumerate() {
            offsets[i] = at;
            sizes[i] = data.len() as u64;
            at += (SECTION_HEADER_LEN + data.len()) as u64;
        }
        for o in offsets {
            out.extend_from_slice(&o.to_be_bytes());
        }
        for s in sizes {
            out.extend_from_slice(&s.to_be_bytes());
        }
        out.extend_from_slice(&0u32.to_be_bytes()); // reserved
        out.extend_from_slice(&0u32.to_be_bytes()); // the CRC, below
        debug_assert_eq!(out.len(), HEADER_LEN);
        for (kind, data) in &sections {
            out.extend_from_slice(&(*kind as u16).to_be_bytes());
            out.extend_from_slice(&0u16.to_be_bytes());
            out.extend_from_slice(&(data.len() as u64).to_be_bytes());
            out.extend_from_slice(data);
        }
        let mut crc = Crc32::default();
        crc.update(&out[..CRC_OFFSET]);
        crc.update(&out[HEADER_LEN..]);
        out[CRC_OFFSET..HEADER_LEN].copy_from_slice(&crc.finish().to_be_bytes());
        Ok((out, measurements))
    }
}

/// `YYYY-MM-DDTHH:MM:SS+00:00` for seconds since the epoch (the proleptic Gregorian
/// calendar; Howard Hinnant's civil-from-days).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}+00:00",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00+00:00");
        assert_eq!(super::rfc3339(1_764_633_600), "2025-12-02T00:00:00+00:00");
        assert_eq!(
            super::rfc3339(951_782_400 + 3661),
            "2000-02-29T01:01:01+00:00"
        );
    }
}
