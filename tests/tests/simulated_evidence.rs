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
    }
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
