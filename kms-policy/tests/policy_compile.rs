//! The example policy compiles to the golden AWS KMS key policy and Azure SKR policy, and
//! the outputs have the structure that makes them safe.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use serde_json::Value;
use trustbridge_kms::compile::{CompileError, aws_kms_key_policy, azure_skr_policy, select_asset};
use trustbridge_kms::policy::Policy;

const ROLE: &str = "arn:aws:iam::111122223333:role/trustbridge-enclave";
const ADMIN: &str = "arn:aws:iam::111122223333:role/key-admin";
const MAA: &str = "https://sharedeus.eus.attest.azure.net";

fn example() -> Policy {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/examples/policy.toml"
    ))
    .unwrap();
    Policy::from_toml(&text).unwrap()
}

fn golden(name: &str, actual: &Value) {
    let path = format!("{}/tests/golden/{name}", env!("CARGO_MANIFEST_DIR"));
    let pretty = serde_json::to_string_pretty(actual).unwrap() + "\n";
    if std::env::var_os("TB_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &pretty).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e} (TB_UPDATE_GOLDEN=1 writes it)"));
    assert_eq!(pretty, expected, "{name} differs from the golden file");
}

#[test]
fn aws_kms_key_policy_matches_golden_and_is_safe() {
    let p = example();
    let doc = aws_kms_key_policy(select_asset(&p, None).unwrap(), ROLE, ADMIN).unwrap();
    golden("aws-kms.json", &doc);
    assert_eq!(doc["Version"], "2012-10-17");
    let statements = doc["Statement"].as_array().unwrap();
    assert_eq!(
        statements.len(),
        5,
        "administration, two denials, one statement per Nitro measurement set"
    );
    // Denials every principal is under: no grants (a grant would carry decrypt past the
    // conditions), no decryption without an attestation document.
    let denials: Vec<&Value> = statements
        .iter()
        .filter(|s| s["Effect"] == "Deny")
        .collect();
    assert_eq!(denials.len(), 2);
    for d in &denials {
        assert_eq!(d["Principal"]["AWS"], "*");
    }
    assert!(
        denials
            .iter()
            .any(|d| d["Action"] == "kms:CreateGrant" && d.get("Condition").is_none())
    );
    assert!(denials.iter().any(|d| {
        d["Action"]
            .as_array()
            .is_some_and(|a| a.contains(&Value::from("kms:Decrypt")))
            && d["Condition"]["Null"]["kms:RecipientAttestation:ImageSha384"] == "true"
    }));
    for s in statements.iter().filter(|s| s["Effect"] == "Allow") {
        let actions: Vec<&str> = s["Action"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let decrypts = actions.iter().any(|a| {
            *a == "kms:Decrypt" || *a == "kms:GenerateDataKey" || *a == "kms:*" || *a == "*"
        });
        if decrypts {
            assert_eq!(
                s["Principal"]["AWS"], ROLE,
                "only the enclave role may decrypt"
            );
            let cond = s["Condition"]["StringEqualsIgnoreCase"]
                .as_object()
                .expect("every decrypt statement is conditional");
            assert!(cond.contains_key("kms:RecipientAttestation:ImageSha384"));
            assert!(
                cond.keys()
                    .all(|k| k.starts_with("kms:RecipientAttestation:"))
            );
        } else {
            assert_eq!(s["Principal"]["AWS"], ADMIN);
            assert!(
                !actions.iter().any(|a| a.starts_with("kms:Decrypt")
                    || a.starts_with("kms:Re") && *a != "kms:Revoke*"
                    || a.starts_with("kms:Create") && *a != "kms:CreateAlias"),
                "the admin neither decrypts nor grants: {actions:?}"
            );
        }
    }
}

#[test]
fn azure_skr_policy_matches_golden_and_is_safe() {
    let p = example();
    let doc = azure_skr_policy(select_asset(&p, Some("acme/llm@v1")).unwrap(), MAA).unwrap();
    golden("azure-skr.json", &doc);
    assert_eq!(doc["version"], "1.0.0");
    for alt in doc["anyOf"].as_array().unwrap() {
        assert_eq!(alt["authority"], MAA);
        let claims: Vec<(&str, &Value)> = alt["allOf"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["claim"].as_str().unwrap(), &c["equals"]))
            .collect();
        let get = |name: &str| claims.iter().find(|(c, _)| *c == name).map(|(_, v)| *v);
        assert_eq!(
            get("x-ms-isolation-tee.x-ms-attestation-type"),
            Some(&Value::from("sevsnpvm"))
        );
        assert_eq!(
            get("x-ms-isolation-tee.x-ms-compliance-status"),
            Some(&Value::from("azure-compliant-cvm"))
        );
        assert_eq!(
            get("x-ms-isolation-tee.x-ms-sevsnpvm-is-debuggable"),
            Some(&Value::from(false))
        );
        assert!(get("x-ms-isolation-tee.x-ms-sevsnpvm-launchmeasurement").is_some());
    }
}

