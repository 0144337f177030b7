//! The sentinel image end to end: reproducible bytes, PCRs checked against an independent
//! computation (another SHA-384, sections found through the header's table rather than the
//! reader's walk), ramdisks read back with an independent cpio reader, what each PCR
//! covers, signatures, and tampering twins.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::Read;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha384};
use trustbridge_eif::image::SectionKind;
use trustbridge_eif::measure::MeasureError;
use trustbridge_eif::signature::SignatureError;
use trustbridge_eif::{SentinelImage, Signer, measure};
use trustbridge_testkit::enclave_image::{
    EM_AARCH64, EM_X86_64, arm64_image, bzimage, dynamic_executable, kernel_module,
    static_executable,
};

const CONFIG: &[u8] = b"kms_url = \"http://10.0.0.1:8000\"\nkms_key = \"00\"\n";

fn inputs() -> (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>) {
    let kernel = bzimage(
        &(0..200_000u32)
            .map(|i| (i * 7 % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    let init = static_executable(EM_X86_64, b"stand-in for AWS's init");
    let nsm = kernel_module(EM_X86_64, b"stand-in nsm.ko");
    let sentinel = static_executable(EM_X86_64, &vec![0x90; 70_000]);
    (kernel, init, nsm, sentinel)
}

fn image<'a>(
    kernel: &'a [u8],
    init: &'a [u8],
    nsm: &'a [u8],
    sentinel: &'a [u8],
    config: &'a [u8],
) -> SentinelImage<'a> {
    SentinelImage {
        sentinel,
        config,
        kernel,
        init,
        nsm_ko: nsm,
        cmdline: None,
        build_time: 1_700_000_000,
    }
}

fn now() -> SystemTime {
    SystemTime::now()
}

fn be_u64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

/// The sections through the header's offset/size table: (type, data).
fn sections_by_table(eif: &[u8]) -> Vec<(u16, Vec<u8>)> {
    let count = u16::from_be_bytes([eif[26], eif[27]]) as usize;
    (0..count)
        .map(|i| {
            let off = be_u64(eif, 28 + 8 * i) as usize;
            let size = be_u64(eif, 28 + 256 + 8 * i) as usize;
            let kind = u16::from_be_bytes([eif[off], eif[off + 1]]);
            (kind, eif[off + 12..off + 12 + size].to_vec())
        })
        .collect()
}

/// SHA-384(0^48 ‖ SHA-384(parts...)) with the sha2 crate.
fn independent_pcr(parts: &[&[u8]]) -> [u8; 48] {
    let mut inner = Sha384::new();
    for p in parts {
        inner.update(p);
    }
    let mut outer = Sha384::new();
    outer.update([0u8; 48]);
    outer.update(inner.finalize());
    outer.finalize().into()
}

fn measure_bytes(eif: &[u8]) -> Result<measure::Measured, MeasureError> {
    measure(eif, eif.len() as u64, now())
}

#[test]
fn two_builds_are_byte_identical_and_measure_as_computed_independently() {
    let (kernel, init, nsm, sentinel) = inputs();
    let a = image(&kernel, &init, &nsm, &sentinel, CONFIG)
        .image()
        .unwrap();
    let b = image(
        &kernel.clone(),
        &init.clone(),
        &nsm.clone(),
        &sentinel.clone(),
        CONFIG,
    )
    .image()
    .unwrap();
    let (eif_a, m_a) = a.write(None).unwrap();
    let (eif_b, m_b) = b.write(None).unwrap();
    assert_eq!(eif_a, eif_b, "two builds from the same inputs differ");
    assert_eq!(m_a, m_b);

    let sections = sections_by_table(&eif_a);
    let kinds: Vec<u16> = sections.iter().map(|s| s.0).collect();
    assert_eq!(
        kinds,
        [1, 2, 5, 3, 3],
        "kernel, cmdline, metadata, two ramdisks"
    );
    assert_eq!(sections[0].1, kernel);
    let cmdline = &sections[1].1;
    assert!(cmdline.starts_with(b"reboot=k panic=30") && !cmdline.ends_with(b"\n"));
    let (r0, r1) = (&sections[3].1, &sections[4].1);
    assert_eq!(m_a.pcr0, independent_pcr(&[&kernel, cmdline, r0, r1]));
    assert_eq!(m_a.pcr1, independent_pcr(&[&kernel, cmdline, r0]));
    assert_eq!(m_a.pcr2, independent_pcr(&[r1]));
    assert_eq!(m_a.pcr8, None);

    // The reader recomputes the same from the file.
    let measured = measure_bytes(&eif_a).unwrap();
    assert_eq!(measured.measurements, m_a);
    assert!(!measured.aarch64);
    let meta = measured.metadata.unwrap();
    assert_eq!(
        meta["BuildMetadata"]["BuildTime"],
        "2023-11-14T22:13:20+00:00"
    );
    assert!(meta["DockerInfo"].is_null());

    // The CRC is zlib's crc32 over the file without its CRC field.
    let mut crc_input = eif_a[..544].to_vec();
    crc_input.extend_from_slice(&eif_a[548..]);
    let mut reference = trustbridge_eif::crc32::Crc32::default();
    reference.update(&crc_input);
    assert_eq!(
        u32::from_be_bytes(eif_a[544..548].try_into().unwrap()),
        reference.finish()
    );
}

/// Every entry of a cpio archive: (name, mode, uid, gid, mtime, data).
fn entries(archive: &[u8]) -> Vec<(String, u32, u32, u32, u32, Vec<u8>)> {
    let mut out = Vec::new();
    let mut rest = archive;
    loop {
        let mut r = cpio::newc::Reader::new(rest).unwrap();
        let e = r.entry();
        if e.is_trailer() {
            break;
        }
        let head = (e.name().to_owned(), e.mode(), e.uid(), e.gid(), e.mtime());
        let mut data = Vec::new();
        r.read_to_end(&mut data).unwrap();
        out.push((head.0, head.1, head.2, head.3, head.4, data));
        rest = r.finish().unwrap();
    }
    out
}

#[test]
fn the_ramdisks_hold_what_init_needs_with_fixed_owners_modes_and_times() {
    let (kernel, init, nsm, sentinel) = inputs();
    let si = image(&kernel, &init, &nsm, &sentinel, CONFIG);
    let boot = entries(&si.bootstrap_ramdisk().unwrap());
    let names: Vec<(&str, u32)> = boot.iter().map(|e| (e.0.as_str(), e.1)).collect();
    assert_eq!(
        names,
        [("dev", 0o040755), ("init", 0o100755), ("nsm.ko", 0o100755)]
    );
    assert_eq!(boot[1].5, init);
    assert_eq!(boot[2].5, nsm);

    let app_bytes = si.application_ramdisk().unwrap();
    assert_eq!(
        app_bytes.len() % 4,
        0,
        "the next ramdisk must start 4-aligned"
    );
    let app = entries(&app_bytes);
    let names: Vec<&str> = app.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "cmd",
            "env",
            "rootfs",
            "rootfs/bin",
            "rootfs/bin/tb-sentinel",
            "rootfs/dev",
            "rootfs/etc",
            "rootfs/etc/trustbridge",
            "rootfs/etc/trustbridge/sentinel.toml",
            "rootfs/proc",
            "rootfs/run",
            "rootfs/sys",
            "rootfs/tmp",
            "rootfs/var",
        ]
    );
    for e in boot.iter().chain(&app) {
        assert_eq!(
            (e.2, e.3, e.4),
            (0, 0, 0),
            "{}: owner and time are fixed",
            e.0
        );
    }
    let get = |n: &str| app.iter().find(|e| e.0 == n).unwrap();
    assert_eq!(
        get("cmd").5,
        b"/bin/tb-sentinel\n--config\n/etc/trustbridge/sentinel.toml\n"
    );
    assert_eq!(get("env").5, b"");
    assert_eq!(get("rootfs/bin/tb-sentinel").5, sentinel);
    assert_eq!(get("rootfs/bin/tb-sentinel").1, 0o100755);
    assert_eq!(get("rootfs/etc/trustbridge/sentinel.toml").5, CONFIG);
    assert_eq!(get("rootfs/etc/trustbridge/sentinel.toml").1, 0o100644);
}

