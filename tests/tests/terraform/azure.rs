//! Azure: the confidential VM and its key.

#[allow(unused_imports)]
use super::*;
#[allow(unused_imports)]
use super::{aws::*, ingress::*};

// --- Azure: the confidential VM and its key ----------------------------------------------

/// What an SKR release policy lacks, by the rule the module's validation applies: every
/// alternative needs an https authority and, in its allOf, an Azure-compliant SEV-SNP CVM,
/// a launch measurement and a non-debuggable guest.
pub(super) fn skr_policy_findings(policy: &Json) -> Vec<String> {
    let mut findings = Vec::new();
    let Some(alternatives) = policy["anyOf"].as_array().filter(|a| !a.is_empty()) else {
        return vec!["no anyOf".to_owned()];
    };
    for (i, alt) in alternatives.iter().enumerate() {
        if !alt["authority"]
            .as_str()
            .is_some_and(|a| a.starts_with("https://"))
        {
            findings.push(format!("alternative {i}: no https authority"));
        }
        let all: Vec<&Json> = alt["allOf"]
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        let has = |claim: &str, value: &Json| {
            all.iter().any(|c| {
                c["claim"] == format!("x-ms-isolation-tee.{claim}") && c["equals"] == *value
            })
        };
        for (claim, value) in [
            ("x-ms-attestation-type", json!("sevsnpvm")),
            ("x-ms-compliance-status", json!("azure-compliant-cvm")),
            ("x-ms-sevsnpvm-is-debuggable", json!(false)),
        ] {
            if !has(claim, &value) {
                findings.push(format!("alternative {i}: no {claim} = {value}"));
            }
        }
        if !all.iter().any(|c| {
            c["claim"] == "x-ms-isolation-tee.x-ms-sevsnpvm-launchmeasurement"
                && c["equals"].as_str().is_some_and(|m| !m.is_empty())
        }) {
            findings.push(format!("alternative {i}: no launch measurement"));
        }
    }
    findings
}

