//! The request and response handling around the ioctls, against a scripted device.

use std::cell::RefCell;

use super::*;
use crate::attestation::configfs_tsm::guid;

const EIO: i32 = 5;
const ENOTTY: i32 = 25;

/// A device that answers as scripted and records the certificate-buffer sizes it saw.
#[derive(Default)]
struct Scripted {
    /// The certificate table the host holds (empty: none).
    table: Vec<u8>,
    /// `SNP_GET_EXT_REPORT` fails with this (no length hint).
    ext_error: Option<GuestRequestError>,
    /// `SNP_GET_REPORT` fails with this.
    plain_error: Option<GuestRequestError>,
    /// The firmware's status word.
    status: u32,
    /// The report size the firmware claims.
    report_size: Option<u32>,
    /// The report carries other report data than asked for.
    wrong_data: bool,
    ext_calls: RefCell<Vec<usize>>,
    plain_calls: RefCell<usize>,
}

impl Scripted {
    fn respond(
        &self,
        request: &[u8; REPORT_REQUEST_LEN],
        response: &mut [u8; REPORT_RESPONSE_LEN],
    ) {
        response[..4].copy_from_slice(&self.status.to_le_bytes());
        let size = self.report_size.unwrap_or(REPORT_LEN as u32);
        response[4..8].copy_from_slice(&size.to_le_bytes());
        let report = &mut response[0x20..0x20 + REPORT_LEN];
        report[0x50..0x90].copy_from_slice(&request[..64]);
        if self.wrong_data {
            report[0x50] ^= 1;
        }
    }
}

fn invalid_len() -> GuestRequestError {
    GuestRequestError {
        errno: EIO,
        fw_error: 0,
        vmm_error: VMM_ERR_INVALID_LEN,
    }
}

impl GuestDevice for Scripted {
    fn get_report(
        &self,
        request: &[u8; REPORT_REQUEST_LEN],
        response: &mut [u8; REPORT_RESPONSE_LEN],
    ) -> Result<(), GuestRequestError> {
        *self.plain_calls.borrow_mut() += 1;
        if let Some(e) = &self.plain_error {
            return Err(e.clone());
        }
        self.respond(request, response);
        Ok(())
    }

    fn get_ext_report(
        &self,
        request: &[u8; REPORT_REQUEST_LEN],
        response: &mut [u8; REPORT_RESPONSE_LEN],
        certs: &mut [u8],
    ) -> Result<(), (GuestRequestError, Option<usize>)> {
        self.ext_calls.borrow_mut().push(certs.len());
        if let Some(e) = &self.ext_error {
            return Err((e.clone(), None));
        }
        assert_eq!(certs.len() % CERT_PAGE, 0, "the kernel wants whole pages");
        if certs.len() < self.table.len() {
            return Err((invalid_len(), Some(self.table.len())));
        }
        certs[..self.table.len()].copy_from_slice(&self.table);
        self.respond(request, response);
        Ok(())
    }
}

/// A GHCB certificate table with VCEK, ASK and ARK, each `each` bytes long.
fn table(each: usize) -> Vec<u8> {
    let ids = [
        guid("63da758d-e664-4564-adc5-f4b93be8accd"),
        guid("4ab7b379-bbac-4fe4-a02f-05aef327c782"),
        guid("c0b406a4-a803-4952-9743-3fb6014cd0ae"),
    ];
    let mut t = Vec::new();
    let start = 24 * 4;
    for (i, id) in ids.iter().enumerate() {
        t.extend_from_slice(id);
        t.extend_from_slice(&((start + i * each) as u32).to_le_bytes());
        t.extend_from_slice(&(each as u32).to_le_bytes());
    }
    t.extend_from_slice(&[0; 24]);
    for fill in [b'V', b'S', b'R'] {
        t.extend(std::iter::repeat_n(fill, each));
    }
    t
}

const DATA: [u8; 64] = [0x5a; 64];

#[test]
fn request_carries_the_report_data_at_vmpl_0() {
    let mut data = [0u8; 64];
    data.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
    let req = report_request(&data);
    assert_eq!(&req[..64], &data);
    assert!(
        req[64..].iter().all(|&b| b == 0),
        "VMPL 0, reserved bytes zero"
    );
}