#[test]
fn each_pcr_covers_what_aws_documents() {
    let (kernel, init, nsm, sentinel) = inputs();
    let base = image(&kernel, &init, &nsm, &sentinel, CONFIG)
        .image()
        .unwrap()
        .measurements();
    // The configuration (broker and provider pins) is application: PCR2 and PCR0 move.
    let other_config = b"kms_url = \"http://10.0.0.1:8000\"\nkms_key = \"01\"\n";
    let m = image(&kernel, &init, &nsm, &sentinel, other_config)
        .image()
        .unwrap()
        .measurements();
    assert_ne!(m.pcr2, base.pcr2);
    assert_ne!(m.pcr0, base.pcr0);
    assert_eq!(m.pcr1, base.pcr1);
    // So is the sentinel.
    let other_sentinel = static_executable(EM_X86_64, &vec![0x91; 70_000]);
    let m = image(&kernel, &init, &nsm, &other_sentinel, CONFIG)
        .image()
        .unwrap()
        .measurements();
    assert_ne!(m.pcr2, base.pcr2);
    assert_eq!(m.pcr1, base.pcr1);
    // The kernel, init and the command line are boot: PCR1 and PCR0 move, PCR2 does not.
    let mut other_kernel = kernel.clone();
    other_kernel[1000] ^= 1;
    for (k, i, c) in [
        (&other_kernel, &init, None),
        (
            &kernel,
            &static_executable(EM_X86_64, b"another init"),
            None,
        ),
        (&kernel, &init, Some("console=ttyS0")),
    ] {
        let mut si = image(k, i, &nsm, &sentinel, CONFIG);
        si.cmdline = c;
        let m = si.image().unwrap().measurements();
        assert_ne!(m.pcr1, base.pcr1);
        assert_ne!(m.pcr0, base.pcr0);
        assert_eq!(m.pcr2, base.pcr2);
    }
    // The metadata's build time is not measured.
    let mut later = image(&kernel, &init, &nsm, &sentinel, CONFIG);
    later.build_time += 1;
    let (eif, m) = later.image().unwrap().write(None).unwrap();
    assert_eq!(m, base);
    assert_eq!(measure_bytes(&eif).unwrap().measurements, base);
}

