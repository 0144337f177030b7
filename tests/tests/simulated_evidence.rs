//! Simulated TEE evidence: real formats, verified only with the simulation root passed
//! explicitly, rejected by the default policy, and with tampering twins for the checks that
//! real vectors cannot reach (chip id, TCB, binding).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use trustbridge_protocol::binding::EvidenceBinding;
use trustbridge_verifier::simulated::{NitroSpec, SIM_TCB, SimulatedTee, SnpSpec};
use trustbridge_verifier::{
    Checks, Policy, PolicyError, TrustRoots, VerifyError, check_binding, verify_nitro, verify_snp,
};

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_795_219_200) // 2026-11-21
}

fn binding(nonce: u8) -> EvidenceBinding {
    EvidenceBinding {
        nonce: vec![nonce; 32],
        ohttp_keys_sha256: [1; 32],
        receipt_key: [2; 32],
        release_key: [3; 32],
        broker_key: [4; 32],
        provider_key: None,
        manifest_sha256: None,
    }
}

/// `tb-verify` with `args`, its exit code and its `--json` answer.
fn tb_verify_json(args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let out = trustbridge_tests::run("tb-verify", args);
    let json = serde_json::from_slice(&out.stdout).unwrap();
    (out.status.code(), json)
}

/// The simulated ARK and ASK written into `dir`, as `--simulation-root` arguments.
fn snp_simulation_roots(sim: &SimulatedTee, dir: &std::path::Path) -> Vec<String> {
    let mut args = Vec::new();
    for (name, cert) in [("ark.der", 2), ("ask.der", 1)] {
        let path = dir.join(name);
        std::fs::write(&path, sim.snp_certificates()[cert].der()).unwrap();
        args.extend(["--simulation-root".to_owned(), trustbridge_tests::s(&path)]);
    }
    args
}

fn sim_policy() -> Policy {
    Policy {
        allow_simulated: true,
        ..Policy::default()
    }
}

#[test]
fn simulated_nitro_verifies_only_with_the_simulation_root() {
    let sim = SimulatedTee::new().unwrap();
    let doc = sim.nitro_document(&NitroSpec::default()).unwrap();
    let err = verify_nitro(&doc, &TrustRoots::production(), now()).unwrap_err();
    assert!(matches!(err, VerifyError::UntrustedRoot { .. }), "{err}");
    let other = SimulatedTee::new().unwrap();
    let err = verify_nitro(&doc, &other.trust_roots(), now()).unwrap_err();
    assert!(
        matches!(err, VerifyError::UntrustedRoot { .. }),
        "another simulator's root: {err}"
    );

    let ev = verify_nitro(&doc, &sim.trust_roots(), now()).unwrap();
    assert!(ev.simulated);
    assert!(ev.facts["module_id"].starts_with("sim-"));
    assert_eq!(ev.measurements["pcr0"], vec![0x10; 48]);
    assert!(
        ev.chain
            .iter()
            .all(|c| c.subject.contains("TrustBridge SIMULATION"))
    );
    assert_eq!(
        Policy::default().check(&ev, &mut Checks::default()),
        Err(PolicyError::Simulated)
    );
    assert_eq!(sim_policy().check(&ev, &mut Checks::default()), Ok(()));
}

#[test]
fn simulated_nitro_binding_and_debug() {
    let sim = SimulatedTee::new().unwrap();
    let b = binding(9);
    let doc = sim
        .nitro_document(&NitroSpec::default().bind(&b).unwrap())
        .unwrap();
    let ev = verify_nitro(&doc, &sim.trust_roots(), now()).unwrap();
    assert_eq!(check_binding(&ev, &b), Ok(()));
    let mut other = b.clone();
    other.release_key[0] ^= 1;
    assert!(matches!(
        check_binding(&ev, &other),
        Err(PolicyError::BindingMismatch(_))
    ));
    let p = Policy {
        binding: Some(b.clone()),
        nonce: Some(b.nonce.clone()),
        ..sim_policy()
    };
    assert_eq!(p.check(&ev, &mut Checks::default()), Ok(()));
    let wrong_nonce = Policy {
        nonce: Some(vec![8; 32]),
        ..sim_policy()
    };
    assert!(matches!(
        wrong_nonce.check(&ev, &mut Checks::default()),
        Err(PolicyError::NonceMismatch { .. })
    ));

    let mut debug = NitroSpec::default();
    debug.pcrs.insert(0, vec![0; 48]);
    let ev = verify_nitro(
        &sim.nitro_document(&debug).unwrap(),
        &sim.trust_roots(),
        now(),
    )
    .unwrap();
    assert!(ev.debug);
    assert_eq!(
        sim_policy().check(&ev, &mut Checks::default()),
        Err(PolicyError::Debug)
    );
}

