//! Policy parsing and evaluation on synthetic verified evidence: every rule, fail closed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::collections::BTreeMap;

use trustbridge_kms::evaluate::{
    Contract, ContractOrigin, DenialCode, check_contract, evaluate_evidence,
};
use trustbridge_kms::policy::Policy;
use trustbridge_verifier::snp_report::{SigningKey, TcbComponents};
use trustbridge_verifier::{BindingFields, Platform, SnpClaims, VerifiedEvidence};

const TCB: TcbComponents = TcbComponents {
    fmc: None,
    bootloader: 3,
    tee: 0,
    snp: 8,
    microcode: 115,
};

fn policy(extra: &str) -> Policy {
    Policy::from_toml(&format!(
        r#"
[[asset]]
id = "a"
provider_key = "{pk}"
{extra}
  [[asset.snp]]
  measurement = "{m}"
  min_tcb = {{ bootloader = 3, snp = 8, microcode = 115 }}
  policy_bits_clear = "0x80000"
  [[asset.azure]]
  measurement = "{m}"
  tpm_pcrs = {{ 7 = "{p7}" }}
  [[asset.nitro]]
  pcr0 = "{pcr0}"
"#,
        pk = "11".repeat(32),
        m = "4d".repeat(48),
        p7 = "77".repeat(32),
        pcr0 = "aa".repeat(48),
    ))
    .unwrap()
}

fn snp_evidence(
    platform: Platform,
    tcb: TcbComponents,
    vmpl: u32,
    policy_bits: u64,
) -> VerifiedEvidence {
    let mut measurements = BTreeMap::new();
    measurements.insert("measurement".to_owned(), vec![0x4d; 48]);
    measurements.insert("tpm_pcr7".to_owned(), vec![0x77; 32]);
    VerifiedEvidence {
        platform,
        simulated: false,
        debug: policy_bits & (1 << 19) != 0,
        measurements,
        binding: BindingFields::default(),
        timestamp: None,
        chain: vec![],
        facts: BTreeMap::new(),
        snp: Some(SnpClaims {
            version: 3,
            guest_svn: 0,
            policy: policy_bits,
            vmpl,
            signing_key: SigningKey::Vcek,
            product: "Milan".into(),
            reported_tcb: tcb,
            current_tcb: tcb,
            committed_tcb: tcb,
            launch_tcb: tcb,
            platform_info: 0,
        }),
    }
}

fn code(r: Result<(), trustbridge_kms::evaluate::Denial>) -> Option<DenialCode> {
    r.err().map(|d| d.code)
}

#[test]
fn snp_rules() {
    let p = policy("");
    let a = p.asset("a").unwrap();
    assert_eq!(
        code(evaluate_evidence(
            &p,
            a,
            &snp_evidence(Platform::Snp, TCB, 0, 0x30000)
        )),
        None
    );
    let newer = TcbComponents {
        microcode: 200,
        ..TCB
    };
    assert_eq!(
        code(evaluate_evidence(
            &p,
            a,
            &snp_evidence(Platform::Snp, newer, 0, 0x30000)
        )),
        None,
        "a newer TCB is fine"
    );
    let older = TcbComponents {
        microcode: 114,
        ..TCB
    };
    assert_eq!(
        code(evaluate_evidence(
            &p,
            a,
            &snp_evidence(Platform::Snp, older, 0, 0x30000)
        )),
        Some(DenialCode::MeasurementMismatch)
    );
    assert_eq!(
        code(evaluate_evidence(
            &p,
            a,
            &snp_evidence(Platform::Snp, TCB, 1, 0x30000)
        )),
        Some(DenialCode::MeasurementMismatch),
        "VMPL 1"
    );
    assert_eq!(
        code(evaluate_evidence(
            &p,
            a,
            &snp_evidence(Platform::Snp, TCB, 0, 0x30000 | 1 << 19)
        )),
        Some(DenialCode::DebugForbidden)
    );
    let mut other = snp_evidence(Platform::Snp, TCB, 0, 0x30000);
    other.measurements.insert("measurement".into(), vec![0; 48]);
    assert_eq!(
        code(evaluate_evidence(&p, a, &other)),
        Some(DenialCode::MeasurementMismatch)
    );
}

#[test]
fn azure_rules_include_tpm_pcrs() {
    let p = policy("");
    let a = p.asset("a").unwrap();
    assert_eq!(
        code(evaluate_evidence(
            &p,
            a,
            &snp_evidence(Platform::AzureSnpVtpm, TCB, 0, 0x30000)
        )),
        None
    );
    let mut ev = snp_evidence(Platform::AzureSnpVtpm, TCB, 0, 0x30000);
    ev.measurements.insert("tpm_pcr7".into(), vec![0; 32]);
    assert_eq!(
        code(evaluate_evidence(&p, a, &ev)),
        Some(DenialCode::MeasurementMismatch)
    );
}

