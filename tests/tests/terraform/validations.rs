//! Terraform's own validations, run where Terraform is.

#[allow(unused_imports)]
use super::*;
#[allow(unused_imports)]
use super::{aws::*, azure::*, ingress::*};

// --- Terraform's own validations ----------------------------------------------------------

/// `terraform`, when it runs here; otherwise `None` after a loud skip, or a failure with
/// `TB_REQUIRE_TERRAFORM=1`.
pub(super) fn terraform(test: &str) -> Option<PathBuf> {
    let exe =
        std::env::var_os("TB_TERRAFORM").map_or_else(|| PathBuf::from("terraform"), PathBuf::from);
    let runs = Command::new(&exe)
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if runs {
        return Some(exe);
    }
    assert!(
        !trustbridge_testkit::env_flag("TB_REQUIRE_TERRAFORM"),
        "{test}: {} does not run and TB_REQUIRE_TERRAFORM=1",
        exe.display()
    );
    eprintln!(
        "SKIPPED {test}: {} does not run here, so the modules' variable validations were not exercised (TB_REQUIRE_TERRAFORM=1 makes this a failure)",
        exe.display()
    );
    None
}

/// The source of `variable "name"` in `file`: from its first line to the first `}` that
/// starts a line (`terraform fmt`'s layout, which CI checks).
pub(super) fn variable_source(file: &Path, name: &str) -> String {
    let text = std::fs::read_to_string(file).unwrap();
    let start = format!("variable \"{name}\" {{");
    let mut out = String::new();
    for line in text.lines().skip_while(|l| *l != start) {
        out.push_str(line);
        out.push('\n');
        if line == "}" {
            return out;
        }
    }
    panic!(
        "{}: no variable {name:?} laid out by terraform fmt",
        file.display()
    );
}

/// `terraform plan` of a configuration holding only `variables`, with `values`: `Ok` when
/// Terraform accepts the values, `Err(message)` when a validation refuses them.
pub(super) fn plan(tf: &Path, variables: &str, values: &Json) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.tf"), variables).unwrap();
    std::fs::write(
        dir.path().join("values.auto.tfvars.json"),
        serde_json::to_vec(values).unwrap(),
    )
    .unwrap();
    let out = Command::new(tf)
        .current_dir(dir.path())
        .args(["plan", "-input=false", "-no-color", "-lock=false"])
        .env("TF_IN_AUTOMATION", "1")
        .env("CHECKPOINT_DISABLE", "1")
        .output()
        .unwrap();
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        stderr.contains("Invalid value for variable"),
        "terraform plan failed for another reason than a validation:\n{stderr}"
    );
    Err(stderr)
}

#[test]
pub(super) fn terraform_validations_refuse_unsafe_values() {
    let Some(tf) = terraform("terraform_validations_refuse_unsafe_values") else {
        return;
    };
    let aws_vars = infra().join(AWS_MODULE).join("variables.tf");
    let azure_vars = infra().join(AZURE_MODULE).join("variables.tf");

    // The relay port, in both modules: only the public port may be opened.
    for file in [&aws_vars, &azure_vars] {
        let source = variable_source(file, "relay_port");
        plan(&tf, &source, &json!({ "relay_port": 8443 })).unwrap();
        for port in FORBIDDEN_PORTS {
            assert!(
                plan(&tf, &source, &json!({ "relay_port": port })).is_err(),
                "{}: relay_port {port} accepted",
                file.display()
            );
        }
    }

    // The KMS key policy: the compiled policy passes; every way of decrypting without an
    // attestation condition is refused.
    let source = variable_source(&aws_vars, "key_policy_json");
    let fixture = read_json(&infra().join(AWS_EXAMPLE).join("key-policy.json.example"));
    let with = |policy: &Json| json!({ "key_policy_json": policy.to_string() });
    plan(&tf, &source, &with(&fixture)).unwrap();
    let mut unconditional = fixture.clone();
    unconditional["Statement"][FIRST_DECRYPT]
        .as_object_mut()
        .unwrap()
        .remove("Condition");
    let mut if_exists = fixture.clone();
    let condition = take_attestation_condition(&mut if_exists);
    if_exists["Statement"][FIRST_DECRYPT]["Condition"] =
        json!({ "StringEqualsIfExists": condition });
    let mut admin_decrypts = fixture.clone();
    admin_decrypts["Statement"][0]["Action"]
        .as_array_mut()
        .unwrap()
        .push(json!("kms:*"));
    let mut admin_grants = fixture.clone();
    admin_grants["Statement"][0]["Action"]
        .as_array_mut()
        .unwrap()
        .push(json!("kms:Create*"));
    let mut not_action = fixture.clone();
    not_action["Statement"][0]["NotAction"] = json!(["kms:Encrypt"]);
    for (what, policy) in [
        ("no condition", unconditional),
        ("StringEqualsIfExists", if_exists),
        ("admin kms:*", admin_decrypts),
        ("admin kms:Create*", admin_grants),
        ("NotAction", not_action),
    ] {
        assert!(
            plan(&tf, &source, &with(&policy)).is_err(),
            "{what} accepted"
        );
    }
    assert!(plan(&tf, &source, &json!({ "key_policy_json": "not json" })).is_err());

    // The SKR release policy: the compiled policy passes; a policy that would release the
    // key to a debuggable guest or to a non-CVM is refused.
    let source = variable_source(&azure_vars, "release_policy_json");
    let fixture = read_json(
        &infra()
            .join(AZURE_EXAMPLE)
            .join("release-policy.json.example"),
    );
    let with = |policy: &Json| json!({ "release_policy_json": policy.to_string() });
    plan(&tf, &source, &with(&fixture)).unwrap();
    for claim in [
        "x-ms-isolation-tee.x-ms-sevsnpvm-is-debuggable",
        "x-ms-isolation-tee.x-ms-attestation-type",
        "x-ms-isolation-tee.x-ms-compliance-status",
        "x-ms-isolation-tee.x-ms-sevsnpvm-launchmeasurement",
    ] {
        let mut loose = fixture.clone();
        loose["anyOf"][0]["allOf"]
            .as_array_mut()
            .unwrap()
            .retain(|c| c["claim"] != claim);
        assert!(
            plan(&tf, &source, &with(&loose)).is_err(),
            "without {claim} accepted"
        );
    }

    // The runtime stays on loopback.
    let source = variable_source(&azure_vars, "runtime_command");
    plan(&tf, &source, &json!({ "runtime_command": "vllm serve /run/trustbridge-model/model --host 127.0.0.1 --port 8081" })).unwrap();
    assert!(
        plan(&tf, &source, &json!({ "runtime_command": "vllm serve /run/trustbridge-model/model --host 0.0.0.0 --port 8081" })).is_err()
    );
}
