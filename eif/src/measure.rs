//! Measuring an EIF: a streaming walk over its sections that recomputes PCR0, PCR1, PCR2
//! (and PCR8 for a signed image, after verifying the signature), checks the CRC and that
//! the header's section table describes exactly the sections found.
//!
//! The file is read once with bounded buffers: measured sections stream through the
//! hashers; only the command line, metadata and signature (each capped) are kept.

use std::io::Read;
use std::time::SystemTime;

use crate::PcrHasher;
use crate::crc32::Crc32;
use crate::image::{
    CRC_OFFSET, HEADER_LEN, MAGIC, MAX_CMDLINE_LEN, MAX_SECTIONS, Measurements, SECTION_HEADER_LEN,
    SectionKind,
};
use crate::signature::{MAX_SIGNATURE_LEN, SignatureError, verify};

/// Largest EIF measured (an enclave needs four times its image in memory).
pub const MAX_EIF_LEN: u64 = 4 << 30;
/// Largest metadata section kept.
pub const MAX_METADATA_LEN: usize = 1 << 20;

/// The file is not a well-formed EIF, or its signature does not hold.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MeasureError {
    /// Reading failed.
    #[error("reading the image: {0}")]
    Io(#[from] std::io::Error),
    /// Not an EIF.
    #[error("not an EIF (no .eif magic)")]
    Magic,
    /// A version this reader does not know.
    #[error("unsupported EIF version {0}")]
    Version(u16),
    /// Larger than [`MAX_EIF_LEN`].
    #[error("the image is larger than {MAX_EIF_LEN} bytes")]
    TooLarge,
    /// A section header or its data runs past the end of the file.
    #[error("the image is truncated")]
    Truncated,
    /// An unknown section type.
    #[error("unknown section type {0}")]
    SectionType(u16),
    /// Sections missing, repeated or out of order.
    #[error("invalid section layout: {0}")]
    Layout(&'static str),
    /// The header's section table does not describe the sections in the file.
    #[error("the header's section table does not match the sections")]
    SectionTable,
    /// The CRC does not match.
    #[error("CRC mismatch: the header says {expected:08x}, the file gives {actual:08x}")]
    Crc {
        /// In the header.
        expected: u32,
        /// Computed.
        actual: u32,
    },
    /// The signature.
    #[error(transparent)]
    Signature(#[from] SignatureError),
}

/// What measuring an image found.
#[derive(Debug, Clone)]
pub struct Measured {
    /// The PCRs (PCR8 only when the signature verified).
    pub measurements: Measurements,
    /// The architecture flag.
    pub aarch64: bool,
    /// The kernel command line.
    pub cmdline: String,
    /// The metadata section (JSON), when present.
    pub metadata: Option<serde_json::Value>,
    /// The signing certificate's subject, when signed.
    pub signer: Option<String>,
    /// Section sizes in file order.
    pub sections: Vec<(SectionKind, u64)>,
}

fn be_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

/// Reads exactly `buf.len()` bytes, or reports truncation.
fn fill(r: &mut impl Read, buf: &mut [u8]) -> Result<(), MeasureError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => MeasureError::Truncated,
        _ => MeasureError::Io(e),
    })
}