#[test]
fn simulated_snp_verifies_only_with_the_simulation_root() {
    let sim = SimulatedTee::new().unwrap();
    let b = binding(5);
    let report = sim
        .snp_report(&SnpSpec::default().bind(&b).unwrap())
        .unwrap();
    let err = verify_snp(
        &report,
        sim.snp_certificates(),
        &TrustRoots::production(),
        now(),
    )
    .unwrap_err();
    assert!(matches!(err, VerifyError::UntrustedRoot { .. }), "{err}");
    let ev = verify_snp(&report, sim.snp_certificates(), &sim.trust_roots(), now()).unwrap();
    assert!(ev.simulated && !ev.debug);
    assert_eq!(ev.measurements["measurement"], vec![0x4d; 48]);
    assert_eq!(check_binding(&ev, &b), Ok(()));
    assert_eq!(
        Policy::default().check(&ev, &mut Checks::default()),
        Err(PolicyError::Simulated)
    );
    assert_eq!(sim_policy().check(&ev, &mut Checks::default()), Ok(()));
}

#[test]
fn simulated_snp_tampering_twins() {
    let sim = SimulatedTee::new().unwrap();
    let roots = sim.trust_roots();
    let certs = sim.snp_certificates();
    // Another chip id than the VCEK's hwID.
    let spec = SnpSpec {
        chip_id: [0x11; 64],
        ..SnpSpec::default()
    };
    let err = verify_snp(&sim.snp_report(&spec).unwrap(), certs, &roots, now()).unwrap_err();
    assert_eq!(err, VerifyError::ChipIdMismatch);
    // A reported TCB the VCEK does not certify.
    let spec = SnpSpec {
        reported_tcb: trustbridge_verifier::snp_report::TcbComponents {
            microcode: SIM_TCB.microcode + 1,
            ..SIM_TCB
        },
        ..SnpSpec::default()
    };
    let err = verify_snp(&sim.snp_report(&spec).unwrap(), certs, &roots, now()).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::TcbMismatch {
                component: "microcode",
                ..
            }
        ),
        "{err}"
    );
    // Debug policy bit.
    let spec = SnpSpec {
        policy: 0x30000 | (1 << 19),
        ..SnpSpec::default()
    };
    let ev = verify_snp(&sim.snp_report(&spec).unwrap(), certs, &roots, now()).unwrap();
    assert!(ev.debug);
    assert_eq!(
        sim_policy().check(&ev, &mut Checks::default()),
        Err(PolicyError::Debug)
    );
    // Wrong binding.
    let report = sim
        .snp_report(&SnpSpec::default().bind(&binding(1)).unwrap())
        .unwrap();
    let ev = verify_snp(&report, certs, &roots, now()).unwrap();
    assert!(matches!(
        check_binding(&ev, &binding(2)),
        Err(PolicyError::BindingMismatch(_))
    ));
    // A VCEK that certifies another chip.
    let other = SimulatedTee::with_vcek_hw_id(&[0x22; 64], SIM_TCB).unwrap();
    let err = verify_snp(
        &other.snp_report(&SnpSpec::default()).unwrap(),
        other.snp_certificates(),
        &other.trust_roots(),
        now(),
    )
    .unwrap_err();
    assert_eq!(err, VerifyError::ChipIdMismatch);
}

