//! Nitro Enclave Image Files (EIF): a reproducible build of the sentinel's image and the
//! measurement of any EIF's PCR0, PCR1, PCR2 and PCR8.
//!
//! The format is AWS's (the specification in the `aws-nitro-enclaves-image-format`
//! repository): a big-endian header with a section table and a CRC-32, then the kernel,
//! the kernel command line, a JSON metadata section, the ramdisks (newc cpio archives the
//! hypervisor concatenates into one initramfs) and an optional signature section. The
//! Nitro hypervisor measures
//!
//! - PCR0 = extend(kernel ‖ cmdline ‖ every ramdisk),
//! - PCR1 = extend(kernel ‖ cmdline ‖ the first (bootstrap) ramdisk),
//! - PCR2 = extend(every later (application) ramdisk),
//! - PCR8 = extend(the DER signing certificate), for a signed image,
//!
//! where extend(x) = SHA-384(48 zero bytes ‖ SHA-384(x)). Metadata, headers and the
//! signature itself are not measured.
//!
//! - [`cpio`]: deterministic newc archives (fixed order, owners, modes, times);
//! - [`image`]: the writer and its measurements;
//! - [`measure`]: the reader, which recomputes the PCRs from a file, checks its CRC and
//!   section table, and verifies its signature;
//! - [`signature`]: the signature section (a COSE_Sign1 over PCR0, ECDSA P-384);
//! - [`layout`]: the sentinel's image — AWS's bootstrap ramdisk (`init`, `nsm.ko`) and an
//!   application ramdisk with the static sentinel and its configuration under `rootfs/`;
//! - [`elf`]: the checks on the sentinel binary (static, its architecture).
#![forbid(unsafe_code)]

pub mod cpio;
pub mod crc32;
pub mod elf;
pub mod image;
pub mod layout;
pub mod measure;
pub mod signature;

pub use image::{Arch, EifImage, Measurements};
pub use layout::SentinelImage;
pub use measure::{MeasureError, Measured, measure};
pub use signature::{SignatureError, Signer};

/// SHA-384 output length.
pub const PCR_LEN: usize = 48;

/// A PCR value: SHA-384(48 zero bytes ‖ SHA-384(content)), the hypervisor's one extend of
/// a zeroed register.
pub fn extend(digest_of_content: &[u8; PCR_LEN]) -> [u8; PCR_LEN] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA384);
    ctx.update(&[0u8; PCR_LEN]);
    ctx.update(digest_of_content);
    to_pcr(ctx.finish())
}

/// A SHA-384 digest as an array.
pub(crate) fn to_pcr(d: aws_lc_rs::digest::Digest) -> [u8; PCR_LEN] {
    let mut out = [0u8; PCR_LEN];
    // SHA-384 digests are 48 bytes: the lengths always match.
    out.copy_from_slice(d.as_ref());
    out
}

/// A hasher whose result is a PCR value.
#[derive(Clone)]
pub(crate) struct PcrHasher(aws_lc_rs::digest::Context);

impl PcrHasher {
    pub(crate) fn new() -> Self {
        Self(aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA384))
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    pub(crate) fn finish(self) -> [u8; PCR_LEN] {
        extend(&to_pcr(self.0.finish()))
    }
}