#[test]
fn debug_allowed_and_simulation_rules() {
    let p = policy("allow_debug = true");
    let a = p.asset("a").unwrap();
    // allow_debug lifts the asset-wide gate, but the SNP set itself forbids policy bit 19:
    // rules add up, so the debug guest still matches no SNP set.
    let debug = 0x30000 | 1 << 19;
    assert_eq!(
        code(evaluate_evidence(
            &p,
            a,
            &snp_evidence(Platform::Snp, TCB, 0, debug)
        )),
        Some(DenialCode::MeasurementMismatch)
    );
    // The Azure set has no such bit rule: there the debug guest is accepted.
    assert_eq!(
        code(evaluate_evidence(
            &p,
            a,
            &snp_evidence(Platform::AzureSnpVtpm, TCB, 0, debug)
        )),
        None
    );
    let mut sim = snp_evidence(Platform::Snp, TCB, 0, 0x30000);
    sim.simulated = true;
    assert_eq!(
        code(evaluate_evidence(&p, a, &sim)),
        Some(DenialCode::SimulationNotAllowed)
    );
}

#[test]
fn platforms_without_sets_accept_nothing() {
    let p = Policy::from_toml(&format!(
        "[[asset]]\nid = \"a\"\nprovider_key = \"{}\"\n",
        "11".repeat(32)
    ))
    .unwrap();
    let a = p.asset("a").unwrap();
    assert_eq!(
        code(evaluate_evidence(
            &p,
            a,
            &snp_evidence(Platform::Snp, TCB, 0, 0x30000)
        )),
        Some(DenialCode::MeasurementMismatch)
    );
}

#[test]
fn contracts() {
    let c = Contract {
        id: "c".into(),
        asset: "a".into(),
        not_before: 100,
        not_after: 200,
        max_releases: None,
        revoked: false,
        releases: 0,
        origin: ContractOrigin::Policy,
        active: true,
    };
    assert_eq!(check_contract(Some(&c), "a", 150), Ok(()));
    assert_eq!(
        check_contract(Some(&c), "a", 99).unwrap_err().code,
        DenialCode::ContractExpired
    );
    assert_eq!(
        check_contract(Some(&c), "a", 201).unwrap_err().code,
        DenialCode::ContractExpired
    );
    assert_eq!(
        check_contract(Some(&c), "b", 150).unwrap_err().code,
        DenialCode::UnknownContract
    );
    assert_eq!(
        check_contract(None, "a", 150).unwrap_err().code,
        DenialCode::UnknownContract
    );
    let inactive = Contract {
        active: false,
        ..c.clone()
    };
    assert_eq!(
        check_contract(Some(&inactive), "a", 150).unwrap_err().code,
        DenialCode::UnknownContract
    );
    let revoked = Contract { revoked: true, ..c };
    assert_eq!(
        check_contract(Some(&revoked), "a", 150).unwrap_err().code,
        DenialCode::ContractRevoked
    );
}

/// Contract windows are strict RFC 3339 with the offset honoured: `+14:00` is fourteen
/// hours before UTC, not UTC (the weak parser used before read it as UTC).
#[test]
fn contract_times_honour_their_offsets() {
    let text = |nb: &str, na: &str| {
        format!(
            "[[asset]]\nid = \"a\"\nprovider_key = \"{}\"\n[[contract]]\nid = \"c\"\nasset = \"a\"\nnot_before = \"{nb}\"\nnot_after = \"{na}\"\n",
            "11".repeat(32)
        )
    };
    let p =
        Policy::from_toml(&text("2026-01-01T00:00:00Z", "2026-12-31T23:59:59.0+14:00")).unwrap();
    let c = &p.contracts[0];
    assert_eq!(
        trustbridge_kms::policy::parse_time(&c.not_after).unwrap(),
        trustbridge_kms::policy::parse_time("2026-12-31T09:59:59Z").unwrap()
    );
    assert_eq!(
        trustbridge_kms::policy::parse_time("2026-12-31T09:59:59-12:00").unwrap(),
        trustbridge_kms::policy::parse_time("2026-12-31T21:59:59Z").unwrap()
    );
    for bad in [
        "2026-12-31",
        "2026-12-31T23:59:59",
        "31/12/2026",
        "2026-12-31T23:59:59+14",
    ] {
        assert!(
            Policy::from_toml(&text("2026-01-01T00:00:00Z", bad)).is_err(),
            "{bad} accepted"
        );
    }
}