#[test]
fn a_dynamic_sentinel_is_refused() {
    let (kernel, init, nsm, _) = inputs();
    let dynamic = dynamic_executable(EM_X86_64, b"");
    let err = image(&kernel, &init, &nsm, &dynamic, CONFIG)
        .image()
        .unwrap_err();
    assert!(err.to_string().contains("dynamically linked"), "{err}");
    let script = b"#!/bin/sh\necho hi\n".to_vec();
    assert!(
        image(&kernel, &init, &nsm, &script, CONFIG)
            .image()
            .is_err()
    );
}

#[test]
fn inputs_for_another_architecture_are_refused() {
    let (kernel, init, nsm, sentinel) = inputs();
    // An aarch64 sentinel with x86-64 kernel, init and module: it would not boot.
    let arm = static_executable(EM_AARCH64, b"sentinel");
    let err = image(&kernel, &init, &nsm, &arm, CONFIG)
        .image()
        .unwrap_err();
    assert!(err.to_string().contains("the kernel"), "{err}");
    let arm_kernel = arm64_image(b"kernel");
    let err = image(&arm_kernel, &init, &nsm, &arm, CONFIG)
        .image()
        .unwrap_err();
    assert!(err.to_string().contains("init"), "{err}");
    let arm_init = static_executable(EM_AARCH64, b"init");
    let err = image(&arm_kernel, &arm_init, &nsm, &arm, CONFIG)
        .image()
        .unwrap_err();
    assert!(err.to_string().contains("nsm.ko"), "{err}");
    let arm_nsm = kernel_module(EM_AARCH64, b"nsm");
    let arm_image = image(&arm_kernel, &arm_init, &arm_nsm, &arm, CONFIG)
        .image()
        .unwrap();
    assert_eq!(arm_image.arch, trustbridge_eif::Arch::Aarch64);
    assert!(arm_image.cmdline.ends_with("root=/dev/ram0"));
    let (eif, _) = arm_image.write(None).unwrap();
    assert!(measure_bytes(&eif).unwrap().aarch64);
    // An x86-64 sentinel with a kernel that is no bzImage.
    let err = image(b"not a kernel", &init, &nsm, &sentinel, CONFIG)
        .image()
        .unwrap_err();
    assert!(err.to_string().contains("kernel"), "{err}");
}

