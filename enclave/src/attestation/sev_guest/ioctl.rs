//! The `/dev/sev-guest` ioctls (`SNP_GET_REPORT`, `SNP_GET_EXT_REPORT`), as
//! `include/uapi/linux/sev-guest.h` declares them.
//!
//! Besides `enclave::memory`, this is the sentinel's only module with `unsafe`: one
//! `ioctl(2)` call, on structures laid out as the kernel's (`#[repr(C)]`, sizes checked at
//! compile time), whose buffer addresses point at memory that outlives the call.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::path::Path;

use rustix::ioctl::{Opcode, Updater, ioctl, opcode};

use super::{
    GuestDevice, GuestRequestError, REPORT_REQUEST_LEN, REPORT_RESPONSE_LEN, VMM_ERR_INVALID_LEN,
};

/// `struct snp_guest_request_ioctl`.
#[repr(C)]
struct GuestRequest {
    /// Message version; 1 is the only one defined.
    msg_version: u8,
    /// Address of the request structure.
    req_data: u64,
    /// Address of the response structure.
    resp_data: u64,
    /// Firmware error (low 32 bits) and hypervisor error (high 32 bits).
    exitinfo2: u64,
}

/// `struct snp_ext_report_req`.
#[repr(C)]
struct ExtReportRequest {
    /// `struct snp_report_req`.
    data: [u8; REPORT_REQUEST_LEN],
    /// Address of the certificate buffer.
    certs_address: u64,
    /// Its length, a multiple of the page size; the kernel writes back the length the host
    /// needs when it is too small.
    certs_len: u32,
}

const _: () = assert!(std::mem::size_of::<GuestRequest>() == 32);
const _: () = assert!(std::mem::size_of::<ExtReportRequest>() == 112);

const SNP_GET_REPORT: Opcode = opcode::read_write::<GuestRequest>(b'S', 0x0);
const SNP_GET_EXT_REPORT: Opcode = opcode::read_write::<GuestRequest>(b'S', 0x2);

/// An open `/dev/sev-guest`.
pub(super) struct Device(File);

impl Device {
    /// Opens the device read-write, as the ioctls require.
    pub(super) fn open(path: &Path) -> std::io::Result<Self> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map(Self)
    }

    fn call<const OP: Opcode>(&self, io: &mut GuestRequest) -> Result<(), GuestRequestError> {
        // SAFETY: `OP` is one of the two opcodes above, both of which take a
        // `struct snp_guest_request_ioctl`, which `GuestRequest` reproduces (size asserted
        // above). Its `req_data` and `resp_data` point at live structures of the types the
        // opcode expects, borrowed by the caller for the whole call.
        let result = unsafe { ioctl(&self.0, Updater::<OP, GuestRequest>::new(io)) };
        result.map_err(|errno| GuestRequestError {
            errno: errno.raw_os_error(),
            fw_error: io.exitinfo2 as u32,
            vmm_error: (io.exitinfo2 >> 32) as u32,
        })
    }
}

impl GuestDevice for Device {
    fn get_report(
        &self,
        request: &[u8; REPORT_REQUEST_LEN],
        response: &mut [u8; REPORT_RESPONSE_LEN],
    ) -> Result<(), GuestRequestError> {
        let mut io = GuestRequest {
            msg_version: 1,
            req_data: request.as_ptr() as u64,
            resp_data: response.as_mut_ptr() as u64,
            exitinfo2: 0,
        };
        self.call::<SNP_GET_REPORT>(&mut io)
    }

    fn get_ext_report(
        &self,
        request: &[u8; REPORT_REQUEST_LEN],
        response: &mut [u8; REPORT_RESPONSE_LEN],
        certs: &mut [u8],
    ) -> Result<(), (GuestRequestError, Option<usize>)> {
        let mut ext = ExtReportRequest {
            data: *request,
            certs_address: certs.as_mut_ptr() as u64,
            certs_len: u32::try_from(certs.len()).unwrap_or(u32::MAX),
        };
        let mut io = GuestRequest {
            msg_version: 1,
            req_data: std::ptr::addr_of_mut!(ext) as u64,
            resp_data: response.as_mut_ptr() as u64,
            exitinfo2: 0,
        };
        self.call::<SNP_GET_EXT_REPORT>(&mut io).map_err(|e| {
            let needed = (e.vmm_error == VMM_ERR_INVALID_LEN).then_some(ext.certs_len as usize);
            (e, needed)
        })
    }
}
