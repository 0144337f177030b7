//! Stand-ins for an enclave image's inputs (AWS's kernel, init and nsm.ko are not
//! redistributable; a real static sentinel takes minutes to build): bytes with the headers
//! `trustbridge eif build` checks, and a payload that makes each one distinct.

/// ELF machine number of x86-64.
pub const EM_X86_64: u16 = 62;
/// ELF machine number of aarch64.
pub const EM_AARCH64: u16 = 183;

/// A 64-bit little-endian ELF file of `e_type` for `machine` with one program header of
/// `p_type` (3, `PT_INTERP`, makes it ask for a dynamic loader), then `payload`.
pub fn elf(e_type: u16, machine: u16, p_type: u32, payload: &[u8]) -> Vec<u8> {
    let mut e = vec![0u8; 64 + 56];
    e[..4].copy_from_slice(b"\x7fELF");
    e[4] = 2; // 64-bit
    e[5] = 1; // little-endian
    e[6] = 1;
    e[16..18].copy_from_slice(&e_type.to_le_bytes());
    e[18..20].copy_from_slice(&machine.to_le_bytes());
    e[32..40].copy_from_slice(&64u64.to_le_bytes()); // program headers at 64
    e[54..56].copy_from_slice(&56u16.to_le_bytes());
    e[56..58].copy_from_slice(&1u16.to_le_bytes());
    e[64..68].copy_from_slice(&p_type.to_le_bytes());
    let interp = b"/lib64/ld-linux-x86-64.so.2\0";
    let off = e.len() as u64;
    e[64 + 8..64 + 16].copy_from_slice(&off.to_le_bytes());
    e[64 + 32..64 + 40].copy_from_slice(&(interp.len() as u64).to_le_bytes());
    e.extend_from_slice(interp);
    e.extend_from_slice(payload);
    e
}

/// A static executable (the sentinel, AWS's init).
pub fn static_executable(machine: u16, payload: &[u8]) -> Vec<u8> {
    elf(2, machine, 1, payload)
}

/// A dynamically linked executable (asks for `/lib64/ld-linux-x86-64.so.2`).
pub fn dynamic_executable(machine: u16, payload: &[u8]) -> Vec<u8> {
    elf(2, machine, 3, payload)
}

/// A kernel module (`nsm.ko`).
pub fn kernel_module(machine: u16, payload: &[u8]) -> Vec<u8> {
    elf(1, machine, 1, payload)
}

/// An x86-64 kernel image: `payload` with the boot protocol's `HdrS` at 0x202.
pub fn bzimage(payload: &[u8]) -> Vec<u8> {
    let mut k = payload.to_vec();
    if k.len() < 0x400 {
        k.resize(0x400, 0);
    }
    k[0x202..0x206].copy_from_slice(b"HdrS");
    k
}

/// An aarch64 kernel image: `payload` with `ARM\x64` at 0x38.
pub fn arm64_image(payload: &[u8]) -> Vec<u8> {
    let mut k = payload.to_vec();
    if k.len() < 0x400 {
        k.resize(0x400, 0);
    }
    k[0x38..0x3c].copy_from_slice(b"ARM\x64");
    k
}