/// The quote signs the selected PCRs only. Evidence whose genuine quote selects PCR 0 and
/// that lists PCR 7 (= what a policy wants) beside it is refused by `tb-verify`, and
/// reports no `tpm_pcr7`; an honest quote of PCR 0 verifies and reports PCR 0 alone, so an
/// expectation on PCR 7 fails naming it.
#[test]
fn tb_verify_refuses_azure_pcrs_the_quote_does_not_select() {
    use trustbridge_tests::s;
    use trustbridge_verifier::simulated::{AttestationKeyPair, AzureSpec};
    let sim = SimulatedTee::new().unwrap();
    let ak = AttestationKeyPair::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let roots = snp_simulation_roots(&sim, dir.path());
    let pcr7 = format!("tpm_pcr7={}", hex::encode([7u8; 32]));
    let verify = |name: &str, spec: &AzureSpec, expect: &[&str]| {
        let path = dir.path().join(name);
        std::fs::write(&path, sim.azure_evidence(&ak, spec).unwrap()).unwrap();
        let mut args = vec!["attestation".to_owned(), s(&path)];
        args.extend(roots.iter().cloned());
        args.extend(["--allow-simulated".into(), "--json".into()]);
        for e in expect {
            args.extend(["--expect".to_owned(), (*e).to_owned()]);
        }
        tb_verify_json(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };

    let (code, json) = verify("genuine.json", &AzureSpec::default(), &[&pcr7]);
    assert_eq!(code, Some(0), "{json}");
    assert_eq!(json["measurements"]["tpm_pcr7"], hex::encode([7u8; 32]));

    let forged = AzureSpec {
        selection: vec![0],
        ..AzureSpec::default()
    };
    let (code, json) = verify("forged.json", &forged, &[&pcr7]);
    assert_eq!(code, Some(1), "{json}");
    assert_eq!(json["verified"], false);
    assert!(json["measurements"].is_null(), "{json}");
    assert!(
        json["error"].as_str().unwrap().contains("not covered"),
        "{json}"
    );

    let partial = AzureSpec {
        selection: vec![0],
        pcrs: vec![[0; 32]],
        ..AzureSpec::default()
    };
    let (code, json) = verify("partial.json", &partial, &[]);
    assert_eq!(code, Some(0), "{json}");
    let reported: Vec<&String> = json["measurements"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with("tpm_pcr"))
        .collect();
    assert_eq!(reported, ["tpm_pcr0"]);
    let (code, json) = verify("partial.json", &partial, &[&pcr7]);
    assert_eq!(code, Some(1), "{json}");
    assert!(
        json["error"].as_str().unwrap().contains("tpm_pcr7"),
        "{json}"
    );
}

/// The appraisal `tb-verify` runs is the broker's: a guest that allows a migration agent
/// is refused unless allowed, and the TCB minimum and VMPL maximum apply.
#[test]
fn tb_verify_applies_the_migration_agent_tcb_and_vmpl_rules() {
    use trustbridge_tests::s;
    let sim = SimulatedTee::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let roots = snp_simulation_roots(&sim, dir.path());
    let verify = |spec: &SnpSpec, extra: &[&str]| {
        let report = dir.path().join("report.bin");
        let vcek = dir.path().join("vcek.der");
        std::fs::write(&report, sim.snp_report(spec).unwrap()).unwrap();
        std::fs::write(&vcek, sim.snp_certificates()[0].der()).unwrap();
        let mut args = vec![
            "attestation".to_owned(),
            s(&report),
            "--vcek".into(),
            s(&vcek),
        ];
        args.extend(roots.iter().cloned());
        args.extend(["--allow-simulated".into(), "--json".into()]);
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        tb_verify_json(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let migratable = SnpSpec {
        policy: 0x30000 | 1 << 18,
        ..SnpSpec::default()
    };
    let (code, json) = verify(&migratable, &[]);
    assert_eq!(code, Some(1), "{json}");
    assert!(
        json["error"].as_str().unwrap().contains("migration agent"),
        "{json}"
    );
    let (code, json) = verify(&migratable, &["--allow-migration-agent"]);
    assert_eq!(code, Some(0), "{json}");

    // The simulator certifies bl=4 tee=0 snp=24 ucode=219.
    let (code, json) = verify(&SnpSpec::default(), &["--min-tcb", "bl=4,snp=24,ucode=219"]);
    assert_eq!(code, Some(0), "{json}");
    let (code, json) = verify(&SnpSpec::default(), &["--min-tcb", "ucode=220"]);
    assert_eq!(code, Some(1), "{json}");
    assert!(
        json["error"].as_str().unwrap().contains("microcode"),
        "{json}"
    );
    let vmpl1 = SnpSpec {
        vmpl: 1,
        ..SnpSpec::default()
    };
    assert_eq!(verify(&vmpl1, &[]).0, Some(0), "no VMPL rule unless asked");
    assert_eq!(verify(&vmpl1, &["--max-vmpl", "0"]).0, Some(1));
}

/// Bit 1 of the key information field is MASK_CHIP_KEY: the report is not signed at all.
/// It is refused with its own reason (it used to be read as a chip-id mask, skipping the
/// chip id check, and then failed as a bad signature). A zero CHIP_ID (the host's
/// MASK_CHIP_ID) is handled as the ABI says: the VCEK's signature names the chip, and no
/// zero chip id is reported as a measurement.
#[test]
fn snp_key_information_and_masked_chip_ids() {
    let sim = SimulatedTee::new().unwrap();
    let (roots, certs) = (sim.trust_roots(), sim.snp_certificates());
    let unsigned = SnpSpec {
        key_info: 0b10,
        ..SnpSpec::default()
    };
    let err = verify_snp(&sim.snp_report(&unsigned).unwrap(), certs, &roots, now()).unwrap_err();
    assert!(matches!(err, VerifyError::UnsignedReport(_)), "{err}");
    assert!(err.to_string().contains("MASK_CHIP_KEY"), "{err}");
    for (key_info, unsigned) in [(7 << 2, true), (2 << 2, false), (1 << 5, false)] {
        let spec = SnpSpec {
            key_info,
            ..SnpSpec::default()
        };
        let err = verify_snp(&sim.snp_report(&spec).unwrap(), certs, &roots, now()).unwrap_err();
        assert_eq!(
            matches!(err, VerifyError::UnsignedReport(_)),
            unsigned,
            "{key_info:#x}: {err}"
        );
    }

    let masked = SnpSpec {
        chip_id: [0; 64],
        ..SnpSpec::default()
    };
    let report = sim.snp_report(&masked).unwrap();
    let ev = verify_snp(&report, certs, &roots, now()).unwrap();
    assert!(!ev.measurements.contains_key("chip_id"), "{ev:?}");
    assert_eq!(ev.facts["chip_id"], "masked by the host (MASK_CHIP_ID)");
    // The masked report is still tied to the VCEK that signed it: another chip's VCEK,
    // same TCB, does not verify it.
    let other = SimulatedTee::with_vcek_hw_id(&[0x22; 64], SIM_TCB).unwrap();
    assert!(
        verify_snp(
            &report,
            other.snp_certificates(),
            &other.trust_roots(),
            now()
        )
        .is_err()
    );
    // And a cache cannot be asked for the VCEK of a masked chip.
    let parsed = trustbridge_verifier::snp_report::SnpReport::parse(&report).unwrap();
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        trustbridge_verifier::vcek_cache::load(dir.path(), &parsed).unwrap_err(),
        VerifyError::ChipIdMasked
    );
}

/// A revoked VCEK, VLEK or ASK is refused when its issuer's revocation list is given:
/// lists signed by the simulated ASK (naming the VCEK) and ARK (naming the ASK), in the
/// library and through `tb-verify --crl`. A list the issuer did not sign is refused too.
#[test]
fn revoked_endorsement_keys_and_asks_are_refused() {
    use trustbridge_tests::{run, s};
    use trustbridge_verifier::crl::RevocationList;
    use trustbridge_verifier::simulated::SnpCrlIssuer;
    let sim = SimulatedTee::new().unwrap();
    let certs = sim.snp_certificates();
    let (vcek, ask) = (&certs[0], &certs[1]);
    let report = sim.snp_report(&SnpSpec::default()).unwrap();
    let verify = |crls: &[Vec<u8>]| {
        let mut roots = sim.trust_roots();
        for der in crls {
            roots.add_revocation_list(RevocationList::from_der(der).unwrap());
        }
        verify_snp(&report, certs, &roots, now())
    };
    let vcek_revoked = sim.snp_crl(SnpCrlIssuer::Ask, &[vcek.serial()]).unwrap();
    let ask_revoked = sim.snp_crl(SnpCrlIssuer::Ark, &[ask.serial()]).unwrap();
    let nothing_revoked = sim.snp_crl(SnpCrlIssuer::Ark, &[&[0x7f]]).unwrap();
    assert!(verify(std::slice::from_ref(&nothing_revoked)).is_ok());
    for (list, subject) in [
        (&vcek_revoked, "SEV-VCEK"),
        (&ask_revoked, "SEV-Simulation"),
    ] {
        match verify(&[nothing_revoked.clone(), list.clone()]) {
            Err(VerifyError::Revoked { subject: s, .. }) => assert!(s.contains(subject), "{s}"),
            other => panic!("{subject} revoked, yet: {other:?}"),
        }
    }
    // Another simulator's ARK has the same name but not the key: its list is no use.
    let impostor = SimulatedTee::new()
        .unwrap()
        .snp_crl(SnpCrlIssuer::Ark, &[&[0x7f]])
        .unwrap();
    assert!(matches!(
        verify(&[impostor]),
        Err(VerifyError::RevocationListInvalid { .. })
    ));

    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        s(&p)
    };
    let (report, vcek) = (file("report.bin", &report), file("vcek.der", vcek.der()));
    let crl = file("crl.der", &ask_revoked);
    let roots = snp_simulation_roots(&sim, dir.path());
    let mut base = vec!["attestation", report.as_str(), "--vcek", vcek.as_str()];
    base.extend(roots.iter().map(String::as_str));
    base.push("--allow-simulated");
    assert_eq!(run("tb-verify", &base).status.code(), Some(0));
    let out = run("tb-verify", &[&base[..], &["--crl", crl.as_str()]].concat());
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("[FAIL] revocation") && stdout.contains("revoked"),
        "{stdout}"
    );
}

