//! The checks on the sentinel binary: an enclave's root file system has no shared
//! libraries, so the sentinel must be a static ELF executable, and its architecture sets
//! the image's.

use crate::image::Arch;

/// The binary cannot run in an enclave.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ElfError {
    /// Not a 64-bit little-endian ELF executable.
    #[error("the sentinel is not a 64-bit little-endian ELF executable")]
    NotElf,
    /// Neither x86-64 nor aarch64.
    #[error("the sentinel is built for ELF machine {0}, not x86-64 or aarch64")]
    Machine(u16),
    /// It asks for a dynamic loader.
    #[error(
        "the sentinel is dynamically linked (it names the loader {0:?}); an enclave has no shared libraries: build it for x86_64-unknown-linux-musl (see docs/EIF.md)"
    )]
    Dynamic(String),
}

const PT_INTERP: u32 = 3;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The architecture of a static ELF executable.
pub fn static_executable_arch(elf: &[u8]) -> Result<Arch, ElfError> {
    if elf.get(..4) != Some(b"\x7fELF".as_slice())
        || elf.get(4) != Some(&2)
        || elf.get(5) != Some(&1)
    {
        return Err(ElfError::NotElf);
    }
    // ET_EXEC, or ET_DYN for a static position-independent executable.
    match u16_at(elf, 16) {
        Some(2 | 3) => {}
        _ => return Err(ElfError::NotElf),
    }
    let arch = match u16_at(elf, 18).ok_or(ElfError::NotElf)? {
        62 => Arch::X86_64,
        183 => Arch::Aarch64,
        m => return Err(ElfError::Machine(m)),
    };
    let phoff = u64_at(elf, 32).ok_or(ElfError::NotElf)?;
    let phentsize = u64::from(u16_at(elf, 54).ok_or(ElfError::NotElf)?);
    let phnum = u64::from(u16_at(elf, 56).ok_or(ElfError::NotElf)?);
    for i in 0..phnum {
        let at = phoff
            .checked_add(i.checked_mul(phentsize).ok_or(ElfError::NotElf)?)
            .and_then(|a| usize::try_from(a).ok())
            .ok_or(ElfError::NotElf)?;
        if u32_at(elf, at).ok_or(ElfError::NotElf)? == PT_INTERP {
            let off = u64_at(elf, at + 8).and_then(|o| usize::try_from(o).ok());
            let size = u64_at(elf, at + 32).and_then(|s| usize::try_from(s).ok());
            let name = off
                .zip(size)
                .and_then(|(o, s)| elf.get(o..o.checked_add(s)?))
                .map(|n| String::from_utf8_lossy(n).trim_end_matches('\0').to_owned())
                .unwrap_or_default();
            return Err(ElfError::Dynamic(name));
        }
    }
    Ok(arch)
}

/// The architecture an ELF file (executable or module) is built for, if it is a 64-bit
/// little-endian ELF of x86-64 or aarch64.
pub fn machine(elf: &[u8]) -> Option<Arch> {
    if elf.get(..4) != Some(b"\x7fELF".as_slice())
        || elf.get(4) != Some(&2)
        || elf.get(5) != Some(&1)
    {
        return None;
    }
    match u16_at(elf, 18)? {
        62 => Some(Arch::X86_64),
        183 => Some(Arch::Aarch64),
        _ => None,
    }
}

/// Whether `kernel` is a kernel image for `arch`: an x86 boot-protocol image (`HdrS` at
/// 0x202) or an arm64 `Image` (`ARM\x64` at 0x38).
pub fn is_kernel_for(arch: Arch, kernel: &[u8]) -> bool {
    match arch {
        Arch::X86_64 => kernel.get(0x202..0x206) == Some(b"HdrS".as_slice()),
        Arch::Aarch64 => kernel.get(0x38..0x3c) == Some(b"ARM\x64".as_slice()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trustbridge_testkit::enclave_image::{elf, kernel_module, static_executable};

    fn stand_in(machine: u16, ptype: u32, payload: &[u8]) -> Vec<u8> {
        elf(2, machine, ptype, payload)
    }

    #[test]
    fn machines() {
        assert_eq!(machine(&kernel_module(62, b"")), Some(Arch::X86_64));
        assert_eq!(machine(&static_executable(183, b"")), Some(Arch::Aarch64));
        assert_eq!(machine(b"nope"), None);
    }

    #[test]
    fn static_and_dynamic() {
        assert_eq!(
            static_executable_arch(&stand_in(62, 1, b"code")),
            Ok(Arch::X86_64)
        );
        assert_eq!(
            static_executable_arch(&stand_in(183, 1, b"")),
            Ok(Arch::Aarch64)
        );
        assert_eq!(
            static_executable_arch(&stand_in(62, PT_INTERP, b"")),
            Err(ElfError::Dynamic("/lib64/ld-linux-x86-64.so.2".into()))
        );
        assert_eq!(
            static_executable_arch(&stand_in(40, 1, b"")),
            Err(ElfError::Machine(40))
        );
        assert_eq!(
            static_executable_arch(b"#!/bin/sh\n"),
            Err(ElfError::NotElf)
        );
        let mut cut = stand_in(62, 1, b"");
        cut[56..58].copy_from_slice(&500u16.to_le_bytes());
        assert_eq!(static_executable_arch(&cut), Err(ElfError::NotElf));
    }
}