fn fix_crc(eif: &mut [u8]) {
    let mut c = trustbridge_eif::crc32::Crc32::default();
    c.update(&eif[..544]);
    c.update(&eif[548..]);
    let v = c.finish().to_be_bytes();
    eif[544..548].copy_from_slice(&v);
}

#[test]
fn tampered_images_are_refused_or_measure_differently() {
    let (kernel, init, nsm, sentinel) = inputs();
    let (eif, m) = image(&kernel, &init, &nsm, &sentinel, CONFIG)
        .image()
        .unwrap()
        .write(None)
        .unwrap();
    // A flipped byte in the application ramdisk: the CRC catches it...
    let mut flipped = eif.clone();
    let last = flipped.len() - 600;
    flipped[last] ^= 1;
    assert!(matches!(
        measure_bytes(&flipped),
        Err(MeasureError::Crc { .. })
    ));
    // ...and with the CRC recomputed, the PCRs show it.
    fix_crc(&mut flipped);
    let other = measure_bytes(&flipped).unwrap().measurements;
    assert_ne!(other.pcr2, m.pcr2);
    assert_eq!(other.pcr1, m.pcr1);
    // Truncated anywhere.
    for cut in [3, 100, 548, 560, eif.len() - 1] {
        assert!(measure_bytes(&eif[..cut]).is_err(), "cut at {cut}");
    }
    // A section size beyond the file is refused before anything is allocated for it.
    let mut huge = eif.clone();
    let kernel_header = 548;
    huge[kernel_header + 4..kernel_header + 12].copy_from_slice(&u64::MAX.to_be_bytes());
    huge[28 + 256..28 + 264].copy_from_slice(&u64::MAX.to_be_bytes());
    assert!(matches!(measure_bytes(&huge), Err(MeasureError::Truncated)));
    // A section table that does not describe the file.
    let mut table = eif.clone();
    table[28 + 8..28 + 16].copy_from_slice(&1u64.to_be_bytes());
    fix_crc(&mut table);
    assert!(matches!(
        measure_bytes(&table),
        Err(MeasureError::SectionTable)
    ));
    // An unknown section type.
    let mut kind = eif.clone();
    kind[548..550].copy_from_slice(&9u16.to_be_bytes());
    fix_crc(&mut kind);
    assert!(matches!(
        measure_bytes(&kind),
        Err(MeasureError::SectionType(9))
    ));
    // Not an EIF.
    assert!(matches!(
        measure_bytes(b"\x7fELF and more"),
        Err(MeasureError::Magic)
    ));
    // The section kinds as found.
    let found: Vec<SectionKind> = measure_bytes(&eif)
        .unwrap()
        .sections
        .iter()
        .map(|s| s.0)
        .collect();
    assert_eq!(
        found,
        [
            SectionKind::Kernel,
            SectionKind::Cmdline,
            SectionKind::Metadata,
            SectionKind::Ramdisk,
            SectionKind::Ramdisk
        ]
    );
}

/// `eif` with its last section's data replaced (section header and table updated).
fn replace_last_section(eif: &[u8], data: &[u8]) -> Vec<u8> {
    let count = u16::from_be_bytes([eif[26], eif[27]]) as usize;
    let i = count - 1;
    let off = be_u64(eif, 28 + 8 * i) as usize;
    let mut out = eif[..off + 4].to_vec();
    out.extend_from_slice(&(data.len() as u64).to_be_bytes());
    out.extend_from_slice(data);
    out[28 + 256 + 8 * i..28 + 256 + 8 * i + 8].copy_from_slice(&(data.len() as u64).to_be_bytes());
    out
}