/// Measures the EIF read from `r`, `len` bytes long; signatures are checked at `now`.
pub fn measure(mut r: impl Read, len: u64, now: SystemTime) -> Result<Measured, MeasureError> {
    if len > MAX_EIF_LEN {
        return Err(MeasureError::TooLarge);
    }
    let mut header = [0u8; HEADER_LEN];
    let have = len.min(HEADER_LEN as u64) as usize;
    fill(&mut r, &mut header[..have])?;
    if have < 4 || header[..4] != MAGIC {
        return Err(MeasureError::Magic);
    }
    if have < HEADER_LEN {
        return Err(MeasureError::Truncated);
    }
    let version = be_u16(&header, 4);
    if !(1..=4).contains(&version) {
        return Err(MeasureError::Version(version));
    }
    let flags = be_u16(&header, 6);
    let count = usize::from(be_u16(&header, 26));
    if count > MAX_SECTIONS {
        return Err(MeasureError::SectionTable);
    }
    let table_offset = |i: usize| be_u64(&header, 28 + 8 * i);
    let table_size = |i: usize| be_u64(&header, 28 + 8 * MAX_SECTIONS + 8 * i);
    let expected_crc = u32::from_be_bytes([
        header[CRC_OFFSET],
        header[CRC_OFFSET + 1],
        header[CRC_OFFSET + 2],
        header[CRC_OFFSET + 3],
    ]);
    let mut crc = Crc32::default();
    crc.update(&header[..CRC_OFFSET]);

    let mut image = PcrHasher::new();
    let mut boot = PcrHasher::new();
    let mut app = PcrHasher::new();
    let (mut kernel, mut cmdline, mut metadata, mut signature) = (false, None, None, None);
    let mut ramdisks = 0usize;
    let mut sections = Vec::new();
    let mut at = HEADER_LEN as u64;
    let mut buf = vec![0u8; 1 << 16];
    while at < len {
        let i = sections.len();
        if i >= count || table_offset(i) != at {
            return Err(MeasureError::SectionTable);
        }
        let mut sh = [0u8; SECTION_HEADER_LEN];
        fill(&mut r, &mut sh)?;
        crc.update(&sh);
        let code = be_u16(&sh, 0);
        let kind = SectionKind::from_code(code).ok_or(MeasureError::SectionType(code))?;
        let size = be_u64(&sh, 4);
        if size != table_size(i) {
            return Err(MeasureError::SectionTable);
        }
        let end = at
            .checked_add(SECTION_HEADER_LEN as u64)
            .and_then(|a| a.checked_add(size))
            .ok_or(MeasureError::Truncated)?;
        if end > len {
            return Err(MeasureError::Truncated);
        }
        if signature.is_some() {
            return Err(MeasureError::Layout("a section after the signature"));
        }
        // Sections whose contents are kept, each capped before it is read.
        let kept_cap = match kind {
            SectionKind::Cmdline => Some(MAX_CMDLINE_LEN),
            SectionKind::Metadata => Some(MAX_METADATA_LEN),
            SectionKind::Signature => Some(MAX_SIGNATURE_LEN),
            SectionKind::Kernel | SectionKind::Ramdisk => None,
        };
        match kind {
            SectionKind::Kernel if kernel => return Err(MeasureError::Layout("two kernels")),
            SectionKind::Kernel if ramdisks > 0 => {
                return Err(MeasureError::Layout("a ramdisk before the kernel"));
            }
            SectionKind::Cmdline if cmdline.is_some() => {
                return Err(MeasureError::Layout("two command lines"));
            }
            SectionKind::Cmdline if !kernel || ramdisks > 0 => {
                return Err(MeasureError::Layout(
                    "the command line must follow the kernel, before the ramdisks",
                ));
            }
            SectionKind::Metadata if metadata.is_some() => {
                return Err(MeasureError::Layout("two metadata sections"));
            }
            SectionKind::Ramdisk if !kernel || cmdline.is_none() => {
                return Err(MeasureError::Layout(
                    "a ramdisk before the kernel and command line",
                ));
            }
            _ => {}
        }
        if let Some(cap) = kept_cap {
            if size > cap as u64 {
                return Err(MeasureError::Layout(
                    "an oversized command line, metadata or signature",
                ));
            }
            let mut data = vec![0u8; size as usize];
            fill(&mut r, &mut data)?;
            crc.update(&data);
            match kind {
                SectionKind::Cmdline => {
                    image.update(&data);
                    boot.update(&data);
                    cmdline = Some(data);
                }
                SectionKind::Metadata => metadata = Some(data),
                _ => signature = Some(data),
            }
        } else {
            let mut left = size;
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                fill(&mut r, &mut buf[..n])?;
                crc.update(&buf[..n]);
                image.update(&buf[..n]);
                match kind {
                    SectionKind::Kernel => boot.update(&buf[..n]),
                    _ if ramdisks == 0 => boot.update(&buf[..n]),
                    _ => app.update(&buf[..n]),
                }
                left -= n as u64;
            }
            match kind {
                SectionKind::Kernel => kernel = true,
                _ => ramdisks += 1,
            }
        }
        sections.push((kind, size));
        at = end;
    }
    if sections.len() != count
        || (count..MAX_SECTIONS).any(|i| table_offset(i) != 0 || table_size(i) != 0)
    {
        return Err(MeasureError::SectionTable);
    }
    let actual = crc.finish();
    if actual != expected_crc {
        return Err(MeasureError::Crc {
            expected: expected_crc,
            actual,
        });
    }
    let Some(cmdline) = cmdline else {
        return Err(MeasureError::Layout("no command line"));
    };
    if !kernel || ramdisks == 0 {
        return Err(MeasureError::Layout(
            "an image needs a kernel and a ramdisk",
        ));
    }
    if version >= 4 && metadata.is_none() {
        return Err(MeasureError::Layout(
            "a version 4 image needs its metadata section",
        ));
    }
    let mut measurements = Measurements {
        pcr0: image.finish(),
        pcr1: boot.finish(),
        pcr2: app.finish(),
        pcr8: None,
    };
    let mut signer = None;
    if let Some(sig) = signature {
        let cert = verify(&sig, &measurements.pcr0, now)?;
        measurements.pcr8 = Some(crate::signature::pcr8(cert.der()));
        signer = Some(cert.subject().to_owned());
    }
    Ok(Measured {
        measurements,
        aarch64: flags & 1 == 1,
        cmdline: String::from_utf8_lossy(&cmdline).into_owned(),
        metadata: metadata.and_then(|m| serde_json::from_slice(&m).ok()),
        signer,
        sections,
    })
}