/// A relying party sees from the evidence which broker and provider a sentinel trusts:
/// `tb-verify --binding` checks that the evidence carries the binding, reports its pins,
/// and `--expect-broker-key` / `--expect-provider-key` refuse a sentinel pinning others.
#[test]
fn tb_verify_reports_and_checks_the_pins_in_the_binding() {
    use trustbridge_tests::s;
    let sim = SimulatedTee::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut b = binding(3);
    b.broker_key = [0xb0; 32];
    b.provider_key = Some([0xc0; 32]);
    let doc = dir.path().join("doc.cbor");
    std::fs::write(
        &doc,
        sim.nitro_document(&NitroSpec::default().bind(&b).unwrap())
            .unwrap(),
    )
    .unwrap();
    let root = dir.path().join("root.der");
    std::fs::write(&root, sim.nitro_root().der()).unwrap();
    let file = dir.path().join("binding.hex");
    std::fs::write(&file, hex::encode(b.encode().unwrap())).unwrap();
    let verify = |extra: &[&str]| {
        let (doc, root, file) = (s(&doc), s(&root), s(&file));
        let mut args = vec![
            "attestation",
            &doc,
            "--simulation-root",
            &root,
            "--allow-simulated",
            "--binding",
            &file,
            "--json",
        ];
        args.extend_from_slice(extra);
        tb_verify_json(&args)
    };
    let broker = hex::encode([0xb0u8; 32]);
    let provider = hex::encode([0xc0u8; 32]);
    let (code, json) = verify(&[
        "--expect-broker-key",
        &broker,
        "--expect-provider-key",
        &provider,
    ]);
    assert_eq!(code, Some(0), "{json}");
    assert_eq!(json["evidence_binding"]["broker_key"], broker);
    assert_eq!(json["evidence_binding"]["provider_key"], provider);
    let other = hex::encode([0xb1u8; 32]);
    let (code, json) = verify(&["--expect-broker-key", &other]);
    assert_eq!(code, Some(1), "{json}");
    assert!(
        json["error"].as_str().unwrap().contains("pins broker key"),
        "{json}"
    );
    // A binding the evidence does not carry.
    let mut forged = b.clone();
    forged.broker_key = [0xb1; 32];
    std::fs::write(&file, hex::encode(forged.encode().unwrap())).unwrap();
    let (code, json) = verify(&["--expect-broker-key", &other]);
    assert_eq!(code, Some(1), "{json}");
    assert!(
        json["error"].as_str().unwrap().contains("binding"),
        "{json}"
    );
}