#[test]
fn what_a_target_cannot_enforce_is_an_error() {
    let mut p = example();
    let asset = &mut p.assets[0];
    asset.allow_debug = true;
    assert!(matches!(
        aws_kms_key_policy(asset, ROLE, ADMIN),
        Err(CompileError::Inexpressible(_))
    ));
    asset.allow_debug = false;
    asset.nitro.clear();
    assert!(matches!(
        aws_kms_key_policy(asset, ROLE, ADMIN),
        Err(CompileError::NothingToAllow { .. })
    ));
    asset.snp.clear();
    assert!(matches!(
        azure_skr_policy(asset, MAA),
        Err(CompileError::NothingToAllow { .. })
    ));
    assert!(matches!(
        select_asset(&p, Some("nope")),
        Err(CompileError::UnknownAsset(_))
    ));
}

/// `min_tcb`, `max_vmpl` and the guest policy bits become SKR claims (they were dropped
/// silently before); what SKR has no claim for is an error naming the rule.
#[test]
fn snp_tcb_vmpl_and_policy_bits_compile_to_skr_claims_or_fail_by_name() {
    let p = example();
    let doc = azure_skr_policy(select_asset(&p, None).unwrap(), MAA).unwrap();
    let all = doc["anyOf"][0]["allOf"].as_array().unwrap();
    let find = |claim: &str, op: &str| {
        all.iter()
            .find(|c| c["claim"] == format!("x-ms-isolation-tee.{claim}") && c.get(op).is_some())
            .map(|c| c[op].clone())
    };
    // The example: min_tcb = { bootloader = 3, tee = 0, snp = 8, microcode = 115 }.
    assert_eq!(
        find("x-ms-sevsnpvm-bootloader-svn", "greaterOrEquals"),
        Some(3.into())
    );
    assert_eq!(
        find("x-ms-sevsnpvm-tee-svn", "greaterOrEquals"),
        Some(0.into())
    );
    assert_eq!(
        find("x-ms-sevsnpvm-snpfw-svn", "greaterOrEquals"),
        Some(8.into())
    );
    assert_eq!(
        find("x-ms-sevsnpvm-microcode-svn", "greaterOrEquals"),
        Some(115.into())
    );
    assert_eq!(find("x-ms-sevsnpvm-vmpl", "lessOrEquals"), Some(0.into()));
    assert_eq!(
        find("x-ms-sevsnpvm-migration-allowed", "equals"),
        Some(false.into())
    );

    let compile = |edit: &dyn Fn(&mut trustbridge_kms::policy::AssetPolicy)| {
        let mut p = example();
        edit(&mut p.assets[0]);
        azure_skr_policy(&p.assets[0], MAA)
    };
    let bits = |s: &str| Some(trustbridge_kms::policy::BitMask::try_from(s.to_owned()).unwrap());
    // SMT required: a claim.
    let doc = compile(&|a| a.snp[0].policy_bits_set = bits("0x30000")).unwrap();
    assert!(
        doc.to_string()
            .contains(r#"{"claim":"x-ms-isolation-tee.x-ms-sevsnpvm-smt-allowed","equals":true}"#),
        "{doc}"
    );
    let inexpressible = |r: Result<Value, CompileError>, needle: &str| match r {
        Err(CompileError::Inexpressible(m)) => assert!(m.contains(needle), "{m}"),
        other => panic!("expected Inexpressible naming {needle}: {other:?}"),
    };
    inexpressible(
        compile(&|a| a.snp[0].policy_bits_clear = bits("0x100000")),
        "policy_bits_clear: guest policy bit 20",
    );
    inexpressible(
        compile(&|a| a.snp[0].policy_bits_clear = bits("0x20000")),
        "bit 17 is reserved",
    );
    inexpressible(
        compile(&|a| {
            a.snp[0].policy_bits_clear = None;
            a.snp[0].policy_bits_set = bits("0x80000");
        }),
        "contradicts allow_debug = false",
    );
    inexpressible(
        compile(&|a| a.snp[0].min_tcb.as_mut().unwrap().fmc = Some(1)),
        "min_tcb.fmc",
    );
    // Allowing a migration agent drops the claim; requiring one (bit 18 set) then compiles.
    let doc = compile(&|a| {
        a.allow_migration_agent = true;
        a.snp[0].policy_bits_set = bits("0x40000");
    })
    .unwrap();
    assert!(
        doc.to_string().contains(
            r#"{"claim":"x-ms-isolation-tee.x-ms-sevsnpvm-migration-allowed","equals":true}"#
        ),
        "{doc}"
    );
}

/// What no cloud KMS can enforce is listed, never silently dropped: contracts, the lease,
/// the pins, and on Azure which VM may ask.
#[test]
fn what_a_cloud_kms_does_not_enforce_is_listed() {
    use trustbridge_kms::compile::{Target, not_enforced};
    let p = example();
    let asset = select_asset(&p, None).unwrap();
    let aws = not_enforced(&p, asset, Target::AwsKms).join("\n");
    assert!(aws.contains("1 contract(s)"), "{aws}");
    assert!(
        aws.contains("lease") && aws.contains("broker-key pin"),
        "{aws}"
    );
    assert!(!aws.contains("managed identity"), "{aws}");
    let azure = not_enforced(&p, asset, Target::AzureSkr).join("\n");
    assert!(azure.contains("managed identity"), "{azure}");
}
