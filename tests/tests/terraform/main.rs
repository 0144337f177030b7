//! The Terraform under `infra-terraform/` keeps its promises, checked on the HCL itself
//! (every `.tf` file parsed with hcl-rs) and, where Terraform runs, on its own validations:
//!
//! - no security-group or NSG rule opens SSH (22), the runtime (8081) or a port of the
//!   sentinel's (8000) or the relay's internal listeners (8001, 8002): not with the
//!   defaults, and not with any value a port variable's validation lets through;
//! - the KMS key policy is the variable `trustbridge policy compile --target aws-kms` fills,
//!   validated so that no statement allows decryption without a `kms:RecipientAttestation`
//!   condition, and the example's fixture is that compiler's output for
//!   `docs/examples/policy.toml`, with those conditions;
//! - the Azure VM is a confidential VM (Secure Boot, vTPM, confidential OS disk
//!   encryption), and its key is an exportable RSA-HSM key carrying the compiled release
//!   policy, released to the VM's identity only;
//! - every variable and output is described.
//!
//! Without Terraform the validation runs are a loud skip; `TB_REQUIRE_TERRAFORM=1` makes
//! them a failure (`TB_TERRAFORM` names the binary, default `terraform` on the `PATH`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod aws;
mod azure;
mod ingress;
mod validations;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use hcl::eval::{Context, Evaluate};
use hcl::{Block, Body, Expression, ObjectKey, Value};
use serde_json::{Value as Json, json};

/// Ports no ingress rule may open: SSH, the sentinel (8000), the relay's egress (8001) and
/// bundle (8002) listeners, and the runtime (8081).
const FORBIDDEN_PORTS: [u64; 5] = [22, 8000, 8001, 8002, 8081];

/// The ARNs the fixture `key-policy.json.example` was compiled for.
const ROLE: &str = "arn:aws:iam::111122223333:role/trustbridge-enclave";
const ADMIN: &str = "arn:aws:iam::111122223333:role/key-admin";
/// The attestation endpoint the fixture `release-policy.json.example` was compiled for.
const MAA: &str = "https://sharedeus.eus.attest.azure.net";

const AWS_MODULE: &str = "aws-nitro/modules/trustbridge-nitro";
const AWS_EXAMPLE: &str = "aws-nitro/example";
const AZURE_MODULE: &str = "azure-cvm-gpu/modules/trustbridge-cvm-gpu";
const AZURE_EXAMPLE: &str = "azure-cvm-gpu/example";

fn infra() -> PathBuf {
    trustbridge_testkit::workspace_root().join("infra-terraform")
}

/// One parsed `.tf` file.
struct TfFile {
    path: PathBuf,
    body: Body,
}

/// A Terraform module: the `.tf` files of one directory.
struct Module {
    dir: PathBuf,
    files: Vec<TfFile>,
}

impl Module {
    /// Top-level blocks of kind `kind` (`resource`, `variable`, ...), with their file.
    fn blocks<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = (&'a Path, &'a Block)> + 'a {
        self.files.iter().flat_map(move |f| {
            f.body
                .blocks()
                .filter(move |b| b.identifier() == kind)
                .map(move |b| (f.path.as_path(), b))
        })
    }

    /// Resources of type `ty`.
    fn resources<'a>(&'a self, ty: &'a str) -> impl Iterator<Item = (&'a Path, &'a Block)> + 'a {
        self.blocks("resource")
            .filter(move |(_, b)| label(b, 0) == Some(ty))
    }

    /// The variables, by name.
    fn variables(&self) -> BTreeMap<String, &Block> {
        self.blocks("variable")
            .filter_map(|(_, b)| label(b, 0).map(|name| (name.to_owned(), b)))
            .collect()
    }

    /// What `var` holds when nothing is set: every variable's default (variables without
    /// one are absent, so an expression that needs them does not evaluate).
    fn defaults(&self) -> hcl::Map<String, Value> {
        self.variables()
            .into_iter()
            .filter_map(|(name, b)| {
                attr(b.body(), "default").map(|d| (name, Value::from(d.clone())))
            })
            .collect()
    }

    /// The expression of local value `name`.
    fn local(&self, name: &str) -> Option<&Expression> {
        self.blocks("locals")
            .find_map(|(_, b)| attr(b.body(), name))
    }
}

/// Every `.tf` file under `root`, parsed (a file that does not parse fails the test), one
/// module per directory.
fn modules(root: &Path) -> BTreeMap<PathBuf, Module> {
    let mut modules: BTreeMap<PathBuf, Module> = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != ".terraform") {
                    dirs.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "tf") {
                let text = std::fs::read_to_string(&path).unwrap();
                let body = hcl::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                modules
                    .entry(dir.clone())
                    .or_insert_with(|| Module {
                        dir: dir.clone(),
                        files: Vec::new(),
                    })
                    .files
                    .push(TfFile { path, body });
            }
        }
    }
    modules
}

/// The module in `infra-terraform/<rel>`.
fn module<'a>(all: &'a BTreeMap<PathBuf, Module>, rel: &str) -> &'a Module {
    all.get(&infra().join(rel))
        .unwrap_or_else(|| panic!("no .tf files in infra-terraform/{rel}"))
}

fn label(b: &Block, i: usize) -> Option<&str> {
    b.labels().get(i).map(|l| l.as_str())
}

fn attr<'a>(body: &'a Body, key: &str) -> Option<&'a Expression> {
    body.attributes().find(|a| a.key() == key).map(|a| a.expr())
}

/// An expression as HCL text, for messages and for checking what it refers to.
fn text(expr: &Expression) -> String {
    hcl::format::to_string(expr).unwrap()
}

/// The value of key `key` of an object expression.
fn get<'a>(expr: &'a Expression, key: &str) -> Option<&'a Expression> {
    let Expression::Object(object) = expr else {
        return None;
    };
    object
        .iter()
        .find(|(k, _)| match k {
            ObjectKey::Identifier(id) => id.as_str() == key,
            ObjectKey::Expression(Expression::String(s)) => s == key,
            _ => false,
        })
        .map(|(_, v)| v)
}

/// Evaluates `expr` with `var` = `vars` (no functions, no other references).
fn eval(expr: &Expression, vars: &hcl::Map<String, Value>) -> Result<Value, String> {
    let mut ctx = Context::new();
    ctx.declare_var("var", Value::Object(vars.clone()));
    expr.evaluate(&ctx).map_err(|e| e.to_string())
}

// --- Descriptions ---------------------------------------------------------------------

#[test]
fn every_variable_and_output_is_described() {
    let all = modules(&infra());
    let mut checked = 0;
    let mut missing = Vec::new();
    for m in all.values() {
        for kind in ["variable", "output"] {
            for (path, b) in m.blocks(kind) {
                checked += 1;
                let described = match attr(b.body(), "description") {
                    Some(Expression::String(s)) => !s.trim().is_empty(),
                    Some(Expression::TemplateExpr(t)) => !t.to_string().trim().is_empty(),
                    _ => false,
                };
                if !described {
                    missing.push(format!(
                        "{}: {kind} {:?} has no description",
                        path.display(),
                        label(b, 0).unwrap_or("?")
                    ));
                }
            }
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
    assert!(checked > 40, "only {checked} variables and outputs found");
}
