//! AWS: the attested KMS key.

#[allow(unused_imports)]
use super::*;

// --- AWS: the attested KMS key ----------------------------------------------------------

/// The compiled policy's first decrypt statement: after the administration statement and
/// the two denials (no grants; no decryption without an attestation document).
pub(super) const FIRST_DECRYPT: usize = 3;

/// The statements of a key policy that let a principal decrypt, by the rule the module's
/// validation applies: an Allow whose actions match `kms:Decrypt`, `kms:ReEncryptFrom` or
/// `kms:CreateGrant` (a grant carries decrypt past the conditions; IAM wildcards, any
/// case), or any Allow with `NotAction` or `NotPrincipal`.
pub(super) fn decrypt_statements(policy: &Json) -> Vec<&Json> {
    let statements: Vec<&Json> = match &policy["Statement"] {
        Json::Array(a) => a.iter().collect(),
        s @ Json::Object(_) => vec![s],
        _ => Vec::new(),
    };
    statements
        .into_iter()
        .filter(|s| {
            s["Effect"] == "Allow"
                && (s.get("NotAction").is_some()
                    || s.get("NotPrincipal").is_some()
                    || actions(s).iter().any(|a| {
                        ["kms:decrypt", "kms:reencryptfrom", "kms:creategrant"]
                            .iter()
                            .any(|wanted| glob(&a.to_ascii_lowercase(), wanted))
                    }))
        })
        .collect()
}

