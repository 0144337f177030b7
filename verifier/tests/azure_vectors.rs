//! Real Azure vTPM SNP evidence from ../shared/vectors/azure-snp-vtpm, verified at a fixed
//! time, with the tamperings listed in its EXPECTED.json.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use trustbridge_testkit::{hex_decode, vectors_dir};
use trustbridge_verifier::hcl_report::HclReport;
use trustbridge_verifier::tpm_quote::TpmQuote;
use trustbridge_verifier::x509::ParsedCertificate;
use trustbridge_verifier::{
    AzureEvidence, Checks, Platform, Policy, PolicyError, TrustRoots, VerifyError, verify_azure,
};

/// 2025-02-19T00:00:00Z: inside every VCEK's validity.
fn fixed() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_739_923_200)
}

fn dir() -> Option<PathBuf> {
    vectors_dir("azure-snp-vtpm").map(|d| d.join("azure-snp-vtpm"))
}

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(dir().unwrap().join(rel)).unwrap()
}

fn milan_chain() -> Vec<ParsedCertificate> {
    let amd = dir().unwrap().join("../sev-snp/amd-certs");
    let mut v = ParsedCertificate::from_pem_chain(
        &std::fs::read(amd.join("milan_ask.pem")).unwrap(),
        "ask",
    )
    .unwrap();
    v.extend(
        ParsedCertificate::from_pem_chain(
            &std::fs::read(amd.join("milan_ark.pem")).unwrap(),
            "ark",
        )
        .unwrap(),
    );
    v
}

fn expected() -> serde_json::Value {
    serde_json::from_slice(&read("EXPECTED.json")).unwrap()
}