#[test]
fn extended_report_returns_the_report_and_the_vcek_chain() {
    let dev = Scripted {
        table: table(100),
        ..Default::default()
    };
    let ev = request_evidence(&dev, &DATA).unwrap();
    assert_eq!(ev.platform, trustbridge_protocol::Platform::Snp);
    assert_eq!(ev.bytes.len(), REPORT_LEN);
    assert_eq!(&ev.bytes[0x50..0x90], &DATA);
    assert_eq!(ev.certificates.len(), 3);
    assert_eq!(ev.certificates[0], vec![b'V'; 100], "VCEK first");
    assert_eq!(ev.certificates[2], vec![b'R'; 100], "ARK last");
    assert_eq!(*dev.ext_calls.borrow(), vec![CERT_PAGE]);
    assert_eq!(*dev.plain_calls.borrow(), 0);
}

#[test]
fn a_larger_certificate_table_is_fetched_with_a_buffer_of_whole_pages() {
    let dev = Scripted {
        table: table(3000),
        ..Default::default()
    };
    let ev = request_evidence(&dev, &DATA).unwrap();
    assert_eq!(ev.certificates.len(), 3);
    assert_eq!(ev.certificates[1], vec![b'S'; 3000]);
    // 96 + 9000 bytes need three pages; asked once more, not in a loop.
    assert_eq!(*dev.ext_calls.borrow(), vec![CERT_PAGE, 3 * CERT_PAGE]);
}

#[test]
fn a_table_beyond_the_kernel_limit_is_an_error_that_says_so() {
    let dev = Scripted {
        table: table(6000),
        ..Default::default()
    };
    let err = request_evidence(&dev, &DATA).unwrap_err().to_string();
    assert!(
        err.contains("18096 bytes") && err.contains("16384"),
        "{err}"
    );
    assert!(err.contains("certificate buffer too small"), "{err}");
}

#[test]
fn without_the_extended_request_a_plain_report_is_used() {
    let dev = Scripted {
        ext_error: Some(GuestRequestError {
            errno: ENOTTY,
            fw_error: 0,
            vmm_error: 0,
        }),
        ..Default::default()
    };
    let ev = request_evidence(&dev, &DATA).unwrap();
    assert_eq!(&ev.bytes[0x50..0x90], &DATA);
    assert!(ev.certificates.is_empty());
    assert_eq!(*dev.plain_calls.borrow(), 1);
}

#[test]
fn when_both_requests_fail_the_error_gives_both_reasons() {
    let dev = Scripted {
        ext_error: Some(GuestRequestError {
            errno: EIO,
            fw_error: 0,
            vmm_error: 7,
        }),
        plain_error: Some(GuestRequestError {
            errno: EIO,
            fw_error: 0x16,
            vmm_error: 0,
        }),
        ..Default::default()
    };
    let err = request_evidence(&dev, &DATA).unwrap_err().to_string();
    assert!(
        err.starts_with("snp-sev-guest: SNP_GET_EXT_REPORT"),
        "{err}"
    );
    assert!(err.contains("hypervisor error 7"), "{err}");
    assert!(
        err.contains("SNP_GET_REPORT") && err.contains("firmware error 0x16"),
        "{err}"
    );
}

#[test]
fn a_firmware_status_or_a_wrong_size_is_refused() {
    let dev = Scripted {
        status: 0x16,
        ..Default::default()
    };
    let err = request_evidence(&dev, &DATA).unwrap_err().to_string();
    assert!(err.contains("status 0x16 (invalid parameters)"), "{err}");
    let dev = Scripted {
        report_size: Some(1000),
        ..Default::default()
    };
    let err = request_evidence(&dev, &DATA).unwrap_err().to_string();
    assert!(err.contains("1000-byte report"), "{err}");
}

#[test]
fn a_report_with_other_report_data_is_refused() {
    let dev = Scripted {
        wrong_data: true,
        ..Default::default()
    };
    let err = request_evidence(&dev, &DATA).unwrap_err().to_string();
    assert!(
        err.contains("does not carry the requested report data"),
        "{err}"
    );
}

#[test]
fn a_missing_device_is_named() {
    let pins = crate::authorize::Pins {
        broker: trustbridge_protocol::key_release::BrokerKey::from_bytes([4; 32]),
        provider: None,
    };
    let b = crate::authorize::binding_for(
        &crate::keys::SentinelKeys::generate().unwrap(),
        &pins,
        &[1; 32],
    );
    let err = SevGuest::new("/nonexistent/sev-guest")
        .evidence(&b)
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/sev-guest"), "{err}");
}
