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
        3,
        "administration + one statement per Nitro measurement set"
    );
    for s in statements {
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
                    || a.starts_with("kms:Re") && *a != "kms:Revoke*"),
                "{actions:?}"
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