pub(super) fn actions(statement: &Json) -> Vec<String> {
    match &statement["Action"] {
        Json::String(a) => vec![a.clone()],
        Json::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// IAM wildcard matching: `*` any run, `?` any one character.
pub(super) fn glob(pattern: &str, s: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], s) || (!s.is_empty() && go(p, &s[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &s[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), s.as_bytes())
}

/// What lets a principal decrypt outside an attested enclave: a decrypt statement without
/// a StringEquals(IgnoreCase) condition on a `kms:RecipientAttestation:*` key, or for
/// another principal than `role`; or no decrypt statement at all.
pub(super) fn kms_policy_findings(policy: &Json, role: &str) -> Vec<String> {
    let decrypt = decrypt_statements(policy);
    let mut findings = Vec::new();
    if decrypt.is_empty() {
        findings.push("no statement lets the enclave decrypt".to_owned());
    }
    for s in decrypt {
        let sid = s["Sid"].as_str().unwrap_or("?");
        let attested = s["Condition"].as_object().is_some_and(|conditions| {
            conditions.iter().any(|(op, keys)| {
                (op == "StringEquals" || op == "StringEqualsIgnoreCase")
                    && keys.as_object().is_some_and(|keys| {
                        keys.iter().any(|(k, v)| {
                            k.to_ascii_lowercase()
                                .starts_with("kms:recipientattestation:")
                                && v.as_str().is_some_and(|v| !v.is_empty())
                        })
                    })
            })
        });
        if !attested {
            findings.push(format!(
                "statement {sid} allows decryption without a kms:RecipientAttestation condition"
            ));
        }
        if s["Principal"]["AWS"] != role {
            findings.push(format!("statement {sid} lets {} decrypt", s["Principal"]));
        }
    }
    findings
}

pub(super) fn read_json(path: &Path) -> Json {
    serde_json::from_str(
        &std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub(super) fn example_policy() -> trustbridge_kms::policy::Policy {
    let path = trustbridge_testkit::workspace_root().join("docs/examples/policy.toml");
    trustbridge_kms::policy::Policy::from_toml(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
pub(super) fn the_kms_key_policy_is_the_compiled_policy_and_only_an_attested_enclave_decrypts() {
    let all = modules(&infra());
    let m = module(&all, AWS_MODULE);

    // The key's policy is the variable, and the variable is validated by the attestation
    // rule; the key also refuses decryption by anyone but the module's role.
    let (path, key) = m.resources("aws_kms_key").next().expect("an aws_kms_key");
    let policy = attr(key.body(), "policy").expect("the key sets its policy");
    assert_eq!(text(policy), "var.key_policy_json", "{}", path.display());
    let preconditions: Vec<String> = key
        .body()
        .blocks()
        .filter(|b| b.identifier() == "lifecycle")
        .flat_map(|l| {
            l.body()
                .blocks()
                .filter(|b| b.identifier() == "precondition")
        })
        .filter_map(|p| attr(p.body(), "condition").map(text))
        .collect();
    assert!(
        preconditions
            .iter()
            .any(|c| c.contains("local.enclave_role_arn")),
        "the key checks the decrypting principal: {preconditions:?}"
    );
    let variables = m.variables();
    let variable = variables
        .get("key_policy_json")
        .expect("variable key_policy_json");
    assert!(
        attr(variable.body(), "default").is_none(),
        "the key policy has no default"
    );
    let rules: Vec<String> = variable
        .body()
        .blocks()
        .filter(|b| b.identifier() == "validation")
        .filter_map(|v| attr(v.body(), "condition").map(|c| text(c).to_ascii_lowercase()))
        .collect();
    assert!(
        rules
            .iter()
            .any(|r| r.contains("kms:recipientattestation:") && r.contains("kms:decrypt")),
        "key_policy_json has no validation on kms:Decrypt and kms:RecipientAttestation: {rules:?}"
    );
    // The fixture was compiled for the module's default role name.
    let role_name = attr(
        variables.get("instance_role_name").unwrap().body(),
        "default",
    );
    assert!(
        matches!(role_name, Some(Expression::String(n)) if ROLE.ends_with(&format!(":role/{n}"))),
        "instance_role_name's default is not the role of {ROLE}: {role_name:?}"
    );

    // The example's fixture is exactly what the compiler makes of docs/examples/policy.toml.
    let policy = example_policy();
    let asset = trustbridge_kms::compile::select_asset(&policy, None).unwrap();
    let compiled = trustbridge_kms::compile::aws_kms_key_policy(asset, ROLE, ADMIN).unwrap();
    let fixture = read_json(&infra().join(AWS_EXAMPLE).join("key-policy.json.example"));
    assert_eq!(
        compiled, fixture,
        "key-policy.json.example differs from `trustbridge policy compile --policy docs/examples/policy.toml --target aws-kms --enclave-role-arn {ROLE} --key-admin-arn {ADMIN}`"
    );
    let findings = kms_policy_findings(&fixture, ROLE);
    assert!(findings.is_empty(), "{findings:?}");
    assert_eq!(
        decrypt_statements(&fixture).len(),
        asset.nitro.len(),
        "one per Nitro set"
    );

    // The check can fail.
    let mut unconditional = fixture.clone();
    unconditional["Statement"][FIRST_DECRYPT]
        .as_object_mut()
        .unwrap()
        .remove("Condition");
    assert!(!kms_policy_findings(&unconditional, ROLE).is_empty());
    let mut if_exists = fixture.clone();
    let condition = take_attestation_condition(&mut if_exists);
    if_exists["Statement"][FIRST_DECRYPT]["Condition"] =
        json!({ "StringEqualsIfExists": condition });
    assert!(!kms_policy_findings(&if_exists, ROLE).is_empty());
    for action in ["kms:*", "*", "kms:De*", "kms:ReEncrypt*", "kms:Create*"] {
        let mut admin_decrypts = fixture.clone();
        admin_decrypts["Statement"][0]["Action"]
            .as_array_mut()
            .unwrap()
            .push(json!(action));
        assert!(
            !kms_policy_findings(&admin_decrypts, ROLE).is_empty(),
            "{action}"
        );
    }
    let mut other_role = fixture.clone();
    other_role["Statement"][FIRST_DECRYPT]["Principal"]["AWS"] =
        json!("arn:aws:iam::111122223333:role/other");
    assert!(!kms_policy_findings(&other_role, ROLE).is_empty());
}

/// Takes the first decrypt statement's StringEqualsIgnoreCase condition out of `policy`.
pub(super) fn take_attestation_condition(policy: &mut Json) -> Json {
    policy["Statement"][FIRST_DECRYPT]["Condition"]["StringEqualsIgnoreCase"].take()
}