#[test]
fn invalid_policies_are_rejected() {
    let pk = "11".repeat(32);
    for bad in [
        "[[asset]]\nid = \"a\"\nprovider_key = \"00\"\n".to_owned(),
        format!("[[asset]]\nid = \"a\"\nprovider_key = \"{pk}\"\ntypo_field = 1\n"),
        format!("[[asset]]\nid = \"a\"\nprovider_key = \"{pk}\"\n[[asset.nitro]]\n"),
        format!("[[asset]]\nid = \"a\"\nprovider_key = \"{pk}\"\n[[asset.nitro]]\npcr0 = \"00\"\n"),
        format!(
            "[[asset]]\nid = \"a\"\nprovider_key = \"{pk}\"\n[[asset]]\nid = \"a\"\nprovider_key = \"{pk}\"\n"
        ),
        format!(
            "[[asset]]\nid = \"a\"\nprovider_key = \"{pk}\"\n[[contract]]\nid = \"c\"\nasset = \"b\"\nnot_before = \"2026-01-01T00:00:00Z\"\nnot_after = \"2027-01-01T00:00:00Z\"\n"
        ),
        format!(
            "[[asset]]\nid = \"a\"\nprovider_key = \"{pk}\"\n[[contract]]\nid = \"c\"\nasset = \"a\"\nnot_before = \"2027-01-01T00:00:00Z\"\nnot_after = \"2026-01-01T00:00:00Z\"\n"
        ),
        "[admin]\nkeys = [\"00\"]\n".to_owned(),
        format!(
            "[[asset]]\nid = \"a\"\nprovider_key = \"{pk}\"\n[[asset.snp]]\nmeasurement = \"{}\"\npolicy_bits_set = \"0x80000\"\npolicy_bits_clear = \"0x80000\"\n",
            "4d".repeat(48)
        ),
        format!(
            "[[asset]]\nid = \"a\"\nprovider_key = \"{pk}\"\n[[asset.snp]]\nmeasurement = \"{}\"\npolicy_bits_clear = \"zz\"\n",
            "4d".repeat(48)
        ),
    ] {
        assert!(Policy::from_toml(&bad).is_err(), "accepted:\n{bad}");
    }
}

/// An Azure set without TPM PCRs pins only the SNP launch measurement, which on Azure is
/// the paravisor's, the same for every tenant: it would accept any Azure CVM.
#[test]
fn an_azure_set_without_tpm_pcrs_is_invalid() {
    let text = format!(
        "[[asset]]\nid = \"a\"\nprovider_key = \"{}\"\n[[asset.azure]]\nmeasurement = \"{}\"\n",
        "11".repeat(32),
        "4d".repeat(48)
    );
    let err = Policy::from_toml(&text).unwrap_err().to_string();
    assert!(err.contains("lists no tpm_pcrs"), "{err}");
    // PCR keys are plain decimal: "07" would name a measurement no evidence reports, and
    // so deny everything without a word; a misspelled field inside the set is refused too.
    let pcr = "07".repeat(32);
    for (key, accepted) in [("7", true), ("07", false), ("+7", false), ("24", false)] {
        let text = format!("{text}[asset.azure.tpm_pcrs]\n\"{key}\" = \"{pcr}\"\n");
        assert_eq!(Policy::from_toml(&text).is_ok(), accepted, "{key}");
    }
    let typo = format!("{text}typo = 1\n[asset.azure.tpm_pcrs]\n7 = \"{pcr}\"\n");
    assert!(Policy::from_toml(&typo).is_err(), "{typo}");
}

/// A guest whose policy allows a migration agent (MIGRATE_MA, bit 18) is refused unless
/// the asset allows it: the agent can read the guest's memory.
#[test]
fn a_migration_agent_is_refused_unless_allowed() {
    let p = policy("");
    let a = p.asset("a").unwrap();
    let ma = snp_evidence(Platform::Snp, TCB, 0, 0x30000 | 1 << 18);
    let denial = evaluate_evidence(&p, a, &ma).unwrap_err();
    assert_eq!(denial.code, DenialCode::MigrationAgentForbidden);
    assert!(denial.detail.contains("MIGRATE_MA"), "{}", denial.detail);
    let azure = snp_evidence(Platform::AzureSnpVtpm, TCB, 0, 0x30000 | 1 << 18);
    assert_eq!(
        code(evaluate_evidence(&p, a, &azure)),
        Some(DenialCode::MigrationAgentForbidden)
    );
    let allowed = policy("allow_migration_agent = true");
    assert_eq!(
        code(evaluate_evidence(
            &allowed,
            allowed.asset("a").unwrap(),
            &ma
        )),
        None
    );
}