fn p384_certificate(not_after_year: i32) -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["eif-signer.example".into()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "eif-signer.example");
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(not_after_year, 1, 1);
    (params.self_signed(&key).unwrap(), key)
}

#[test]
fn a_signed_image_has_pcr8_of_its_certificate_and_a_signature_that_holds() {
    let (kernel, init, nsm, sentinel) = inputs();
    let (cert, key) = p384_certificate(2099);
    let signer =
        Signer::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes(), now()).unwrap();
    let img = image(&kernel, &init, &nsm, &sentinel, CONFIG)
        .image()
        .unwrap();
    let (eif, m) = img.write(Some(&signer)).unwrap();
    assert_eq!(m.pcr8, Some(independent_pcr(&[cert.der()])));
    // Signing changes no other PCR.
    assert_eq!(
        (m.pcr0, m.pcr1, m.pcr2),
        (
            img.measurements().pcr0,
            img.measurements().pcr1,
            img.measurements().pcr2
        )
    );
    let measured = measure_bytes(&eif).unwrap();
    assert_eq!(measured.measurements, m);
    assert!(measured.signer.unwrap().contains("eif-signer.example"));

    // A signature over another image (PCR0 differs) moved onto this one.
    let other = image(&kernel, &init, &nsm, &sentinel, b"kms_key = \"ff\"\n")
        .image()
        .unwrap();
    let (other_eif, _) = other.write(Some(&signer)).unwrap();
    let sig_of = |e: &[u8]| sections_by_table(e).pop().unwrap().1;
    let mut swapped = replace_last_section(&eif, &sig_of(&other_eif));
    fix_crc(&mut swapped);
    assert!(matches!(
        measure_bytes(&swapped),
        Err(MeasureError::Signature(SignatureError::WrongImage))
    ));
    // A flipped bit in the ECDSA signature (the last bytes of the section are the
    // signature's, as CBOR integers: flip one of their low bits).
    let mut forged = eif.clone();
    let n = forged.len();
    forged[n - 1] ^= 1;
    fix_crc(&mut forged);
    assert!(matches!(
        measure_bytes(&forged),
        Err(MeasureError::Signature(
            SignatureError::BadSignature | SignatureError::Malformed(_)
        ))
    ));
    // Measured after the certificate expired: refused (nitro-cli would not launch it).
    let late = now() + Duration::from_secs(100 * 365 * 86_400);
    assert!(matches!(
        measure(&eif[..], eif.len() as u64, late),
        Err(MeasureError::Signature(SignatureError::Validity(_)))
    ));
}

#[test]
fn signing_inputs_are_checked() {
    let (cert, key) = p384_certificate(2099);
    let (_, other_key) = p384_certificate(2099);
    let err = Signer::from_pem(
        cert.pem().as_bytes(),
        other_key.serialize_pem().as_bytes(),
        now(),
    )
    .unwrap_err();
    assert!(matches!(err, SignatureError::KeyMismatch), "{err}");
    let (expired, expired_key) = p384_certificate(2021);
    assert!(matches!(
        Signer::from_pem(
            expired.pem().as_bytes(),
            expired_key.serialize_pem().as_bytes(),
            now()
        ),
        Err(SignatureError::Validity(_))
    ));
    let p256 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let p256_cert = rcgen::CertificateParams::new(vec!["x".into()])
        .unwrap()
        .self_signed(&p256)
        .unwrap();
    assert!(matches!(
        Signer::from_pem(
            p256_cert.pem().as_bytes(),
            p256.serialize_pem().as_bytes(),
            now()
        ),
        Err(SignatureError::NotP384)
    ));
    assert!(matches!(
        Signer::from_pem(cert.pem().as_bytes(), b"not a key", now()),
        Err(SignatureError::Key)
    ));
    assert!(matches!(
        Signer::from_pem(b"junk", key.serialize_pem().as_bytes(), now()),
        Err(SignatureError::Certificate)
    ));
}