/// hcl-report.bin + tpm-quote-v1.json + vcek.pem (VCEK, ASK, ARK).
fn raw_set() -> AzureEvidence {
    let quote: serde_json::Value =
        serde_json::from_slice(&read("trustee/tpm-quote-v1.json")).unwrap();
    AzureEvidence {
        hcl_report: read("trustee/hcl-report.bin"),
        quote_message: hex_decode(quote["message"].as_str().unwrap()),
        quote_signature: hex_decode(quote["signature"].as_str().unwrap()),
        pcrs: quote["pcrs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| hex_decode(p.as_str().unwrap()).try_into().unwrap())
            .collect(),
        certificates: ParsedCertificate::from_pem_chain(&read("trustee/vcek.pem"), "vcek").unwrap(),
    }
}

#[test]
fn evidence_json_versions_0_to_2_verify() {
    if dir().is_none() {
        return;
    }
    let exp = expected();
    for name in [
        "trustee/evidence-v0.json",
        "trustee/evidence-v1.json",
        "trustee/evidence-v2.json",
    ] {
        let e = &exp[name];
        let ev =
            AzureEvidence::from_json(&read(name)).unwrap_or_else(|err| panic!("{name}: {err}"));
        let v = verify_azure(&ev, &milan_chain(), &TrustRoots::production(), fixed())
            .unwrap_or_else(|err| panic!("{name}: {err}"));
        assert_eq!(v.platform, Platform::AzureSnpVtpm);
        assert_eq!(
            v.measurements["measurement"],
            hex_decode(e["measurement"].as_str().unwrap()),
            "{name}"
        );
        assert_eq!(
            v.measurements["chip_id"],
            hex_decode(e["chip_id"].as_str().unwrap()),
            "{name}"
        );
        assert_eq!(
            v.measurements["tpm_pcr0"],
            hex_decode(e["pcr00"].as_str().unwrap()),
            "{name}"
        );
        let nonce = hex_decode(
            e["tpm_quote_extraData_hex (= expected nonce/report_data)"]
                .as_str()
                .unwrap(),
        );
        assert_eq!(v.binding.quote_nonce.as_deref(), Some(&nonce[..]), "{name}");
        let user_data = hex_decode(
            &e["hcl_var_data"]["user-data"]
                .as_str()
                .unwrap()
                .to_lowercase(),
        );
        assert_eq!(
            v.binding.hcl_user_data.as_deref(),
            Some(&user_data[..]),
            "{name}"
        );
        let p = Policy {
            nonce: Some(nonce),
            ..Policy::default()
        };
        assert_eq!(p.check(&v, &mut Checks::default()), Ok(()), "{name}");
    }
}

#[test]
fn raw_hcl_report_with_quote_and_vcek_bundle_verifies() {
    if dir().is_none() {
        return;
    }
    let e = &expected()["trustee/hcl-report.bin + tpm-quote-v1.json + vcek.pem"];
    let v = verify_azure(&raw_set(), &[], &TrustRoots::production(), fixed()).unwrap();
    assert_eq!(
        v.measurements["measurement"],
        hex_decode(e["measurement"].as_str().unwrap())
    );
    assert_eq!(
        v.measurements["tpm_pcr0"],
        hex_decode(e["pcr00"].as_str().unwrap())
    );
    assert_eq!(v.facts["reported_tcb"], "bl=3 tee=0 snp=8 ucode=115");
    assert_eq!(v.binding.quote_nonce.as_deref(), Some(&b"challenge"[..]));
    assert_eq!(
        v.binding.hcl_user_data,
        Some(vec![0; 64]),
        "user-data is present and all zero"
    );
}

#[test]
fn trustee_tamperings_are_rejected_each_with_its_reason() {
    if dir().is_none() {
        return;
    }
    let verify = |ev: &AzureEvidence| verify_azure(ev, &[], &TrustRoots::production(), fixed());
    // byte 0x1a6 := 0 changes the SNP report's reported TCB: its signature no longer holds.
    let mut ev = raw_set();
    ev.hcl_report[0x1a6] = 0;
    assert_eq!(
        verify(&ev).unwrap_err(),
        VerifyError::Signature { what: "SNP report" }
    );
    // byte 0x6e0 += 1 changes the variable data: it no longer matches REPORT_DATA.
    let mut ev = raw_set();
    ev.hcl_report[0x6e0] = ev.hcl_report[0x6e0].wrapping_add(1);
    assert!(
        matches!(verify(&ev).unwrap_err(), VerifyError::Binding(m) if m.contains("variable data"))
    );
    // byte 0x540 := 0 breaks the attestation key in the variable data.
    let mut ev = raw_set();
    ev.hcl_report[0x540] = 0;
    assert!(matches!(
        verify(&ev).unwrap_err(),
        VerifyError::Malformed {
            what: "HCL report",
            ..
        }
    ));
    // A flipped quote signature.
    let mut ev = raw_set();
    ev.quote_signature[0] ^= 1;
    assert_eq!(
        verify(&ev).unwrap_err(),
        VerifyError::Signature { what: "TPM quote" }
    );
    // A flipped PCR.
    let mut ev = raw_set();
    ev.pcrs[0][0] ^= 1;
    assert!(matches!(verify(&ev).unwrap_err(), VerifyError::Binding(m) if m.contains("PCR")));
    // The nonce reversed: verification holds, the policy rejects it.
    let v = verify(&raw_set()).unwrap();
    let reversed: Vec<u8> = b"challenge".iter().rev().copied().collect();
    let p = Policy {
        nonce: Some(reversed),
        ..Policy::default()
    };
    assert!(matches!(
        p.check(&v, &mut Checks::default()),
        Err(PolicyError::NonceMismatch { .. })
    ));
    // A flipped quote message byte (inside extraData).
    let mut ev = raw_set();
    let pos = ev
        .quote_message
        .windows(9)
        .position(|w| w == b"challenge")
        .unwrap();
    ev.quote_message[pos] ^= 1;
    assert_eq!(
        verify(&ev).unwrap_err(),
        VerifyError::Signature { what: "TPM quote" }
    );
    // Wrong root and expiry.
    assert!(matches!(
        verify_azure(&raw_set(), &[], &TrustRoots::empty(), fixed()),
        Err(VerifyError::UntrustedRoot { .. })
    ));
    let later = UNIX_EPOCH + Duration::from_secs(1_900_000_000); // 2030-03-17, VCEK valid to 2030-05-02
    assert!(verify_azure(&raw_set(), &[], &TrustRoots::production(), later).is_ok());
    let expired = UNIX_EPOCH + Duration::from_secs(1_910_000_000);
    assert!(matches!(
        verify_azure(&raw_set(), &[], &TrustRoots::production(), expired),
        Err(VerifyError::CertificateExpired { .. })
    ));
}

#[test]
fn kinvolk_hcl_report_binding_and_bincode_quote() {
    if dir().is_none() {
        return;
    }
    let exp = expected();
    // The older 2048-byte HCL report: parse and var-data binding only (not paired with a VCEK).
    let hcl = HclReport::parse(&read("kinvolk/hcl-report-snp.bin")).unwrap();
    let snp = trustbridge_verifier::snp_report::SnpReport::parse(&hcl.snp_report).unwrap();
    assert_eq!(
        hex::encode(snp.measurement),
        exp["kinvolk/hcl-report-snp.bin"]["measurement"]
            .as_str()
            .unwrap()
    );
    assert_eq!(&snp.report_data[..32], &hcl.var_data_digest().unwrap()[..]);
    assert_eq!(hcl.user_data, None);

    // quote.bin: u64le len + signature | u64le len + TPMS_ATTEST | u64le count + 32-byte PCRs.
    let raw = read("kinvolk/quote.bin");
    let mut pos = 0;
    let mut next = |len: usize| {
        let v = raw[pos..pos + len].to_vec();
        pos += len;
        v
    };
    let le = |b: Vec<u8>| u64::from_le_bytes(b.try_into().unwrap()) as usize;
    let sig_len = le(next(8));
    let sig = next(sig_len);
    let msg_len = le(next(8));
    let msg = next(msg_len);
    let count = le(next(8));
    let pcrs: Vec<[u8; 32]> = (0..count).map(|_| next(32).try_into().unwrap()).collect();
    let quote = TpmQuote::parse(&msg).unwrap();
    assert_eq!(quote.extra_data, b"challenge");
    assert_eq!(quote.covered_pcrs(&pcrs).unwrap().len(), 24);
    let mut bad = pcrs.clone();
    bad[3][0] ^= 1;
    assert!(quote.covered_pcrs(&bad).is_err());
    assert!(quote.covered_pcrs(&pcrs[..23]).is_err(), "one value short");
    let mut extra = pcrs.clone();
    extra.push([7; 32]);
    assert!(
        quote.covered_pcrs(&extra).is_err(),
        "a value no PCR is selected for"
    );
    // Signature with akpub.pem (SPKI): check through aws-lc-rs directly.
    let pem = String::from_utf8(read("kinvolk/akpub.pem")).unwrap();
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let spki = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).unwrap();
    use x509_cert::der::Decode;
    let spki = x509_cert::spki::SubjectPublicKeyInfoOwned::from_der(&spki).unwrap();
    let key = aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
        spki.subject_public_key.raw_bytes(),
    );
    key.verify(&msg, &sig).unwrap();
}

#[test]
fn malformed_evidence_json_is_rejected() {
    for bad in [
        &b"not json"[..],
        b"{}",
        b"{\"version\": 3}",
        b"{\"version\": 1, \"hcl_report\": \"!!\"}",
    ] {
        assert!(
            matches!(
                AzureEvidence::from_json(bad),
                Err(VerifyError::Malformed { .. })
            ),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}