#[test]
pub(super) fn the_azure_vm_is_confidential_and_its_key_is_released_only_under_the_compiled_policy()
{
    let all = modules(&infra());

    // Every VM anywhere is a confidential VM with Secure Boot, vTPM and confidential OS
    // disk encryption.
    let mut vms = 0;
    for m in all.values() {
        assert!(
            m.resources("azurerm_virtual_machine").next().is_none(),
            "{}: azurerm_virtual_machine cannot be a confidential VM",
            m.dir.display()
        );
        for ty in [
            "azurerm_linux_virtual_machine",
            "azurerm_windows_virtual_machine",
        ] {
            for (path, vm) in m.resources(ty) {
                vms += 1;
                let at = path.display();
                let body = vm.body();
                assert!(
                    matches!(
                        attr(body, "secure_boot_enabled"),
                        Some(Expression::Bool(true))
                    ),
                    "{at}: Secure Boot"
                );
                assert!(
                    matches!(attr(body, "vtpm_enabled"), Some(Expression::Bool(true))),
                    "{at}: vTPM"
                );
                let os_disk = nested(body, "os_disk")
                    .next()
                    .unwrap_or_else(|| panic!("{at}: no os_disk"));
                assert!(
                    matches!(attr(os_disk, "security_encryption_type"), Some(Expression::String(s)) if s == "DiskWithVMGuestState"),
                    "{at}: the OS disk must use confidential encryption (DiskWithVMGuestState)"
                );
                assert!(
                    nested(body, "identity").next().is_some(),
                    "{at}: the VM needs an identity to be released the key"
                );
            }
        }
    }
    assert!(vms >= 1, "no Azure VM found");

    let m = module(&all, AZURE_MODULE);
    let variables = m.variables();
    let size = attr(variables.get("vm_size").unwrap().body(), "default").unwrap();
    assert!(
        matches!(size, Expression::String(s) if s.starts_with("Standard_NCC") && s.ends_with("ads_H100_v5")),
        "{size:?}"
    );

    // Key Vault Premium; the key exportable, RSA-HSM, with the validated release policy.
    let (_, vault) = m
        .resources("azurerm_key_vault")
        .next()
        .expect("a Key Vault");
    assert!(
        matches!(attr(vault.body(), "sku_name"), Some(Expression::String(s)) if s == "premium")
    );
    let (path, key) = m
        .resources("azapi_resource")
        .find(|(_, b)| matches!(attr(b.body(), "type"), Some(Expression::String(t)) if t.starts_with("Microsoft.KeyVault/vaults/keys@")))
        .expect("the Key Vault key (azapi_resource)");
    let at = path.display();
    let properties = attr(key.body(), "body")
        .and_then(|b| get(b, "properties"))
        .expect("body.properties");
    assert!(
        matches!(get(properties, "kty"), Some(Expression::String(s)) if s == "RSA-HSM"),
        "{at}: kty"
    );
    let attributes = get(properties, "attributes").expect("attributes");
    assert!(
        matches!(get(attributes, "exportable"), Some(Expression::Bool(true))),
        "{at}: exportable"
    );
    let data = get(properties, "release_policy")
        .and_then(|r| get(r, "data"))
        .expect("release_policy.data");
    assert_eq!(text(data), "local.release_policy_data", "{at}");
    let local = m
        .local("release_policy_data")
        .expect("local.release_policy_data");
    assert!(
        text(local).contains("var.release_policy_json"),
        "{}",
        text(local)
    );
    let release_rules: Vec<String> = variables
        .get("release_policy_json")
        .unwrap()
        .body()
        .blocks()
        .filter(|b| b.identifier() == "validation")
        .filter_map(|v| attr(v.body(), "condition").map(text))
        .collect();
    assert!(
        release_rules
            .iter()
            .any(|r| r.contains("sevsnpvm") && r.contains("x-ms-sevsnpvm-is-debuggable")),
        "release_policy_json has no validation of the CVM claims: {release_rules:?}"
    );

    // Only the VM's identity may release the key: the launch measurement on Azure is the
    // paravisor's, the same for every tenant's confidential VM.
    let mut releasers = 0;
    for (path, policy) in m.resources("azurerm_key_vault_access_policy") {
        let permissions = attr(policy.body(), "key_permissions")
            .map(text)
            .unwrap_or_default();
        if permissions.to_ascii_lowercase().contains("\"release\"") {
            releasers += 1;
            let object = attr(policy.body(), "object_id")
                .map(text)
                .unwrap_or_default();
            assert!(
                object.starts_with("azurerm_linux_virtual_machine.") && object.contains("identity"),
                "{}: Release granted to {object}, not the VM's identity",
                path.display()
            );
        }
    }
    assert_eq!(releasers, 1, "exactly one access policy grants Release");
    assert!(
        nested(vault.body(), "access_policy").next().is_none(),
        "inline access policies would escape this check"
    );

    // The example's fixture is exactly what the compiler makes of docs/examples/policy.toml.
    let policy = example_policy();
    let asset = trustbridge_kms::compile::select_asset(&policy, None).unwrap();
    let compiled = trustbridge_kms::compile::azure_skr_policy(asset, MAA).unwrap();
    let fixture = read_json(
        &infra()
            .join(AZURE_EXAMPLE)
            .join("release-policy.json.example"),
    );
    assert_eq!(
        compiled, fixture,
        "release-policy.json.example differs from `trustbridge policy compile --policy docs/examples/policy.toml --target azure-skr --maa-endpoint {MAA}`"
    );
    let findings = skr_policy_findings(&fixture);
    assert!(findings.is_empty(), "{findings:?}");
    let mut debuggable = fixture.clone();
    debuggable["anyOf"][0]["allOf"]
        .as_array_mut()
        .unwrap()
        .retain(|c| c["claim"] != "x-ms-isolation-tee.x-ms-sevsnpvm-is-debuggable");
    assert!(!skr_policy_findings(&debuggable).is_empty());
}
